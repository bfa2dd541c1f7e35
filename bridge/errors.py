"""The bridge's exceptions, one tree.

    BridgeError
     ├── ConfigError            the config file is invalid; the CLI exits with status 2
     │    └── ConfigErrors      several mistakes at once, one ConfigError each
     ├── StoreError             the store failed to do what was asked
     │    └── StoreUnavailable  busy, locked or out of space: try again later (HTTP 503)
     ├── FetchError             a poll's request failed or its answer was unusable
     ├── VerificationError      an inbound request's signature or timestamp is not valid
     │    └── MalformedSignature  its signature header is not worth verifying (HTTP 400)
     ├── SendError              `bridge send` cannot sign or post a test webhook
     ├── StartupError           the daemon could not start (port taken, database not writable)
     └── MissingExtra           a feature needs an optional dependency that is not installed

Messages are for people and never carry a secret. The CLI and the HTTP layer are the only
places that turn these into exit codes and responses.
"""

from __future__ import annotations


class BridgeError(Exception):
    """The base of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    """The config file is invalid; the message names the file, line and key path."""

    def __init__(self, file: str, line: int | None, path: str, message: str) -> None:
        self.file = file
        self.line = line
        self.path = path
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigErrors(ConfigError):
    """Several mistakes in one config file: `errors`, one line each, in the file's order."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        first = errors[0]
        super().__init__(first.file, first.line, first.path, first.message)

    def __str__(self) -> str:
        return "\n".join(str(error) for error in self.errors)


def config_mistakes(error: ConfigError) -> list[ConfigError]:
    """Each mistake `error` stands for: itself, or the ones of a `ConfigErrors`."""
    return list(error.errors) if isinstance(error, ConfigErrors) else [error]


class StoreError(BridgeError):
    """The store failed to do what was asked."""


class StoreUnavailable(StoreError):
    """The store cannot commit right now (busy, locked, disk full); try again later."""


class FetchError(BridgeError):
    """A poll's request failed or its answer could not be used; the state is left untouched."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
        reason: str = "fetch",
    ):
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s
        # A short word for metrics labels: timeout, connection, status, throttled, json, ...
        self.reason = reason
        # Epoch seconds before which the upstream's rate-limit headers asked not to poll again.
        self.not_before_s: float | None = None


class VerificationError(BridgeError):
    """An inbound request's signature or timestamp is not valid."""


class MalformedSignature(VerificationError):
    """An inbound request's signature header is refused before any verification (too many
    entries): a 400, not a 401, since no secret was tried."""


class SendError(BridgeError):
    """`bridge send` cannot sign its request (no usable secret) or post it."""


class StartupError(BridgeError):
    """The daemon could not start."""


class MissingExtra(BridgeError):
    """A feature needs an optional dependency (an extra such as `plot`) not installed."""

    def __init__(self, feature: str, module: str, extra: str) -> None:
        # The distribution is installed from its checkout: no index has it under this name.
        super().__init__(
            f"{feature} needs {module}, which is not installed:"
            f" pip install '.[{extra}]' (from the bridge's checkout)"
        )
        self.extra = extra
