"""Processes, devices and mixed precision.

``torchrun --nproc_per_node N -m samkit.train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init` then joins the process group (NCCL on CUDA,
gloo on CPU), each process on ``cuda:LOCAL_RANK`` or the CPU. Without those variables training
runs in one process and no group is created. AMP (autocast + a gradient scaler for float16) is
used only on CUDA.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, List

import torch
import torch.distributed as tdist

from ..errors import InputError


@dataclass
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = ""

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"{name}={raw!r} is not a whole number. Fix: launch with torchrun, which sets it.") from None


def choose_device(pref: str, local_rank: int) -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:K``."""
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--device cuda was asked for but no CUDA device is available. Fix: pass --device cpu.")
        return torch.device(pref if ":" in pref else f"cuda:{local_rank}")
    if pref != "cpu":
        raise InputError(f"--device {pref!r} is not supported. Fix: pass auto, cpu or cuda.")
    return torch.device("cpu")


def init(device: str = "auto", timeout_s: float = 1800.0) -> DistEnv:
    """Join the torchrun process group when there is one; pick this process's device."""
    world = _int_env("WORLD_SIZE", 1)
    rank = _int_env("RANK", 0)
    local = _int_env("LOCAL_RANK", rank)
    dev = choose_device(device, local)
    if world <= 1:
        return DistEnv(0, 1, 0, dev, "")
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not tdist.is_initialized():
        tdist.init_process_group(backend, rank=rank, world_size=world,
                                 timeout=datetime.timedelta(seconds=timeout_s))
    if dev.type == "cpu":  # N processes share the cores
        from ..threads import usable_cpus

        local_world = _int_env("LOCAL_WORLD_SIZE", world)
        torch.set_num_threads(max(1, usable_cpus() // max(1, local_world)))
    return DistEnv(rank, world, local, dev, backend)


def shutdown(env: DistEnv) -> None:
    if env.distributed and tdist.is_initialized():
        tdist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        tdist.barrier()


def gather(env: DistEnv, obj: Any) -> List[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not env.distributed:
        return [obj]
    out: List[Any] = [None] * env.world
    tdist.all_gather_object(out, obj)
    return out


def broadcast(env: DistEnv, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not env.distributed:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(env: DistEnv, flag: bool) -> bool:
    """True on every rank when ``flag`` is True on some rank."""
    return any(gather(env, bool(flag)))


def amp_context(env: DistEnv, enabled: bool):
    """Autocast on CUDA (bfloat16 where supported, else float16); nothing on the CPU."""
    if not (enabled and env.device.type == "cuda"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def grad_scaler(env: DistEnv, enabled: bool):
    """A gradient scaler for float16 autocast on CUDA, else None."""
    if enabled and env.device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.amp.GradScaler("cuda")
    return None
