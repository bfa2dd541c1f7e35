"""What machine a run was measured on: cores, CPU model, memory, Python, package versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("bridge", "starlette", "uvicorn", "aiohttp", "httpx", "pydantic", "sqlite-utils")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _wrk_version() -> str | None:
    path = shutil.which("wrk")
    if not path:
        return None
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=5)
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "present"


def describe() -> dict[str, Any]:
    """The machine facts recorded with every run."""
    import sqlite3

    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "packages": {name: _version(name) for name in PACKAGES},
        "wrk": _wrk_version(),
        # The machine is shared: how busy it was when the run began says how far to trust it.
        "load_1m": round(os.getloadavg()[0], 2),
    }
