"""Engines run batches of items through ``Labeler`` and yield each batch's records as it
finishes: ``serial`` (in this process, the reference) and ``local`` (a pool of spawned worker
processes on this machine, one model per worker); ``ray`` lives in ``ray_engine.py``.

``local``: ``workers`` processes (``multiprocessing`` spawn, ``concurrent.futures``), each
loading the model once and running ``threads`` torch threads, ``workers x threads <=`` the
usable CPUs by default. Workers ignore Ctrl-C (the driver stops them) and die with the driver
(Linux: ``PR_SET_PDEATHSIG``), so a killed job leaves no process behind. A worker that dies
(killed, out of memory, a crash in native code) breaks the pool: the pool is restarted and the
batches it was running are tried again one image at a time; an image that kills a worker on its
own is recorded as a failure. A model that cannot be loaded stops the job with its own error.
Every engine raises ``StallError`` when no batch finished for ``stall_timeout`` seconds.
"""
from __future__ import annotations

import os
import signal
import sys
from collections import deque
from typing import Deque, Dict, Iterator, List, Optional, Sequence, Tuple

from .. import errors
from ..errors import SamkitError
from .settings import LabelSettings
from .sources import Item
from .worker import Labeler, fail_record

MAX_RESTARTS = 20
EARLY_DEATHS = 3  # pool restarts without any finished batch: the workers cannot start
DIED = ("the worker process died while labelling this image (killed, out of memory, or a crash in native code); "
        "it is tried again on the next run")


class StallError(SamkitError):
    """No batch finished for ``stall_timeout`` seconds."""


def stall_message(seconds: float, engine: str, detail: str = "") -> str:
    return (f"no image finished in the last {seconds:g} s ({engine}{'; ' + detail if detail else ''}), so the job "
            "was stopped; finished images are kept and a rerun resumes. Fix: raise --stall-timeout when one batch "
            "can take longer (a large model on CPU, many points per side), or check the workers' memory and CPUs.")


def rebuild_error(kind: str, message: str) -> Exception:
    """A worker's model-loading error, raised again in the driver with its samkit type."""
    cls = getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        return cls(message)
    if kind == "KeyError":
        return KeyError(message)
    return SamkitError(f"a worker could not load the model: {kind}: {message}. Fix: check the model and its weights "
                       "(`samkit models info NAME`).")


def worker_threads(workers: int, threads: Optional[int]) -> int:
    """Threads per worker: ``threads``, else the usable CPUs shared out (at least 1)."""
    from ..threads import usable_cpus

    return int(threads) if threads else max(1, usable_cpus() // max(1, workers))


def chunks(items: Sequence[Item], size: int) -> List[List[Item]]:
    return [list(items[i:i + size]) for i in range(0, len(items), max(1, int(size)))]


class SerialEngine:
    """Everything in this process (the reference the other engines are tested against)."""

    name = "serial"

    def __init__(self, settings: LabelSettings, threads: Optional[int] = None) -> None:
        self.settings, self.threads, self.workers = settings, threads, 1

    def run(self, items: Sequence[Item], batch_size: int) -> Iterator[List[dict]]:
        labeler = Labeler(self.settings, self.threads)
        for batch in chunks(items, batch_size):
            yield labeler.label_batch(batch)

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- local pool (worker side)
_STATE: Dict[str, object] = {}


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the driver died before prctl took effect
        os._exit(1)


def _init_worker(settings: LabelSettings, threads: int, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    _die_with_parent(parent)
    _STATE.update(settings=settings, threads=threads, labeler=None)


def _work(rows: List[dict]) -> Tuple[str, object, str]:
    if _STATE.get("labeler") is None:
        try:
            _STATE["labeler"] = Labeler(_STATE["settings"], _STATE["threads"])
        except Exception as exc:  # noqa: BLE001 - sent to the driver, which raises it
            return "fatal", type(exc).__name__, str(exc.args[0]) if exc.args else str(exc)
    return "ok", _STATE["labeler"].label_batch([Item(**r) for r in rows]), ""


# ----------------------------------------------------------------------------- local pool (driver side)
class LocalEngine:
    """A pool of ``workers`` spawned processes (module docstring)."""

    name = "local"

    def __init__(self, settings: LabelSettings, workers: int, threads: Optional[int] = None,
                 stall_timeout: float = 900.0) -> None:
        self.settings, self.workers = settings, int(workers)
        self.threads = worker_threads(self.workers, threads)
        self.stall_timeout = float(stall_timeout)
        self.pool = None
        self.restarts = 0
        self.finished = 0  # batches a worker returned

    def _start(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")
        self.pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                        initargs=(self.settings, self.threads, os.getpid()))
        return self.pool

    def run(self, items: Sequence[Item], batch_size: int) -> Iterator[List[dict]]:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        queue: Deque[Tuple[List[Item], bool]] = deque((b, False) for b in chunks(items, batch_size))
        inflight: dict = {}
        pool = self._start()
        while queue or inflight:
            while queue and len(inflight) < 2 * self.workers:
                batch, retried = queue.popleft()
                inflight[pool.submit(_work, [it.row() for it in batch])] = (batch, retried)
            done, _ = wait(list(inflight), timeout=self.stall_timeout, return_when=FIRST_COMPLETED)
            if not done:
                raise StallError(stall_message(self.stall_timeout, "local engine",
                                               f"{self.workers} worker(s), {len(inflight)} batch(es) running"))
            broken = False
            for fut in done:
                batch, retried = inflight.pop(fut)
                try:
                    kind, payload, message = fut.result()
                except BrokenProcessPool:
                    broken = True
                    if retried:
                        yield [fail_record(it, DIED) for it in batch]
                    else:
                        queue.extend(([it], True) for it in batch)
                    continue
                if kind == "fatal":
                    raise rebuild_error(str(payload), message)
                self.finished += 1
                yield payload
            if broken:
                pool = self._restart(queue, inflight)

    def _restart(self, queue, inflight):
        """Requeue what the broken pool was running (one image per batch) and start a new pool."""
        for fut, (batch, retried) in list(inflight.items()):
            queue.extendleft(([it], True) for it in reversed(batch))
        inflight.clear()
        self.restarts += 1
        if self.finished == 0 and self.restarts >= EARLY_DEATHS:
            raise SamkitError(f"the worker processes died {self.restarts} times before finishing any image, so the job "
                              "was stopped. Fix: in a Python script, call label_dataset under `if __name__ == "
                              "'__main__':` (workers are spawned and import the script); otherwise check that the "
                              "model loads with --engine serial, and the machine's memory.")
        if self.restarts > MAX_RESTARTS:
            raise SamkitError(f"worker processes died {self.restarts} times, so the job was stopped; finished images "
                              "are kept. Fix: lower --num-workers or use a smaller model (each worker holds one), "
                              "and check the machine's memory.")
        self._kill()
        return self._start()

    def _kill(self) -> None:
        pool, self.pool = self.pool, None
        if pool is None:
            return
        procs = list(getattr(pool, "_processes", {}).values())  # terminate_workers() needs Python 3.14
        for p in procs:
            try:
                p.terminate()
            except (OSError, AttributeError):
                pass
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            p.join(timeout=5)

    def close(self) -> None:
        self._kill()
