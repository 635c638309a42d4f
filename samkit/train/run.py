"""One training run: data, models, phases, the optimiser loop, checkpoints, metrics, evaluation.

Output folder ``OUT``:

* ``model.pt``: the trained weights in the model's official checkpoint layout (LoRA merged):
  ``load_model(student_name, checkpoint="OUT/model.pt")`` loads it unchanged; ``model.json``
  names the model and gives the step and the last evaluation.
* ``train-state.pt``: everything an exact ``--resume`` needs (weights, optimiser, scheduler, gradient
  scaler, RNG states, step; the data position follows from the step), written atomically every
  ``--save-every`` steps and at the end. A run refuses a state file of another run (other options).
* ``metrics.jsonl``: one JSON object per logged step (``step``, ``phase``, ``loss``, ``lr``,
  ``images``, ``seconds``) and per evaluation (``eval``: ``miou``, ``masks``, ``against``).
* ``teacher-cache/`` (distillation, unless ``--cache DIR``): the teacher's embeddings.

Data parallelism: every process computes the gradients of its share of the global batch (``rank``
takes its own positions of the shuffled stream, see :func:`samkit.train.data.rank_positions`), and
the gradients are averaged over processes with one all-reduce per optimiser step (what
DistributedDataParallel does, with ``no_sync`` during gradient accumulation), so every process
applies the same update. The models stay in eval mode: BatchNorm statistics are frozen (no
cross-process statistics), there is no dropout.
"""
from __future__ import annotations

import io
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as tdist

from ..errors import InputError
from ..io.atomic import atomic_write_bytes, atomic_write_text
from ..io.progress import Progress
from . import dist
from .config import Phase, TrainConfig, check, phases, total_steps
from .data import Dataset, Stream, holdout_split, open_dataset, rank_positions
from .engine import (EmbedAdapter, Prompts, check_pair, embed_shape, encoder_loss, expand, ground_truth,
                     load_student, load_teacher, loop_loss, split_name, stack_features, teacher_target)
from .losses import mask_iou
from .sampling import prepare

STATE = "train-state.pt"
MODEL = "model.pt"
METRICS = "metrics.jsonl"
STATE_FORMAT = "samkit-train-state"


@dataclass
class Run:
    cfg: TrainConfig
    env: dist.DistEnv
    out: Path
    ds: Dataset
    stream: Stream
    eval_ds: Dataset
    held: List[int]
    student: torch.nn.Module
    teacher: Optional[torch.nn.Module] = None
    cache: object = None
    adapter: Optional[EmbedAdapter] = None
    log: Optional["MetricsLog"] = None
    pool: object = None
    bar: Optional[Progress] = None


