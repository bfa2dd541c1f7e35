"""The OAuth2 part of the store interface: the refresh token a token endpoint rotated.

A credential with the `refresh_token` grant starts from the refresh token of its config.
When the token endpoint answers with a new one (rotation), the old one may stop working at
once: the new one is written here, durably and in a commit of its own, before the access
token that came with it is used. A restart, or another replica, reads it back.

The row is keyed by the credential's name and remembers a hash of the config's initial
token it descends from: when an operator puts a new refresh token in the config, the hash
no longer matches and the config's token is in force again.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field


def initial_hash(refresh_token: str) -> str:
    """What identifies a config's initial refresh token without keeping it (SHA-256, hex)."""
    return hashlib.sha256(refresh_token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredRefreshToken:
    """The refresh token in force for a credential, as its token endpoint last rotated it."""

    credential: str
    initial_hash: str  # `initial_hash` of the config's refresh token it descends from
    refresh_token: str = field(repr=False)
    rotated_ms: int = 0  # when the endpoint answered it


class TokenStore(ABC):
    """The refresh tokens rotated by OAuth2 token endpoints, one per credential."""

    @abstractmethod
    async def load_refresh_token(self, credential: str) -> StoredRefreshToken | None:
        """The last rotated refresh token of `credential`, or None if it never rotated."""

    @abstractmethod
    async def save_refresh_token(self, token: StoredRefreshToken) -> None:
        """Replace the credential's refresh token; durable (fsynced) before it returns, in a
        commit that holds nothing else."""
