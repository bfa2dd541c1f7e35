"""What a polled source sends and how it reads the answer, in words, for `bridge check`.

Pure functions of a `PollConfig`. Secrets stay masked: a header's value is shown only for
headers that never carry credentials (`Accept`, API versions), a query parameter's only
when its name is one of the plain filters and page sizes of `PUBLIC_PARAMS`; everything
else is `***`.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from bridge.config import CursorPages, GraphQLPages, NextUrlPages, PollConfig
from bridge.config.auth import AuthConfig, OAuth2Config
from bridge.config.polling import AdaptiveEvery, DeletedField, DeltaConfig, TokenBody, TokenParam
from bridge.masking import mask_url
from bridge.poll.modes import format_line

PUBLIC_HEADERS = frozenset(
    {"accept", "content-type", "x-github-api-version", "stripe-version", "user-agent"}
)
PUBLIC_PARAMS = frozenset(
    {
        "state", "sort", "direction", "per_page", "limit", "status", "order_by", "scope",
        "labels", "type", "fields", "order", "page_size", "maxResults", "pageSize",
        "includeRemoved",
    }
)  # fmt: skip
MASK = "***"


def _param(name: str, value: object) -> str:
    shown = value if name in PUBLIC_PARAMS else MASK
    if isinstance(shown, bool):
        shown = str(shown).lower()
    return f"{quote(name, safe='[]')}={quote(str(shown), safe='*:,')}"


def request_line(poll: PollConfig) -> str:
    """The method and URL of a poll's first request, its query masked as the module says."""
    base, _, query = poll.url.partition("?")
    parts = [q for q in query.split("&") if q]
    parts = [_param(*q.split("=", 1)) if "=" in q else q for q in parts]
    parts = [p for p in parts if p.split("=")[0] not in poll.params]
    parts += [_param(name, value) for name, value in poll.params.items()]
    if poll.mode == "incremental" and poll.cursor is not None and poll.cursor.param is not None:
        parts.append(f"{quote(poll.cursor.param, safe='[]')}={_watermark(poll)}")
    if poll.mode == "feed" and poll.feed is not None and poll.feed.after is not None:
        parts.append(f"{quote(poll.feed.after.param, safe='[]')}=<last event id seen>")
    if poll.delta is not None and isinstance(poll.delta.token, TokenParam):
        parts.append(f"{quote(poll.delta.token.param, safe='[]')}=<delta token kept>")
    method = "POST" if poll.graphql is not None else poll.method
    line = f"{method} {mask_url(base)}" + ("?" + "&".join(parts) if parts else "")
    if poll.delta is not None and isinstance(poll.delta.token, TokenBody):
        line += f" with {{{poll.delta.token.body}: <delta token kept>}}"
    return line


def _watermark(poll: PollConfig) -> str:
    """What an incremental poll sends for its watermark, in words."""
    c = poll.cursor
    assert c is not None
    lookback = f" - {c.lookback_s:g}s" if c.lookback_s else ""
    shown = c.format or "as the upstream writes it"
    text = f"<{c.field} watermark{lookback}, {shown}>"
    return c.template.replace("{value}", text) if c.template else text


def graphql_line(poll: PollConfig) -> str:
    """The GraphQL query POSTed: its operation, its variables (values masked unless they are
    page sizes), and the variables the pages and the cursor set."""
    query = poll.graphql
    assert query is not None
    words = query.query.split()
    operation = " ".join(words[:2]).split("(")[0] if words and words[0] in _OPERATIONS else "query"
    source = f" from {query.query_file}" if query.query_file else ""
    shown = [
        f"{name}={value if name in _PUBLIC_VARIABLES else MASK}"
        for name, value in query.variables.items()
    ]
    if isinstance(poll.pages, GraphQLPages):
        shown.append(f"{poll.pages.graphql.variable}=<the page's cursor>")
    if poll.mode == "incremental" and poll.cursor is not None and poll.cursor.variable:
        shown.append(f"{poll.cursor.variable}={_watermark(poll)}")
    variables = f"; variables {', '.join(shown)}" if shown else ""
    return f"{operation}{source} ({len(query.query)} characters) as JSON{variables}"


