"""TEST-ONLY: EfficientSAM3 image-encoder students in the released layout.

* ``trunk_manifests()`` (``manifest_efficientsam3_trunks.json``): ``[key, shape, dtype]`` of the
  official student trunks (``detector.backbone.vision_backbone.trunk.*``: EfficientViT-B0/B1/B2,
  RepViT-M0.9/M1.1, TinyViT-5M/11M/21M), the ``state_dict()`` of the official ``_create_student_vision_backbone``
  trunk (made by scripts/make_efficientsam3_goldens.py; names and shapes only).
* ``synth_trunk(kind)``: their weights by the rules of ``shared/parity/synth_weights.py`` (seed 0)
  with one exception, like rule 5 there for EdgeTAM's RepViT: in RepViT students the last
  BatchNorm weight of each residual channel mixer (``channel_mixer.m.2.bn.weight``) is scaled by 0.1,
  otherwise the 20 residual blocks grow the activations to ~1e6 and float32 rounding hides bugs.
* ``student_manifest(cfg, kind)`` / ``synth_student(cfg, kind)``: a whole SAM 3 model with a
  student trunk in the released layout (``oracle.official_manifest`` without the ViT trunk, plus
  the student trunk of ``cfg``'s width and grid).
* ``golden_input()`` / ``golden()`` / ``golden_noise()``: the goldens of the official trunks
  (``golden/efficientsam3_trunks.*``, made by the same script; kept in the repository).
* ``REDUCED_STUDENT``: the reduced SAM 3 configuration of tests/sam3/oracle.py; the student trunk
  keeps its full backbone and projects to ``vit_dim`` channels.
"""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import oracle as O  # noqa: E402

from samkit.models.efficientsam3 import build_efficientsam3_trunk  # noqa: E402
from samkit.models.sam3 import Sam3Config  # noqa: E402

TRUNK = "detector.backbone.vision_backbone.trunk."
KINDS = ("efficientvit_b1", "repvit_m1_1", "tinyvit_11m")  # the trunks of the released stage-3 models
ALL_KINDS = KINDS + ("efficientvit_b0", "efficientvit_b2", "repvit_m0_9", "repvit_m2_3", "tinyvit_5m", "tinyvit_21m")
REDUCED_STUDENT = O.REDUCED
_SCALED = "channel_mixer.m.2.bn.weight"


def golden_input(size: int = 224) -> torch.Tensor:
    """1 x 3 x size x size: a smooth pattern plus seeded noise, already normalised (the goldens' input)."""
    rng = np.random.Generator(np.random.PCG64(20251201))
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    pattern = np.stack([np.sin(3 * xx + yy), np.cos(2 * yy - xx), xx * yy])
    x = pattern + 0.5 * rng.standard_normal((3, size, size))
    return torch.from_numpy(x[None].astype(np.float32))


@functools.lru_cache(maxsize=None)
def golden() -> Dict[str, torch.Tensor]:
    """``<kind>.out_224_c4`` (every 4th channel) and ``<kind>.out_1008_c64`` (every 64th)."""
    from safetensors.torch import load_file

    return load_file(str(HERE / "golden" / "efficientsam3_trunks.safetensors"))


def golden_noise(key: str) -> float:
    """The official code's own float32-vs-float64 max-abs error on the full output ``key``."""
    meta = json.loads((HERE / "golden" / "efficientsam3_trunks.json").read_text())
    return float(meta[key]["fp32_vs_fp64_maxabs"])


@functools.lru_cache(maxsize=None)
def trunk_manifests() -> Dict[str, List[list]]:
    return json.loads((HERE / "manifest_efficientsam3_trunks.json").read_text())


def synth_rows(rows: List[list], seed: int = 0) -> Dict[str, torch.Tensor]:
    """Released-layout rows -> tensors (synth_weights rules + the RepViT exception above)."""
    out = {}
    for key, shape, dtype in rows:
        t = O._synth(key, shape, dtype, seed)
        if ".trunk.model.backbone.model.features." in key and key.endswith(_SCALED):
            t = t * 0.1
        out[key] = t
    return out


@functools.lru_cache(maxsize=None)
def _synth_trunk(kind: str, seed: int) -> Dict[str, torch.Tensor]:
    return synth_rows(trunk_manifests()[kind], seed)


def synth_trunk(kind: str, seed: int = 0) -> Dict[str, torch.Tensor]:
    """The full-size official trunk of ``kind`` (1024 channels) with synthesized values (a new
    dict of cached tensors: never modify them in place)."""
    return dict(_synth_trunk(kind, seed))


def trunk_rows(cfg: Sam3Config, kind: str) -> List[list]:
    """Released-layout rows of the student trunk built for ``cfg`` (width ``vit_dim``)."""
    with torch.device("meta"):
        trunk = build_efficientsam3_trunk(kind, cfg)
    return [[TRUNK + k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in trunk.state_dict().items()]


def student_manifest(cfg: Sam3Config, kind: str) -> List[list]:
    """The released layout of a SAM 3 model with the student trunk ``kind`` (SAM 3's text encoder)."""
    rows = [r for r in O.official_manifest(cfg) if not r[0].startswith(TRUNK)]
    return trunk_rows(cfg, kind) + rows


def synth_student(cfg: Sam3Config, kind: str, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Synthesized weights of :func:`student_manifest`; the SAM 3 parts are those of
    ``oracle.synth_official(cfg)`` (same keys, same values)."""
    sd = {k: v for k, v in O.synth_official(cfg, seed).items() if not k.startswith(TRUNK)}
    sd.update(synth_rows(trunk_rows(cfg, kind), seed))
    return sd


def student_spec(family: str):
    """The registered ``ModelSpec`` of the released stage-3 model of ``family``."""
    from samkit.specs import get_spec

    return get_spec(f"efficientsam3_{family}")
