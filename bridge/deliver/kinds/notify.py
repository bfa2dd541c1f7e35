"""The notify kind: a message for people through Apprise, delivered when every service
accepted it.

Its title and body are Jinja2 templates over the CloudEvent (`{{ type }}`, `{{ data.x }}`),
sandboxed (no code, no attribute of Python objects) with autoescape off: the text is for
people, not HTML. Meant for operational events and low-volume sources: each notification is
one request to each service (Slack, e-mail, Telegram, a JSON webhook, ...).

Apprise's own log lines are turned down: they can name a service's URL, whose tokens are
secret. An attempt's error says how many services failed, never their URLs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import apprise
from jinja2 import Template

from bridge.config.kinds import DEFAULT_BODY, DEFAULT_TITLE, TEMPLATES
from bridge.deliver.kinds import Answer
from bridge.deliver.request import TransformError, transformed

if TYPE_CHECKING:
    from bridge.deliver.targets import Target
    from bridge.events import Event
    from bridge.tracing import TraceContext

logging.getLogger("apprise").setLevel(logging.CRITICAL)


class Notify:
    """Apprise notifications; the templates compiled once per text."""

    def __init__(self) -> None:
        self._templates: dict[str, Template] = {}

    def _render(self, text: str, cloudevent: dict[str, Any]) -> str:
        template = self._templates.get(text)
        if template is None:
            template = self._templates[text] = TEMPLATES.from_string(text)
        try:
            return template.render(cloudevent)
        except Exception as exc:  # TemplateError, SecurityError, 1 / 0 ...
            # A template that fails on this event fails on every retry: dead at once.
            raise TransformError(f"template failed: {type(exc).__name__}: {exc}") from None

    async def send(self, target: Target, event: Event, at_ms: int, trace: TraceContext) -> Answer:
        """Notify every service of the target's `notify` URLs."""
        config = target.config
        assert config.notify is not None
        ce = transformed(event, target.transform) if target.transform else event.to_cloudevent()
        title = self._render(config.title or DEFAULT_TITLE, ce)
        body = self._render(config.body or DEFAULT_BODY, ce)
        services = apprise.Apprise()
        for url in config.notify:
            if not services.add(url.get_secret_value()):
                return Answer(None, error="refused: a notify URL is not one Apprise knows")
        result = await services.async_notify(
            body=body or " ", title=title, timeout=config.timeout_s
        )
        if not result:
            failed = sum(1 for r in _results(result) if not r)
            count = f"{failed} of {len(config.notify)}" if failed else "a"
            return Answer(None, error=f"{count} notification service(s) failed")
        return Answer(None, f"notified {len(config.notify)} service(s)", acked=True)

    async def close(self) -> None:
        """Nothing is kept open."""


def _results(result: object) -> list[object]:
    """The per-service results of Apprise 1.9+ (an older one answers a plain bool)."""
    try:
        return list(result)  # type: ignore[call-overload]
    except TypeError:
        return []


def open_kind() -> Notify:
    """The notify kind."""
    return Notify()
