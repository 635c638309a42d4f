"""CPU thread settings: use every core this process may run on, and never more.

torch sizes its intra-op pool from the machine's core count. In a container or under a CPU
quota (cgroup ``cpu.max``) or a restricted affinity mask (``taskset``), that count can exceed
the CPUs we may actually use, and oversubscribed BLAS threads spin against each other.
:func:`configure_threads` sets the pool to the usable count (or to ``SAMKIT_NUM_THREADS`` /
an explicit ``n``); :func:`samkit.load_model` calls it once with ``clamp_only=True``, which
only ever lowers an oversubscribed setting and leaves a user's own choice alone.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

from .errors import InputError

ENV = "SAMKIT_NUM_THREADS"


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> Optional[float]:
    """CPUs allowed by a cgroup quota (v2 ``cpu.max`` or v1 ``cfs_quota_us``), None if unlimited."""
    try:
        text = (root / "cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup quota (at least 1)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def configure_threads(n: Optional[int] = None, clamp_only: bool = False) -> int:
    """Set torch's intra-op threads to ``n``, else ``$SAMKIT_NUM_THREADS``, else the usable CPU
    count; with ``clamp_only`` only lower an oversubscribed pool. Returns the thread count."""
    import torch

    if n is None and os.environ.get(ENV):
        raw = os.environ[ENV]
        try:
            n = int(raw)
        except ValueError:
            raise InputError(f"{ENV}={raw!r} is not a whole number. Fix: set it to a thread count "
                             f"such as {usable_cpus()}, or unset it.") from None
        clamp_only = False
    if n is not None and n < 1:
        raise InputError(f"thread count must be at least 1, got {n}. Fix: pass a positive number.")
    target = usable_cpus() if n is None else n
    if clamp_only and torch.get_num_threads() <= target:
        return torch.get_num_threads()
    if torch.get_num_threads() != target:
        torch.set_num_threads(target)
    return target
