"""The config's typed models: what each key means, its default, and how it is checked.

Durations are parsed once, here, into seconds (fields ending in `_s`); the rest of the code
carries numbers. Secrets are `SecretStr` and never appear in reprs or error messages.
Reading the file (lines, `${...}`, one-line errors) is in `loader.py`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from bridge.config.auth import Credential
from bridge.config.kinds import (
    AmqpTarget,
    MqttTarget,
    NatsTarget,
    NotifyURLs,
    RedisTarget,
    Template,
)
from bridge.config.outbound import TLSConfig, TracingConfig, check_target_secrets, is_pem
from bridge.config.polling import PollConfig
from bridge.config.values import (
    DEFAULT_RETRY_S,
    Duration,
    HttpURL,
    JMESPath,
    Networks,
    OneOrMany,
    Secrets,
    Size,
    _Model,
    _one_or_many,
)

# -- the server ----------------------------------------------------------------------------

# A `Host` value: a name or an IPv4 address, or an IPv6 address in brackets; then a port.
_HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*"
                   r"|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?")  # fmt: skip


class ServerConfig(_Model):
    """Where the HTTP server listens, and the token that guards the admin routes."""

    # HOST:PORT of the HTTP server: webhooks, the status page, the admin pages, the API.
    listen: str = "127.0.0.1:8080"
    # Guards the status page, the admin pages and the API (bearer token or login); without it they
    # answer only on a loopback-only server, to local clients.
    admin_token: SecretStr | None = None
    # How long an admin pages' session lasts after the login (the cookie's expiry).
    admin_session_s: Duration = Field(12 * 3600.0, alias="admin_session", gt=0)
    # Connections open at once (lowered to fit the open files limit, see bridge/daemon/server.py).
    max_connections: int = Field(1024, ge=1)
    # From the connection (or the next request's first byte) to the end of its headers.
    header_timeout_s: Duration = Field(10.0, alias="header_timeout", gt=0)
    # From the end of the headers to the end of the body.
    body_timeout_s: Duration = Field(30.0, alias="body_timeout", gt=0)
    # Between the end of an answer and the next request on a kept-alive connection.
    idle_timeout_s: Duration = Field(5.0, alias="idle_timeout", gt=0)
    # A request's line and headers, in bytes: more is answered 431 and the connection closed.
    max_header_bytes: Size = Field(64 * 1024, ge=1024)
    # One line per request in the combined log format, under `bridge.http.access`.
    access_log: bool = False
    # Each accepted event (source, event id, type) and each successful delivery (target,
    # event id, delivery id, attempt, status, duration) at info rather than debug; applied by
    # a reload. With `--log-format json` their values are fields of the line.
    log_accepted: bool = False
    # The reverse proxies whose X-Forwarded-For / Forwarded headers name the client; a
    # request from any other address is its own client, whatever its headers say.
    trusted_proxies: Networks = []
    # Host names (`HOST` or `HOST:PORT`) the status page, the admin pages and the API answer
    # to besides loopback's (`127.0.0.1`, `[::1]`, `localhost`): any other `Host` is a 421,
    # so a page of another site cannot reach them by DNS rebinding. Checked without an
    # admin_token always, with one only when the list is given.
    allowed_hosts: Annotated[list[str], BeforeValidator(_one_or_many)] = []

    @field_validator("allowed_hosts")
    @classmethod
    def _check_allowed_hosts(cls, value: list[str]) -> list[str]:
        for i, host in enumerate(value):
            if not _HOST.fullmatch(host.strip().lower()):
                raise ValueError(
                    f"entry {i} ({host!r}) is not a host name or address, with an optional"
                    " :PORT (no scheme, no path)"
                )
        return [host.strip().lower() for host in value]

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


# -- sources ---------------------------------------------------------------------------


Verify = Literal[
    "standard-webhooks",
    "stripe",
    "github",
    "slack",
    "shopify",
    "gitlab",
    "hmac",
    "token",
    "bearer",
    "basic",
    "none",
]
# The header of `verify: token` when the source names none.
DEFAULT_TOKEN_HEADER = "X-Webhook-Token"  # noqa: S105 (a header name)


class WebhookConfig(_Model):
    """How to accept and verify webhooks pushed by a provider."""

    # The URL path that receives this source's webhooks (unique across sources); default
    # /hooks/NAME.
    path: str | None = None
    # The scheme that checks each request's signature, token or credentials.
    verify: Verify
    # One secret or a list; every one is tried, so a rotation is: add the new one, reload, switch
    # the provider, remove the old one. Required unless `verify: none`.
    secrets: Secrets = []
    # Must be true for `verify: none` (a source that accepts anything).
    allow_unsigned: bool = False
    # How far a signed timestamp may be from now, either way (Standard Webhooks, Stripe, Slack).
    tolerance_s: Duration = Field(300.0, alias="tolerance")
    # `verify: hmac`: the header that holds the signature; `verify: token`: the header that holds
    # the token (default X-Webhook-Token).
    header: str | None = None
    # `verify: hmac`: the hash of the HMAC over the raw body.
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha256"
    # `verify: hmac`: how the signature is written.
    encoding: Literal["hex", "base64"] = "hex"
    # `verify: hmac` and `token`: the text before the signature or token in its header (`sha256=`,
    # `Token `).
    prefix: str = ""
    # JMESPath over `{headers: {lower-cased name: value}, body}`: the provider's id of the event
    # (duplicates are dropped by it); default: the scheme's or preset's.
    id: JMESPath | None = None
    # JMESPath over headers and body: the event's type; default: the scheme's or preset's.
    type: JMESPath | None = None
    # JMESPath over headers and body: the event's subject.
    subject: JMESPath | None = None
    # JMESPath over headers and body: when the change happened upstream.
    time: JMESPath | None = None
    # Larger bodies are refused with 413 before they are read.
    max_body: Size = 1024 * 1024
    # The item's version in a `merge` with `match: version` (JMESPath over headers and body).
    version: JMESPath | None = None
    # Only requests from these networks are heard (403 otherwise); empty: from anywhere.
    allow_from: Networks = []

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
            _check_standard_webhooks_keys(self.secrets)
        if self.verify == "basic" and any(":" not in s.get_secret_value() for s in self.secrets):
            raise ValueError("verify: basic needs secrets of the form user:password")
        return self

    @property
    def token_header(self) -> str:
        """The header that carries the token of `verify: token`."""
        return self.header or DEFAULT_TOKEN_HEADER


class SourceConfig(_Model):
    """A source of events: either polled (`poll`) or pushed to the bridge (`webhook`)."""

    # A polled source: the bridge asks an HTTP API on a schedule and diffs the answers.
    poll: PollConfig | None = None
    # A pushed source: the provider posts webhooks to the bridge.
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


def _decoded_key(raw: str, prefix: str) -> bytes:
    import base64
    import binascii

    try:
        return base64.b64decode(raw[len(prefix) :], validate=True)
    except binascii.Error:
        raise ValueError(f"is not a {prefix} secret: its key is not base64") from None


def _check_whsec(values: list[SecretStr]) -> list[SecretStr]:
    if not values:
        raise ValueError("needs at least one whsec_ secret")
    for value in values:
        raw = value.get_secret_value()
        if not raw.startswith("whsec_"):
            raise ValueError("is not a whsec_ secret")
        # The spec asks for 24 to 64 random bytes; refuse keys too short to be secret.
        if len(_decoded_key(raw, "whsec_")) < 16:
            raise ValueError("is not a whsec_ secret: its key is shorter than 16 bytes")
    return values


def _check_standard_webhooks_keys(values: list[SecretStr]) -> None:
    """A source's Standard Webhooks keys: `whsec_` secrets (v1) or `whpk_` public keys (v1a)."""
    for value in values:
        raw = value.get_secret_value()
        if raw.startswith("whpk_"):
            if len(_decoded_key(raw, "whpk_")) != 32:
                raise ValueError("is not a whpk_ key: an Ed25519 public key is 32 bytes")
        elif raw.startswith("whsk_"):
            raise ValueError(
                "holds a whsk_ signing key: give the bridge its public key (whpk_) instead"
            )
        else:
            _check_whsec([value])


