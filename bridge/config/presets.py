"""Provider presets for polled sources: `poll: {preset: NAME, ...}` as plain poll keys.

A preset turns a few keys (`repo`, `shop`, `project`, `resource`, `token`, `api_url`,
`api_version`, `api`) into the documented mechanics of one provider's API (REST, or
Shopify's GraphQL Admin API with `api: graphql`; any feed's URL for `feed`): the URL, the
headers (auth, media type, API version), the query, the pagination, the mode and its cursor
or feed, the item's key, version and time. Every key stays the user's to override: a key the
user writes wins over the preset's; for `headers`, `params`, `cursor` and `feed` the user's
entries are merged into the preset's (a header name in any case replaces the preset's, a
`null` value removes it). A user `mode` other than the preset's drops the preset's keys of
the other modes.

The expansion is pure and runs on the YAML data before validation (`loader.py`), so that the
models never know about presets and errors keep the user's lines. Mistakes raise
`PresetError(key, message)`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from bridge.config.keys import suggestion
from bridge.config.polling import MODE_KEYS, NOT_FEED_KEYS, PollConfig
from bridge.config.sync_presets import (
    DROPBOX_SIGN_IN,
    GOOGLE_SIGN_IN,
    GRAPH_SIGN_IN,
    SYNC_INPUT_KEYS,
    MissingInput,
    dropbox,
    google_calendar,
    google_drive,
    graph,
)

# The keys a preset reads; they are not keys of `poll` itself (except `preset`, `resource`).
INPUT_KEYS = (
    frozenset({"repo", "shop", "project", "token", "api_url", "api_version", "api"})
    | SYNC_INPUT_KEYS
)
# Keys whose mappings are merged entry by entry rather than replaced.
_MERGED = ("headers", "params", "cursor", "feed", "delta")

_REPO_RE = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+\Z")
_SHOP_RE = re.compile(r"[a-z0-9][a-z0-9-]*(\.myshopify\.com)?\Z")
_VERSION_RE = re.compile(r"\d{4}-\d{2}\Z|unstable\Z")
_API_RE = re.compile(r"(rest|graphql)\Z")


class PresetError(ValueError):
    """A preset key that is missing or wrong; `key` is the key of `poll` to blame."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True, slots=True)
class Inputs:
    """What the user gave a preset, checked."""

    resource: str
    values: Mapping[str, Any]

    def get(self, key: str) -> str | None:
        value = self.values.get(key)
        return None if value is None else str(value)

    def need(self, key: str) -> str:
        value = self.get(key)
        assert value is not None  # `Preset.required` is checked first
        return value


@dataclass(frozen=True, slots=True)
class Preset:
    """One provider: what it needs, its resources (name -> how each is polled), its keys."""

    name: str
    summary: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    resources: Mapping[str, str]
    build: Callable[[Inputs], dict[str, Any]]
    # The APIs a preset speaks (`api: NAME`), the first the default, and how each polls.
    apis: Mapping[str, str] = field(default_factory=dict)
    # The ways to sign in, each the keys it takes and what it is (`bridge presets`); their
    # keys are read too.
    sign_in: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def inputs(self) -> tuple[str, ...]:
        """Every key this preset reads besides `preset`."""
        signing = [key for keys in self.sign_in.values() for key in keys]
        return ("resource", *self.required, *self.optional, *dict.fromkeys(signing))


# -- GitHub ----------------------------------------------------------------------------------

GITHUB_API = "https://api.github.com"
GITHUB_API_VERSION = "2022-11-28"


def _base(inputs: Inputs, default: str) -> str:
    return (inputs.get("api_url") or default).rstrip("/")


def _bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _since(field: str, param: str, fmt: str = "rfc3339") -> dict[str, Any]:
    return {"field": field, "param": param, "format": fmt, "lookback": "1m"}


