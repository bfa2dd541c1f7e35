"""sd_notify: tell systemd that the bridge is ready, reloading, stopping or still alive.

systemd passes `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace) to a
`Type=notify` service; the service sends datagrams of newline-separated `KEY=VALUE` lines to
it. `WATCHDOG_USEC` (with `WATCHDOG_PID`) asks for a `WATCHDOG=1` at least that often; we
send one from the event loop at half the interval, so a loop that hangs stops pinging and
systemd restarts the service. Without `NOTIFY_SOCKET` every call here does nothing.

The protocol is small enough that a library would add more than it saves: one socket, one
`sendto` per message (see sd_notify(3)).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("bridge.notify")


def socket_address(value: str) -> str | bytes | None:
    """The address to send to for a `NOTIFY_SOCKET` value, or None when it is not usable."""
    if value.startswith("@") and len(value) > 1:
        # The abstract namespace: a leading NUL byte instead of the '@'.
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def format_message(fields: Mapping[str, str | int]) -> bytes:
    """`{"READY": 1, "STATUS": "ok"}` -> `b"READY=1\\nSTATUS=ok"`; values kept to one line."""
    lines = []
    for key, value in fields.items():
        text = " ".join(str(value).split()) if key == "STATUS" else str(value)
        lines.append(f"{key}={text}")
    return "\n".join(lines).encode()


def watchdog_interval_s(env: Mapping[str, str], pid: int) -> float | None:
    """How often to send `WATCHDOG=1` (half of `WATCHDOG_USEC`), or None when not asked to."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    # The watchdog may be meant for another process (a parent that exec'd us is fine).
    owner = env.get("WATCHDOG_PID", "")
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(usec) / 2 / 1_000_000


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as systemd wants with `RELOADING=1`."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends sd_notify messages to systemd; does nothing when not run by systemd."""

    def __init__(self, address: str | bytes | None, watchdog_s: float | None = None) -> None:
        self.address = address
        self.watchdog_s = watchdog_s if address is not None else None
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """The notifier systemd asked for through `NOTIFY_SOCKET` and `WATCHDOG_USEC`."""
        env = os.environ if env is None else env
        value = env.get("NOTIFY_SOCKET", "")
        address = socket_address(value) if value else None
        if value and address is None:
            log.warning("NOTIFY_SOCKET %r is not a path or @name; not notifying systemd", value)
        return cls(address, watchdog_interval_s(env, os.getpid()))

    @property
    def is_enabled(self) -> bool:
        """True when there is a socket to notify."""
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """Send one message; True when it was sent. Failures are logged once, never raised."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # A full queue at systemd's end must never block the event loop.
                self._sock.setblocking(False)
            self._sock.sendto(format_message(fields), self.address)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify systemd: %s", exc.strerror or exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str) -> bool:
        """The service is up (after start, and after a reload)."""
        return self.send(READY=1, STATUS=status)

    def reloading(self, status: str = "reloading the config") -> bool:
        """A reload began; systemd wants the monotonic time with it."""
        return self.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec(), STATUS=status)

    def stopping(self, status: str = "stopping") -> bool:
        """The service is shutting down."""
        return self.send(STOPPING=1, STATUS=status)

    def status(self, text: str) -> bool:
        """A one-line summary shown by `systemctl status`."""
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        """Still alive."""
        return self.send(WATCHDOG=1)

    async def keep_alive(self) -> None:
        """Send `WATCHDOG=1` from the event loop every half interval, until cancelled."""
        if self.watchdog_s is None:
            return
        log.debug("pinging the systemd watchdog every %.3f s", self.watchdog_s)
        while True:
            self.watchdog()
            await asyncio.sleep(self.watchdog_s)

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