class CircuitConfig(_Model):
    """When a failing target's circuit opens, and for how long."""

    # Failed attempts in a row that open the circuit.
    failures: int = Field(5, ge=1)
    # How long an open circuit sends nothing new before one probe; a failed probe doubles it.
    cooldown_s: Duration = Field(30.0, alias="cooldown")
    # The longest the cooldown grows.
    max_cooldown_s: Duration = Field(600.0, alias="max_cooldown")


def _check_keys(values: list[SecretStr]) -> list[SecretStr]:
    # Each key checked where it is written; a webhook without any is the target's mistake.
    return check_target_secrets(values) if values else values


TargetKind = Literal["webhook", "nats", "amqp", "redis", "mqtt", "notify"]
_KIND_KEYS: dict[str, TargetKind] = {
    "url": "webhook",
    "nats": "nats",
    "amqp": "amqp",
    "redis": "redis",
    "mqtt": "mqtt",
    "notify": "notify",
}
_WEBHOOK_ONLY = {"secret": "secrets", "headers": "headers", "tls": "tls"}  # field -> key


class TargetConfig(_Model):
    """Where events are delivered: a webhook (`url`, signed as Standard Webhooks) or a broker
    (`nats`, `amqp`, `redis`, `mqtt`) or a notification (`notify`); exactly one of them."""

    # A webhook: where to POST each delivery.
    url: HttpURL | None = None
    # A NATS JetStream subject: `{url, subject, stream?}`.
    nats: NatsTarget | None = None
    # A RabbitMQ exchange: `{url, exchange, routing_key}`.
    amqp: AmqpTarget | None = None
    # A Redis stream: `{url, stream, maxlen?}`.
    redis: RedisTarget | None = None
    # An MQTT 5 topic: `{url, topic, qos: 1}`.
    mqtt: MqttTarget | None = None
    # A message for people through Apprise: one URL (`slack://...`, `mailtos://...`) or a list;
    # meant for operational events and low-volume sources.
    notify: NotifyURLs | None = None
    # A notification's title: Jinja2 over the CloudEvent (`{{ type }}`, `{{ data.x }}`),
    # sandboxed; default `{{ type }} from {{ source }}`.
    title: Template | None = None
    # A notification's body, the same way; default the subject (or id) and the data as JSON.
    body: Template | None = None
    # A webhook's keys, written `secrets` like a webhook source's (the old spelling `secret` still
    # works); a broker target has none.
    secret: Annotated[Secrets, AfterValidator(_check_keys)] = Field([], alias="secrets")
    # Globs on the event type: the target gets the events that match one.
    events: OneOrMany = ["*"]
    # Only events of these sources (or merges); default: every source.
    sources: OneOrMany | None = None
    # JMESPath over the whole CloudEvent: the event goes to the target only when truthy.
    filter: JMESPath | None = None
    # JMESPath over the whole CloudEvent: its result is the `data` this target receives.
    transform: JMESPath | None = None
    # `subject`: deliveries of one subject go one at a time, in the order recorded.
    ordering: Literal["none", "subject"] = "none"
    # A client certificate for mutual TLS, and a private CA to trust.
    tls: TLSConfig | None = None
    # Extra request headers (secret: masked everywhere).
    headers: dict[str, SecretStr] = {}
    # Written `mode` (the old spelling `format` still works). `structured`: the CloudEvent as the
    # JSON body; `binary`: its `data` as the body, the rest as headers (`ce-*` on HTTP and NATS,
    # `cloudEvents_*` on AMQP, MQTT 5 user properties).
    format: Literal["structured", "binary"] = Field("structured", alias="mode")
    # Per request, from connecting to the end of the answer.
    timeout_s: Duration = Field(15.0, alias="timeout")
    # The delays before each retry; after the last one the delivery is dead.
    retry_s: Annotated[list[Duration], BeforeValidator(_one_or_many)] = Field(
        DEFAULT_RETRY_S, alias="retry"
    )
    # The most requests in flight to this target.
    concurrency: int = Field(16, ge=1)
    # The most requests per second; default: no limit.
    rate: float | None = Field(None, gt=0)
    # The circuit breaker: when a failing target is left alone, and for how long.
    circuit: CircuitConfig = CircuitConfig()

    @model_validator(mode="after")
    def _check_kind(self) -> TargetConfig:
        named = [key for key in _KIND_KEYS if getattr(self, key) is not None]
        if len(named) != 1:
            found = ", ".join(named) if named else "none"
            kinds = ", ".join(_KIND_KEYS)
            raise ValueError(f"needs exactly one of {kinds} (found: {found})")
        if self.kind != "notify" and (self.title is not None or self.body is not None):
            raise ValueError("title and body are for notify targets")
        if self.kind == "webhook":
            if not self.secret:
                raise ValueError("a webhook target needs secrets: at least one whsec_ or whsk_ key")
            return self
        for field, key in _WEBHOOK_ONLY.items():
            if field in self.model_fields_set:
                raise ValueError(f"{key} is for webhooks: a {self.kind} target has none")
        if self.kind in ("redis", "notify") and self.format == "binary":
            raise ValueError(f"mode: binary needs headers: a {self.kind} target has none")
        return self

    @property
    def kind(self) -> TargetKind:
        """What the target is: `webhook` or the broker it publishes to."""
        return next(_KIND_KEYS[key] for key in _KIND_KEYS if getattr(self, key) is not None)

    @property
    def address(self) -> str:
        """The URL the target's kind connects to (shown masked)."""
        if self.nats is not None:
            return self.nats.url
        if self.redis is not None:
            return self.redis.url
        if self.amqp is not None:
            return self.amqp.url
        if self.mqtt is not None:
            return self.mqtt.url
        if self.notify is not None:
            first = self.notify[0].get_secret_value()
            return first.split("://", 1)[0] + "://***"
        assert self.url is not None
        return self.url

    @model_validator(mode="after")
    def _check_credentials(self) -> TargetConfig:
        # Both would be an Authorization header: the HTTP client refuses every request.
        if (
            self.url is not None
            and _has_userinfo(self.url)
            and any(h.lower() == "authorization" for h in self.headers)
        ):
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

    # The polled source.
    poll: str
    # The webhook source that sees the same upstream changes.
    push: str


