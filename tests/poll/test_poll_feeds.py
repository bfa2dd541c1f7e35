"""`format: feed`: RSS 2.0 and Atom written by a real feed generator (feedgen) and served on
127.0.0.1, real-world samples with their quirks (tests/poll/fixtures/feeds), JSON Feed 1.1,
conditional requests, both modes, and the feeds that are faults."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from feedgen.feed import FeedGenerator

from bridge.cli import cli
from bridge.config import parse_config
from bridge.errors import FetchError
from bridge.poll.engine import Poller
from bridge.poll.feeds import read_feed
from bridge.runtime import Runtime
from bridge.store.sqlite import SQLiteStore
from tests.scripted_server import Reply, Script

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).parent / "fixtures" / "feeds"
START = datetime(2026, 12, 1, tzinfo=UTC)


class Site:
    """A site whose feed feedgen writes anew for every request, as a CMS does."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.posts: list[dict[str, Any]] = []
        self.keep = 10  # the feed holds the newest this many

    def post(self, key: str, title: str, hours: int) -> None:
        self.posts = [p for p in self.posts if p["key"] != key]
        self.posts.append({"key": key, "title": title, "at": START + timedelta(hours=hours)})

    def render(self) -> bytes:
        fg = FeedGenerator()
        fg.id("https://site.example/")
        fg.title("Site news")
        fg.link(href="https://site.example/", rel="alternate")
        fg.description("news")
        fg.updated(START)
        newest = sorted(self.posts, key=lambda p: p["at"], reverse=True)[: self.keep]
        for post in reversed(newest):  # feedgen puts each new entry first
            entry = fg.add_entry()
            entry.id(f"https://site.example/posts/{post['key']}")
            entry.guid(f"https://site.example/posts/{post['key']}", permalink=True)
            entry.title(post["title"])
            entry.link(href=f"https://site.example/posts/{post['key']}")
            entry.description(f"about {post['title']}")
            entry.published(post["at"])
            entry.updated(post["at"])
            entry.category(term="news")
        return fg.atom_str() if self.kind == "atom" else fg.rss_str()

    def route(self, script: Script) -> None:
        media = "application/atom+xml" if self.kind == "atom" else "application/rss+xml"

        def answer(seen: Any) -> Reply:
            body = self.render()
            etag = f'"{hash(body) & 0xFFFFFFFF:x}"'
            if seen.headers.get("if-none-match") == etag:
                return Reply(304, headers=[("ETag", etag)])
            return Reply(200, body, headers=[("ETag", etag)], content_type=media)

        script.route("/feed", answer)


def feed_config(url: str, **keys: Any) -> Any:
    poll = {"preset": "feed", "url": url, **keys}
    return parse_config(yaml.safe_dump({"database": "x.db", "sources": {"s": {"poll": poll}}}))


@pytest.fixture(params=["rss", "atom"])
def site(request: pytest.FixtureRequest, server: tuple[Script, str]) -> Iterator[tuple[Site, str]]:
    script, base = server
    s = Site(request.param)
    s.route(script)
    yield s, base + "/feed"


async def test_a_generated_feed_emits_new_and_updated_entries_and_no_deletes(
    site: tuple[Site, str], store: SQLiteStore, server: tuple[Script, str]
) -> None:
    feed, url = site
    feed.keep = 2
    feed.post("a", "First", 1)
    feed.post("b", "Second", 2)
    poller = Poller(Runtime(config=feed_config(url), store=store))
    try:
        await poller.poll_once("s")  # the baseline
        feed.post("c", "Third", 3)  # pushes "a" out of a feed of two
        feed.post("b", "Second, corrected", 4)
        await poller.poll_once("s")
        state = await store.load_poll_state("s")
        assert state.last_error is None, state.last_error
        await poller.poll_once("s")  # nothing new: a 304
        feed.keep = 3  # "a" comes back into the feed: it was never deleted, nor is it new
        await poller.poll_once("s")
    finally:
        await poller.stop(1.0)
    events = list(reversed(await store.list_events(source="s", limit=None)))
    got = sorted((e.change or "", e.subject or "") for e in events)
    assert got == [("created", "https://site.example/posts/c"),
                   ("updated", "https://site.example/posts/b")]  # fmt: skip
    updated = next(e for e in events if e.change == "updated")
    entry = updated.data["object"]
    assert entry["title"] == "Second, corrected" and entry["categories"] == ["news"]
    assert entry["link"] == "https://site.example/posts/b"
    assert (entry["updated"] or entry["published"]) == "2026-12-01T04:00:00Z"  # RSS: pubDate
    script, _ = server
    assert [s.headers.get("if-none-match") is not None for s in script.seen] == [
        False, True, True, True]  # fmt: skip


async def test_in_mode_feed_each_new_entry_is_one_event(
    server: tuple[Script, str], store: SQLiteStore
) -> None:
    script, base = server
    feed = Site("rss")
    feed.route(script)
    feed.post("a", "First", 1)
    poller = Poller(Runtime(config=feed_config(base + "/feed", mode="feed"), store=store))
    try:
        await poller.poll_once("s")
        feed.post("b", "Second", 2)
        feed.post("c", "Third", 3)
        await poller.poll_once("s")
    finally:
        await poller.stop(1.0)
    events = list(reversed(await store.list_events(source="s", limit=None)))
    assert [(e.type, e.data["title"]) for e in events] == [
        ("feed.entry", "Second"), ("feed.entry", "Third")]  # fmt: skip


