"""A disk-writing neighbour: `python -m bench.neighbour FILE` writes and fsyncs until stopped.

Other jobs on a shared machine write to the same disk; their fsyncs queue with the bridge's
and stretch its commits. This stands in for them, the same in every run: 16 KiB appended
and synced, then 5 ms of rest (a busy database's commits: up to 200 fsyncs a second), over
and over, the file cut back every 64 MiB, so that it takes no more room.
"""

from __future__ import annotations

import os
import signal
import sys
import time

CHUNK = b"\0" * 16384
REST_S = 0.005
LIMIT = 64 * 1024 * 1024


def main(path: str) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    written = 0
    try:
        while True:
            os.write(fd, CHUNK)
            os.fsync(fd)
            time.sleep(REST_S)
            written += len(CHUNK)
            if written >= LIMIT:
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                written = 0
    finally:
        os.close(fd)
        os.unlink(path)


if __name__ == "__main__":
    main(sys.argv[1])
