"""``--engine ray``: the same job as a Ray Data pipeline, ``from_items(rows).map_batches(
RayLabeler, compute=ActorPoolStrategy(size=workers), num_cpus=..., num_gpus=...)``, on the
cluster of ``--ray-address`` or on ``ray.init()`` here (``samkit[ray]``, imported lazily).

Each actor loads the model once (``Labeler``) and returns one JSON record per input row; the
driver iterates the results as they stream in and writes the shards itself, so the output folder
only has to be visible to the driver. Actor CPUs are sized from the cluster's resources
(``actor_resources``): Ray needs some CPU beside the actors for its own tasks, and an actor pool
that asks for every CPU waits forever (measured on a 2-CPU machine with Ray 2.60: two actors at
1 CPU each hang, at 0.5 CPU each the job finishes). A watchdog thread turns "no batch finished for
``stall_timeout`` seconds" into ``StallError`` instead of a hang.
"""
from __future__ import annotations

import json
import math
import os
import queue
import threading
from typing import Iterator, List, Optional, Sequence, Tuple

from ..errors import InputError, require
from .engines import StallError, rebuild_error, stall_message
from .settings import LabelSettings
from .sources import Item
from .worker import Labeler

RESERVE_CPUS = 1.0  # kept free for Ray's own tasks (at most half the cluster)
MIN_ACTOR_CPUS = 0.1