class MetricsLog:
    """``metrics.jsonl`` (rank 0), progress lines on stderr, optional TensorBoard."""

    def __init__(self, out: Path, cfg: TrainConfig, keep_until: int) -> None:
        self.path = out / METRICS
        lines = []
        if self.path.is_file():  # a resumed run drops what came after its state
            for line in self.path.read_text().splitlines():
                try:
                    if int(json.loads(line).get("step", 0)) <= keep_until:
                        lines.append(line)
                except ValueError:
                    continue
        atomic_write_text(self.path, "".join(x + "\n" for x in lines))
        self.progress = cfg.progress
        self.writer = None
        if cfg.tensorboard:
            from ..errors import require

            tb = require("torch.utils.tensorboard", "train", "--tensorboard")
            self.writer = tb.SummaryWriter(str(out / "tensorboard"))

    def write(self, record: Dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self.writer is not None:
            values = record.get("eval", record)
            for k, v in values.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.writer.add_scalar(("eval/" if "eval" in record else "train/") + k, v, record["step"])
            self.writer.flush()

    def say(self, text: str) -> None:
        if self.progress:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# --------------------------------------------------------------------------- setup
def _read_state(cfg: TrainConfig) -> Optional[dict]:
    if not cfg.resume:
        return None
    path = Path(cfg.resume).expanduser()
    path = path / STATE if path.is_dir() else path
    if not path.is_file():
        raise InputError(f"resume file {path} does not exist. Fix: pass the {STATE} of the run to continue "
                         "(or its output folder).")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise InputError(f"resume file {path} is not a samkit training state ({type(exc).__name__}). Fix: pass "
                         f"the {STATE} written by `samkit train`.") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise InputError(f"resume file {path} is not a samkit training state. Fix: pass the {STATE} written by "
                         "`samkit train`.")
    if state["run_id"] != cfg.run_id():
        ours = cfg.run_fields()
        theirs = state.get("config", {})
        diff = sorted(k for k in set(ours) | set(theirs) if str(ours.get(k)) != str(theirs.get(k)))
        shown = ", ".join(f"--{k.replace('_', '-')} {theirs.get(k)!r} (now {ours.get(k)!r})" for k in diff[:4])
        raise InputError(f"resume file {path} belongs to another run: {shown}. Fix: rerun with that run's options, "
                         "or start a new run (another --out, without --resume).")
    return state


def _global_batch(cfg: TrainConfig, env: dist.DistEnv) -> int:
    return env.world * cfg.batch_size * cfg.accum


def _setup(cfg: TrainConfig, env: dist.DistEnv) -> tuple:
    out = Path(cfg.out).expanduser()
    state = _read_state(cfg)
    if state is None and (out / STATE).is_file():
        raise InputError(f"{out} already holds a training run ({STATE}). Fix: pass --resume {out / STATE} to "
                         "continue it, or choose another --out.")
    if state is not None and int(state["global_batch"]) != _global_batch(cfg, env):
        raise InputError(f"the resumed run used a global batch of {state['global_batch']} images per step, this "
                         f"launch gives {_global_batch(cfg, env)} (processes x --batch-size x --accum). Fix: "
                         "launch as many processes as the run had.")
    ds = open_dataset(cfg.data, cfg.images)
    if cfg.val_data:
        train_idx, eval_ds = list(range(len(ds))), open_dataset(cfg.val_data, cfg.images)
        held = list(range(len(eval_ds)))
    else:
        train_idx, held = holdout_split(ds, cfg.holdout)
        eval_ds = ds
    return out, state, ds, Stream(train_idx, cfg.seed), eval_ds, held


def _models(cfg: TrainConfig, env: dist.DistEnv, run_log: Callable[[str], None]):
    torch.manual_seed(cfg.seed)  # every process builds the same random student / adapter
    teacher = load_teacher(cfg.teacher, env.device) if cfg.mode == "distill" else None
    student = load_student(cfg.student, env.device, teacher, cfg.init_heads)
    if cfg.mode == "finetune" and cfg.encoder == "lora":
        from .lora import add_lora

        names = add_lora(student.image_encoder, cfg.lora_rank, cfg.lora_alpha)
        run_log(f"[train] LoRA adapters on {len(names)} layers of the image encoder")
    return teacher, student


def _fill_cache(run: Run) -> None:
    from .cache import TeacherCache

    cfg, env = run.cfg, run.env
    root = Path(cfg.cache).expanduser() if cfg.cache else run.out / "teacher-cache"
    run.cache = TeacherCache(root, run.teacher, cfg.teacher)
    sets = [(run.ds, list(range(len(run.ds))))]
    if run.eval_ds is not run.ds:
        sets.append((run.eval_ds, run.held))
    for ds, idx in sets:
        def read(i, ds=ds):
            return ds.digest(i), lambda: run.teacher.preprocess(ds.read(i).image)[0]

        def progress(done, n):
            if env.main and (done == n or done % 50 == 0):
                run.log.say(f"[train] teacher embeddings {done}/{n} (rank 0)")

        run.cache.fill(read, idx, env.rank, env.world, progress)
    dist.barrier(env)


# --------------------------------------------------------------------------- optimiser
def _trainable(run: Run, phase: Phase) -> List[torch.nn.Parameter]:
    s, cfg = run.student, run.cfg
    for p in s.parameters():
        p.requires_grad_(False)
    if phase.name == "encoder":
        mods = [s.image_encoder] + ([run.adapter] if run.adapter is not None else [])
    elif phase.name == "loop":
        mods = [s.image_encoder, s.mask_decoder]
    else:
        mods = [s.mask_decoder] + ([s.image_encoder] if cfg.encoder == "full" else [])
    params = [p for m in mods for p in m.parameters()]
    if phase.name == "finetune" and cfg.encoder == "lora":
        params += [p for n, p in s.image_encoder.named_parameters() if ".lora_" in n]
    for p in params:
        p.requires_grad_(True)
    return params


def _schedule(phase: Phase, warmup: float) -> Callable[[int], float]:
    n = phase.end - phase.start
    warm = max(1, int(round(warmup * n)))

    def factor(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (s - warm) / max(1, n - warm)))

    return factor


