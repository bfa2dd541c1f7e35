"""Reading items one at a time (scan.py) and the streamed snapshot diff (streamed.py), pure:
each gives what json.loads and diff.diff give, on generated answers."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.config import parse_config
from bridge.poll.diff import ItemSpec, diff, getter, index_items, version_token
from bridge.poll.scan import NotAList, NotJSON, PageScan, decode_text, item_at, stream_path
from bridge.poll.streamed import PageIndex, stored_digest, token_digest

scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
scalars |= st.floats(allow_nan=False, allow_infinity=False)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


def scan(text: str, path: tuple[str, ...]) -> tuple[list[Any], Any]:
    page = PageScan(text, path)
    found = []
    for item, at in page.items():
        assert item_at(text, at) == item  # the offset finds the same item again
        found.append(item)
    return found, page.body


@settings(max_examples=150, deadline=None)
@given(
    items=st.lists(values, max_size=6),
    others=st.dictionaries(st.text(max_size=4).filter(lambda k: k != "data"), values, max_size=3),
    indent=st.sampled_from([None, 0, 2]),
)
def test_a_scan_reads_the_items_and_the_rest_as_json_loads_does(
    items: list[Any], others: dict[str, Any], indent: int | None
) -> None:
    page = {**others, "data": items}
    text = json.dumps(page, indent=indent)
    found, body = scan(text, ("data",))
    assert found == json.loads(text)["data"]
    assert body == {**others, "data": []}
    bare = json.dumps(items, indent=indent)
    assert scan(bare, ()) == (json.loads(bare), [])


@pytest.mark.parametrize(
    ("text", "path", "found"),
    [
        ('{"data": null}', ("data",), None),
        ('{"other": []}', ("data",), None),
        ('{"data": {"x": 1}}', ("data",), {"x": 1}),
        ("[1, 2]", ("data",), None),
        ('{"a": {"b": 3}}', ("a", "b"), 3),
        ('{"k": 1}', (), {"k": 1}),
    ],
)
def test_a_path_that_leads_to_no_list_says_what_it_found(
    text: str, path: tuple[str, ...], found: Any
) -> None:
    with pytest.raises(NotAList) as caught:
        scan(text, path)
    assert caught.value.found == found


@pytest.mark.parametrize(
    "text",
    ['{"data": [1, 2', '{"data": [1 2]}', "[1, NaN]", "[1e400]", "[Infinity]", "[1] x", "{'a': 1}"],
)
def test_text_that_json_loads_refuses_is_not_json(text: str) -> None:
    with pytest.raises(NotJSON):
        scan(text, ("data",) if text.startswith("{") else ())


def test_page_bytes_are_decoded_as_json_loads_decodes_them() -> None:
    data = json.dumps([{"id": "é"}])
    assert decode_text(b"\xef\xbb\xbf" + data.encode()) == data
    assert decode_text(data.encode("utf-16")) == data
    assert decode_text(data.encode("latin-1"), "iso-8859-1") == data


items_st = st.lists(
    st.fixed_dictionaries(
        {"id": st.integers(0, 12) | st.sampled_from(["a", "b", "", None])},
        optional={"v": st.integers(0, 2), "n": st.text(max_size=2)},
    ),
    max_size=12,
)


def streamed(
    old: dict[str, str], pages: list[list[Any]], spec: ItemSpec, chunk: int
) -> tuple[PageIndex, list[Any]]:
    index = PageIndex(spec)
    for number, page in enumerate(pages):
        if number % 2:  # some pages parsed whole, some read out of their text
            index.add_page(page, ((item, i) for i, item in enumerate(page)))
        else:
            text = json.dumps({"data": page})
            index.add_page(text, PageScan(text, ("data",)).items())
    rows = list(old.items())
    for start in range(0, len(rows), chunk):
        index.compare(rows[start : start + chunk])
    return index, index.changes()


@settings(max_examples=200, deadline=None)
@given(
    before=items_st,
    after=st.lists(items_st, max_size=3),
    versioned=st.booleans(),
    chunk=st.integers(1, 5),
)
def test_the_streamed_diff_finds_exactly_what_the_diff_finds(
    before: list[Any], after: list[list[Any]], versioned: bool, chunk: int
) -> None:
    spec = ItemSpec(id=getter("id"), version=getter("v") if versioned else None)
    old = {key: token for key, (token, _item) in index_items(before, spec).items.items()}
    whole = [item for page in after for item in page]
    expected_index = index_items(whole, spec)
    expected = diff(old, expected_index)
    index, found = streamed(old, after, spec, chunk)
    assert found == expected
    assert index.change_count == len(expected)
    assert [c.key for c in expected if c.change == "deleted"] == [k for k, _ in index.deleted]
    counts = index.indexed
    assert (counts.count, counts.skipped, counts.duplicates) == (
        len(expected_index.items),
        expected_index.skipped,
        expected_index.duplicates,
    )
    rows = [(c.key, c.token, json.dumps(c.item, separators=(",", ":"), ensure_ascii=False))
            for c in expected if c.change != "deleted"]  # fmt: skip
    assert list(index.upserts()) == rows and len(index.upserts()) == len(rows)


@given(item=st.dictionaries(st.text(max_size=3), scalars, max_size=4), versioned=st.booleans())
def test_a_digest_equals_the_digest_of_the_stored_token(item: Any, versioned: bool) -> None:
    spec = ItemSpec(id=getter("id"), version=getter("v") if versioned else None)
    assert token_digest(item, spec) == stored_digest(version_token(item, spec))


@pytest.mark.parametrize(
    ("items", "pages", "path"),
    [
        (None, None, ()),
        ("data", "link", ("data",)),
        ("result.items", {"next_url": "links.next"}, ("result", "items")),
        ("data", {"cursor": "next_cursor", "param": "c"}, ("data",)),
        # Finding the next page reads the items (Stripe): the pages are parsed whole.
        ("data", {"cursor": "has_more && data[-1].id", "param": "starting_after"}, None),
        (None, {"next_url": "[-1].next"}, None),
        ("data[?active]", None, None),  # not a field path
    ],
)
def test_pages_are_read_item_by_item_only_where_nothing_else_needs_their_items(
    items: str | None, pages: Any, path: tuple[str, ...] | None
) -> None:
    poll = {"url": "http://127.0.0.1:9/x", "every": "1m", "id": "id", "items": items}
    if pages is not None:
        poll["pages"] = pages
    config = parse_config(yaml.safe_dump({"sources": {"s": {"poll": poll}}}))
    assert stream_path(config.polled["s"]) == path
