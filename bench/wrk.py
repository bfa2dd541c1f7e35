"""wrk as the closed-loop load generator, when it is installed (Debian's `wrk` package).

wrk spends far less CPU per request than any Python client, so on a 2-core machine it
leaves the server the core it needs; a Python generator would be the bottleneck of the bare
baseline and flatter the ratio. Requests are signed beforehand in Python, written one per
line (the header names on the first line, then each request's header values and body, tab
separated), and replayed by a small Lua script; its `done` hook prints the figures as JSON.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.load import Prepared

SCRIPT = r"""
local requests = {}
local n = 0
local i = 0

init = function(args)
  local names = nil
  for line in io.lines(args[1]) do
    local fields = {}
    for field in (line .. "\t"):gmatch("([^\t]*)\t") do fields[#fields + 1] = field end
    if names == nil then
      names = fields
    else
      local headers = {}
      for k = 1, #names do headers[names[k]] = fields[k] end
      n = n + 1
      requests[n] = wrk.format("POST", nil, headers, fields[#names + 1])
    end
  end
end

request = function()
  i = i + 1
  if i > n then i = 1 end
  return requests[i]
end

done = function(summary, latency, requests)
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


@dataclass
class WrkResult:
    """What wrk reports of one run."""

    requests: int
    ok: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int

    @property
    def rate(self) -> float:
        """Answered-with-success requests per second."""
        return self.ok / self.duration_s if self.duration_s else 0.0


def available() -> bool:
    """True when a `wrk` binary is on the PATH."""
    return shutil.which("wrk") is not None


def closed_loop(
    url: str, requests: Sequence[Prepared], workdir: Path, *, connections: int, duration_s: float
) -> WrkResult:
    """Replay `requests` (cycling if wrk outruns them) with `connections` open, one thread."""
    lines = workdir / "wrk-requests.tsv"
    names = list(requests[0].headers)
    with lines.open("w") as f:
        f.write("\t".join(names) + "\n")
        for r in requests:
            values = [r.headers[name] for name in names]
            f.write("\t".join([*values, r.body.decode()]) + "\n")
    script = workdir / "bench.lua"
    script.write_text(SCRIPT)
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "-s",
            str(script), url, "--", str(lines)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60)
    found = [ln for ln in done.stdout.splitlines() if ln.startswith("BENCH ")]
    if done.returncode != 0 or not found:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[:300]}")
    data = json.loads(found[-1][len("BENCH ") :])
    bad = data["status_errors"] + data["socket_errors"]
    return WrkResult(
        requests=data["requests"],
        ok=data["requests"] - data["status_errors"],
        duration_s=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        errors=bad,
    )