def _github(inputs: Inputs) -> dict[str, Any]:
    repo = f"{_base(inputs, GITHUB_API)}/repos/{inputs.need('repo')}"
    common: dict[str, Any] = {
        "headers": {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": GITHUB_API_VERSION,
            **_bearer(inputs.get("token")),
        },
        "params": {"per_page": 100},
        "pages": "link",
        "every": "60s",
    }
    resource = inputs.resource
    if resource == "releases":
        # A snapshot: releases are few; edits to an old one do not move it to page 1.
        # Download counts change all day: the version leaves them out.
        version = "[name, tag_name, body, draft, prerelease, published_at, assets[].[id, name]]"
        return {
            **common,
            "url": f"{repo}/releases",
            "id": "id",
            "version": version,
            "time": "published_at",
        }
    if resource == "events":
        # Newest first: any new event changes page 1, so a 304 on it means nothing new.
        return {
            **common,
            "url": f"{repo}/events",
            "mode": "feed",
            "feed": {"type": "type", "order": "newest_first"},
            "id": "id",
            "time": "created_at",
            "subject": "actor.login",
            "conditional": True,
        }
    # Issues and pulls: GitHub's pulls endpoint takes no `since`; the issues endpoint does and
    # lists every pull request too (an item with `pull_request`).
    only = "[?!pull_request]" if resource == "issues" else "[?pull_request]"
    return {
        **common,
        "url": f"{repo}/issues",
        "params": {**common["params"], "state": "all", "sort": "updated", "direction": "desc"},
        "mode": "incremental",
        "cursor": _since("updated_at", "since"),
        "items": only,
        "id": "number",
        "version": "updated_at",
        "time": "updated_at",
        # Sorted by updated, newest first: any change alters page 1.
        "conditional": True,
    }


# -- Stripe ----------------------------------------------------------------------------------

STRIPE_API = "https://api.stripe.com"
STRIPE_OBJECTS = (
    "customers", "charges", "invoices", "payment_intents", "subscriptions", "products",
    "prices", "refunds", "payouts", "disputes",
)  # fmt: skip


def _stripe(inputs: Inputs) -> dict[str, Any]:
    base = f"{_base(inputs, STRIPE_API)}/v1/{inputs.resource}"
    common: dict[str, Any] = {
        "url": base,
        "headers": _bearer(inputs.need("token")),
        "params": {"limit": 100},
        "items": "data",
        "id": "id",
        "every": "30s",
    }
    if inputs.resource == "events":
        # Newest first. `ending_before=ID` answers the page just newer than ID (still newest
        # first); `has_more` says that newer ones follow, asked with the page's first id.
        return {
            **common,
            "mode": "feed",
            "feed": {
                "type": "type",
                "order": "newest_first",
                "after": {"param": "ending_before"},
                "lookback": "1m",  # events can become visible a little late
            },
            "pages": {"cursor": "has_more && data[0].id", "param": "ending_before"},
            "time": "created",
            "subject": "data.object.id",
        }
    # Object lists: newest first, older pages by `starting_after` the page's last id.
    return {
        **common,
        "mode": "incremental",
        "cursor": _since("created", "created[gte]", "unix"),
        "pages": {"cursor": "has_more && data[-1].id", "param": "starting_after"},
        "time": "created",
    }


# -- Shopify ---------------------------------------------------------------------------------

SHOPIFY_API_VERSION = "2025-10"


# The fields each GraphQL resource asks for: what a change event carries as `data`.
SHOPIFY_FIELDS = {
    "products": "id title handle status vendor productType tags createdAt updatedAt",
    "orders": (
        "id name createdAt updatedAt cancelledAt closedAt displayFinancialStatus"
        " displayFulfillmentStatus totalPriceSet { shopMoney { amount currencyCode } }"
    ),
    "customers": "id firstName lastName displayName state tags createdAt updatedAt",
}
# Nodes a page asks for: Shopify's most, and a query cost of about 252 points, well under
# the 1,000 a single query may cost.
SHOPIFY_FIRST = 250


def shopify_query(resource: str) -> str:
    """The GraphQL query of a Shopify resource: a Relay connection filtered by `query`,
    sorted by update, paged by `after`."""
    name = resource.capitalize()
    return (
        f"query {name}($first: Int!, $after: String, $query: String) {{\n"
        f"  {resource}(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {{\n"
        f"    nodes {{ {SHOPIFY_FIELDS[resource]} }}\n"
        "    pageInfo { hasNextPage endCursor }\n"
        "  }\n"
        "}\n"
    )


