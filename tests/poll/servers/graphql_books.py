"""A GraphQL server written with Strawberry and served by uvicorn, for the GraphQL poll tests.

Run by `.tools/graphql/bin/python` (make tools), never imported by the tests: `python
graphql_books.py PORT`. It serves `/graphql`: a Relay connection of books (`books(first,
after, updatedSince)` with `edges {cursor node}` and `pageInfo {hasNextPage endCursor}`),
and mutations that add and retitle books, each stamped with the server's own clock.
"""

from __future__ import annotations

import base64
import sys
from datetime import UTC, datetime, timedelta

import strawberry
import uvicorn
from strawberry.asgi import GraphQL

START = datetime(2026, 1, 1, tzinfo=UTC)
BOOKS: dict[str, dict[str, str]] = {}
TICKS = [0]


def _stamp() -> str:
    TICKS[0] += 1
    return (START + timedelta(minutes=TICKS[0])).strftime("%Y-%m-%dT%H:%M:%SZ")


@strawberry.type
class Book:
    id: strawberry.ID
    title: str
    updated_at: str


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class BookEdge:
    cursor: str
    node: Book


@strawberry.type
class BookConnection:
    edges: list[BookEdge]
    page_info: PageInfo


def _cursor(offset: int) -> str:
    return base64.b64encode(f"offset:{offset}".encode()).decode()


@strawberry.type
class Query:
    @strawberry.field
    def books(
        self, first: int = 10, after: str | None = None, updated_since: str | None = None
    ) -> BookConnection:
        rows = sorted(BOOKS.values(), key=lambda b: (b["updated_at"], b["id"]))
        if updated_since is not None:
            rows = [b for b in rows if b["updated_at"] >= updated_since]
        start = int(base64.b64decode(after).decode().split(":")[1]) if after else 0
        chunk = rows[start : start + first]
        edges = [
            BookEdge(cursor=_cursor(start + i + 1), node=Book(**b)) for i, b in enumerate(chunk)
        ]
        end = start + len(chunk)
        info = PageInfo(has_next_page=end < len(rows), end_cursor=_cursor(end) if chunk else None)
        return BookConnection(edges=edges, page_info=info)


@strawberry.type
class Mutation:
    @strawberry.mutation
    def put_book(self, id: strawberry.ID, title: str) -> Book:
        BOOKS[str(id)] = {"id": str(id), "title": title, "updated_at": _stamp()}
        return Book(**BOOKS[str(id)])


app = GraphQL(strawberry.Schema(query=Query, mutation=Mutation))

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