def actor_resources(total_cpus: float, total_gpus: float, workers: Optional[int], cpus_per_worker: Optional[float],
                    gpus_per_worker: float = 0.0) -> Tuple[int, float, float]:
    """(actors, CPUs per actor, GPUs per actor) for a cluster of ``total_cpus`` / ``total_gpus``.

    Defaults: one actor per GPU share (GPU actors), else one per 4 CPUs; the CPUs left after a
    reserve for Ray's own tasks (1 CPU, at most half the cluster) shared among the actors. An
    explicit request that would leave nothing for that reserve, or more GPUs than the cluster has,
    is refused (InputError): such a pool never starts."""
    reserve = min(RESERVE_CPUS, total_cpus / 2.0)
    budget = total_cpus - reserve
    gpus = float(gpus_per_worker or 0.0)
    if gpus < 0 or (cpus_per_worker is not None and cpus_per_worker <= 0):
        raise InputError("--cpus-per-worker must be > 0 and --gpus-per-worker >= 0. Fix: pass positive numbers.")
    if workers is None:
        workers = max(1, int(total_gpus // gpus)) if gpus > 0 else max(1, int(total_cpus // 4))
    if workers < 1:
        raise InputError(f"--num-workers must be at least 1, got {workers}. Fix: pass --num-workers 1 or more.")
    if gpus > 0 and gpus * workers > total_gpus + 1e-9:
        raise InputError(f"{workers} actor(s) x {gpus:g} GPU need {gpus * workers:g} GPU(s) but the Ray cluster has "
                         f"{total_gpus:g}. Fix: lower --num-workers or --gpus-per-worker (or --gpus-per-worker 0).")
    if cpus_per_worker is None:
        cpus = budget / workers
        if gpus > 0:
            cpus = min(cpus, 1.0)
        if cpus < MIN_ACTOR_CPUS:
            raise InputError(f"{workers} actor(s) do not fit on a Ray cluster with {total_cpus:g} CPU(s) (each would "
                             f"get {cpus:.2f}). Fix: lower --num-workers to {max(1, int(budget / MIN_ACTOR_CPUS))} or "
                             "fewer.")
        return workers, round(cpus, 3), gpus
    if cpus_per_worker * workers > budget + 1e-9:
        raise InputError(f"{workers} actor(s) x {cpus_per_worker:g} CPU = {cpus_per_worker * workers:g} CPU leave no "
                         f"CPU for Ray's own tasks on a cluster of {total_cpus:g} CPU(s) (keep {reserve:g} free); such "
                         f"a pool waits forever. Fix: use --cpus-per-worker {budget / workers:.2g} or fewer workers.")
    return workers, float(cpus_per_worker), gpus


class RayLabeler:
    """The Ray Data actor: one ``Labeler`` per actor; a batch of rows -> ``{"record": JSON strings}``.
    A model that cannot be loaded answers every batch with one ``fatal`` record (the driver raises)."""

    def __init__(self, settings: LabelSettings, threads: int) -> None:
        self.labeler, self.fatal = None, None
        try:
            self.labeler = Labeler(settings, threads)
        except Exception as exc:  # noqa: BLE001 - reported through the results
            self.fatal = {"fatal": type(exc).__name__, "message": str(exc.args[0]) if exc.args else str(exc)}

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        n = len(batch["uri"])
        if self.fatal is not None:
            return {"record": np.array([json.dumps(self.fatal)] * n, dtype=object)}
        items = [Item(str(batch["uri"][i]), str(batch["name"][i]), int(batch["image_id"][i]), str(batch["ident"][i]),
                      str(batch["boxes"][i])) for i in range(n)]
        return {"record": np.array([json.dumps(r) for r in self.labeler.label_batch(items)], dtype=object)}


class RayEngine:
    """Runs the job on Ray (module docstring). ``address``: a cluster (``ray://...`` or
    ``HOST:PORT``; ``auto``); None: the Ray instance this process already has, else a new local one."""

    name = "ray"

    def __init__(self, settings: LabelSettings, workers: Optional[int] = None, threads: Optional[int] = None,
                 cpus_per_worker: Optional[float] = None, gpus_per_worker: float = 0.0,
                 address: Optional[str] = None, stall_timeout: float = 900.0) -> None:
        self.ray = require("ray", "ray", "--engine ray")
        require("ray.data", "ray", "--engine ray")
        self.owned = False
        if not self.ray.is_initialized():
            self._init(address)
        res = self.ray.cluster_resources()
        self.total_cpus, self.total_gpus = float(res.get("CPU", 0.0)), float(res.get("GPU", 0.0))
        try:
            self.workers, self.cpus, self.gpus = actor_resources(self.total_cpus, self.total_gpus, workers,
                                                                 cpus_per_worker, gpus_per_worker)
        except InputError:
            self.close()  # the Ray instance started here goes with the refused job
            raise
        self.threads = int(threads) if threads else max(1, int(math.floor(self.cpus)))
        self.settings, self.stall_timeout = settings, float(stall_timeout)

    def _init(self, address: Optional[str]) -> None:
        """``ray.init`` quietly; a local instance gets samkit's folder on PYTHONPATH so that its
        workers import the same samkit as this process."""
        import logging

        import samkit

        here = os.path.dirname(os.path.dirname(os.path.abspath(samkit.__file__)))
        old = os.environ.get("PYTHONPATH")
        if address is None:
            os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, old) if p)
        try:
            self.ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                          log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise InputError(f"cannot start or reach Ray{' at ' + address if address else ''}: {exc}. Fix: check "
                             "--ray-address (e.g. ray://HEAD:10001, or auto on a cluster node).") from None
        finally:
            if address is None:
                if old is None:
                    os.environ.pop("PYTHONPATH", None)
                else:
                    os.environ["PYTHONPATH"] = old
        self.owned = True

    def _dataset(self, items: Sequence[Item], batch_size: int):
        import logging

        import ray.data

        # samkit's own bar reports progress: Ray Data's bars and per-run INFO lines stay off
        self._log_level = logging.getLogger("ray.data").level
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.enable_operator_progress_bars = False
        ds = ray.data.from_items([it.row() for it in items], override_num_blocks=max(1, math.ceil(len(items) /
                                                                                                 batch_size)))
        return ds.map_batches(RayLabeler, fn_constructor_kwargs={"settings": self.settings, "threads": self.threads},
                              batch_size=batch_size, batch_format="numpy",
                              compute=ray.data.ActorPoolStrategy(size=self.workers), num_cpus=self.cpus,
                              num_gpus=self.gpus or None)

    def run(self, items: Sequence[Item], batch_size: int) -> Iterator[List[dict]]:
        if not items:
            return
        results: "queue.Queue" = queue.Queue()
        ds = self._dataset(items, batch_size)

        def pump() -> None:
            try:
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    results.put(("batch", [json.loads(s) for s in batch["record"]]))
                results.put(("end", None))
            except BaseException as exc:  # noqa: BLE001 - handed to the driver thread
                results.put(("error", exc))

        threading.Thread(target=pump, name="samkit-label-ray", daemon=True).start()
        while True:
            try:
                kind, payload = results.get(timeout=self.stall_timeout)
            except queue.Empty:
                raise StallError(stall_message(self.stall_timeout, "ray engine", self._detail())) from None
            if kind == "end":
                return
            if kind == "error":
                raise payload
            fatal = next((r for r in payload if "fatal" in r), None)
            if fatal is not None:
                raise rebuild_error(fatal["fatal"], fatal["message"])
            yield payload

    def _detail(self) -> str:
        try:
            free = self.ray.available_resources()
        except Exception:  # noqa: BLE001 - only a hint for the message
            free = {}
        return (f"{self.workers} actor(s) x {self.cpus:g} CPU{f' x {self.gpus:g} GPU' if self.gpus else ''} on a "
                f"cluster of {self.total_cpus:g} CPU / {self.total_gpus:g} GPU, {free.get('CPU', 0):g} CPU free now")

    def close(self) -> None:
        import logging

        if hasattr(self, "_log_level"):
            logging.getLogger("ray.data").setLevel(self._log_level)
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()
            self.owned = False