def test_a_latin1_rss_feed_with_relative_links_html_titles_and_a_missing_guid() -> None:
    body = (FIXTURES / "latin1-relative.rss").read_bytes()
    entries = read_feed(body, "application/rss+xml", "https://journal.example/feed/rss.xml", "w")
    first, second = entries
    assert first["id"] == "journal-1042"
    assert first["title"] == "Café & crème: ouverture"  # markup left out, entities read
    assert first["link"] == "https://journal.example/articles/cafe-creme"
    assert first["enclosures"] == [
        {"url": "https://journal.example/media/cafe.jpg", "type": "image/jpeg", "length": 48213}
    ]
    assert first["published"] == "2026-12-05T08:30:00Z"
    # No guid: keyed by its link.
    assert second["id"] == second["link"] == "https://journal.example/articles/marche-noel"
    assert second["title"] == "Marché de Noël"
    assert 'href="https://journal.example/plan"' in second["summary"]
    assert second["authors"] == [{"name": "redaction@journal.example (La rédaction)"}]


def test_an_atom_feed_resolves_against_xml_base() -> None:
    body = (FIXTURES / "atom-xml-base.atom").read_bytes()
    (entry,) = read_feed(body, "application/atom+xml", "https://elsewhere.example/", "w")
    assert entry["link"] == "https://blog.example/posts/release-2"
    assert entry["title"] == "Release 2.0 is out"
    assert entry["updated"] == "2026-12-06T08:00:00Z"
    assert entry["authors"] == [{"name": "Kim", "href": "https://blog.example/people/kim"}]
    assert entry["summary"] == "<p>Notes</p>"


def test_a_json_feed_1_1() -> None:
    body = (FIXTURES / "jsonfeed-1.1.json").read_bytes()
    first, second = read_feed(body, "application/feed+json", "https://pod.example/feed.json", "w")
    assert first["id"] == "ep-12" and first["updated"] == "2026-12-03T14:00:00Z"
    assert first["enclosures"] == [{"url": "https://cdn.pod.example/ep12.mp3",
                                    "type": "audio/mpeg", "length": 31337000}]  # fmt: skip
    assert first["authors"] == [{"name": "Sam", "href": "https://pod.example/sam"}]
    assert second["id"] == "11" and second["link"] == "https://pod.example/ep/11"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ((FIXTURES / "malformed.rss").read_bytes(), "the feed is not well-formed"),
        (b"<html><body>Not found</body></html>", "not an RSS, Atom or JSON feed"),
        (b'{"items": []}', "not a JSON Feed"),
        (b'{"version": "https://jsonfeed.org/version/1.1", "items": {}}', "has no items list"),
        # The name of a feed file as the answer: never opened (feedparser opens what it names).
        (str(FIXTURES / "atom-xml-base.atom").encode(), "not well-formed"),
    ],
    ids=["truncated", "html", "json-not-a-feed", "json-items-not-a-list", "a-path"],
)
def test_what_is_not_a_feed_is_a_fault(body: bytes, message: str) -> None:
    with pytest.raises(FetchError, match=message) as caught:
        read_feed(body, "text/xml", "https://x.example/feed", "https://x.example/feed")
    assert caught.value.reason == "feed"


def test_a_malformed_feed_fails_the_poll_and_keeps_the_snapshot(
    server: tuple[Script, str], tmp_path: Path
) -> None:
    script, base = server
    script.route("/feed", Reply(200, (FIXTURES / "malformed.rss").read_bytes(),
                                content_type="application/rss+xml"))  # fmt: skip
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"database": str(tmp_path / "b.db"), "sources": {
        "news": {"poll": {"preset": "feed", "url": base + "/feed"}}}}))  # fmt: skip
    result = CliRunner().invoke(cli, ["poll", "-c", str(config), "news", "--dry-run"])
    assert result.exit_code == 1
    assert "the feed is not well-formed" in result.output and "Traceback" not in result.output


def test_repeated_guids_are_counted_and_the_dry_run_shows_the_entries(
    server: tuple[Script, str], tmp_path: Path
) -> None:
    script, base = server
    script.route("/feed", Reply(200, (FIXTURES / "repeated-guids.rss").read_bytes(),
                                content_type="application/rss+xml"))  # fmt: skip
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"database": str(tmp_path / "b.db"), "sources": {
        "news": {"poll": {"preset": "feed", "url": base + "/feed"}}}}))  # fmt: skip
    result = CliRunner().invoke(cli, ["poll", "-c", str(config), "news", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["items"], summary["duplicate_keys"]) == (2, 1)
    titles = sorted(e["data"]["object"]["title"] for e in summary["events"])
    assert titles == ["older", "other"]  # of a repeated key, the last in the feed is kept
    assert not (tmp_path / "b.db").exists()


def test_a_wordpress_feed_in_windows_1252() -> None:
    body = (FIXTURES / "wordpress-cp1252.rss").read_bytes()
    (entry,) = read_feed(body, "application/rss+xml; charset=", "https://garden.example/feed/", "w")
    assert entry["id"] == "https://garden.example/?p=481"  # not a permalink: kept as written
    assert entry["title"] == "Winter\u2019s first frost \u2013 what to cover"
    assert entry["authors"] == [{"name": "Renée"}]  # dc:creator
    assert entry["categories"] == ["Seasons", "How-to"]
    # HTML, as the description's CDATA holds it (its entity is HTML's to read).
    assert entry["summary"] == "Cover the \u201ctender\u201d ones first [&#8230;]"
    assert entry["published"] == "2026-12-06T07:12:44Z" and entry["updated"] is None
