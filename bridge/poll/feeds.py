"""A feed's answer read into entries: RSS and Atom by feedparser, JSON Feed as strict JSON.

`read_feed(body, content_type, url)` returns the entries in the feed's order, each a plain
JSON object, the same shape whatever the format (what a `format: feed` source's events carry
as `data`):

    {"id", "title", "link", "summary", "published", "updated",
     "authors": [{"name", "email", "href"}], "categories": [...],
     "enclosures": [{"url", "type", "length"}]}

- `id` is the entry's guid (RSS), id (Atom, JSON Feed), else its link; an entry with neither
  has no key (skipped and counted, never an event).
- `title` is text: a title written as HTML has its tags taken out and its entities read.
- `summary` is the summary (else the content) as the feed gives it; feedparser sanitizes the
  HTML of RSS and Atom.
- links are absolute: relative ones resolve against `xml:base`, else the feed's URL.
- times are RFC 3339 in UTC (`2026-12-06T17:00:00Z`), or null when absent or unreadable.
- The encoding is the one the HTTP header or the XML prolog declares (ISO-8859-1 and the
  others feedparser knows); a declaration the bytes contradict is settled by feedparser.

A body that is not a feed, or an XML feed that is not well-formed, is a `FetchError` (reason
`feed`) naming what is wrong: feedparser's lenient parser could salvage part of it, and an
entry read from a broken document may be invented. Pure.
"""

from __future__ import annotations

import calendar
import io
import time
from html import unescape
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin

from bridge import jsontext
from bridge.errors import FetchError
from bridge.events import parse_time

ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json,"
    " application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, */*;q=0.5"
)
JSON_FEED_VERSION = "https://jsonfeed.org/version/"


