"""The pure diff of a poll: indexing, tokens, changes, previous attributes, events; no sockets."""

from __future__ import annotations

import pytest

from bridge.config import field_path, parse_config
from bridge.errors import ConfigError
from bridge.events import event_id
from bridge.poll.diff import (
    EventSpec,
    ItemChange,
    ItemSpec,
    build_events,
    diff,
    index_items,
    previous_attributes,
    strip_ignored,
    version_token,
)
from bridge.poll.scheduler import backoff_s, base_interval_s


def spec(**poll: object) -> ItemSpec:
    lines = "\n".join(f"      {k}: {v}" for k, v in {"id": "id", **poll}.items())
    config = parse_config(
        f"sources:\n  s:\n    poll:\n      url: http://127.0.0.1/x\n      every: 1s\n{lines}\n"
    )
    poll_config = config.sources["s"].poll
    assert poll_config is not None
    return ItemSpec.from_config(poll_config)


def snapshot(items: list[dict[str, object]], s: ItemSpec) -> dict[str, str]:
    return {key: token for key, (token, _) in index_items(items, s).items.items()}


def test_index_skips_keyless_items_and_the_last_repeated_key_wins() -> None:
    s = spec()
    items = [{"id": 1, "v": "a"}, {"v": "no key"}, {"id": ""}, {"id": 1, "v": "b"}, "not an object"]
    indexed = index_items(items, s)
    assert list(indexed.items) == ["1"]
    assert indexed.items["1"][1] == {"id": 1, "v": "b"}
    assert indexed.skipped == 3
    assert indexed.duplicates == 1


def test_keys_of_numbers_and_text_are_text() -> None:
    indexed = index_items([{"id": 7}, {"id": "a"}, {"id": 1.5}, {"id": True}], spec())
    assert list(indexed.items) == ["7", "a", "1.5"]
    assert indexed.skipped == 1


def test_hash_token_ignores_key_order_and_follows_content() -> None:
    s = spec()
    assert version_token({"id": 1, "a": 1, "b": 2}, s) == version_token(
        {"b": 2, "a": 1, "id": 1}, s
    )
    assert version_token({"id": 1, "a": 1}, s) != version_token({"id": 1, "a": 2}, s)
    assert version_token({"id": 1}, s).startswith("h:")


def test_version_token_uses_the_version_and_falls_back_to_the_hash() -> None:
    s = spec(version="updated_at")
    a = version_token({"id": 1, "updated_at": "t1", "x": 1}, s)
    b = version_token({"id": 1, "updated_at": "t1", "x": 2}, s)
    assert a == b == 'v:"t1"'
    assert version_token({"id": 1, "x": 1}, s).startswith("h:")


def test_ignored_fields_do_not_change_the_hash() -> None:
    s = spec(ignore="[fetched_at, meta.seen]")
    one = {"id": 1, "fetched_at": 1, "meta": {"seen": 1, "k": 1}}
    two = {"id": 1, "fetched_at": 2, "meta": {"seen": 2, "k": 1}}
    three = {"id": 1, "fetched_at": 2, "meta": {"seen": 2, "k": 2}}
    assert version_token(one, s) == version_token(two, s)
    assert version_token(two, s) != version_token(three, s)
    assert one["fetched_at"] == 1 and one["meta"] == {"seen": 1, "k": 1}  # not mutated


def test_strip_ignored_leaves_absent_paths_alone() -> None:
    assert strip_ignored({"a": 1}, [("b", "c"), ("a", "x")]) == {"a": 1}


def test_ignore_must_be_field_paths() -> None:
    assert field_path("a.b") == ("a", "b")
    assert field_path("a.b.c") == ("a", "b", "c")
    assert field_path('"x-y"') == ("x-y",)
    with pytest.raises(ValueError, match="not a field path"):
        field_path("a[0]")
    text = "sources:\n  s:\n    poll:\n      url: http://h/x\n      every: 1s\n      id: id\n"
    with pytest.raises(ConfigError, match=r"sources\.s\.poll\.ignore"):
        parse_config(text + "      ignore: 'items[*].x'\n")