class MergeConfig(_Model):
    """A provider's webhooks and its polled API as one source: one event per upstream change."""

    # The merged source's name: targets name it in `sources`; its events carry it as `source`.
    name: str
    sources: list[str] = Field(min_length=2, max_length=2)  # a webhook and a polled source
    # What makes a webhook and a poll the same change: the upstream `id` alone, or the id and its
    # `version`.
    match: Literal["id", "version"]


class RetentionConfig(_Model):
    """How long finished events are kept, and how often old ones are deleted.

    `events: 0` keeps every event forever.
    """

    # How long an event is kept after it was recorded, once all its deliveries succeeded.
    events_s: Duration = Field(30 * 86400.0, alias="events")
    # How often old events are deleted.
    every_s: Duration = Field(3600.0, alias="every", gt=0)
    # The delay before the first pruning after a start; tests shorten it.
    first_s: Duration = Field(60.0, alias="first")


class BudgetConfig(_Model):
    """A request budget shared by the sources that name it: at most `requests` per `per`."""

    # How many requests the window allows, over every source that names the budget.
    requests: int = Field(ge=1)
    # The window the requests are counted over (sliding).
    per_s: Duration = Field(alias="per", gt=0)


class LimitsConfig(_Model):
    """How far the bridge honours an upstream's or a target's request to wait."""

    # A `Retry-After`, or a rate-limit reset, further away than this waits this long (and
    # says so): a day is the most the bridge ever waits.
    max_wait_s: Duration = Field(3600.0, alias="max_wait", gt=0, le=86400)


