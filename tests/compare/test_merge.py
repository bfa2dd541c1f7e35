"""Merging push and poll: the pure parts, the config rules, and the store on both backends."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import yaml

from bridge.compare.merge import figures, merged_event, normalize_version
from bridge.config import MergeConfig, parse_config
from bridge.errors import ConfigError
from bridge.events import Event
from bridge.store import NewEvent, Store
from bridge.store.base import SightingRecord


def test_versions_of_the_same_instant_normalize_to_the_same_text() -> None:
    assert normalize_version("2026-12-01T10:00:00Z") == normalize_version(1796119200)
    assert normalize_version(1796119200) == normalize_version(1796119200000)
    assert normalize_version("2026-12-01T10:00:00.000+00:00") == "2026-12-01T10:00:00.000Z"
    assert normalize_version("2026-12-01T11:00:00+01:00") == "2026-12-01T10:00:00.000Z"
    assert normalize_version("v7") == "v7"
    assert normalize_version(3) == normalize_version(3.0) == normalize_version("3")
    assert normalize_version(None) is None and normalize_version({"a": 1}) is None
    assert normalize_version("") is None


def event(origin: str, source: str, **fields: object) -> Event:
    values: dict = {"id": "x", "type": "item.updated", "data": {}, "recorded_ms": 1, **fields}
    return Event(source=source, origin=origin, **values)  # type: ignore[arg-type]


def test_both_paths_of_one_change_make_one_merged_id() -> None:
    merge = MergeConfig(name="items", sources=["hook", "api"], match="version")
    push = event("push", "hook", subject="42", upstream_id="evt_1")
    poll = event("poll", "api", subject="42", change="updated", upstream_id="42")
    by_push = merged_event(merge, push, "push", "2026-12-01T10:00:00Z")
    by_poll = merged_event(merge, poll, "poll", 1796119200)
    assert by_push is not None and by_poll is not None
    assert by_push[0].id == by_poll[0].id and by_push[0].source == "items"
    assert (by_push[0].origin, by_poll[0].origin) == ("push", "poll")
    other = merged_event(merge, poll, "poll", 1796119201)
    assert other is not None and other[0].id != by_push[0].id
    assert merged_event(merge, push, "push", None) is None  # no version: no identity
    by_id = MergeConfig(name="items", sources=["hook", "api"], match="id")
    assert merged_event(by_id, push, "push")[0].id != by_push[0].id  # type: ignore[index]


def test_figures_count_each_change_once_and_the_lead_exactly() -> None:
    rows = [
        SightingRecord("a", "push", 1_000),
        SightingRecord("a", "poll", 3_500),  # push led by 2.5 s
        SightingRecord("b", "poll", 2_000),  # push missed it
        SightingRecord("c", "push", 4_000),  # polling never saw it
        SightingRecord("d", "poll", 5_000),
        SightingRecord("d", "push", 6_000),  # push came late: poll first
    ]
    f = figures("m", rows)
    assert (f.changes, f.both, f.only_poll, f.only_push) == (4, 2, 1, 1)
    assert (f.first_push, f.first_poll) == (2, 2)
    assert sorted(f.push_lead_ms) == [-1_000, 2_500]
    assert f.to_dict()["push_lead_ms"] == {"p50": -1_000, "p95": 2_500, "min": -1_000, "max": 2_500}


BASE = {
    "sources": {
        "hook": {"webhook": {"verify": "none", "allow_unsigned": True,
                             "version": "body.updated_at"}},
        "api": {"poll": {"url": "http://127.0.0.1:9/items", "every": "1s", "id": "id",
                         "version": "updated_at"}},
        "feed": {"poll": {"url": "http://127.0.0.1:9/events", "every": "1s", "id": "id",
                          "mode": "feed", "feed": {"type": "type"}}},
        "other": {"webhook": {"verify": "none", "allow_unsigned": True}},
    },
    "targets": {"t": {"url": "http://127.0.0.1:9/in",
                      "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "sources": ["items"]}},
}  # fmt: skip


def with_merge(*merges: dict, **changes: dict) -> str:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    for path, value in changes.items():
        source, kind, key = path.split("__")
        data["sources"][source][kind][key] = value
    return yaml.safe_dump({**data, "merge": list(merges)}, sort_keys=False)


def test_a_valid_merge_parses_and_a_target_may_name_it() -> None:
    config = parse_config(with_merge({"name": "items", "sources": ["hook", "api"],
                                      "match": "version"}))  # fmt: skip
    assert config.merge_of("api") == config.merge_of("hook") == config.merge[0]
    assert config.merge_of("other") is None


@pytest.mark.parametrize(
    ("merges", "message"),
    [
        ([{"name": "items", "sources": ["hook", "nope"], "match": "version"}],
         r"merge\.0\.sources\.1: \"nope\" is not a source"),
        ([{"name": "items", "sources": ["hook", "api"], "match": "version"},
          {"name": "more", "sources": ["other", "api"], "match": "version"}],
         r"merge\.1\.sources\.1: \"api\" is already in merge items"),
        ([{"name": "hook", "sources": ["other", "api"], "match": "version"}],
         r"merge\.0\.name: \"hook\" is already a name"),
        ([{"name": "Items!", "sources": ["hook", "api"], "match": "version"}],
         r"merge\.0\.name: \"Items!\" is not a valid name"),
        ([{"name": "items", "sources": ["hook", "other"], "match": "version"}],
         r"merge\.0\.sources: needs one webhook and one poll source"),
        ([{"name": "items", "sources": ["hook", "api"], "match": "id"}],
         r"match: id needs a poll source with mode: feed"),
        ([{"name": "items", "sources": ["other", "api"], "match": "version"}],
         r"match: version needs a webhook source with a version"),
        ([{"name": "items", "sources": ["hook", "api"], "match": "nearest"}],
         r"merge\.0\.match: \"nearest\" is not one of"),
    ],
)  # fmt: skip
def test_merge_mistakes_get_one_line_naming_the_key(merges: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(with_merge(*merges))


def test_match_version_needs_a_version_on_the_poll_source() -> None:
    text = with_merge({"name": "items", "sources": ["hook", "api"], "match": "version"})
    data = yaml.safe_load(text)
    del data["sources"]["api"]["poll"]["version"]
    with pytest.raises(ConfigError, match="match: version needs a poll source with a version"):
        parse_config(yaml.safe_dump(data))


def test_a_target_naming_an_unknown_source_or_merge_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"\"items\" is not a source or a merge"):
        parse_config(with_merge())


# -- the store: two sightings, one event, one delivery per target ---------------------------


def sighted(merge: MergeConfig, path: str, recorded_ms: int) -> NewEvent:
    member = event(path, "hook" if path == "push" else "api", subject="42", change="updated",
                   recorded_ms=recorded_ms, upstream_id="42")  # fmt: skip
    found = merged_event(merge, member, path, "2026-12-01T10:00:00Z")  # type: ignore[arg-type]
    assert found is not None
    return NewEvent(found[0], ["t"], found[1])


@pytest.mark.anyio
async def test_two_sightings_at_once_on_two_stores_make_one_event_and_one_delivery(
    backend: Callable[..., Store],
) -> None:
    """Two replicas (two stores on one database) record the same change in one instant."""
    merge = MergeConfig(name="items", sources=["hook", "api"], match="version")
    one, two = backend("replica-1"), backend("replica-2")
    for _ in range(5):  # several rounds of the race, each its own change
        merge = MergeConfig(name=f"items-{_}", sources=["hook", "api"], match="version")
        push, poll = sighted(merge, "push", 1_000), sighted(merge, "poll", 1_001)
        results = await asyncio.gather(one.record_events([push]), two.record_events([poll]))
        assert sorted(r[0] for r in results) == [False, True]  # exactly one created it
        assert [e.id for e in await one.list_events(source=merge.name)] == [push.event.id]
        deliveries = await one.list_deliveries(target="t")
        assert sum(d.event_id == push.event.id for d in deliveries) == 1
        rows = await two.list_sightings(merge.name)
        assert sorted(r.path for r in rows) == ["poll", "push"]
        assert figures(merge.name, rows).both == 1