def _shopify_graphql(base: str, version: str, inputs: Inputs) -> dict[str, Any]:
    resource = inputs.resource
    return {
        "url": f"{base}/admin/api/{version}/graphql.json",
        "headers": {"X-Shopify-Access-Token": inputs.need("token")},
        "request": {
            "graphql": {"query": shopify_query(resource), "variables": {"first": SHOPIFY_FIRST}}
        },
        # The watermark goes into the search syntax of the `query` argument; the cost budget
        # of `extensions.cost` paces the pages and the polls.
        "mode": "incremental",
        "cursor": {
            **{k: v for k, v in _since("updatedAt", "").items() if k != "param"},
            "variable": "query",
            "template": "updated_at:>'{value}'",
        },
        "pages": {
            "graphql": {
                "has_next": f"{resource}.pageInfo.hasNextPage",
                "cursor": f"{resource}.pageInfo.endCursor",
                "variable": "after",
            }
        },
        "items": f"{resource}.nodes",
        "id": "id",
        "version": "updatedAt",
        "time": "updatedAt",
        "every": "60s",
    }


def _shopify(inputs: Inputs) -> dict[str, Any]:
    shop = inputs.need("shop").removesuffix(".myshopify.com")
    base = _base(inputs, f"https://{shop}.myshopify.com")
    version = inputs.get("api_version") or SHOPIFY_API_VERSION
    resource = inputs.resource
    if inputs.get("api") == "graphql":
        return _shopify_graphql(base, version, inputs)
    params: dict[str, Any] = {"limit": 250}
    if resource == "orders":
        params["status"] = "any"  # else only open orders
    return {
        "url": f"{base}/admin/api/{version}/{resource}.json",
        "headers": {"X-Shopify-Access-Token": inputs.need("token")},
        "params": params,
        # `updated_at_min` goes on the first request only; the `Link` page_info URLs carry
        # the filters themselves and refuse any other.
        "mode": "incremental",
        "cursor": _since("updated_at", "updated_at_min"),
        "pages": "link",
        "items": resource,
        "id": "id",
        "version": "updated_at",
        "time": "updated_at",
        "every": "60s",
    }


# -- GitLab ----------------------------------------------------------------------------------

GITLAB_API = "https://gitlab.com"


def project_path(project: str) -> str:
    """A project id, or its path URL-encoded (`group/name` -> `group%2Fname`) unless it is."""
    return project if "%" in project else quote(project, safe="")


def _gitlab(inputs: Inputs) -> dict[str, Any]:
    project = project_path(inputs.need("project"))
    token = inputs.get("token")
    return {
        "url": f"{_base(inputs, GITLAB_API)}/api/v4/projects/{project}/{inputs.resource}",
        "headers": {"PRIVATE-TOKEN": token} if token else {},
        # No `state`: GitLab lists every state by default.
        "params": {"per_page": 100, "order_by": "updated_at", "sort": "desc"},
        "mode": "incremental",
        "cursor": _since("updated_at", "updated_after"),
        "pages": "link",
        "id": "iid",
        "version": "updated_at",
        "time": "updated_at",
        "every": "60s",
    }


# -- any feed --------------------------------------------------------------------------------


