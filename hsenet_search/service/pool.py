"""A bounded worker pool for CPU-bound work: a full pool refuses new jobs instead of queueing them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Overloaded(Exception):
    """Every worker is busy and the waiting queue is full (answered as 503 with Retry-After)."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class BoundedPool:
    """``workers`` threads plus at most ``queue`` waiting jobs; more jobs raise :class:`Overloaded`.

    A job that outlives ``timeout_s`` answers :class:`Overloaded` too; it keeps its slot until it ends, so a
    slow job still counts against the bound.
    """

    def __init__(self, workers: int, queue: int, timeout_s: float):
        self.workers = max(1, workers)
        self.capacity = self.workers + max(0, queue)
        self.timeout_s = timeout_s
        self._slots = threading.BoundedSemaphore(self.capacity)
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="hsenet-worker")
        self._lock = threading.Lock()
        self.in_flight = 0

    async def run(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on a worker thread and await its result."""
        if not self._slots.acquire(blocking=False):
            raise Overloaded(f"the server is busy ({self.capacity} jobs running or waiting); retry shortly")
        with self._lock:
            self.in_flight += 1
        try:
            future = self._executor.submit(fn, *args, **kwargs)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(lambda _f: self._release())
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except asyncio.TimeoutError as exc:
            raise Overloaded(f"the request took longer than {self.timeout_s:g} s; retry later", 5) from exc

    def _release(self) -> None:
        with self._lock:
            self.in_flight -= 1
        self._slots.release()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
