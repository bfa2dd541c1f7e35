"""The config's typed models: what each key means, its default, and how it is checked.

Durations are parsed once, here, into seconds (fields ending in `_s`); the rest of the code
carries numbers. Secrets are `SecretStr` and never appear in reprs or error messages.
Reading the file (lines, `${...}`, one-line errors) is in `loader.py`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

import jmespath
import jmespath.exceptions
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    field_validator,
    model_validator,
)

from bridge.config.outbound import TLSConfig, TracingConfig, check_target_secrets, is_pem
from bridge.masking import mask_url

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*\Z")
_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*\Z")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE_RE = re.compile(r"\s*(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?\s*\Z", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2,
    "gb": 1000**3, "gib": 1024**3,
}  # fmt: skip
# Keys whose values are secret: masked in every message.
SECRET_KEYS = frozenset(
    {"secret", "secrets", "admin_token", "token", "password", "headers", "params", "key"}
)


DEFAULT_RETRY_S = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]


# -- value types ---------------------------------------------------------------------------


def parse_duration(value: Any) -> float:
    """Turn `250ms`, `5s`, `2m`, `1h`, `1d` or a number of seconds into seconds."""
    if isinstance(value, bool):
        raise ValueError("is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError("is not a duration (use 250ms, 5s, 2m, 1h or a number of seconds)")
    if seconds < 0:
        raise ValueError("is not a duration: it is negative")
    return seconds


def parse_size(value: Any) -> int:
    """Turn `1MiB`, `512KiB`, `1000` (bytes) into a number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and (m := _SIZE_RE.match(value)):
        unit = m.group(2).lower() if m.group(2) else None
        return int(m.group(1)) * _SIZE_UNITS[unit]
    raise ValueError("is not a size (use a number of bytes, or 64KiB, 1MiB)")


def _check_jmespath(value: str) -> str:
    try:
        jmespath.compile(value)
    except jmespath.exceptions.JMESPathError as exc:
        raise ValueError(f"is not a valid JMESPath expression ({exc.__class__.__name__})") from None
    return value


def field_path(expression: str) -> tuple[str, ...]:
    """The field names of a plain JMESPath field path (`a`, `a.b`, `"x-y"`); else ValueError."""
    out: list[str] = []
    todo: list[Any] = [jmespath.compile(expression).parsed]
    while todo:
        node = todo.pop(0)
        if node["type"] == "field":
            out.append(node["value"])
        elif node["type"] == "subexpression":
            todo[:0] = node["children"]
        else:
            raise ValueError(f'{expression!r} is not a field path (use a, a.b or "a-b")')
    return tuple(out)