def _feed(inputs: Inputs) -> dict[str, Any]:
    # The user's `url` is kept as it is; a feed changes seldom and its server is often small.
    return {"resource": inputs.resource, "format": "feed", "mode": "snapshot", "every": "15m"}


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "github",
            "GitHub REST API (api.github.com, or GitHub Enterprise's /api/v3 as api_url)",
            ("repo",),
            ("token", "api_url"),
            {
                "issues": "incremental: since on updated_at, state=all (pull requests left out)",
                "pulls": "incremental: the issues endpoint's pull requests, since on updated_at",
                "releases": "snapshot of every page",
                "events": "feed, newest first, walked back to the last event seen",
            },
            _github,
        ),
        Preset(
            "stripe",
            "Stripe API (api.stripe.com), the secret key as a bearer token",
            ("token",),
            ("api_url",),
            {
                "events": "feed over /v1/events: ending_before the anchor, held 1m back",
                **{
                    name: "incremental: created[gte] (new objects), starting_after pages"
                    for name in STRIPE_OBJECTS
                },
            },
            _stripe,
        ),
        Preset(
            "shopify",
            "Shopify Admin API (SHOP.myshopify.com): REST, or GraphQL with api: graphql",
            ("shop", "token"),
            ("api", "api_version", "api_url"),
            {
                name: "incremental on updated_at (orders: every status)"
                for name in ("orders", "products", "customers")
            },
            _shopify,
            {
                "rest": "updated_at_min on the first request, then Link page_info",
                "graphql": "query updated_at:>'...', cursor pages (after), paced by"
                " extensions.cost",
            },
        ),
        Preset(
            "gitlab",
            "GitLab REST API v4 (gitlab.com, or a self-managed host as api_url)",
            ("project",),
            ("token", "api_url"),
            {
                name: "incremental: updated_after on updated_at, Link pages"
                for name in ("issues", "merge_requests")
            },
            _gitlab,
        ),
        Preset(
            "feed",
            "any RSS, Atom or JSON Feed URL (url: the feed's address)",
            ("url",),
            (),
            {
                "entries": "snapshot of the feed's entries by guid/id: new and updated ones;"
                " an entry that leaves the feed is not a delete"
            },
            _feed,
        ),
        Preset(
            "microsoft-graph",
            "Microsoft Graph delta query (graph.microsoft.com/v1.0, or api_url)",
            (),
            ("user", "folder", "drive", "start", "end", "api_url"),
            {
                "users": "delta: /users/delta, @odata.nextLink pages, @odata.deltaLink kept",
                "groups": "delta: /groups/delta, as users",
                "messages": "delta: user's mail folder (folder, default inbox); needs user",
                "events": "delta: user's calendarView from start to end; needs user, start, end",
                "drive-items": "delta: the root of drive, or of user's OneDrive; needs drive or"
                " user",
            },
            graph,
            sign_in=GRAPH_SIGN_IN,
        ),
        Preset(
            "google-calendar",
            "Google Calendar API v3 (www.googleapis.com, or api_url)",
            (),
            ("calendar", "api_url"),
            {
                "events": "delta: calendar's events (default primary), syncToken kept,"
                " pageToken pages, 410 resyncs, cancelled deleted"
            },
            google_calendar,
            sign_in=GOOGLE_SIGN_IN,
        ),
        Preset(
            "google-drive",
            "Google Drive API v3 changes (www.googleapis.com, or api_url)",
            (),
            ("api_url",),
            {
                "changes": "delta: from getStartPageToken, pageToken pages, newStartPageToken"
                " kept, removed deleted"
            },
            google_drive,
            sign_in=GOOGLE_SIGN_IN,
        ),
        Preset(
            "dropbox",
            "Dropbox API v2 files (api.dropboxapi.com, or api_url)",
            (),
            ("path", "api_url"),
            {
                "files": "delta: list_folder of path (default the root), then"
                " list_folder/continue with cursor while has_more, .tag deleted"
            },
            dropbox,
            sign_in=DROPBOX_SIGN_IN,
        ),
    )
}

# What a required key looks like, for the message that asks for it.
_HINTS = {
    "repo": "owner/name",
    "shop": "the shop's name, as in NAME.myshopify.com",
    "project": "a project id or path such as group/name",
    "token": "the API token",
    "url": "the feed's URL",
}


def _choices(names: Any) -> str:
    return ", ".join(names)


