"""How many wrong admin tokens are checked: per client and overall, in a sliding window.

A wrong token (at the login form, or as `Authorization: Bearer`) is counted against the
client that sent it (the peer, or the client a trusted proxy names) and against all. Once a
client has had `per_client` wrong tokens within the last `window_s`, or all clients together
`overall`, the next token is not checked at all: it is answered 429 with `Retry-After`,
whether it is right or wrong, until the oldest counted failure leaves the window. A guess
that is not checked teaches nothing, so parallel requests cannot outrun the limit (the
delay after a wrong login only slows one client down); the overall limit also holds against
guesses spread over many addresses.

Only failures that were checked are counted, so at most `overall` are ever kept: memory is
bounded whatever is sent. A session already logged in is not a token and is never
throttled. Pure: the caller gives the clock.
"""

from __future__ import annotations

from collections import deque

# Per client and overall, within one window: a person mistyping stays well below the first,
# and a guesser gets at most `OVERALL` guesses a minute, however many addresses it has.
PER_CLIENT = 10
OVERALL = 30
WINDOW_S = 60.0


class Throttle:
    """The wrong tokens counted in the last `window_s`, and whether the next may be checked."""

    def __init__(
        self, per_client: int = PER_CLIENT, overall: int = OVERALL, window_s: float = WINDOW_S
    ) -> None:
        self.per_client = per_client
        self.overall = overall
        self.window_s = window_s
        self._failures: deque[tuple[float, str]] = deque()  # (at_s, client), oldest first

    def _forget(self, now_s: float) -> None:
        while self._failures and self._failures[0][0] <= now_s - self.window_s:
            self._failures.popleft()

    def wait_s(self, client: str, now_s: float) -> float | None:
        """None when a token from `client` may be checked now, else how long until it may."""
        self._forget(now_s)
        if len(self._failures) >= self.overall:
            return self._failures[0][0] + self.window_s - now_s
        mine = [at_s for at_s, who in self._failures if who == client]
        if len(mine) >= self.per_client:
            return mine[0] + self.window_s - now_s
        return None

    def failed(self, client: str, now_s: float) -> None:
        """Count a wrong token from `client` at `now_s`."""
        self._forget(now_s)
        self._failures.append((now_s, client))

    @property
    def counted(self) -> int:
        """How many wrong tokens the window holds (for tests and the log)."""
        return len(self._failures)