def _optimiser(run: Run, phase: Phase):
    params = _trainable(run, phase)
    opt = torch.optim.AdamW(params, lr=phase.lr, weight_decay=run.cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(phase, run.cfg.warmup))
    amp = run.cfg.amp if run.cfg.amp is not None else run.env.device.type == "cuda"
    scaler = dist.grad_scaler(run.env, amp)
    return params, opt, sched, scaler, amp


def _sync_grads(env: dist.DistEnv, params: List[torch.nn.Parameter]) -> None:
    """Average the gradients over processes (one flat all-reduce)."""
    if not env.distributed:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    tdist.all_reduce(flat)
    flat /= env.world
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


# --------------------------------------------------------------------------- one step
def _micro_batch(run: Run, phase: Phase, micro: int) -> list:
    """This rank's images of global micro-batch ``micro``, decoded and prepared (``--workers``
    threads; every draw is seeded by the stream position, so the result does not depend on them)."""
    cfg = run.cfg
    pos = rank_positions(micro, run.env.rank, run.env.world, cfg.batch_size)

    def one(p: int):
        return prepare(run.ds.read(run.stream[p]), run.student, p, cfg.seed, cfg.masks_per_image, cfg.box_prob,
                       cfg.box_noise, need_masks=phase.name != "encoder")

    if cfg.workers > 1 and len(pos) > 1:
        if run.pool is None:
            from concurrent.futures import ThreadPoolExecutor

            run.pool = ThreadPoolExecutor(cfg.workers, thread_name_prefix="samkit-train-data")
        return list(run.pool.map(one, pos))
    return [one(p) for p in pos]


def _loss(run: Run, phase: Phase, batch: list) -> torch.Tensor:
    cfg, s = run.cfg, run.student
    if phase.name == "encoder":
        embed = torch.cat([run.cache.get(b.digest).embed for b in batch])
        return encoder_loss(s, run.adapter, batch, embed)
    if run.teacher is not None:
        feats = stack_features([run.cache.get(b.digest) for b in batch], run.teacher.device)
        target = teacher_target(run.teacher, feats, cfg.masks_per_image, tuple(batch[0].valid.shape),
                                run.teacher.image_size / s.image_size)
        return loop_loss(s, batch, cfg.loop_iters, cfg.seed, target)
    return loop_loss(s, batch, cfg.loop_iters, cfg.seed, ground_truth(batch, s.device), cfg.iou_weight)


