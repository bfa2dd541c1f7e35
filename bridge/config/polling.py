"""The models of a polled source (`sources.NAME.poll`): the request, its pages, its mode.

Four modes: `snapshot` diffs the whole list, `incremental` asks for what changed since a
watermark (`cursor`), `feed` reads an append-only list of upstream events (`feed`), `delta`
keeps the opaque delta or sync token the upstream hands out (`delta`). Which keys belong to
which mode is in `MODE_KEYS`; the loader names a key used in another mode.

Two kinds of request: a plain one (`method`, `url`, `params`), or a GraphQL query POSTed as
JSON (`request: {graphql: {query, variables}}`), whose `items` and `pages` are read inside the
answer's `data`. Two formats of answer: JSON (`format: json`, the default), or a feed
(`format: feed`: RSS, Atom or JSON Feed, read into entries by bridge/poll/feeds.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, quote, urljoin, urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    field_validator,
    model_validator,
)

from bridge.config.auth import AuthConfig

# The models of `mode: delta` (their own module), part of a polled source's keys.
from bridge.config.delta import DeletedField as DeletedField
from bridge.config.delta import DeltaConfig as DeltaConfig
from bridge.config.delta import DeltaStart as DeltaStart
from bridge.config.delta import TokenBody as TokenBody
from bridge.config.delta import TokenParam as TokenParam
from bridge.config.delta import TokenSend as TokenSend
from bridge.config.delta import TokenUrl as TokenUrl
from bridge.config.values import Duration, HttpURL, JMESPath, Size, _Model, _one_or_many, field_path
from bridge.timelayout import NAMED_PATTERNS, check_pattern

# -- sources -------------------------------------------------------------------------------


class AdaptiveEvery(_Model):
    """An adaptive poll interval: fast right after a change, slower while nothing changes."""

    # The interval right after a poll that found a change.
    min_s: Duration = Field(alias="min")
    # The interval it grows to while nothing changes.
    max_s: Duration = Field(alias="max")

    @model_validator(mode="after")
    def _check_order(self) -> AdaptiveEvery:
        if self.min_s <= 0 or self.max_s < self.min_s:
            raise ValueError("needs 0 < min <= max")
        return self


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _check_origin(value: str) -> str:
    """An origin as written (`https://cdn.example.com`), made `scheme://host:port`."""
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        parts.scheme not in _DEFAULT_PORTS
        or not parts.hostname
        or "@" in parts.netloc
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or port == -1
    ):
        raise ValueError(
            "is not an origin: a scheme, a host and an optional port, as in"
            " https://cdn.example.com or http://10.0.0.5:8080"
        )
    return f"{parts.scheme}://{parts.hostname}:{port or _DEFAULT_PORTS[parts.scheme]}"


Origin = Annotated[str, AfterValidator(_check_origin)]


class LinkPages(_Model):
    """Pagination by `Link: <...>; rel="next"`, as a mapping: `{link: true, allow_origins}`."""

    # `true`: follow the answer's `Link: <...>; rel="next"` header (RFC 8288).
    link: Literal[True]
    # Other origins whose pages are followed, with none of the source's headers, user-info
    # or configured parameters; any other origin is a fault.
    allow_origins: list[Origin] = []


class NextUrlPages(_Model):
    """Pagination by a next-page URL found in the answer."""

    # JMESPath to the next page's URL (relative or absolute) in the answer.
    next_url: JMESPath
    allow_origins: list[Origin] = []  # as in LinkPages


class CursorPages(_Model):
    """Pagination by a cursor found in the answer, sent back as a query parameter."""

    # JMESPath to the next page's cursor in the answer; none, "" or false ends the walk.
    cursor: JMESPath
    # The query parameter the cursor is sent back in.
    param: str


class GraphQLPageInfo(_Model):
    """A Relay connection's pages: `has_next` and `cursor` read inside `data`, the cursor sent
    as the GraphQL variable `variable` of the next request."""

    has_next: JMESPath
    cursor: JMESPath
    variable: str = "after"


class GraphQLPages(_Model):
    """Pagination of a GraphQL request, as a mapping: `{graphql: {has_next, cursor, variable}}`."""

    graphql: GraphQLPageInfo


class GraphQLQuery(_Model):
    """A GraphQL query POSTed as JSON `{"query", "variables"}`. `query_file` names a file (the
    loader reads it into `query`, relative to the config file's folder)."""

    query: str = Field(min_length=1)
    query_file: str | None = None
    # Variables may carry identifiers a reader should not see in a repr, as params may.
    variables: dict[str, Any] = Field({}, repr=False)


class RequestConfig(_Model):
    """What a poll sends beyond `method`, `url` and `params`: `{graphql: {...}}`."""

    graphql: GraphQLQuery


Change = Literal["created", "updated", "deleted"]
Mode = Literal["snapshot", "incremental", "feed", "delta"]


class IncrementalCursor(_Model):
    """Where an incremental poll starts: a watermark over an item field, sent as a query
    parameter (`param`) or, for a GraphQL request, as a variable (`variable`)."""

    # JMESPath to the item field the watermark follows (such as `updated_at`).
    field: JMESPath
    # The query parameter the watermark is sent in (or `variable`, for a GraphQL request).
    param: str | None = None
    # The GraphQL variable the watermark is sent in.
    variable: str | None = None
    # What is sent, `{value}` standing for the watermark as written: Shopify's search syntax
    # takes `updated_at:>'{value}'`. Not given: the watermark alone.
    template: str | None = None
    # How the watermark is written back (bridge/timelayout.py): rfc3339, iso8601, sqlite,
    # unix, unix_ms or a strftime-style pattern. Not given: the layout of the upstream's own
    # values, so an API that compares the cursor as text finds what it should.
    format: str | None = None
    # Sent: the watermark minus this, for eventually consistent APIs and clock skew.
    lookback_s: Duration = Field(60.0, alias="lookback")
    # The first poll asks for what changed this long ago and since (0: from now).
    start_s: Duration = Field(0.0, alias="start")
    # A value further in the future than this (past now) does not move the watermark: one
    # bad upstream value would otherwise hide every later change.
    max_skew_s: Duration = Field(86400.0, alias="max_skew")

    @field_validator("format")
    @classmethod
    def _check_format(cls, value: str | None) -> str | None:
        if value is not None and value not in ("unix", "unix_ms", *NAMED_PATTERNS):
            check_pattern(value)
        return value

    @field_validator("max_skew_s")
    @classmethod
    def _check_max_skew(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be more than 0")
        return value

    @field_validator("template")
    @classmethod
    def _check_template(cls, value: str | None) -> str | None:
        if value is not None and "{value}" not in value:
            raise ValueError("needs {value} where the watermark goes")
        return value

    @model_validator(mode="after")
    def _check_target(self) -> IncrementalCursor:
        if (self.param is None) == (self.variable is None):
            raise ValueError("needs param (a query parameter) or variable (a GraphQL variable)")
        return self

    def sent(self, text: str) -> str:
        """What is sent for the watermark written as `text`."""
        return self.template.replace("{value}", text) if self.template else text


class FeedAfter(_Model):
    """Ask the feed for what follows the last event seen, by its id in a query parameter."""

    # The query parameter that carries the id of the last event seen.
    param: str


class FeedConfig(_Model):
    """An append-only list of upstream events: each item is one event with its own id."""

    # JMESPath to each feed item's event type.
    type: JMESPath
    # Whether the feed lists the newest events first or the oldest.
    order: Literal["newest_first", "oldest_first"] = "newest_first"
    # Ask for what follows the last event seen; without it each poll walks the pages from the
    # newest to a page with an event already seen.
    after: FeedAfter | None = None
    # The id sent as `after` is the newest one at least this much older than the newest seen,
    # for feeds where events become visible late (Stripe: about a minute).
    lookback_s: Duration = Field(0.0, alias="lookback")


# With `deletes.confirm: auto`, a key missing from this many walks of several pages in a row is
# deleted even if none of them was settled (a list that changes during every walk).
AUTO_MOST_WALKS = 5


class DeletesConfig(_Model):
    """When a key missing from a snapshot walk (or a `reconcile` walk) becomes `deleted`.

    A list read page by page can shift between two page requests (an item removed or added
    before the page being read moves every later item by one place), so a key can be missing
    from one walk while it is still there. It is then *pending*: kept in the snapshot, and
    deleted only once `confirm` walks in a row have lacked it.
    """

    # Walks in a row that must lack a key before its `deleted` is emitted. `auto`: for a walk
    # of one page, 1 (one answer is the list at one moment); for a walk of several pages, 2
    # when the second is settled (it lacked no other key and saw none twice: the list did
    # not move under it), else AUTO_MOST_WALKS.
    confirm: Literal["auto"] | Annotated[int, Field(ge=1, le=100)] = "auto"
    # An item's own URL, `{key}` standing for the key (absolute or relative to `url`, on its
    # origin): a missing key is asked there at once, a 404 or 410 deletes it, a 2xx keeps it.
    check: str | None = None
    # Keys asked at `check` per poll, at most; the others stay pending for the next poll.
    max_checks: int = Field(100, ge=1)

    @field_validator("check")
    @classmethod
    def _check_has_key(cls, value: str | None) -> str | None:
        if value is not None and "{key}" not in value:
            raise ValueError("needs {key} where the item's key goes")
        return value

    def walks_needed(self, pages: int) -> tuple[int, int]:
        """How many walks in a row must lack a key, for a walk that read `pages` pages: when
        the walk is settled, and when it is not (see `confirm`)."""
        if self.confirm != "auto":
            return self.confirm, self.confirm
        return (2, AUTO_MOST_WALKS) if pages > 1 else (1, 1)


# What `format: feed` fills in when not written (see bridge/poll/feeds.py for the entries'
# fields): the key, the version (`updated`, else `published`, else the whole entry), the
# time, and no deletes (a feed keeps only its newest entries).
FEED_DEFAULTS: dict[str, Any] = {
    "id": "id",
    "version": "updated || published || @",
    "time": "updated || published",
    "emit": ["created", "updated"],
}
# With `mode: feed`, each new entry is one event of this type.
FEED_MODE_FEED: dict[str, Any] = {"type": "'feed.entry'", "order": "newest_first"}

# The keys of `poll` that only one mode takes.
MODE_KEYS: dict[str, frozenset[str]] = {
    "snapshot": frozenset(),
    "incremental": frozenset({"cursor", "reconcile_s"}),
    "feed": frozenset({"feed", "subject"}),
    "delta": frozenset({"delta"}),
}
# The keys that a feed, whose items are events and not versions of an item, has no use for.
NOT_FEED_KEYS = frozenset({"version", "ignore", "emit", "type", "deletes"})


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme)


def check_url(poll: PollConfig, key: str) -> str:
    """The URL of `deletes.check` for one key (the key percent-encoded as a path segment)."""
    assert poll.deletes.check is not None
    return urljoin(poll.url, poll.deletes.check.replace("{key}", quote(key, safe="")))


def _every_kind(value: Any) -> str:
    return "adaptive" if isinstance(value, dict | AdaptiveEvery) else "fixed"


def _pages_kind(value: Any) -> str:
    if isinstance(value, dict):
        if "link" in value:
            return "links"
        if "graphql" in value:
            return "graphql"
        return "next_url" if "next_url" in value else "cursor"
    if isinstance(value, LinkPages):
        return "links"
    if isinstance(value, GraphQLPages):
        return "graphql"
    if isinstance(value, NextUrlPages):
        return "next_url"
    return "cursor" if isinstance(value, CursorPages) else "link"


Every = Annotated[
    Annotated[Duration, Tag("fixed")] | Annotated[AdaptiveEvery, Tag("adaptive")],
    Discriminator(_every_kind),
]
Pages = Annotated[
    Annotated[Literal["link"], Tag("link")]
    | Annotated[LinkPages, Tag("links")]
    | Annotated[NextUrlPages, Tag("next_url")]
    | Annotated[CursorPages, Tag("cursor")]
    | Annotated[GraphQLPages, Tag("graphql")],
    Discriminator(_pages_kind),
]


class PollConfig(_Model):
    """How to poll an HTTP API that has no webhooks, and how to diff its answers."""

    # The URL polled; a query string in it is kept, and `params` are merged into it.
    url: HttpURL
    # The request's method.
    method: str = "GET"
    # Request headers; their values are secrets (masked everywhere).
    headers: dict[str, SecretStr] = {}
    # Who the source is to its upstream (config/auth.py): sent to the source's own origin only.
    auth: AuthConfig | None = None
    # Query parameters often carry API keys: kept out of reprs and error messages.
    params: dict[str, str | int | float | bool] = Field({}, repr=False)
    # Per request, from connecting to the last byte of the answer.
    timeout_s: Duration = Field(10.0, alias="timeout")
    # The interval between polls, or `{min, max}` for an adaptive one.
    every: Every
    # A random extra delay, from 0 to this, before each poll.
    jitter_s: Duration = Field(0.0, alias="jitter")
    # JMESPath to the list of items in the answer; default: the answer is the list.
    items: JMESPath | None = None
    # JMESPath to an item's key.
    id: JMESPath
    # JMESPath to an item's version (such as `updated_at`); default: the hash of its JSON.
    version: JMESPath | None = None
    # Field paths left out of an item's hash, for values that change on every answer.
    ignore: Annotated[list[JMESPath], BeforeValidator(_one_or_many)] = []
    # JMESPath to when the change happened upstream (RFC 3339, Unix seconds or milliseconds).
    time: JMESPath | None = None
    # Which changes become events.
    emit: Annotated[list[Change], BeforeValidator(_one_or_many)] = ["created", "updated", "deleted"]
    # The event type template.
    type: str = "{source}.{change}"
    # How to find the next page: `link`, `{next_url}` or `{cursor, param}`.
    pages: Pages | None = None
    # The most pages one poll reads.
    max_pages: int = Field(100, ge=1)
    # What one poll may read, over all its pages, before it is a fault (`too_large`).
    max_bytes: Size = 64 * 1024 * 1024
    # What one poll may read, in items over all its pages, before it is a fault
    # (`too_many_items`): memory is bounded by items as well as by bytes.
    max_items: int = Field(1_000_000, ge=1)
    # Same-origin redirects only; a redirect to another origin is never followed.
    follow_redirects: bool = False
    # `silent`: the first poll records the state and emits nothing; `emit`: `created` for every
    # item.
    baseline: Literal["silent", "emit"] = "silent"
    # A webhook source: when it accepts an event, poll this source at once.
    on_push: str | None = None
    # `snapshot` (the whole list, diffed), `incremental` (with `cursor`), `feed` (with `feed`)
    # or `delta` (with `delta`).
    mode: Mode = "snapshot"
    # `mode: incremental`: the watermark and how it is sent.
    cursor: IncrementalCursor | None = None
    # `mode: incremental`: how often a full walk finds the deletes and what the cursor missed.
    reconcile_s: Duration | None = Field(None, alias="reconcile")
    # `mode: feed`: the upstream's list of events.
    feed: FeedConfig | None = None
    # `mode: delta`: the delta or sync token, how it is sent, how the pages are walked.
    delta: DeltaConfig | None = None
    # `mode: feed`: JMESPath to the subject of each event.
    subject: JMESPath | None = None
    # Send If-None-Match / If-Modified-Since. Default: only for a source without `pages`;
    # true with `pages` is right only when any change alters page 1 (newest-changed first).
    conditional: bool | None = None
    # When a key missing from a walk is deleted (see DeletesConfig).
    deletes: DeletesConfig = DeletesConfig()
    # The provider preset this source was expanded from (config/presets.py), and its
    # resource: shown by `bridge check`, no effect of their own.
    preset: str | None = None
    # The preset's resource (such as `issues` or `charges`).
    resource: str | None = None
    # The name of a top-level `budgets` entry this source's requests count against.
    budget: str | None = None
    # A GraphQL query instead of a plain request (see RequestConfig).
    request: RequestConfig | None = None
    # How the answer is read: JSON, or a feed (RSS, Atom, JSON Feed) read into entries.
    format: Literal["json", "feed"] = "json"

    @model_validator(mode="before")
    @classmethod
    def _feed_defaults(cls, data: Any) -> Any:
        """A feed's entries have known fields: their key, version and time need not be
        written; and a feed keeps only its newest entries, so by default an entry that is no
        longer in it is not a delete (see FEED_DEFAULTS)."""
        if isinstance(data, dict) and data.get("format") == "feed":
            defaults = dict(FEED_DEFAULTS)
            if data.get("mode") == "feed":
                defaults = {"id": "id", "time": "published || updated", "feed": FEED_MODE_FEED}
            return {**defaults, **data}
        return data

    @property
    def graphql(self) -> GraphQLQuery | None:
        """The GraphQL query this source POSTs, if it is one."""
        return self.request.graphql if self.request is not None else None

    @property
    def keeps_missing(self) -> bool:
        """Whether a key missing from a walk stays in the snapshot, never a delete: a feed
        (newest first, truncated) unless `emit` asks for deletes."""
        return self.format == "feed" and "deleted" not in self.emit

    @property
    def sends_validators(self) -> bool:
        """Whether polls send the validators of the previous answer (never with a GraphQL
        POST, which no cache answers, nor in delta mode, whose token is the validator)."""
        if self.request is not None or self.mode == "delta":
            return False
        return self.conditional if self.conditional is not None else self.pages is None

    @property
    def is_link_paged(self) -> bool:
        """Whether pages follow the `Link` header (`pages: link` or `{link: true, ...}`)."""
        return self.pages == "link" or isinstance(self.pages, LinkPages)

    @property
    def allow_origins(self) -> list[str]:
        """The other origins whose pages may be read (`scheme://host:port`), without
        credentials."""
        return self.pages.allow_origins if isinstance(self.pages, LinkPages | NextUrlPages) else []

    @property
    def min_every_s(self) -> float:
        """The shortest interval between polls, in seconds."""
        return self.every.min_s if isinstance(self.every, AdaptiveEvery) else self.every

    @property
    def overridden_params(self) -> list[str]:
        """The keys of `params` that replace a key of the query string of `url`."""
        query = {key for key, _ in parse_qsl(urlsplit(self.url).query, keep_blank_values=True)}
        return sorted(query & self.params.keys())

    @field_validator("ignore")
    @classmethod
    def _check_ignore(cls, value: list[str]) -> list[str]:
        for expression in value:
            field_path(expression)  # only plain field paths can be left out of the hash
        return value

    @model_validator(mode="after")
    def _check_mode(self) -> PollConfig:
        if self.mode == "incremental" and self.cursor is None:
            raise ValueError("mode: incremental needs cursor")
        if self.mode == "feed" and self.feed is None:
            raise ValueError("mode: feed needs feed")
        if self.mode == "delta" and self.delta is None:
            raise ValueError("mode: delta needs delta")
        if self.mode == "delta" and self.pages is not None:
            raise ValueError("mode: delta walks its pages by delta.next: pages is not used")
        if self.reconcile_s is not None and self.reconcile_s <= 0:
            raise ValueError("reconcile must be more than 0")
        if self.resource is not None and self.preset is None:
            raise ValueError("resource needs preset")
        self._check_request()
        check = self.deletes.check
        if check is not None and _origin(urljoin(self.url, check)) != _origin(self.url):
            # The check carries the source's headers: never to another host.
            raise ValueError("deletes.check must be on the origin of url")
        return self

    def _check_request(self) -> None:
        graphql = self.request is not None
        if isinstance(self.pages, GraphQLPages) and not graphql:
            raise ValueError("pages: {graphql: ...} needs request: {graphql: ...}")
        if graphql and self.pages is not None and not isinstance(self.pages, GraphQLPages):
            raise ValueError("a GraphQL request pages with pages: {graphql: ...} only")
        if graphql and "method" in self.model_fields_set and self.method.upper() != "POST":
            raise ValueError("a GraphQL request is a POST: leave out method")
        if graphql and self.format == "feed":
            raise ValueError("format: feed reads a feed, not a GraphQL answer")
        if self.cursor is not None and self.cursor.variable is not None and not graphql:
            raise ValueError("cursor.variable needs request: {graphql: ...} (else use param)")
        if self.format == "feed" and self.items is not None:
            raise ValueError("format: feed reads the feed's entries: leave out items")
        if self.format == "feed" and self.mode == "incremental":
            raise ValueError("format: feed takes mode: snapshot or mode: feed")

    @field_validator("every")
    @classmethod
    def _check_every(cls, value: float | AdaptiveEvery) -> float | AdaptiveEvery:
        if isinstance(value, float) and value <= 0:
            raise ValueError("must be more than 0")
        return value