_OPERATIONS = ("query", "{")
# Variables shown as they are: page sizes and orderings, never an identifier or a key.
_PUBLIC_VARIABLES = frozenset({"first", "last", "limit", "sortKey", "reverse", "orderBy"})


def _sent(how: object) -> str:
    if isinstance(how, TokenParam):
        return f"sent as {how.param}"
    if isinstance(how, TokenBody):
        return f"sent in a JSON body as {how.body}"
    return "followed as a URL"


def delta_line(delta: DeltaConfig) -> str:
    """What a delta source keeps and how it walks (the token itself is never shown: a
    Graph deltaLink carries a credential-like token)."""
    if isinstance(delta.deleted, DeletedField):
        deleted = f"{delta.deleted.field} == {delta.deleted.value!r}"
    else:
        deleted = delta.deleted or "never (upserts only)"
    start = delta.start
    if start is None:
        first = "the url without a token"
    elif start.token is not None:
        first = f"the token at {start.token} of {mask_url(start.url or '')} (no items)"
    else:
        first = f"{start.method or ''} {mask_url(start.url or '')}".strip()
    resync = ", ".join(str(code) for code in delta.resync_on) or "nothing"
    return (
        f"delta: token kept (masked), {_sent(delta.token)}; next page at {delta.next},"
        f" {_sent(delta.page_send)}; the token to keep at {delta.final}; deleted when"
        f" {deleted}; first walk: {first}; a full resync on {resync}"
        + ("; an upsert merged over the stored item" if delta.merge else "")
    )


def headers_line(poll: PollConfig) -> str:
    """The configured headers, credentials masked."""
    shown = [
        f"{name}: {value.get_secret_value() if name.lower() in PUBLIC_HEADERS else MASK}"
        for name, value in poll.headers.items()
    ]
    return "; ".join(shown) if shown else "(none)"


def mode_line(poll: PollConfig) -> str:
    """The mode and what it keeps between polls."""
    if poll.mode == "incremental" and poll.cursor is not None:
        c = poll.cursor
        start = f"{span(c.start_s)} ago" if c.start_s else "now"
        reconcile = f", reconcile every {span(poll.reconcile_s)}" if poll.reconcile_s else ""
        sent = c.param if c.param is not None else f"GraphQL variable ${c.variable}"
        return (
            f"incremental: watermark over {c.field}, sent as {sent}, "
            f"lookback {span(c.lookback_s)}, max skew {span(c.max_skew_s)},"
            f" first poll from {start}"
            f"{reconcile}; cursor format: {format_line(c)}"
        )
    if poll.mode == "feed" and poll.feed is not None:
        f = poll.feed
        after = (
            f", after: {f.after.param} (anchor held {f.lookback_s:g}s back)"
            if f.after
            else ", walked back to the last event seen"
        )
        return f"feed: {f.order}, type {f.type}{after}"
    if poll.mode == "delta" and poll.delta is not None:
        return delta_line(poll.delta)
    return "snapshot: the whole list, diffed against the stored snapshot"


def pages_line(poll: PollConfig) -> str:
    """The pagination and whether conditional requests are sent."""
    pages = poll.pages
    if poll.delta is not None:
        text = f"delta.next, at most {poll.max_pages} pages"
    elif pages is None:
        text = "none"
    elif poll.is_link_paged:
        text = 'Link rel="next"'
    elif isinstance(pages, NextUrlPages):
        text = f"next URL at {pages.next_url}"
    elif isinstance(pages, GraphQLPages):
        info = pages.graphql
        text = (
            f"GraphQL cursor: while data.{info.has_next}, data.{info.cursor} sent as"
            f" ${info.variable}"
        )
    else:
        assert isinstance(pages, CursorPages)
        text = f"cursor {pages.cursor} sent as {pages.param}"
    if pages is not None:
        text += f", at most {poll.max_pages} pages"
    if poll.allow_origins:
        text += f" (also on {', '.join(poll.allow_origins)}, without credentials)"
    validators = "no validators"
    if poll.sends_validators:
        validators = "conditional requests (If-None-Match)"
    return f"{text}; {validators}"


