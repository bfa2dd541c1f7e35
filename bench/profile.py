"""Profiles of the daemon under a benchmark's load, with py-spy (`python -m bench --profile`).

py-spy attaches to the running daemon, samples every thread's Python stack and writes the
collapsed stacks when the daemon exits; `summarize` turns them into the functions with the
most samples, on their own ("self") and with what they call ("total").
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path


@contextlib.contextmanager
def py_spy(pid: int, out_stem: Path, rate_hz: int = 250) -> Iterator[None]:
    """Sample `pid` with py-spy while the block runs; write OUT.txt (collapsed) and OUT.top.txt."""
    exe = shutil.which("py-spy") or str(Path(__import__("sys").executable).parent / "py-spy")
    raw = out_stem.with_suffix(".txt")
    raw.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--rate", str(rate_hz), "--format", "raw",
         "--threads", "--nonblocking", "--output", str(raw)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        yield
    finally:
        try:
            _, err = spy.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate(timeout=10)
        if raw.exists():
            top = summarize(raw.read_text().splitlines())
            out_stem.with_suffix(".top.txt").write_text(top)
        else:
            out_stem.with_suffix(".top.txt").write_text(f"py-spy wrote nothing: {err!r}\n")


def summarize(lines: Iterable[str], limit: int = 25) -> str:
    """The hottest functions of collapsed stacks (`frame;frame;frame COUNT` per line)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    if not samples:
        return "no samples\n"
    out = [f"{samples} samples", "", "self %  function"]
    out += [f"{100 * n / samples:6.1f}  {f}" for f, n in own.most_common(limit)]
    out += ["", "total %  function"]
    out += [f"{100 * n / samples:6.1f}  {f}" for f, n in total.most_common(limit)]
    return "\n".join(out) + "\n"
