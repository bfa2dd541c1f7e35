"""A polled source's `auth:` at run time: static headers, and OAuth2 access tokens.

- `grants.py`: one token request by its grant (client_credentials, refresh_token,
  jwt_bearer) through Authlib, and a failed answer in one line without a secret;
- `tokens.py`: a credential's `TokenProvider` (the cached access token, one request in
  flight, the rotated refresh token stored before use) and which refresh token is in force;
- `sources.py`: each source's `httpx.Auth` (a 401 refreshes once and retries once) and the
  `Credentials` the poller holds, one provider per credential.
"""

from bridge.poll.auth.sources import Credentials, credential_configs, credential_name
from bridge.poll.auth.tokens import InForce, TokenProvider, refresh_token_in_force

__all__ = [
    "Credentials",
    "InForce",
    "TokenProvider",
    "credential_configs",
    "credential_name",
    "refresh_token_in_force",
]