def _step(run: Run, phase: Phase, step: int, opt, sched, scaler, params, amp: bool) -> float:
    """One optimiser update; returns the loss averaged over processes and micro-batches."""
    cfg = run.cfg
    opt.zero_grad(set_to_none=True)
    total = 0.0
    for a in range(cfg.accum):
        batch = _micro_batch(run, phase, step * cfg.accum + a)
        with dist.amp_context(run.env, amp):
            loss = _loss(run, phase, batch) / cfg.accum
        (scaler.scale(loss) if scaler is not None else loss).backward()
        total += float(loss.detach())
    _sync_grads(run.env, params)
    if scaler is not None:
        scaler.unscale_(opt)
    if cfg.clip_grad > 0:
        torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    sched.step()
    if run.env.distributed:
        t = torch.tensor([total], dtype=torch.float64, device=run.env.device)
        tdist.all_reduce(t)
        total = float(t) / run.env.world
    return total


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(run: Run, limit: Optional[int] = None) -> Optional[Dict]:
    """mIoU of the student's masks on the held-out images (box prompts from the first
    ``--eval-masks`` masks of each image) against the teacher's masks for the same prompts
    (distillation) or the ground truth (fine-tuning), on the low-resolution grid."""
    if not run.held:
        return None
    s, cfg = run.student, run.cfg
    ious = []
    for i in run.held[:limit]:
        b = prepare(run.eval_ds.read(i), s, i, cfg.seed, cfg.eval_masks, first=True)
        keep = b.weight > 0
        if not bool(keep.any()):
            continue
        prompts = Prompts([b], s.device)
        index = torch.zeros(cfg.eval_masks, dtype=torch.long, device=s.device)
        logits, _ = prompts.decode(s, expand(s.encode(b.x.to(s.device)), index))
        if run.teacher is not None:
            feats = stack_features([run.cache.get(b.digest)], run.teacher.device)
            target = teacher_target(run.teacher, feats, cfg.eval_masks, tuple(b.valid.shape),
                                    run.teacher.image_size / s.image_size)(prompts)
        else:
            target = b.targets.to(s.device)
        iou = mask_iou(logits > s.mask_threshold, target, b.valid.to(s.device))
        ious += iou[keep.to(iou.device)].tolist()
    if not ious:
        return None
    return {"miou": float(np.mean(ious)), "masks": len(ious),
            "against": "teacher" if run.teacher is not None else "ground truth"}


def _evaluate_logged(run: Run, step: int) -> Optional[Dict]:
    result = evaluate(run) if run.env.main else None
    if result is not None:
        run.log.write({"step": step, "eval": result})
        run.log.say(f"[train] step {step}: held-out mIoU vs {result['against']} {result['miou']:.4f} "
                    f"({result['masks']} masks)")
    dist.barrier(run.env)
    return result


# --------------------------------------------------------------------------- checkpoints
def _rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos),
                                                       int(has_gauss), float(gauss)],
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _export(run: Run, step: int, result: Optional[Dict]) -> Path:
    """``model.pt`` (official layout, LoRA merged) and ``model.json``."""
    from .layouts import save_official
    from .lora import has_lora, merged_state_dict

    s = run.student
    sd = merged_state_dict(s) if has_lora(s) else None
    path = save_official(s, s.spec, run.out / MODEL, state_dict=sd)
    info = {"model": s.spec.name, "checkpoint": MODEL, "step": step, "mode": run.cfg.mode,
            "teacher": split_name(run.cfg.teacher)[0] if run.cfg.teacher else None, "eval": result,
            "load": f"samkit.load_model({s.spec.name!r}, checkpoint='{MODEL}')"}
    atomic_write_text(run.out / "model.json", json.dumps(info, indent=2) + "\n")
    return path


