"""The config of what the bridge sends beyond the webhook itself: keys, TLS and tracing.

- A target's `secret` is one key or a list: `whsec_` keys sign with HMAC-SHA256 (`v1,`),
  `whsk_` keys with Ed25519 (`v1a,`); during a migration both kinds sign every request.
- `tls` gives a target a client certificate (mutual TLS) and a private CA to trust. Each
  value is a path (relative to the config file) or the PEM text itself, which is what
  `${credential:NAME}` or `${file:PATH}` put there. An encrypted key needs `key_password`:
  OpenSSL is never let to ask for one (it would prompt on the daemon's terminal and block
  every later reload and the stop), so without it the key is refused with one line.
- `tracing.otlp` exports spans to an OTLP/HTTP collector (the `tracing` extra).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

HMAC_PREFIX = "whsec_"
ED25519_PREFIX = "whsk_"
PUBLIC_PREFIX = "whpk_"
_PEM = "-----BEGIN"


def check_target_secrets(values: list[SecretStr]) -> list[SecretStr]:
    """A target's keys: at least one, each a `whsec_` secret or a `whsk_` Ed25519 key."""
    if not values:
        raise ValueError("needs at least one whsec_ or whsk_ key")
    for value in values:
        raw = value.get_secret_value()
        if raw.startswith(ED25519_PREFIX):
            _decode(raw, ED25519_PREFIX, sizes=(32, 64))
        elif raw.startswith(HMAC_PREFIX):
            key = _decode(raw, HMAC_PREFIX, sizes=None)
            # The spec asks for 24 to 64 random bytes; refuse keys too short to be secret.
            if len(key) < 16:
                raise ValueError("is not a whsec_ secret: its key is shorter than 16 bytes")
        else:
            raise ValueError("is not a whsec_ secret or a whsk_ key")
    return values


def _decode(raw: str, prefix: str, sizes: tuple[int, ...] | None) -> bytes:
    try:
        key = base64.b64decode(raw[len(prefix) :], validate=True)
    except binascii.Error:
        raise ValueError(f"is not a {prefix} key: it is not base64") from None
    if sizes is not None and len(key) not in sizes:
        raise ValueError(f"is not a {prefix} key: it is not a 32-byte Ed25519 seed")
    return key


class TLSConfig(BaseModel):
    """A target's client certificate and key (mutual TLS), and a private CA to trust."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The client certificate (PEM): a path relative to the config file, or the PEM text.
    cert: str | None = None
    # The client certificate's private key (PEM): a path, or the text (`${credential:NAME}`).
    key: SecretStr | None = None
    # The passphrase of an encrypted `key`.
    key_password: SecretStr | None = None
    # A private CA to trust instead of the system's (PEM): a path, or the text.
    ca: str | None = None

    @model_validator(mode="after")
    def _check_pair(self) -> TLSConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("needs both cert and key (or neither, with ca)")
        if self.cert is None and self.ca is None:
            raise ValueError("needs cert and key, or ca, or all three")
        return self


def is_pem(value: str) -> bool:
    """True when a `tls` value is PEM text rather than a path."""
    return value.lstrip().startswith(_PEM)


def _path(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


@contextlib.contextmanager
def _as_file(value: str, base: Path) -> Iterator[str]:
    """A path to a `tls` value: the file it names, or a private temporary copy of its PEM."""
    if not is_pem(value):
        yield str(_path(value, base))
        return
    fd, name = tempfile.mkstemp(prefix="bridge-tls-", suffix=".pem")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(value)
        yield name
    finally:
        os.unlink(name)


def tls_context(tls: TLSConfig, base: Path) -> ssl.SSLContext:
    """The SSL context of a target's `tls` (system CAs unless `ca` is given).

    Raises ValueError naming the key (`cert`, `key`, `ca`) when a file cannot be read or
    does not hold what it should; messages never contain the key's text.
    """
    context = ssl.create_default_context()
    if tls.ca is not None:
        # Only the private CA is trusted then (hostnames are still checked).
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            if is_pem(tls.ca):
                context.load_verify_locations(cadata=tls.ca)
            else:
                context.load_verify_locations(cafile=str(_path(tls.ca, base)))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"ca: cannot load the CA ({_reason(exc)})") from None
    if tls.cert is not None and tls.key is not None:
        key = tls.key.get_secret_value()
        password = tls.key_password.get_secret_value() if tls.key_password else None
        is_encrypted = _is_encrypted(key, base)
        if is_encrypted and password is None:
            raise ValueError("key: the key is encrypted: set tls.key_password")
        try:
            with _as_file(tls.cert, base) as cert_file, _as_file(key, base) as key_file:
                # Always a password (empty when none is set): never OpenSSL's prompt.
                context.load_cert_chain(cert_file, key_file, password=password or "")
        except (OSError, ssl.SSLError) as exc:
            if is_encrypted:
                raise ValueError("key_password: cannot decrypt the key with it") from None
            reason = _reason(exc)
            raise ValueError(f"cert: cannot load the certificate and key ({reason})") from None
    return context


# An encrypted PEM key: PKCS#8 (`BEGIN ENCRYPTED PRIVATE KEY`) or OpenSSL's legacy
# `Proc-Type: 4,ENCRYPTED` header.
_ENCRYPTED_MARKS = ("-----BEGIN ENCRYPTED PRIVATE KEY-----", "Proc-Type: 4,ENCRYPTED")
_KEY_READ_BYTES = 64 * 1024


def _is_encrypted(key: str, base: Path) -> bool:
    """True when the `key` value (PEM text or a path) holds an encrypted private key; an
    unreadable file is left for load_cert_chain to name."""
    if is_pem(key):
        text = key
    else:
        try:
            with _path(key, base).open("rb") as file:
                # A key is a few KiB; the marks are in its first lines.
                text = file.read(_KEY_READ_BYTES).decode("latin-1")
        except OSError:
            return False
    return any(mark in text for mark in _ENCRYPTED_MARKS)


def _reason(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or "not a PEM certificate or key"
    return exc.strerror or type(exc).__name__


class TracingConfig(BaseModel):
    """Where spans go: an OTLP/HTTP collector's traces URL (e.g. http://127.0.0.1:4318/v1/traces)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The collector's OTLP/HTTP traces URL.
    otlp: str
    # The service name the spans carry.
    service_name: str = "bridge"

    @model_validator(mode="after")
    def _check_url(self) -> TracingConfig:
        if not self.otlp.startswith(("http://", "https://")):
            raise ValueError("otlp is not an http(s) URL")
        return self
