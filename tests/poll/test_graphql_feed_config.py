"""The config of GraphQL and feed sources from the outside: what `bridge check` says of them,
their mistakes as one line and exit 2, `query_file`, the presets (`shopify` with `api:
graphql`, `feed`) in `bridge presets`, and `bridge poll --dry-run` of a GraphQL source."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge.cli import cli
from bridge.config.presets import expand
from tests.scripted_server import Reply, Script

QUERY = "query Items($first: Int!, $after: String) { items(first: $first, after: $after) { id } }"


def check(tmp_path: Path, sources: str) -> tuple[int, str]:
    (tmp_path / "c.yaml").write_text("database: b.db\nsources:\n" + textwrap.indent(
        textwrap.dedent(sources), "  "))  # fmt: skip
    result = CliRunner().invoke(cli, ["check", "-c", str(tmp_path / "c.yaml")])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("poll", "message"),
    [
        ("{url: 'http://h/g', every: 1m, id: id, method: GET, request: {graphql: {query: q}}}",
         "c.yaml:4: sources.s.poll: a GraphQL request is a POST: leave out method"),
        ("{url: 'http://h/g', every: 1m, id: id, pages: {graphql: {has_next: a, cursor: b}}}",
         "c.yaml:4: sources.s.poll: pages: {graphql: ...} needs request: {graphql: ...}"),
        ("{url: 'http://h/g', every: 1m, id: id, request: {graphql: {query: q}}, pages: link}",
         "c.yaml:4: sources.s.poll: a GraphQL request pages with pages: {graphql: ...} only"),
        ("{url: 'http://h/g', every: 1m, id: id, mode: incremental, cursor: {field: u,"
         " variable: since}}",
         "c.yaml:4: sources.s.poll: cursor.variable needs request: {graphql: ...}"),
        ("{url: 'http://h/g', every: 1m, id: id, mode: incremental, cursor: {field: u}}",
         "c.yaml:4: sources.s.poll.cursor: needs param (a query parameter) or variable"),
        ("{url: 'http://h/g', every: 1m, id: id, request: {graphql: {query: ''}}}",
         "c.yaml:4: sources.s.poll.request.graphql.query:"),
        ("{url: 'http://h/g', every: 1m, request: {graphql: {query: q}}, format: feed}",
         "c.yaml:4: sources.s.poll: format: feed reads a feed, not a GraphQL answer"),
        ("{url: 'http://h/f', every: 1m, format: feed, items: entries}",
         "c.yaml:4: sources.s.poll: format: feed reads the feed's entries: leave out items"),
        ("{url: 'http://h/f', every: 1m, id: id, format: rss}",
         "c.yaml:4: sources.s.poll.format: "),
        ("{preset: feed}", "c.yaml:4: sources.s.poll.url: is required by preset feed"),
        ("{preset: shopify, shop: s, token: t, resource: orders, api: soap}",
         'c.yaml:4: sources.s.poll.api: "soap" is not rest or graphql'),
        ("{preset: github, repo: a/b, resource: issues, api: graphql}",
         "c.yaml:4: sources.s.poll.api: is not a key of preset github"),
    ],
)  # fmt: skip
def test_mistakes_are_one_line_naming_file_line_and_key(
    tmp_path: Path, poll: str, message: str
) -> None:
    code, output = check(tmp_path, f"s:\n  poll: {poll}\n")
    assert code == 2, output
    assert output.strip().startswith(str(tmp_path / message)), output
    assert len(output.strip().splitlines()) == 1 and "Traceback" not in output


def test_a_query_file_is_read_beside_the_config(tmp_path: Path) -> None:
    (tmp_path / "items.graphql").write_text(QUERY)
    code, output = check(tmp_path, """\
        s:
          poll:
            url: https://api.example.com/graphql
            every: 1m
            request: {graphql: {query_file: items.graphql, variables: {first: 50, org: acme}}}
            items: items
            id: id
        """)  # fmt: skip
    assert code == 0, output
    assert "request  POST https://api.example.com/graphql" in output
    assert "graphql  query Items from items.graphql" in output
    assert "variables first=50, org=***" in output  # a page size shown, the rest masked
    assert "items    the list at data.items" in output


def test_a_query_file_that_cannot_be_read_or_beside_a_query_is_a_mistake(tmp_path: Path) -> None:
    code, output = check(tmp_path, """\
        a:
          poll: {url: 'http://h/g', every: 1m, id: id, request: {graphql: {query_file: none.gql}}}
        b:
          poll: {url: 'http://h/g', every: 1m, id: id,
                 request: {graphql: {query_file: none.gql, query: q}}}
        """)  # fmt: skip
    assert code == 2
    lines = output.strip().splitlines()
    assert len(lines) == 2, output
    assert "c.yaml:4: sources.a.poll.request.graphql.query_file: cannot read" in lines[0]
    assert "No such file or directory" in lines[0]
    assert "sources.b.poll.request.graphql.query_file: give query or query_file" in lines[1]


def test_the_shopify_graphql_preset_expands_into_the_documented_mechanics() -> None:
    poll = expand({"preset": "shopify", "shop": "acme", "token": "t", "resource": "orders",
                   "api": "graphql"})  # fmt: skip
    assert poll["url"] == "https://acme.myshopify.com/admin/api/2025-10/graphql.json"
    assert poll["headers"] == {"X-Shopify-Access-Token": "t"}
    query = poll["request"]["graphql"]["query"]
    assert "orders(first: $first, after: $after, query: $query, sortKey: UPDATED_AT)" in query
    assert "pageInfo { hasNextPage endCursor }" in query
    assert poll["request"]["graphql"]["variables"] == {"first": 250}
    assert poll["cursor"] == {"field": "updatedAt", "format": "rfc3339", "lookback": "1m",
                              "variable": "query", "template": "updated_at:>'{value}'"}  # fmt: skip
    info = "orders.pageInfo"
    assert poll["pages"] == {"graphql": {"has_next": f"{info}.hasNextPage",
                             "cursor": f"{info}.endCursor", "variable": "after"}}  # fmt: skip
    assert (poll["items"], poll["id"], poll["version"]) == ("orders.nodes", "id", "updatedAt")
    rest = expand({"preset": "shopify", "shop": "acme", "token": "t", "resource": "orders"})
    assert rest["url"].endswith("/orders.json") and "request" not in rest


def test_the_feed_preset_needs_only_a_url() -> None:
    poll = expand({"preset": "feed", "url": "https://example.com/feed.xml"})
    assert poll == {"preset": "feed", "resource": "entries", "url": "https://example.com/feed.xml",
                    "format": "feed", "mode": "snapshot", "every": "15m"}  # fmt: skip


def test_bridge_presets_lists_shopify_graphql_and_feed_with_what_they_need() -> None:
    output = CliRunner().invoke(cli, ["presets"]).output
    shopify = output[output.index("shopify:") : output.index("gitlab:")]
    assert "optional   api, api_version, api_url" in shopify
    assert "graphql         query updated_at:>'...', cursor pages (after)" in shopify
    feed = output[output.index("feed: any RSS") :]
    assert feed.splitlines()[1].split() == ["needs", "url"]
    assert "entries  snapshot of the feed's entries" in feed


def test_bridge_check_describes_the_shopify_graphql_preset_without_its_token(
    tmp_path: Path,
) -> None:
    code, output = check(tmp_path, """\
        shop:
          poll: {preset: shopify, api: graphql, shop: acme, token: shpat_supersecret,
                 resource: products}
        news:
          poll: {preset: feed, url: "https://example.com/feed.xml"}
        """)  # fmt: skip
    assert code == 0, output
    assert "shpat_supersecret" not in output
    assert "poll POST https://acme.myshopify.com/admin/api/2025-10/graphql.json" in output
    assert ("query=updated_at:>'<updatedAt watermark - 60s, rfc3339>'") in output
    assert "sent as GraphQL variable $query" in output
    assert "GraphQL cursor: while data.products.pageInfo.hasNextPage" in output
    assert (
        "the feed's entries (RSS, Atom or JSON Feed); an entry that leaves the feed is kept"
        in output
    )
    assert "conditional requests (If-None-Match)" in output.split("news:")[1]


def test_a_dry_run_of_a_graphql_source(server: tuple[Script, str], tmp_path: Path) -> None:
    script, base = server
    page = {"items": [{"id": "a"}, {"id": "b"}]}
    script.route("/graphql", Reply(200, {"data": page}))
    request = {"graphql": {"query": QUERY, "variables": {"first": 2}}}
    poll = {
        "url": base + "/graphql",
        "every": "1m",
        "items": "items",
        "id": "id",
        "request": request,
    }
    config = {"database": str(tmp_path / "b.db"), "sources": {"g": {"poll": poll}}}
    (tmp_path / "c.yaml").write_text(json.dumps(config))
    runner = CliRunner()
    result = runner.invoke(
        cli, ["poll", "-c", str(tmp_path / "c.yaml"), "g", "--dry-run", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["status"], summary["items"]) == (200, 2)
    assert [e["subject"] for e in summary["events"]] == ["a", "b"]
    assert script.seen[0].method == "POST" and script.seen[0].json()["variables"] == {"first": 2}
    script.route("/graphql", Reply(200, {"errors": [{"message": "Field 'items' doesn't exist"}]}))
    failed = runner.invoke(cli, ["poll", "-c", str(tmp_path / "c.yaml"), "g", "--dry-run"])
    assert failed.exit_code == 1 and "Traceback" not in failed.output
    assert "the GraphQL answer has errors: \"Field 'items' doesn't exist\"" in failed.output
    assert not (tmp_path / "b.db").exists()