class OperationalConfig(_Model):
    """When the bridge tells of its own troubles as events of source `bridge`, each once per
    change of state."""

    # Failed attempts in a row to one target after which `bridge.delivery.failing` is
    # recorded, once until an attempt to it succeeds again.
    delivery_failing_after: int = Field(3, ge=1)
    # Failed polls in a row after which `bridge.source.failing` is recorded, once until
    # a poll of it succeeds again (`bridge.source.recovered`).
    source_failing_after: int = Field(3, ge=1)
    # Or how long a source has been failing (from its first failed poll) before it is
    # said, whichever comes first.
    source_failing_for_s: Duration = Field(600.0, alias="source_failing_for", gt=0)


# -- the whole file ------------------------------------------------------------------------


class Config(_Model):
    """The whole config file."""

    # The SQLite file, relative to the config file's folder, or a postgresql:// URL.
    database: str = "bridge.db"
    # The HTTP server: where it listens, who may use its pages, its connection limits.
    server: ServerConfig = ServerConfig()
    # The sources of events, by name: each polled or pushed.
    sources: dict[str, SourceConfig] = {}
    # Where events are delivered, by name.
    targets: dict[str, TargetConfig] = {}
    # Pairs of a polled and a pushed source that see the same upstream changes, compared by
    # `bridge latency`.
    compare: list[ComparePair] = []
    # A webhook source and a polled source of one upstream, merged into one source.
    merge: list[MergeConfig] = []
    # Request budgets shared by the polled sources that name them.
    budgets: dict[str, BudgetConfig] = {}
    # OAuth2 clients shared by polled sources (`auth: {credential: NAME}`): one token each.
    credentials: dict[str, Credential] = {}
    # How long the bridge waits when an upstream or a target asks it to.
    limits: LimitsConfig = LimitsConfig()
    # How long events are kept.
    retention: RetentionConfig = RetentionConfig()
    # When the bridge records events about itself (a source failing, a circuit opened).
    operational: OperationalConfig = OperationalConfig()
    # Export spans to an OpenTelemetry collector (the `tracing` extra).
    tracing: TracingConfig | None = None
    # Set by load_config: where the file was, so relative paths resolve against it.
    path: Path | None = Field(None, exclude=True)
    # Set by load_config: what `bridge check` notes about how the file is written (an old
    # spelling, an empty file); no effect on what runs.
    notes: tuple[str, ...] = Field((), exclude=True)

    @property
    def is_empty(self) -> bool:
        """True when the config has no source and no target: nothing to run. Usually a
        mistake (a truncated or emptied file), refused at start and on reload unless the
        daemon runs with `--allow-empty`."""
        return not self.sources and not self.targets

    @property
    def database_path(self) -> str:
        """The database location: a URL as written, or a path resolved against the file."""
        if "://" in self.database or self.database == ":memory:":
            return self.database
        base = self.path.parent if self.path else Path.cwd()
        return str((base / self.database).resolve())

    @cached_property
    def polled(self) -> Mapping[str, PollConfig]:
        """The polled sources, by name (read at every poll: made once per config; a config
        is frozen, and a copy with other sources must not be made with `model_copy`)."""
        return {n: s.poll for n, s in self.sources.items() if s.poll}

    @cached_property
    def push_hints(self) -> frozenset[str]:
        """The sources whose pushed events make a polled source poll at once (`on_push`)."""
        return frozenset(p.on_push for p in self.polled.values() if p.on_push)

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
            if source.poll.auth is not None:
                yield from source.poll.auth.secrets()
    for credential in config.credentials.values():
        yield from credential.oauth2.secrets()
    for target in config.targets.values():
        yield from (s.get_secret_value() for s in target.secret)
        yield from (v.get_secret_value() for v in target.headers.values())
        if target.tls is not None and target.tls.key is not None:
            key = target.tls.key.get_secret_value()
            if is_pem(key):
                yield key
        if target.tls is not None and target.tls.key_password is not None:
            yield target.tls.key_password.get_secret_value()
