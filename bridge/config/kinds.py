"""The config of a target's kind beyond the webhook's `url`: a broker and where in it.

A target names exactly one kind: `url` (a webhook), `nats` or `redis`. A broker's names
(`subject`, `stream`) may hold `{subject}`, `{type}` and `{source}`, filled per event.
"""

from __future__ import annotations

from typing import Annotated, Literal

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import AfterValidator, BeforeValidator, Field, SecretStr

from bridge.config.values import _Model

# kind -> (the extra that installs its client library, the module it imports); a webhook
# needs none.
EXTRAS = {
    "nats": ("nats", "nats"),
    "redis": ("redis", "redis"),
    "amqp": ("amqp", "aio_pika"),
    "mqtt": ("mqtt", "aiomqtt"),
    "notify": ("notify", "apprise"),
}


def _scheme_check(*schemes: str) -> AfterValidator:
    def check(value: str) -> str:
        if not value.startswith(tuple(f"{s}://" for s in schemes)):
            raise ValueError("is not a " + " or ".join(f"{s}://" for s in schemes) + " URL")
        return value

    return AfterValidator(check)


def _check_nats_subject(value: str) -> str:
    if not value or any(c.isspace() for c in value) or ".." in value:
        raise ValueError("is not a NATS subject (no spaces, no empty token)")
    if value.startswith(".") or value.endswith(".") or "*" in value or ">" in value:
        raise ValueError("is not a NATS subject to publish to (no wildcard, no empty token)")
    return value


NatsURL = Annotated[str, _scheme_check("nats", "tls")]
MqttURL = Annotated[str, _scheme_check("mqtt", "mqtts")]
AmqpURL = Annotated[str, _scheme_check("amqp", "amqps")]
RedisURL = Annotated[str, _scheme_check("redis", "rediss", "unix")]


class NatsTarget(_Model):
    """A NATS JetStream target: each event published to `subject`, delivered on the stream's
    ack; `Nats-Msg-Id` is the event id, so JetStream's duplicate window drops a redelivery."""

    # The server, `nats://HOST:PORT` (credentials as `nats://USER:PASSWORD@HOST`); `tls://` for TLS.
    url: NatsURL
    # The subject each event is published to; `{subject}`, `{type}`, `{source}` are filled.
    subject: Annotated[str, AfterValidator(_check_nats_subject)]
    # The stream expected to store the subject; a publish another stream acks is refused.
    stream: str | None = None


class RedisTarget(_Model):
    """A Redis Streams target: each event added with `XADD`, the entry id Redis returns kept
    as the attempt's answer."""

    # The server, `redis://[:PASSWORD@]HOST:PORT/DB` (`rediss://` for TLS, `unix://` a socket).
    url: RedisURL
    # The stream's key; `{subject}`, `{type}`, `{source}` are filled.
    stream: str = Field(min_length=1)
    # Trim the stream to about this many entries on each add (`MAXLEN ~`); default: no trim.
    maxlen: int | None = Field(None, ge=1)


class AmqpTarget(_Model):
    """A RabbitMQ (AMQP 0-9-1) target: each event published to `exchange` with `routing_key`,
    mandatory and persistent, delivered on the publisher confirm; one no queue takes fails."""

    # The server, `amqp://USER:PASSWORD@HOST:PORT/VHOST` (`amqps://` for TLS).
    url: AmqpURL
    # The exchange to publish to (it must exist); `""` is the default exchange.
    exchange: str
    # The routing key; `{subject}`, `{type}`, `{source}` are filled.
    routing_key: str = Field(max_length=255)


def _check_mqtt_topic(value: str) -> str:
    if not value or "+" in value or "#" in value or "\x00" in value:
        raise ValueError("is not an MQTT topic to publish to (no wildcard + or #)")
    return value


class MqttTarget(_Model):
    """An MQTT 5 target: each event published to `topic` at QoS 1, delivered on the broker's
    PUBACK."""

    # The broker, `mqtt://[USER:PASSWORD@]HOST:PORT` (`mqtts://` for TLS).
    url: MqttURL
    # The topic; `{subject}`, `{type}`, `{source}` are filled.
    topic: Annotated[str, AfterValidator(_check_mqtt_topic)]
    # QoS 1 (at least once, acknowledged by a PUBACK): the only level offered.
    qos: Literal[1] = 1


# A notification's title and body: Jinja2 over the CloudEvent, sandboxed (no code, no
# attribute of Python objects), autoescape off (the text is for people, not HTML).
TEMPLATES = SandboxedEnvironment(autoescape=False, keep_trailing_newline=False)
DEFAULT_TITLE = "{{ type }} from {{ source }}"
DEFAULT_BODY = "{{ subject or id }}\n{{ data | tojson }}"


def _check_template(value: str) -> str:
    try:
        TEMPLATES.parse(value)
    except TemplateSyntaxError as exc:
        raise ValueError(f"is not a template: {exc.message} (line {exc.lineno})") from None
    return value


def _check_notify_urls(values: list[SecretStr]) -> list[SecretStr]:
    if not values:
        raise ValueError("needs at least one Apprise URL")
    for value in values:
        if "://" not in value.get_secret_value():
            raise ValueError("is not an Apprise URL (SCHEMA://...)")
    return values


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, str) else value


# Apprise URLs (`slack://...`, `mailtos://...`, `json://...`): one, or a list, every one
# secret (their tokens are in them), shown as `SCHEMA://***`.
NotifyURLs = Annotated[
    list[SecretStr], BeforeValidator(_one_or_many), AfterValidator(_check_notify_urls)
]
Template = Annotated[str, AfterValidator(_check_template)]