def test_diff_finds_each_create_update_and_delete_once() -> None:
    s = spec()
    old = snapshot([{"id": 1, "v": 1}, {"id": 2, "v": 1}, {"id": 3, "v": 1}], s)
    new = index_items([{"id": 1, "v": 1}, {"id": 2, "v": 2}, {"id": 4, "v": 1}], s)
    changes = diff(old, new)
    assert [(c.change, c.key) for c in changes] == [
        ("updated", "2"),
        ("created", "4"),
        ("deleted", "3"),
    ]
    deleted = changes[-1]
    assert deleted.token == old["3"] and deleted.item is None


def test_diff_of_the_same_items_is_empty() -> None:
    s = spec()
    items = [{"id": i, "v": i} for i in range(50)]
    assert diff(snapshot(items, s), index_items(items, s)) == []


def test_an_empty_answer_deletes_everything_and_no_snapshot_creates_everything() -> None:
    s = spec()
    items = [{"id": i} for i in range(3)]
    assert {c.change for c in diff(snapshot(items, s), index_items([], s))} == {"deleted"}
    assert [c.change for c in diff({}, index_items(items, s))] == ["created"] * 3


def test_previous_attributes_hold_old_values_of_changed_top_level_fields() -> None:
    old = {"id": 1, "status": "open", "n": {"a": 1}, "gone": True, "same": 1, "at": 1}
    new = {"id": 1, "status": "paid", "n": {"a": 2}, "added": 5, "same": 1, "at": 2}
    prev = previous_attributes(old, new, [("at",)])
    assert prev == {"status": "open", "n": {"a": 1}, "gone": True, "added": None}


def test_build_events_shapes_data_time_ids_and_types() -> None:
    s = spec(time="updated_at")
    changes = [
        ItemChange("created", "1", "h:a", {"id": 1, "updated_at": 1_700_000_000}),
        ItemChange(
            "updated", "2", "h:b", {"id": 2, "s": "new", "updated_at": "2026-01-01T00:00:00Z"}
        ),
        ItemChange("deleted", "3", "h:c"),
    ]
    stored = {"2": {"id": 2, "s": "old"}, "3": {"id": 3, "s": "x"}}
    events = build_events(
        changes, stored, s, EventSpec("orders", "shop.{change}"), generation=4, recorded_ms=5
    )
    created, updated, deleted = events
    assert [e.type for e in events] == ["shop.created", "shop.updated", "shop.deleted"]
    assert all(e.origin == "poll" and e.recorded_ms == 5 for e in events)
    assert created.subject == "1" and created.time_ms == 1_700_000_000_000
    assert created.data == {"object": {"id": 1, "updated_at": 1_700_000_000}}
    assert updated.data["previous_attributes"] == {"s": "old", "updated_at": None}
    assert updated.time_ms == 1_767_225_600_000
    assert deleted.data == {"object": {"id": 3, "s": "x"}} and deleted.change == "deleted"
    assert created.id == event_id("orders", "1", "created", "h:a", "4")


def test_a_key_with_characters_a_cloudevent_cannot_hold_gives_u_fffd_in_its_attributes() -> None:
    """The item key stays as it is (the snapshot's, and the id's); its event's subject and
    upstream id hold U+FFFD for what a CloudEvents String may not (a NUL, a newline)."""
    key = "a\x00b\n"
    change = [ItemChange("created", key, "h:a", {"id": key})]
    (event,) = build_events(change, {}, spec(), EventSpec("src"), generation=1, recorded_ms=1)
    assert event.subject == event.upstream_id == "a\ufffdb\ufffd"
    assert event.id == event_id("src", key, "created", "h:a", "1")
    assert event.data == {"object": {"id": key}}


def test_ids_are_stable_per_generation_and_new_in_the_next() -> None:
    s = spec()
    change = [ItemChange("updated", "1", "h:a", {"id": 1})]
    es = EventSpec("src")
    one = build_events(change, {}, s, es, generation=1, recorded_ms=1)
    again = build_events(change, {}, s, es, generation=1, recorded_ms=2)
    later = build_events(change, {}, s, es, generation=2, recorded_ms=3)
    assert one[0].id == again[0].id
    assert later[0].id != one[0].id


def test_emit_filters_changes() -> None:
    changes = [ItemChange("created", "1", "h:a", {"id": 1}), ItemChange("deleted", "2", "h:b")]
    events = build_events(
        changes,
        {"2": {"id": 2}},
        spec(),
        EventSpec("s", emit=frozenset({"deleted"})),
        generation=0,
        recorded_ms=1,
    )
    assert [e.change for e in events] == ["deleted"]