def _check_inputs(preset: Preset, poll: Mapping[str, Any]) -> Inputs:
    resource = poll.get("resource")
    if resource is None and len(preset.resources) == 1:
        resource = next(iter(preset.resources))  # the only one need not be named
    if resource is None:
        choices = _choices(preset.resources)
        raise PresetError("resource", f"is required by preset {preset.name} (one of {choices})")
    if not isinstance(resource, str) or resource not in preset.resources:
        raise PresetError(
            "resource",
            f'"{resource}" is not a resource of preset {preset.name} '
            f"(one of {_choices(preset.resources)}){_meant(resource, preset.resources)}",
        )
    for key in sorted(INPUT_KEYS & poll.keys()):
        if key not in preset.inputs:
            raise PresetError(key, f"is not a key of preset {preset.name}")
    for key in preset.required:
        if poll.get(key) is None:
            raise PresetError(key, f"is required by preset {preset.name} ({_HINTS[key]})")
    for key in INPUT_KEYS & poll.keys():
        value = poll[key]
        if not isinstance(value, str | int) or isinstance(value, bool) or not str(value).strip():
            raise PresetError(key, "must be non-empty text")
    _check_values(poll)
    return Inputs(resource, {k: poll[k] for k in INPUT_KEYS & poll.keys()})


def _check_values(poll: Mapping[str, Any]) -> None:
    checks = {
        "repo": (_REPO_RE, "is not owner/name"),
        "shop": (_SHOP_RE, "is not a shop name (NAME or NAME.myshopify.com)"),
        "api_version": (_VERSION_RE, "is not an API version such as 2025-10"),
        "api": (_API_RE, "is not rest or graphql"),
    }
    for key, (pattern, message) in checks.items():
        if key in poll and not pattern.match(str(poll[key])):
            raise PresetError(key, f'"{poll[key]}" {message}')
    url = poll.get("api_url")
    if url is not None and not str(url).startswith(("http://", "https://")):
        raise PresetError("api_url", f'"{url}" is not an http(s) URL')


def _merge_entries(
    ours: Mapping[str, Any], theirs: Mapping[str, Any], fold: bool
) -> dict[str, Any]:
    """`ours` with `theirs` over it; `fold`: names compared in any case; `null` removes."""
    out = dict(ours)
    for key, value in theirs.items():
        if fold:
            for existing in [k for k in out if k.lower() == key.lower()]:
                del out[existing]
        out[key] = value
    return {k: v for k, v in out.items() if v is not None}


# The keys of `poll` that only some mode takes, as written in the file.
def _alias(field: str) -> str:
    return PollConfig.model_fields[field].alias or field


_MODE_ONLY = {mode: frozenset(_alias(k) for k in keys) for mode, keys in MODE_KEYS.items()}


def _foreign_keys(mode: str) -> frozenset[str]:
    """The keys a preset may have set that a source of `mode` must not have."""
    others = frozenset().union(*(keys for m, keys in _MODE_ONLY.items() if m != mode))
    return others | NOT_FEED_KEYS if mode == "feed" else others


def merge(preset: Mapping[str, Any], user: Mapping[str, Any]) -> dict[str, Any]:
    """The preset's keys with the user's over them (see the module docstring)."""
    out = dict(preset)
    mode = user.get("mode")
    if isinstance(mode, str) and mode != preset.get("mode", "snapshot") and mode in MODE_KEYS:
        for key in _foreign_keys(mode):
            out.pop(key, None)
    for key, value in user.items():
        if key in _MERGED and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge_entries(out[key], value, fold=key == "headers")
        else:
            out[key] = value
    return out


def _meant(value: Any, known: Mapping[str, Any]) -> str:
    """`; did you mean "x"?` for a misspelt name, else nothing."""
    meant = suggestion(value, list(known)) if isinstance(value, str) else None
    return f'; did you mean "{meant}"?' if meant else ""


def expand(poll: Mapping[str, Any]) -> dict[str, Any]:
    """The plain poll keys of a `poll` mapping that names a preset; raises PresetError."""
    name = poll.get("preset")
    preset = PRESETS.get(name) if isinstance(name, str) else None
    if preset is None:
        raise PresetError(
            "preset", f'"{name}" is not one of {_choices(PRESETS)}{_meant(name, PRESETS)}'
        )
    inputs = _check_inputs(preset, poll)
    user = {k: v for k, v in poll.items() if k not in INPUT_KEYS}
    try:
        built = preset.build(inputs)
    except MissingInput as exc:
        raise PresetError(exc.key, f"{exc} (preset {preset.name})") from None
    return merge(built, user)