def _check_http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("is not an http(s) URL")
    return value


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
JMESPath = Annotated[str, AfterValidator(_check_jmespath)]
HttpURL = Annotated[str, AfterValidator(_check_http_url)]
Secrets = Annotated[list[SecretStr], BeforeValidator(_one_or_many)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # A URL may carry a password or a token: reprs show it masked, like every output.
        for name, value in super().__repr_args__():
            yield name, mask_url(value) if isinstance(value, str) and "://" in value else value


# -- the server ----------------------------------------------------------------------------


class ServerConfig(_Model):
    """Where the HTTP server listens, and the token that guards the admin routes."""

    listen: str = "127.0.0.1:8080"
    admin_token: SecretStr | None = None
    # Connections open at once (lowered to fit the open files limit, see bridge/daemon/server.py).
    max_connections: int = Field(1024, ge=1)
    # From the connection (or the next request's first byte) to the end of its headers.
    header_timeout_s: Duration = Field(10.0, alias="header_timeout", gt=0)
    # From the end of the headers to the end of the body.
    body_timeout_s: Duration = Field(30.0, alias="body_timeout", gt=0)
    # Between the end of an answer and the next request on a kept-alive connection.
    idle_timeout_s: Duration = Field(5.0, alias="idle_timeout", gt=0)

    @field_validator("listen", mode="before")
    @classmethod
    def _check_listen(cls, value: Any) -> str:
        value = str(value)
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("is not HOST:PORT")
        return value

    @property
    def host(self) -> str:
        """The host part of `listen`, without IPv6 brackets."""
        return self.listen.rpartition(":")[0].strip("[]") or "127.0.0.1"

    @property
    def port(self) -> int:
        """The port part of `listen`."""
        return int(self.listen.rpartition(":")[2])


# -- sources -------------------------------------------------------------------------------


class AdaptiveEvery(_Model):
    """An adaptive poll interval: fast right after a change, slower while nothing changes."""

    min_s: Duration = Field(alias="min")
    max_s: Duration = Field(alias="max")

    @model_validator(mode="after")
    def _check_order(self) -> AdaptiveEvery:
        if self.min_s <= 0 or self.max_s < self.min_s:
            raise ValueError("needs 0 < min <= max")
        return self


class NextUrlPages(_Model):
    """Pagination by a next-page URL found in the answer."""

    next_url: JMESPath


class CursorPages(_Model):
    """Pagination by a cursor found in the answer, sent back as a query parameter."""

    cursor: JMESPath
    param: str


Change = Literal["created", "updated", "deleted"]
Mode = Literal["snapshot", "incremental", "feed"]


class IncrementalCursor(_Model):
    """Where an incremental poll starts: a watermark over an item field, sent as a parameter."""

    field: JMESPath
    param: str
    format: Literal["rfc3339", "unix", "unix_ms"] = "rfc3339"
    # Sent: the watermark minus this, for eventually consistent APIs and clock skew.
    lookback_s: Duration = Field(60.0, alias="lookback")
    # The first poll asks for what changed this long ago and since (0: from now).
    start_s: Duration = Field(0.0, alias="start")


class FeedAfter(_Model):
    """Ask the feed for what follows the last event seen, by its id in a query parameter."""

    param: str


class FeedConfig(_Model):
    """An append-only list of upstream events: each item is one event with its own id."""

    type: JMESPath
    order: Literal["newest_first", "oldest_first"] = "newest_first"
    after: FeedAfter | None = None
    # The id sent as `after` is the newest one at least this much older than the newest seen,
    # for feeds where events become visible late (Stripe: about a minute).
    lookback_s: Duration = Field(0.0, alias="lookback")


# The keys of `poll` that only one mode takes.
MODE_KEYS: dict[str, frozenset[str]] = {
    "snapshot": frozenset(),
    "incremental": frozenset({"cursor", "reconcile_s"}),
    "feed": frozenset({"feed", "subject"}),
}
# The keys that a feed, whose items are events and not versions of an item, has no use for.
NOT_FEED_KEYS = frozenset({"version", "ignore", "emit", "type"})


def _every_kind(value: Any) -> str:
    return "adaptive" if isinstance(value, dict | AdaptiveEvery) else "fixed"


def _pages_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "next_url" if "next_url" in value else "cursor"
    if isinstance(value, NextUrlPages):
        return "next_url"
    return "cursor" if isinstance(value, CursorPages) else "link"


Every = Annotated[
    Annotated[Duration, Tag("fixed")] | Annotated[AdaptiveEvery, Tag("adaptive")],
    Discriminator(_every_kind),
]
Pages = Annotated[
    Annotated[Literal["link"], Tag("link")]
    | Annotated[NextUrlPages, Tag("next_url")]
    | Annotated[CursorPages, Tag("cursor")],
    Discriminator(_pages_kind),
]


class PollConfig(_Model):
    """How to poll an HTTP API that has no webhooks, and how to diff its answers."""

    url: HttpURL
    method: str = "GET"
    headers: dict[str, SecretStr] = {}
    # Query parameters often carry API keys: kept out of reprs and error messages.
    params: dict[str, str | int | float | bool] = Field({}, repr=False)
    timeout_s: Duration = Field(10.0, alias="timeout")
    every: Every
    jitter_s: Duration = Field(0.0, alias="jitter")
    items: JMESPath | None = None
    id: JMESPath
    version: JMESPath | None = None
    ignore: Annotated[list[JMESPath], BeforeValidator(_one_or_many)] = []
    time: JMESPath | None = None
    emit: list[Change] = ["created", "updated", "deleted"]
    type: str = "{source}.{change}"
    pages: Pages | None = None
    max_pages: int = Field(100, ge=1)
    # What one poll may read, over all its pages, before it is a fault (`too_large`).
    max_bytes: Size = 64 * 1024 * 1024
    # Same-origin redirects only; a redirect to another origin is never followed.
    follow_redirects: bool = False
    baseline: Literal["silent", "emit"] = "silent"
    on_push: str | None = None
    mode: Mode = "snapshot"
    cursor: IncrementalCursor | None = None
    reconcile_s: Duration | None = Field(None, alias="reconcile")
    feed: FeedConfig | None = None
    subject: JMESPath | None = None
    # Send If-None-Match / If-Modified-Since. Default: only for a source without `pages`;
    # true with `pages` is right only when any change alters page 1 (newest-changed first).
    conditional: bool | None = None
    # The provider preset this source was expanded from (config/presets.py), and its
    # resource: shown by `bridge check`, no effect of their own.
    preset: str | None = None
    resource: str | None = None
    # The name of a top-level `budgets` entry this source's requests count against.
    budget: str | None = None

    @property
    def sends_validators(self) -> bool:
        """Whether polls send the validators of the previous answer."""
        return self.conditional if self.conditional is not None else self.pages is None

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
        if self.reconcile_s is not None and self.reconcile_s <= 0:
            raise ValueError("reconcile must be more than 0")
        if self.resource is not None and self.preset is None:
            raise ValueError("resource needs preset")
        return self

    @field_validator("every")
    @classmethod
    def _check_every(cls, value: float | AdaptiveEvery) -> float | AdaptiveEvery:
        if isinstance(value, float) and value <= 0:
            raise ValueError("must be more than 0")
        return value


Verify = Literal["standard-webhooks", "stripe", "github", "slack", "shopify", "hmac", "none"]


class WebhookConfig(_Model):
    """How to accept and verify webhooks pushed by a provider."""

    path: str | None = None
    verify: Verify
    secrets: Secrets = []
    allow_unsigned: bool = False
    tolerance_s: Duration = Field(300.0, alias="tolerance")
    header: str | None = None
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""
    id: JMESPath | None = None
    type: JMESPath | None = None
    subject: JMESPath | None = None
    time: JMESPath | None = None
    max_body: Size = 1024 * 1024
    # The item's version in a `merge` with `match: version` (JMESPath over headers and body).
    version: JMESPath | None = None

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must start with /")
        return value

    @model_validator(mode="after")
    def _check_verify(self) -> WebhookConfig:
        if self.verify == "none" and not self.allow_unsigned:
            raise ValueError("verify: none needs allow_unsigned: true")
        if self.verify not in ("none",) and not self.secrets:
            raise ValueError(f"verify: {self.verify} needs at least one secret in secrets")
        if any(not s.get_secret_value() for s in self.secrets):
            # An empty key would let anyone sign (e.g. an unset ${VAR:-}).
            raise ValueError("secrets must not be empty")
        if self.verify == "hmac" and not self.header:
            raise ValueError("verify: hmac needs header")
        if self.verify == "standard-webhooks":
            _check_whsec(self.secrets)
        return self


class SourceConfig(_Model):
    """A source of events: either polled (`poll`) or pushed to the bridge (`webhook`)."""

    poll: PollConfig | None = None
    webhook: WebhookConfig | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SourceConfig:
        if (self.poll is None) == (self.webhook is None):
            raise ValueError("needs exactly one of poll or webhook")
        return self

    @property
    def kind(self) -> Literal["poll", "webhook"]:
        """`poll` or `webhook`."""
        return "poll" if self.poll is not None else "webhook"


# -- targets -------------------------------------------------------------------------------


def _check_whsec(values: list[SecretStr]) -> list[SecretStr]:
    import base64
    import binascii

    if not values:
        raise ValueError("needs at least one whsec_ secret")
    for value in values:
        raw = value.get_secret_value()
        if not raw.startswith("whsec_"):
            raise ValueError("is not a whsec_ secret")
        try:
            key = base64.b64decode(raw[len("whsec_") :], validate=True)
        except binascii.Error:
            raise ValueError("is not a whsec_ secret: its key is not base64") from None
        # The spec asks for 24 to 64 random bytes; refuse keys too short to be secret.
        if len(key) < 16:
            raise ValueError("is not a whsec_ secret: its key is shorter than 16 bytes")
    return values


class CircuitConfig(_Model):
    """When a failing target's circuit opens, and for how long."""

    failures: int = Field(5, ge=1)
    cooldown_s: Duration = Field(30.0, alias="cooldown")
    max_cooldown_s: Duration = Field(600.0, alias="max_cooldown")


class TargetConfig(_Model):
    """Where events are delivered, signed as Standard Webhooks."""

    url: HttpURL
    secret: Annotated[Secrets, AfterValidator(check_target_secrets)]
    events: list[str] = ["*"]
    sources: list[str] | None = None
    # JMESPath over the whole CloudEvent: the event goes to the target only when truthy.
    filter: JMESPath | None = None
    # JMESPath over the whole CloudEvent: its result is the `data` this target receives.
    transform: JMESPath | None = None
    # `subject`: deliveries of one subject go one at a time, in the order recorded.
    ordering: Literal["none", "subject"] = "none"
    tls: TLSConfig | None = None
    headers: dict[str, SecretStr] = {}
    format: Literal["structured", "binary"] = "structured"
    timeout_s: Duration = Field(15.0, alias="timeout")
    retry_s: list[Duration] = Field(DEFAULT_RETRY_S, alias="retry")
    concurrency: int = Field(16, ge=1)
    rate: float | None = Field(None, gt=0)
    circuit: CircuitConfig = CircuitConfig()

    @model_validator(mode="after")
    def _check_credentials(self) -> TargetConfig:
        # Both would be an Authorization header: the HTTP client refuses every request.
        if _has_userinfo(self.url) and any(h.lower() == "authorization" for h in self.headers):
            raise ValueError(
                "has credentials in its url and an authorization header: keep one of them"
            )
        return self


def _has_userinfo(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.username is not None or parts.password is not None


class ComparePair(_Model):
    """Two sources that see the same upstream changes, one polled and one pushed."""

    poll: str
    push: str


class MergeConfig(_Model):
    """A provider's webhooks and its polled API as one source: one event per upstream change."""

    name: str
    sources: list[str] = Field(min_length=2, max_length=2)  # a webhook and a polled source
    match: Literal["id", "version"]


class RetentionConfig(_Model):
    """How long finished events are kept, and how often old ones are deleted.

    `events: 0` keeps every event forever.
    """

    events_s: Duration = Field(30 * 86400.0, alias="events")
    every_s: Duration = Field(3600.0, alias="every", gt=0)
    # The delay before the first pruning after a start; tests shorten it.
    first_s: Duration = Field(60.0, alias="first")


class BudgetConfig(_Model):
    """A request budget shared by the sources that name it: at most `requests` per `per`."""

    requests: int = Field(ge=1)
    per_s: Duration = Field(alias="per", gt=0)


# -- the whole file ------------------------------------------------------------------------


class Config(_Model):
    """The whole config file."""

    database: str = "bridge.db"
    server: ServerConfig = ServerConfig()
    sources: dict[str, SourceConfig] = {}
    targets: dict[str, TargetConfig] = {}
    compare: list[ComparePair] = []
    merge: list[MergeConfig] = []
    budgets: dict[str, BudgetConfig] = {}
    retention: RetentionConfig = RetentionConfig()
    tracing: TracingConfig | None = None
    # Set by load_config: where the file was, so relative paths resolve against it.
    path: Path | None = Field(None, exclude=True)

    @property
    def database_path(self) -> str:
        """The database location: a URL as written, or a path resolved against the file."""
        if "://" in self.database or self.database == ":memory:":
            return self.database
        base = self.path.parent if self.path else Path.cwd()
        return str((base / self.database).resolve())

    def merge_of(self, source: str) -> MergeConfig | None:
        """The merge a source belongs to, if any."""
        return next((m for m in self.merge if source in m.sources), None)

    def webhook_path(self, name: str) -> str:
        """The URL path where the webhook source `name` listens."""
        hook = self.sources[name].webhook
        assert hook is not None
        return hook.path or f"/hooks/{name}"


def iter_secrets(config: Config) -> Iterator[str]:
    """Every secret value in the config, for tests and log scrubbing."""
    if config.server.admin_token:
        yield config.server.admin_token.get_secret_value()
    for source in config.sources.values():
        if source.webhook:
            yield from (s.get_secret_value() for s in source.webhook.secrets)
        if source.poll:
            yield from (v.get_secret_value() for v in source.poll.headers.values())
    for target in config.targets.values():
        yield from (s.get_secret_value() for s in target.secret)
        yield from (v.get_secret_value() for v in target.headers.values())
        if target.tls is not None and target.tls.key is not None:
            key = target.tls.key.get_secret_value()
            if is_pem(key):
                yield key
