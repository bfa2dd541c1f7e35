"""What the admin pages' tests share: a receiver that fails until fixed, the config, a login."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.conftest import TEST_SECRET
from tests.helpers import REPO

ARTIFACTS = REPO / "test-artifacts"
TOKEN = "admin-token-5d2e8b41"


@dataclass
class Receiver:
    """A target that answers 500 with an error page until `fixed`, then 204."""

    fixed: bool = False
    received: int = 0

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            await request.body()
            self.received += 1
            if self.fixed:
                return Response(status_code=204)
            return PlainTextResponse("database is down (retry later)", status_code=500)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


def config_text(peer: str, token: str | None = TOKEN, listen: str = "127.0.0.1:{port}") -> str:
    token_line = f"\n  admin_token: {token}" if token else ""
    return f"""
server:
  listen: {listen}{token_line}
database: admin.db
sources:
  orders:
    webhook: {{verify: none, allow_unsigned: true, id: body.id, type: body.type,
               subject: body.subject}}
  items:
    poll: {{url: "{peer}/items", every: 1h, items: items, id: id}}
targets:
  sink: {{url: "{peer}/hook", secret: "{TEST_SECRET}", retry: [0.1s, 0.1s],
         circuit: {{failures: 100}}}}
"""


def csrf_of(html: str) -> str:
    """The CSRF token in a page's forms."""
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


@contextmanager
def log_in(base: str, token: str = TOKEN) -> Iterator[httpx.Client]:
    """A client holding a session cookie, logged in through the form."""
    with httpx.Client(base_url=base, timeout=10) as client:
        answer = client.post("/admin/login", data={"token": token, "next": "/admin/events"})
        assert answer.status_code == 303, answer.text
        yield client
