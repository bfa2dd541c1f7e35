"""The baseline of the poll-diff figure: the least work a diff of one big answer can do.

    python -m bench.bare_diff --url URL --polls K

Fetches the answer, parses it, and compares every item (canonical JSON) with the previous
answer's, K times after a first snapshot; prints the CPU seconds per poll and the peak RSS
of this process (resource.getrusage) as JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import urllib.request
from typing import Any


def snapshot(url: str) -> dict[Any, str]:
    """The answer's items by id, each as canonical JSON."""
    with urllib.request.urlopen(url, timeout=60) as resp:
        body = resp.read()
    return {item["id"]: json.dumps(item, sort_keys=True) for item in json.loads(body)["items"]}


def changed(old: dict[Any, str], new: dict[Any, str]) -> int:
    """How many items were created, updated or deleted."""
    updated = sum(1 for key, value in new.items() if old.get(key, value) != value)
    return updated + len(new.keys() - old.keys()) + len(old.keys() - new.keys())


def main() -> None:
    """Poll K times and print CPU per poll and peak RSS."""
    parser = argparse.ArgumentParser(prog="python -m bench.bare_diff")
    parser.add_argument("--url", required=True)
    parser.add_argument("--polls", type=int, default=3)
    args = parser.parse_args()
    previous = snapshot(args.url)
    before = resource.getrusage(resource.RUSAGE_SELF)
    changes = 0
    for _ in range(args.polls):
        current = snapshot(args.url)
        changes += changed(previous, current)
        previous = current
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    print(
        json.dumps(
            {
                "cpu_s_per_poll": cpu_s / args.polls,
                "peak_rss_mb": after.ru_maxrss / 1024,
                "changes_per_poll": changes / args.polls,
            }
        )
    )


if __name__ == "__main__":
    main()
