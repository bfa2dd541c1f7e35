"""How a URL, or a text that may hold one, is shown anywhere: with its secrets masked.

One function decides how every URL is shown (`bridge check`, `bridge targets`, logs,
`bridge status`, the status page, reprs, error messages): `mask_url`. It masks

- the password of the user-info (`https://user:***@host/`), and a user-info without a
  password whole (`https://***@host/`: a token written as the user, as GitHub's are),
- the value of every query parameter whose name looks like a credential (`api_key=***`,
  `access_token=***`, `X-Amz-Signature=***`, OAuth's `code=***`: see `is_secret_name`),
- the path segments that carry the secret of a known webhook host (Slack's
  `hooks.slack.com/services/T.../B.../***`, Discord's, Teams', Telegram's bot token, ...:
  `SECRET_PATHS`), and every path segment that looks random enough to be a key (see
  `looks_random`),
- every part (user, path segment, parameter value) equal to a configured secret, and any
  longer secret found inside the URL.

Over-masking is cheap and leaking is not: a name that merely contains `key` (`monkey`) is
masked too. This module imports nothing of the bridge, so every layer may use it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

MASK = "***"

# A query parameter whose lower-cased name contains one of these carries a credential.
SECRET_PARAM_WORDS = (
    "token", "key", "secret", "pass", "pwd", "sig", "auth", "credential", "session", "jwt",
    "bearer", "code",
)  # fmt: skip

# Hosts whose incoming-webhook URLs carry their secret in the path: the host (or, written
# `.name`, any host under it) and how many leading path segments are not secret (`services`
# of Slack's `/services/T000/B000/XXXX`). Every segment after those is masked.
SECRET_PATHS = {
    "hooks.slack.com": 1,  # /services/T/B/secret, /workflows/..., /triggers/...
    "discord.com": 2,  # /api/webhooks/ID/token
    "discordapp.com": 2,
    ".webhook.office.com": 1,  # /webhookb2/GUID@GUID/IncomingWebhook/HEX/GUID
    "outlook.office.com": 1,
    "api.telegram.org": 0,  # /bot<token>/sendMessage
    "hooks.zapier.com": 2,  # /hooks/catch/ID/secret/
    "maker.ifttt.com": 0,  # /trigger/EVENT/with/key/KEY
    ".logic.azure.com": 0,  # workflow triggers, their `sig` parameter masked too
}

# A path segment at least this long, of letters and digits mixed like a generated key, is
# masked wherever it appears (ids of that shape are masked too: over-masking is cheap).
MIN_RANDOM = 20
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_\-.~+=%]+")

# A configured secret this long is masked wherever it appears in a URL or text, not only as a
# whole part (shorter ones only as a whole part, so `x` does not mangle every URL).
MIN_EMBEDDED = 8

# A URL inside free text (an exception's message): scheme://, then up to a space or quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>`]+")


def is_secret_name(name: str) -> bool:
    """True when a query parameter (or header) named `name` looks like it carries a secret."""
    lowered = name.lower()
    return any(word in lowered for word in SECRET_PARAM_WORDS)


def looks_random(segment: str) -> bool:
    """True when a path segment looks like a generated key: at least `MIN_RANDOM` characters
    of a token's alphabet, with digits among letters, and both cases or 32 characters or more
    (`abcdefGHIJKLmnop1234QRST`, a 40-character hex digest; not `customer-subscriptions`)."""
    if len(segment) < MIN_RANDOM or not _TOKEN_CHARS.fullmatch(segment):
        return False
    has_digit = any(c.isdigit() for c in segment)
    has_letter = any(c.isalpha() for c in segment)
    mixed_case = any(c.islower() for c in segment) and any(c.isupper() for c in segment)
    return has_digit and has_letter and (mixed_case or len(segment) >= 32)


def _kept_segments(host: str) -> int | None:
    """How many leading path segments of a known secret-bearing `host` are shown, or None."""
    host = host.lower().rstrip(".")
    for name, kept in SECRET_PATHS.items():
        if host == name or (name.startswith(".") and host.endswith(name)):
            return kept
    return None


def url_secrets(url: str) -> Iterator[str]:
    """The secret values written in `url`: its password (or a user without one, as long as
    a token) and its credential parameters."""
    try:
        parts = urlsplit(url)
        password, user = parts.password, parts.username
    except ValueError:
        return
    if password:
        yield from {password, unquote(password)}
    elif user and len(user) >= MIN_RANDOM:
        # Only a user as long as a token is scrubbed from every text: `postgres` is a name.
        yield from {user, unquote(user)}
    for name, _, value in _params(parts.query):
        if value and is_secret_name(unquote_plus(name)):
            yield from {value, unquote_plus(value)}


def _params(query: str) -> Iterator[tuple[str, str, str]]:
    """The raw `name`, `=` (or "") and `value` of each `&`-separated parameter."""
    for param in query.split("&") if query else ():
        name, sep, value = param.partition("=")
        yield name, sep, value


def _is_known(raw: str, secrets: Collection[str]) -> bool:
    return bool(raw) and (raw in secrets or unquote_plus(raw) in secrets)


def _mask_netloc(netloc: str, secrets: Collection[str]) -> str:
    if "@" not in netloc:
        return netloc
    userinfo, host = netloc.rsplit("@", 1)
    user, has_password, _password = userinfo.partition(":")
    if not has_password:
        # A user alone is a credential more often than a name (`https://ghp_...@github.com`).
        return f"{MASK}@{host}"
    if _is_known(user, secrets):
        user = MASK
    return f"{user}:{MASK}@{host}"


def _mask_query(query: str, secrets: Collection[str]) -> str:
    return "&".join(
        f"{name}{sep}{MASK}"
        if sep and (is_secret_name(unquote_plus(name)) or _is_known(value, secrets))
        else f"{name}{sep}{value}"
        for name, sep, value in _params(query)
    )


def _mask_path(path: str, host: str, secrets: Collection[str]) -> str:
    kept = _kept_segments(host)
    segments = path.split("/")  # the first is the "" before the leading `/`
    return "/".join(
        MASK
        if seg and ((kept is not None and i > kept) or looks_random(seg) or _is_known(seg, secrets))
        else seg
        for i, seg in enumerate(segments)
    )


def mask_url(url: str, secrets: Iterable[str] = ()) -> str:
    """`url` as it may be shown: password, credential parameters and `secrets` as `***`.

    Text that is not a URL (a file path) is returned as it is; a URL that cannot be parsed
    is shown as its scheme alone (`https://***`). The parts are masked as written: a port
    that is not a number does not stop the password from being masked.
    """
    known = frozenset(s for s in secrets if s)
    if "://" not in url:
        return scrub(url, known)
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed `[` of an IPv6 host
        return url.split("://", 1)[0] + "://" + MASK
    masked = urlunsplit(
        (
            parts.scheme,
            _mask_netloc(parts.netloc, known),
            _mask_path(parts.path, parts.hostname or "", known),
            _mask_query(parts.query, known),
            _mask_query(parts.fragment, known),
        )
    )
    return scrub(masked, known)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret of at least `MIN_EMBEDDED` characters replaced by `***`."""
    for secret in sorted((s for s in secrets if len(s) >= MIN_EMBEDDED), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """A message with every URL in it masked (`mask_url`) and every long secret scrubbed."""
    known = frozenset(s for s in secrets if s)

    def mask(match: re.Match[str]) -> str:
        url = match.group(0)
        # Punctuation that ends a sentence is not part of the URL.
        core = url.rstrip(".,;:)]}")
        return mask_url(core, known) + url[len(core) :]

    return scrub(_URL_IN_TEXT.sub(mask, text), known)