def _save(run: Run, step: int, phase: Phase, opt, sched, scaler, result: Optional[Dict]) -> None:
    if run.env.main:
        state = {"format": STATE_FORMAT, "version": 1, "run_id": run.cfg.run_id(),
                 "config": {k: str(v) for k, v in run.cfg.run_fields().items()}, "step": step,
                 "phase": phase.name, "global_batch": _global_batch(run.cfg, run.env),
                 "student": run.student.state_dict(),
                 "adapter": run.adapter.state_dict() if run.adapter is not None else None,
                 "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "scaler": scaler.state_dict() if scaler is not None else None, "rng": _rng_state()}
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(run.out / STATE, buf.getvalue())
        _export(run, step, result)
    dist.barrier(run.env)


def _restore(run: Run, state: dict) -> None:
    run.student.load_state_dict(state["student"])
    if run.adapter is not None and state.get("adapter") is not None:
        run.adapter.load_state_dict(state["adapter"])


# --------------------------------------------------------------------------- the run
def _prepare_run(cfg: TrainConfig, env: dist.DistEnv) -> tuple:
    out, state, ds, stream, eval_ds, held = _setup(cfg, env)
    if env.main:
        out.mkdir(parents=True, exist_ok=True)
    dist.barrier(env)
    log = MetricsLog(out, cfg, int(state["step"]) if state else -1) if env.main else None
    say = log.say if log is not None else (lambda text: None)
    teacher, student = _models(cfg, env, say)
    run = Run(cfg, env, out, ds, stream, eval_ds, held, student, teacher, log=log)
    if teacher is not None:  # the pair is checked before hours of teacher embeddings are computed
        run.adapter = check_pair(teacher, student, embed_shape(teacher), cfg.adapter,
                                 (split_name(cfg.teacher)[0], student.spec.name))
        if log is None:
            run.log = _Quiet()
        _fill_cache(run)
        if log is None:
            run.log = None
    if state is not None:
        _restore(run, state)
    return run, state


class _Quiet:
    def say(self, text: str) -> None:
        pass


def train(cfg: TrainConfig, on_step: Optional[Callable[[int, Run], None]] = None) -> Dict:
    """Run (or resume) the training ``cfg`` describes, in this process and the torchrun group it
    belongs to. ``on_step(step, run)`` is called after every optimiser step (tests). Returns a
    summary: ``step``, ``checkpoint`` (model.pt), ``state``, ``eval`` (last evaluation or None; rank 0
    only), ``model``, ``rank``."""
    check(cfg)
    env = dist.init(cfg.device)
    try:
        return _train(cfg, env, on_step)
    finally:
        dist.shutdown(env)


def _train(cfg: TrainConfig, env: dist.DistEnv, on_step) -> Dict:
    run, state = _prepare_run(cfg, env)
    try:
        result = _loop(run, state, on_step)
    finally:
        if run.bar is not None:
            run.bar.close()
        if run.log is not None:
            run.log.close()
        if run.pool is not None:
            run.pool.shutdown()
    return {"step": total_steps(cfg), "checkpoint": str(run.out / MODEL), "state": str(run.out / STATE),
            "eval": result, "model": run.student.spec.name, "rank": run.env.rank}


def _loop(run: Run, state: Optional[dict], on_step) -> Optional[Dict]:
    """The optimiser steps from the resumed step (or 0) to the end; returns the last evaluation."""
    cfg, env = run.cfg, run.env
    plan, total = phases(cfg), total_steps(cfg)
    start = int(state["step"]) if state else 0
    result = None
    if start == 0 and cfg.eval_every > 0:
        result = _evaluate_logged(run, 0)
    if state is not None:
        _set_rng_state(state["rng"])
    current, opt = None, None
    t0, done = time.perf_counter(), 0
    # a bar on rank 0 when stderr is a terminal; the log lines below serve files and CI
    bar = run.bar = Progress(total - start, enabled=run.env.main and cfg.progress, name="training", unit="steps",
                             lines=False)
    for step in range(start, total):
        phase = next(p for p in plan if p.start <= step < p.end)
        if phase != current:
            params, opt, sched, scaler, amp = _optimiser(run, phase)
            if state is not None and state["phase"] == phase.name and step == start:
                opt.load_state_dict(state["optimizer"])
                sched.load_state_dict(state["scheduler"])
                if scaler is not None and state.get("scaler"):
                    scaler.load_state_dict(state["scaler"])
            current = phase
        loss = _step(run, phase, step, opt, sched, scaler, params, amp)
        done += 1
        n = step + 1
        bar.advance(1, note=f"{phase.name} loss {loss:.4f}")
        if run.env.main and (n % cfg.log_every == 0 or n == total):
            rate = done / max(1e-9, time.perf_counter() - t0)
            run.log.write({"step": n, "phase": phase.name, "loss": loss, "lr": sched.get_last_lr()[0],
                           "images": n * _global_batch(cfg, env), "seconds": round(time.perf_counter() - t0, 3)})
            run.log.say(f"[train] step {n}/{total} {phase.name} loss {loss:.5f} lr {sched.get_last_lr()[0]:.2e} "
                        f"{rate:.2f} steps/s")
        if cfg.eval_every > 0 and n % cfg.eval_every == 0 and n != total:
            result = _evaluate_logged(run, n)
        if n == total or (cfg.save_every > 0 and n % cfg.save_every == 0):
            if n == total and (cfg.eval_every > 0 or run.held):
                result = _evaluate_logged(run, n)
            _save(run, n, phase, opt, sched, scaler, result)
        if on_step is not None:
            on_step(n, run)
    return result