def items_line(poll: PollConfig) -> str:
    """Where the items are and what is read from each."""
    if poll.format == "feed":
        parts = ["the feed's entries (RSS, Atom or JSON Feed)"]
        if poll.keeps_missing:
            parts.append("an entry that leaves the feed is kept, not deleted")
    elif poll.graphql is not None:
        parts = [f"the list at data.{poll.items}" if poll.items else "data is the list"]
    else:
        parts = [f"the list at {poll.items}" if poll.items else "the answer is the list"]
    parts.append(f"key {poll.id}")
    for name in ("version", "time", "subject"):
        value = getattr(poll, name)
        if value:
            parts.append(f"{name} {value}")
    return "; ".join(parts)


def span(seconds: float) -> str:
    """A duration as a person writes it: `60s`, `2h`, `3650d` (never `3.1536e+08s`)."""
    for unit, size in (("d", 86_400), ("h", 3_600)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s" if seconds < 1e6 else f"{round(seconds)}s"


def every_text(poll: PollConfig) -> str:
    """The interval as written: `30s` or `2s..60s`."""
    if isinstance(poll.every, AdaptiveEvery):
        return f"{poll.every.min_s:g}s..{poll.every.max_s:g}s"
    return f"{poll.every:g}s"


def oauth2_line(oauth2: OAuth2Config) -> str:
    """An OAuth2 client in words: the grant, the token endpoint and what it asks for; no
    secret (a `params` value is masked, the key file is named, never read)."""
    parts = [f"oauth2 {oauth2.grant} at {mask_url(oauth2.token_url)}"]
    if oauth2.client_id:
        secret = ", secret ***" if oauth2.client_secret is not None else ""
        parts.append(f"client {oauth2.client_id} ({oauth2.client_auth}{secret})")
    if oauth2.grant == "jwt_bearer":
        parts.append(f"key file {oauth2.key_file}")
        if oauth2.subject:
            parts.append(f"acting as {oauth2.subject}")
    if oauth2.scope:
        parts.append(f"scope {' '.join(oauth2.scope)}")
    if oauth2.audience:
        parts.append(f"audience {oauth2.audience}")
    if oauth2.params:
        parts.append("params " + ", ".join(f"{name}=***" for name in oauth2.params))
    return "; ".join(parts)


def auth_line(auth: AuthConfig | None, credentials: Mapping[str, OAuth2Config]) -> str:
    """What a source's requests to its own origin carry to prove who it is, masked."""
    if auth is None:
        return "(none)"
    if auth.bearer is not None:
        return "bearer ***"
    if auth.basic is not None:
        return f"basic, user {auth.basic.username}, password ***"
    if auth.header is not None:
        return "headers " + "; ".join(f"{name}: ***" for name in auth.header)
    if auth.oauth2 is not None:
        return oauth2_line(auth.oauth2)
    assert auth.credential is not None
    shared = credentials.get(auth.credential)
    about = f": {oauth2_line(shared)}" if shared is not None else ""
    return f"credential {auth.credential}{about}"


def describe(
    poll: PollConfig, credentials: Mapping[str, OAuth2Config] | None = None
) -> list[tuple[str, str]]:
    """(label, text) lines: the full request, auth, mode, pagination and items of a source."""
    lines = []
    if poll.preset:
        lines.append(("preset", f"{poll.preset}, resource {poll.resource}"))
    lines += [
        ("request", request_line(poll)),
        *([("graphql", graphql_line(poll))] if poll.graphql is not None else []),
        ("headers", headers_line(poll)),
        ("mode", mode_line(poll)),
        ("pages", pages_line(poll)),
        ("items", items_line(poll)),
    ]
    if poll.auth is not None:
        lines.insert(-3, ("auth", auth_line(poll.auth, credentials or {})))
    return lines