class _Text(HTMLParser):
    """The text of a fragment of HTML."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_text(html: str) -> str:
    """The text of an HTML fragment, its tags left out, whitespace runs made one space."""
    parser = _Text()
    parser.feed(html)
    parser.close()
    return " ".join("".join(parser.parts).split())


def _rfc3339(parsed: time.struct_time | None) -> str | None:
    if parsed is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(calendar.timegm(parsed)))


def _time_text(value: Any) -> str | None:
    """A JSON Feed date (RFC 3339) as UTC RFC 3339; None when it is not one."""
    at_ms = parse_time(value) if isinstance(value, str) else None
    if at_ms is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at_ms // 1000))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _clean(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if v is not None}


def _length(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip() if value is not None else ""
    return int(text) if text.isascii() and text.isdigit() and len(text) < 19 else None


# -- RSS and Atom ------------------------------------------------------------------------


def _title(entry: Any) -> str | None:
    title = entry.get("title")
    if title is None:
        return None
    kind = (entry.get("title_detail") or {}).get("type", "")
    text = html_text(title) if "html" in kind else " ".join(unescape(title).split())
    return text or None


def _summary(entry: Any) -> str | None:
    if entry.get("summary"):
        return str(entry["summary"])
    for content in entry.get("content") or ():
        if content.get("value"):
            return str(content["value"])
    return None


def _authors(entry: Any, url: str, rss: bool) -> list[dict[str, Any]]:
    if rss:
        # RSS's `email (name)` as written: feedparser's split of it mangles non-ASCII text.
        author = _text(entry.get("author"))
        return [{"name": author}] if author else []
    authors = entry.get("authors") or []
    return [
        _clean(
            {
                "name": _text(a.get("name")),
                "email": _text(a.get("email")),
                "href": urljoin(url, a["href"]) if a.get("href") else None,
            }
        )
        for a in authors
        if isinstance(a, dict) and (a.get("name") or a.get("email") or a.get("href"))
    ]


def _xml_entry(entry: Any, url: str, rss: bool) -> dict[str, Any]:
    link = _text(entry.get("link"))
    base = link or url
    return {
        "id": _text(entry.get("id")) or link,
        "title": _title(entry),
        "link": link,
        "summary": _summary(entry),
        # dict.get: feedparser's own `get` gives `published` for a missing `updated`.
        "published": _rfc3339(dict.get(entry, "published_parsed")),
        "updated": _rfc3339(dict.get(entry, "updated_parsed")),
        "authors": _authors(entry, url, rss),
        "categories": [
            t.get("term") or t.get("label")
            for t in entry.get("tags") or ()
            if t.get("term") or t.get("label")
        ],
        "enclosures": [
            _clean(
                {
                    "url": urljoin(base, e["href"]),
                    "type": e.get("type"),
                    "length": _length(e.get("length")),
                }
            )
            for e in entry.get("enclosures") or ()
            if e.get("href")
        ],
    }


def _read_xml(body: bytes, content_type: str | None, url: str, where: str) -> list[Any]:
    import feedparser  # a slow import (0.4 s), for the sources that read feeds only

    # feedparser's complaints that leave the entries as they were meant: the declared
    # encoding was wrong and another one read the bytes, or the content type is not XML.
    harmless = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)
    headers = {"content-location": url}
    if content_type:
        headers["content-type"] = content_type
    # A stream, never bytes or text: feedparser opens a string that names a file or a URL.
    stream = io.BytesIO(body)
    parsed = feedparser.parse(stream, response_headers=headers, sanitize_html=True)
    problem = parsed.get("bozo_exception") if parsed.get("bozo") else None
    if problem is not None and not isinstance(problem, harmless):
        raise FetchError(
            f"{where}: the feed is not well-formed: {str(problem)[:200]}", reason="feed"
        )
    if not parsed.get("version"):
        raise FetchError(f"{where}: the answer is not an RSS, Atom or JSON feed", reason="feed")
    rss = str(parsed.get("version")).startswith("rss")
    return [_xml_entry(entry, url, rss) for entry in parsed.entries]


# -- JSON Feed -------------------------------------------------------------------------------


def _json_entry(item: Any, url: str) -> dict[str, Any] | None:
    if not isinstance(item, dict):
        return None

    def absolute(value: Any) -> str | None:
        text = _text(value) if isinstance(value, str) else None
        return urljoin(url, text) if text else None

    link = absolute(item.get("url")) or absolute(item.get("external_url"))
    authors = item.get("authors")
    if not isinstance(authors, list):  # JSON Feed 1.0's single `author`
        authors = [item["author"]] if isinstance(item.get("author"), dict) else []
    tags: list[Any] = item["tags"] if isinstance(item.get("tags"), list) else []
    attachments: list[Any] = (
        item["attachments"] if isinstance(item.get("attachments"), list) else []
    )
    raw_id = item.get("id")
    key = _text(raw_id) if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) else None
    summary = item.get("summary") or item.get("content_html") or item.get("content_text")
    return {
        "id": key or link,
        "title": _text(item["title"]) if isinstance(item.get("title"), str) else None,
        "link": link,
        "summary": summary if isinstance(summary, str) else None,
        "published": _time_text(item.get("date_published")),
        "updated": _time_text(item.get("date_modified")),
        "authors": [
            _clean({"name": _text(a.get("name")), "href": absolute(a.get("url"))})
            for a in authors
            if isinstance(a, dict) and (a.get("name") or a.get("url"))
        ],
        "categories": [t for t in tags if isinstance(t, str) and t],
        "enclosures": [
            _clean(
                {
                    "url": absolute(a.get("url")),
                    "type": a.get("mime_type") if isinstance(a.get("mime_type"), str) else None,
                    "length": _length(a.get("size_in_bytes")),
                }
            )
            for a in attachments
            if isinstance(a, dict) and absolute(a.get("url"))
        ],
    }


def _read_json(body: bytes, url: str, where: str) -> list[Any]:
    try:
        document = jsontext.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FetchError(f"{where}: the JSON feed is not valid JSON", reason="feed") from exc
    version = document.get("version") if isinstance(document, dict) else None
    items = document.get("items") if isinstance(document, dict) else None
    if not isinstance(version, str) or not version.startswith(JSON_FEED_VERSION):
        raise FetchError(
            f"{where}: the answer is JSON but not a JSON Feed (no version {JSON_FEED_VERSION}...)",
            reason="feed",
        )
    if not isinstance(items, list):
        raise FetchError(f"{where}: the JSON feed has no items list", reason="feed")
    entries = [_json_entry(item, url) for item in items]
    return [e for e in entries if e is not None]


def _looks_json(body: bytes, content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    if media.endswith("json"):
        return True
    return body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{"


def read_feed(
    body: bytes, content_type: str | None, url: str, where: str, status: int | None = None
) -> list[Any]:
    """The entries of a feed's answer (see the module docstring); FetchError when it is not
    one. `url` is where the answer came from (relative links resolve against it); `where` is
    how messages name it, `status` the answer's HTTP status that a fault carries."""
    try:
        if _looks_json(body, content_type):
            return _read_json(body, url, where)
        return _read_xml(body, content_type, url, where)
    except FetchError as exc:
        exc.status = status
        raise
