"""The one inference queue of the server.

Every model call (encode, decode, everything-mode, text prompts, video steps, frame decoding)
runs on ONE worker thread, in order: the models are not thread-safe and a CPU gives nothing to
two encodes at once. At most ``bound`` jobs wait or run at a time; one more is refused at once
with HTTP 429 and a ``Retry-After`` header (``wait=True`` jobs, the steps of a video
propagation already under way, queue for a slot instead, up to the timeout). A caller waits at
most ``timeout_s`` for its result (504 after that; a job that has not started yet is dropped,
one that has started finishes in the background and its result is discarded).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any, Callable

from .errors import HTTPProblem, busy


class InferenceQueue:
    """Single-worker queue with a bound and a timeout (see module docstring)."""

    def __init__(self, bound: int = 8, timeout_s: float = 60.0) -> None:
        if bound < 1:
            raise ValueError("the queue bound must be at least 1")
        self.bound = int(bound)
        self.timeout_s = float(timeout_s)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="samkit-inference")
        self._lock = threading.Lock()
        self._free = threading.Condition(self._lock)
        self.pending = 0
        self.stats = {"submitted": 0, "rejected": 0, "timeouts": 0, "max_pending": 0}

    def _take_slot(self, wait: bool, deadline: float) -> bool:
        with self._free:
            while self.pending >= self.bound:
                left = deadline - time.monotonic()
                if not wait or left <= 0:
                    return False
                self._free.wait(min(left, 0.5))
            self.pending += 1
            self.stats["submitted"] += 1
            self.stats["max_pending"] = max(self.stats["max_pending"], self.pending)
            return True

    def _release(self, _future: Any = None) -> None:
        with self._free:
            self.pending -= 1
            self._free.notify()

    async def run(self, fn: Callable[..., Any], *args: Any, wait: bool = False, timeout_s: float = None) -> Any:
        """Run ``fn(*args)`` on the worker; HTTP 429 when the queue is full (unless ``wait``),
        504 after ``timeout_s`` (default the queue's)."""
        timeout = self.timeout_s if timeout_s is None else float(timeout_s)
        deadline = time.monotonic() + timeout
        if wait:
            ok = await asyncio.get_running_loop().run_in_executor(None, self._take_slot, True, deadline)
        else:
            ok = self._take_slot(False, deadline)
        if not ok:
            self.stats["rejected"] += 1
            raise busy(f"the server is busy ({self.bound} inference jobs are queued). Fix: retry in a moment "
                       "(Retry-After), or start the server with a larger --queue.")
        future = self._pool.submit(fn, *args)
        future.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), max(0.001, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            self.stats["timeouts"] += 1
            future.cancel()
            raise HTTPProblem(504, f"the model did not answer within {timeout:g} s. Fix: retry, use a smaller image "
                                   "or model, or start the server with a larger --timeout.") from None

    def call_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` on the worker from a non-async thread and wait (start-up work, tests)."""
        return self._pool.submit(fn, *args).result()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def snapshot(self) -> dict:
        with self._lock:
            return {"bound": self.bound, "pending": self.pending, "timeout_s": self.timeout_s, **self.stats}
