"""How a URL, or a text that may hold one, is shown anywhere: with its secrets masked.

One function decides how every URL is shown (`bridge check`, `bridge targets`, logs,
`bridge status`, the status page, reprs, error messages): `mask_url`. It masks

- the password of the user-info (`https://user:***@host/`),
- the value of every query parameter whose name looks like a credential (`api_key=***`,
  `access_token=***`, `X-Amz-Signature=***`: see `is_secret_name`),
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
    "bearer",
)  # fmt: skip

# A configured secret this long is masked wherever it appears in a URL or text, not only as a
# whole part (shorter ones only as a whole part, so `x` does not mangle every URL).
MIN_EMBEDDED = 8

# A URL inside free text (an exception's message): scheme://, then up to a space or quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>`]+")


def is_secret_name(name: str) -> bool:
    """True when a query parameter (or header) named `name` looks like it carries a secret."""
    lowered = name.lower()
    return any(word in lowered for word in SECRET_PARAM_WORDS)


def url_secrets(url: str) -> Iterator[str]:
    """The secret values written in `url`: its password and its credential parameters."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return
    if password:
        yield from {password, unquote(password)}
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
    if _is_known(user, secrets):
        user = MASK
    return f"{user}:{MASK}@{host}" if has_password else f"{user}@{host}"


def _mask_query(query: str, secrets: Collection[str]) -> str:
    return "&".join(
        f"{name}{sep}{MASK}"
        if sep and (is_secret_name(unquote_plus(name)) or _is_known(value, secrets))
        else f"{name}{sep}{value}"
        for name, sep, value in _params(query)
    )


def _mask_path(path: str, secrets: Collection[str]) -> str:
    if not secrets:
        return path
    return "/".join(MASK if _is_known(seg, secrets) else seg for seg in path.split("/"))


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
            _mask_path(parts.path, known),
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