def test_a_large_answer_diffs_correctly() -> None:
    s = spec(version="v")
    items = [{"id": i, "v": 1} for i in range(100_000)]
    old = snapshot(items, s)
    items[10] = {"id": 10, "v": 2}
    del items[20]
    items.append({"id": 100_000, "v": 1})
    changes = diff(old, index_items(items, s))
    assert [(c.change, c.key) for c in changes] == [
        ("updated", "10"),
        ("created", "100000"),
        ("deleted", "20"),
    ]


# -- the interval policy ---------------------------------------------------------------------


def test_adaptive_interval_speeds_up_on_change_and_slows_down_geometrically() -> None:
    config = parse_config(
        "sources:\n  s:\n    poll:\n      url: http://h/x\n      id: id\n"
        "      every: {min: 2s, max: 60s}\n"
    )
    poll = config.sources["s"].poll
    assert poll is not None
    every = poll.every
    delays = [base_interval_s(every, None, changed=False)]
    for _ in range(7):
        delays.append(base_interval_s(every, delays[-1], changed=False))
    assert delays == [2, 4, 8, 16, 32, 60, 60, 60]
    assert base_interval_s(every, 60, changed=True) == 2
    assert base_interval_s(5.0, 60, changed=True) == 5.0
    assert base_interval_s(5.0, 5.0, changed=False) == 5.0


def test_backoff_honours_retry_after_else_grows_with_jitter_up_to_ten_intervals() -> None:
    assert backoff_s(10, 1, 3.0) == 3.0
    assert backoff_s(10, 1, 10**9) == 86400.0
    low = [backoff_s(10, n, None, rand=lambda: 0.0) for n in range(1, 8)]
    high = [backoff_s(10, n, None, rand=lambda: 1.0) for n in range(1, 8)]
    assert high == [20, 40, 80, 100, 100, 100, 100]
    assert low == [h / 2 for h in high]


def test_getters_handle_field_paths_and_any_other_expression() -> None:
    from bridge.poll.diff import getter

    assert getter("a.b")({"a": {"b": 3}}) == 3
    assert getter("a.b")({"a": 1}) is None
    assert getter("a")("not a dict") is None
    assert getter("join('-', [kind, to_string(n)])")({"kind": "x", "n": 2}) == "x-2"
    indexed = index_items([{"k": "a", "n": 1}], spec(id="join('-', [k, to_string(n)])"))
    assert list(indexed.items) == ["a-1"]


@pytest.mark.anyio
async def test_fetch_retries_once_on_a_connection_the_server_just_closed() -> None:
    # A unit of one function: MockTransport stands in for the keep-alive race, which a real
    # server shows only by chance.
    import httpx

    from bridge.config import PollConfig
    from bridge.poll.fetch import fetch

    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(200, json=[{"id": 1}])

    poll = PollConfig.model_validate({"url": "http://127.0.0.1:9/items", "every": 5, "id": "id"})
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        got = await fetch(client, poll)
    assert got.items == [{"id": 1}] and got.requests == 2 and len(calls) == 2


@pytest.mark.anyio
async def test_fetch_gives_up_after_the_one_retry() -> None:
    import httpx

    from bridge.config import PollConfig
    from bridge.errors import FetchError
    from bridge.poll.fetch import fetch

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("connection reset")

    poll = PollConfig.model_validate({"url": "http://127.0.0.1:9/items", "every": 5, "id": "id"})
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(FetchError):
            await fetch(client, poll)


def test_items_whose_key_is_longer_than_the_limit_are_counted_and_left_out() -> None:
    from bridge.events import MAX_ATTRIBUTE_BYTES

    longest = "k" * MAX_ATTRIBUTE_BYTES
    items = [{"id": longest}, {"id": longest + "k"}, {"id": "é" * 513}, {"id": "é" * 512}]
    indexed = index_items(items, spec())
    assert list(indexed.items) == [longest, "é" * 512]
    assert (indexed.too_long, indexed.skipped) == (2, 0)


def test_a_type_template_that_makes_types_too_long_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"sources.s.poll.type: makes types longer than 1024"):
        spec(type='"{source}.{change}.' + "x" * 1015 + '"')  # s.updated. + 1015: 1025 bytes
    spec(type='"{source}.{change}.' + "x" * 1014 + '"')
