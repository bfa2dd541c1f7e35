"""Logging set-up: one line per event of note to stderr, as text or JSON, secrets masked.

Under systemd (`$JOURNAL_STREAM` names our stderr) each text line starts with its syslog
priority (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug), which journald reads as the
line's priority (`journalctl -p warning` then works), and leaves the time to journald.

Secrets are kept out of messages by the code that logs; as a safety net every line is also
scrubbed of every secret value in the config (`redact`), in its plain and JSON-escaped forms,
tracebacks included.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from bridge.config import Config, iter_secrets
from bridge.masking import MASK, is_secret_name, mask_text, url_secrets

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}

# uvicorn's loggers, shown under the bridge's own name: its lines are the bridge's HTTP server.
_RENAMED = {
    "uvicorn": "bridge.http",
    "uvicorn.error": "bridge.http",
    "uvicorn.access": "bridge.http",
}


# The fields the bridge's lines carry with `--log-format json`, as they apply (given as
# `extra=` where the values are at hand): which event, from which source, to which target,
# which delivery and attempt, the HTTP status, how long it took, why it failed.
FIELDS = (
    "event_id",
    "source",
    "target",
    "delivery_id",
    "attempt",
    "status",
    "duration_ms",
    "reason",
    "type",
)


def plural(count: int, word: str) -> str:
    """`count` and `word`, with the plural form when count is not 1: `1 target`, `2 deliveries`."""
    if count == 1:
        return f"{count} {word}"
    if word.endswith("y") and word[-2:-1] not in ("a", "e", "o", "u"):
        return f"{count} {word[:-1]}ies"
    return f"{count} {word}s"


def shown_name(name: str) -> str:
    """The logger name a line is shown under: uvicorn's loggers as `bridge.http`."""
    return _RENAMED.get(name, name)


class _Rename(logging.Filter):
    """Shows uvicorn's records under `bridge.http` (the record is changed for every handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.name = shown_name(record.name)
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the `extra` fields of the
    call that apply (None is left out): `event_id`, `source`, `target`, `delivery_id`,
    `attempt`, `status`, `duration_ms`, `reason`, ... (see `FIELDS`)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and value is not None:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        try:
            return json.dumps(out, default=str, ensure_ascii=False, allow_nan=False)
        except ValueError:  # a number that is not finite in an `extra` field: shown as text
            out = {k: str(v) if isinstance(v, float) else v for k, v in out.items()}
            return json.dumps(out, default=str, ensure_ascii=False, allow_nan=False)


# A token of a secret header value (`Bearer <token>`) this long is masked on its own too.
_MIN_TOKEN = 8
_secrets: set[str] = set()
# Replaced whole, never mutated: threads that are logging read one consistent tuple.
_patterns: tuple[str, ...] = ()


def config_secrets(config: Config) -> Iterator[str]:
    """Every secret in the config: its secret fields, URL passwords and credential params."""
    yield from iter_secrets(config)
    urls = [t.address for t in config.targets.values()]
    for source in config.sources.values():
        if source.poll:
            urls.append(source.poll.url)
            for name, value in source.poll.params.items():
                if isinstance(value, str) and is_secret_name(name):
                    yield value
    if "://" in config.database:
        urls.append(config.database)
    for url in urls:
        yield from url_secrets(url)


def redact(values: Iterable[str]) -> None:
    """Mask these secret values in every log line from now on (added to those known)."""
    global _patterns
    for value in values:
        if not value:
            continue
        _secrets.add(value)
        _secrets.update(t for t in value.split() if len(t) >= _MIN_TOKEN)
        if value.startswith("whsec_") and len(value) > len("whsec_"):
            _secrets.add(value.removeprefix("whsec_"))  # the key alone is as secret
    forms = {
        form
        for s in _secrets
        for form in (s, json.dumps(s)[1:-1], json.dumps(s, ensure_ascii=False)[1:-1])
    }
    # Longest first, so a secret that contains another is masked whole.
    _patterns = tuple(sorted(forms, key=len, reverse=True))


def scrub(text: str) -> str:
    """`text` with every known secret value replaced by `***`."""
    for secret in _patterns:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


# syslog(3) priorities of the logging levels (a level between two takes the more severe).
_PRIORITIES = ((logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def syslog_priority(levelno: int) -> int:
    """The syslog priority journald files a record of this level under."""
    for level, priority in _PRIORITIES:
        if levelno >= level:
            return priority
    return 7


def is_journal(stream: Any = None) -> bool:
    """Whether `stream` (stderr) is the journal's: `$JOURNAL_STREAM` is its device and inode."""
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        stat = os.fstat((stream or sys.stderr).fileno())
        return (stat.st_dev, stat.st_ino) == (int(device), int(inode))
    except (ValueError, OSError, AttributeError):
        return False


class JournalFormatter(logging.Formatter):
    """Text lines for journald: each line of a record prefixed with its priority, no time."""

    def __init__(self) -> None:
        super().__init__("%(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        # A traceback's lines reach journald as lines of their own: each carries the priority.
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


class RedactingFormatter(logging.Formatter):
    """Formats with `inner`, then masks every URL (`mask_url`) and known secret in the line."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return scrub(mask_text(self.inner.format(record)))


def configure(
    level: str = "info",
    fmt: str = "text",
    secrets: Iterable[str] = (),
    handler: logging.Handler | None = None,
) -> None:
    """Send the bridge's logs to stderr (or `handler`: the demo's file) at `level`, as `text`
    or `json`, masking `secrets`, uvicorn's lines under the bridge's names."""
    redact(secrets)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
    inner: logging.Formatter
    if fmt == "json":
        inner = JSONFormatter()
    elif isinstance(handler, logging.StreamHandler) and is_journal(handler.stream):
        inner = JournalFormatter()
    else:
        inner = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    handler.setFormatter(RedactingFormatter(inner))
    handler.addFilter(_Rename())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries speak only when something is wrong.
    for noisy in ("httpx", "httpcore", "apscheduler", "uvicorn.access", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").setLevel(max(logging.INFO, root.level))
    # asyncio's debug lines are noise at `--log-level debug`; its warnings still show.
    logging.getLogger("asyncio").setLevel(max(logging.INFO, root.level))
    # The access log (`server.access_log`) is always at info, whatever the level.
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO)


# The logger of the access log's lines, in the combined log format.
ACCESS_LOGGER = "bridge.http.access"
