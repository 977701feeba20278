"""Exclusive writer locks on an index directory (and its ``.partial`` work directory).

``index build``, ``index add`` and ``--resume`` hold ``.<name>.lock`` beside the index directory for as
long as they write. The lock is an ``fcntl.flock`` on that file, so the kernel releases it when the
holder exits or is killed; the file records the holder (pid, host, start time) for the error message.
A second writer fails at once with :class:`IndexLockedError`. A lock file left by a dead process
(whatever it records) is not locked by anyone, so the next writer simply takes it over.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from hsenet_search.errors import HSENetError


class IndexLockedError(HSENetError):
    """Another process is writing this index."""


def lock_path(index_dir: str | Path) -> Path:
    """The lock file guarding ``index_dir`` and ``index_dir.partial``."""
    index_dir = Path(index_dir)
    return index_dir.with_name(f".{index_dir.name}.lock")


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {info['pid']} on {info['host']} since {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


class IndexLock:
    """``with IndexLock(index_dir, "build"):`` -- exclusive, non-blocking, released on exit or death."""

    def __init__(self, index_dir: str | Path, action: str):
        self.index_dir = Path(index_dir)
        self.action = action
        self.path = lock_path(self.index_dir)
        self._fd: int | None = None

    def acquire(self) -> IndexLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise IndexLockedError(
                f"another writer holds this index ({_holder(self.path)}); wait for it to "
                f"finish (a killed writer releases the lock at once)",
                self.index_dir,
            ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "action": self.action,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> IndexLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
