"""Make the EfficientSAM3 student-trunk goldens from the official code (NOT run in CI).

The official backbones (``sam3/sam3/backbones``: EfficientViT, RepViT, TinyViT) and the student
wrappers of ``sam3/sam3/model_builder.py`` (``ImageStudentEncoder``,
``_create_student_vision_backbone``) are taken from a checkout of SimonZeng7108/efficientsam3;
the wrappers are extracted from model_builder.py with ``ast`` and run as they are, except two
literal edits so that reduced input sizes work: TinyViT's ``img_size=1008`` (it fixes the token
grid of every block) and ``embed_size=72`` (the resize target) become the size under test.
The neck is not built (``_create_vit_neck`` returns the trunk), and the ``sam3`` package is
entered without running its ``__init__`` (which imports every model).

Weights: the trunk's ``state_dict`` in the released key layout
(``detector.backbone.vision_backbone.trunk.<name>``) with values from ../shared/parity's
``synth_weights.py`` (seed 0) and the one exception of tests/sam3/es3_oracle.py (RepViT).
Input: ``es3_oracle.golden_input()`` = a fixed smooth pattern plus seeded noise (recomputed by
the tests, not stored); the 1008 px input is its bilinear upsampling (align_corners=False).

Writes into the repository (the shared parity folder is read-only in CI):
``tests/sam3/golden/efficientsam3_trunks.safetensors`` (``<kind>.out_224_c4``: every 4th channel of
the 224 px output; ``<kind>.out_1008_c64``: every 64th channel at 1008 px; about 3.5 MB in all),
``tests/sam3/golden/efficientsam3_trunks.json`` (stats of the full tensors, the official code's
float32-vs-float64 error) and ``tests/sam3/manifest_efficientsam3_trunks.json`` (names / shapes /
dtypes only).

Needs timm (``pip install --no-deps --target DIR timm``, put DIR on PYTHONPATH) and the test
torchvision stand-in (tests/oracle_shims; ``torchvision.datasets`` is stubbed here because timm's
data package imports it). Usage::

    git -C MIRROR archive HEAD sam3/sam3/backbones sam3/sam3/device.py sam3/sam3/model_builder.py | tar -x -C TMP
    PYTHONPATH=.:TIMM_DIR:tests/oracle_shims python scripts/make_efficientsam3_goldens.py \\
        --official TMP/sam3 --parity ../shared/parity

``--check-video-model`` (the whole ``sam3/sam3`` folder and its assets' BPE file extracted):
the layout check of :func:`check_video_model` instead.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

KINDS = {"efficientvit_b1": ("efficientvit", "b1"), "repvit_m1_1": ("repvit", "m1.1"),
         "tinyvit_11m": ("tinyvit", "11m")}  # the released stage-3 trunks: 224 px and 1008 px goldens
EXTRA = {"efficientvit_b0": ("efficientvit", "b0"), "efficientvit_b2": ("efficientvit", "b2"),
         "repvit_m0_9": ("repvit", "m0.9"), "repvit_m2_3": ("repvit", "m2.3"), "tinyvit_5m": ("tinyvit", "5m"),
         "tinyvit_21m": ("tinyvit", "21m")}  # the other stage-1 trunks: 224 px goldens
PREFIX = "detector.backbone.vision_backbone.trunk."
SMALL, FULL = 224, 1008


def _stub_torchvision_datasets() -> None:
    mod = types.ModuleType("torchvision.datasets")

    def attr(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {})

    mod.__getattr__ = attr
    sys.modules["torchvision.datasets"] = mod


def _official_builder(model_builder: Path, img_size: int, embed_size: int):
    """``_create_student_vision_backbone`` of the official file, run without the neck."""
    tree = ast.parse(model_builder.read_text())
    wanted = {"ImageStudentEncoder", "_create_student_vision_backbone"}
    src = "\n\n".join(ast.get_source_segment(model_builder.read_text(), n) for n in tree.body
                      if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name in wanted)
    for old, new in (("img_size=1008, num_classes=0", f"img_size={img_size}, num_classes=0"),
                     ("embed_size=72", f"embed_size={embed_size}")):
        if old not in src:
            raise SystemExit(f"the official model_builder.py changed: {old!r} not found")
        src = src.replace(old, new)
    ns = {"torch": torch, "nn": nn, "F": F, "Sam3DualViTDetNeck": object,
          "_create_position_encoding": lambda **kw: None,
          "_create_vision_backbone": None,
          "_create_vit_neck": lambda pos, trunk, **kw: trunk}
    exec(compile(src, str(model_builder), "exec"), ns)  # noqa: S102 - the official code, on purpose
    return ns["_create_student_vision_backbone"]


def _build(create, kind: str, synth, sd_cache: dict):
    family, name = {**KINDS, **EXTRA}[kind]
    trunk = create(family, name, enable_inst_interactivity=False)
    manifest = [[PREFIX + k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in trunk.state_dict().items()]
    if kind not in sd_cache:
        sd_cache[kind] = synth(manifest, 0)
    trunk.load_state_dict({k[len(PREFIX):]: v for k, v in sd_cache[kind].items()}, strict=True)
    # eval() after loading: the official TinyViT attention caches its bias table in train(False)
    return trunk.eval(), manifest


def check_video_model(official: Path, tests: Path) -> None:
    """Build the official ``build_efficientsam3_video_model`` (CPU, random init; SAM 3's text encoder)
    for the three released trunks and check that its ``state_dict`` names / shapes equal
    tests/sam3/manifest_official.json without the ViT trunk plus manifest_efficientsam3_trunks.json
    (the layout the tests derive). Needs einops too; psutil, ``torchvision.ops.{roi_align,
    masks_to_boxes, StochasticDepth}`` and ``torchvision.datasets.vision`` are stubbed (not used
    by the state dict), and the BPE vocabulary ``sam3/assets/bpe_simple_vocab_16e6.txt.gz`` must be
    extracted too."""
    def stub(name: str) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.__path__ = []

        def attr(n: str):
            if n.startswith("__"):
                raise AttributeError(n)
            return type(n, (nn.Module,), {"__init__": lambda self, *a, **k: nn.Module.__init__(self)})

        mod.__getattr__ = attr
        sys.modules[name] = mod
        return mod

    for name in ("torchvision.datasets", "torchvision.datasets.vision", "torchvision.ops.roi_align", "psutil"):
        stub(name)
    import torchvision.ops as tvo

    tvo.masks_to_boxes, tvo.StochasticDepth = (lambda *a, **k: None), nn.Identity
    sys.path.insert(0, str(official))
    sys.modules.pop("sam3", None)
    import sam3.model_builder as mb

    released = json.loads((tests / "manifest_official.json").read_text())
    trunks = json.loads((tests / "manifest_efficientsam3_trunks.json").read_text())
    for kind, (family, name) in KINDS.items():
        model = mb.build_efficientsam3_video_model(load_from_HF=False, device="cpu", backbone_type=family,
                                                   model_name=name)
        theirs = {k: list(v.shape) for k, v in model.state_dict().items()}
        ours = {k: s for k, s, _ in trunks[kind] + [r for r in released if not r[0].startswith(PREFIX)]}
        print(kind, len(theirs), "keys; equal to the derived layout:", theirs == ours, flush=True)
        del model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parity", required=True, type=Path)
    ap.add_argument("--official", required=True, type=Path,
                    help="the extracted sam3/ folder of SimonZeng7108/efficientsam3 (holding sam3/model_builder.py)")
    ap.add_argument("--tests", default=Path(__file__).resolve().parents[1] / "tests" / "sam3", type=Path)
    ap.add_argument("--check-video-model", action="store_true",
                    help="only check the derived full-model layout against the official video builder")
    args = ap.parse_args()
    if args.check_video_model:
        return check_video_model(args.official, args.tests)
    _stub_torchvision_datasets()
    pkg = types.ModuleType("sam3")  # the package without its __init__ (which builds every model)
    pkg.__path__ = [str(args.official / "sam3")]
    sys.modules["sam3"] = pkg
    os.environ["SAMKIT_PARITY_DIR"] = str(args.parity)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "sam3"))
    from es3_oracle import synth_rows as synth  # the tests' weight rules (synth_weights.py + one exception)
    from es3_oracle import golden_input

    builder = args.official / "sam3" / "model_builder.py"
    x224 = golden_input()
    x1008 = F.interpolate(x224, size=(FULL, FULL), mode="bilinear", align_corners=False)
    outs, meta, manifests, cache = {}, {}, {}, {}
    torch.set_grad_enabled(False)
    for kind in {**KINDS, **EXTRA}:
        for size, x in ((SMALL, x224), (FULL, x1008)) if kind in KINDS else ((SMALL, x224),):
            create = _official_builder(builder, size, size // 14)
            trunk, manifest = _build(create, kind, synth, cache)
            manifests[kind] = manifest
            y = trunk(x)[0]
            y64 = trunk.double()(x.double())[0]
            err = float((y.double() - y64).abs().max())
            stats = {"shape": list(y.shape), "absmax": float(y.abs().max()), "mean": float(y.mean()),
                     "std": float(y.std()), "fp32_vs_fp64_maxabs": err}
            if size == SMALL:
                outs[f"{kind}.out_224_c4"] = y[:, ::4].contiguous()
                meta[f"{kind}.out_224_c4"] = {**stats, "meaning": "trunk output at 224 px (16 x 16 after the "
                                              "resize), every 4th channel stored; stats are of the full tensor"}
            else:
                outs[f"{kind}.out_1008_c64"] = y[:, ::64].contiguous()
                meta[f"{kind}.out_1008_c64"] = {**stats, "meaning": "trunk output at 1008 px (72 x 72), every "
                                                "64th channel stored; stats are of the full tensor"}
            print(kind, size, stats, flush=True)
    from safetensors.torch import save_file

    golden = args.tests / "golden"
    golden.mkdir(exist_ok=True)
    save_file(outs, str(golden / "efficientsam3_trunks.safetensors"))
    meta["_about"] = {
        "source": "SimonZeng7108/efficientsam3 (sam3/sam3/backbones, model_builder.py), "
                  "scripts/make_efficientsam3_goldens.py of samkit",
        "weights": "synth_weights.py rules, seed 0, on tests/sam3/manifest_efficientsam3_trunks.json (keys with "
                   "prefix " + PREFIX + "), with the one exception of tests/sam3/es3_oracle.py: RepViT "
                   "channel_mixer.m.2.bn.weight x 0.1",
        "tolerance": "max-abs error <= 1e-4 x max |golden| (float32 vs float64 error of the official code: "
                     "fp32_vs_fp64_maxabs)",
        "input": "es3_oracle.golden_input() (1 x 3 x 224 x 224, already normalised); 1008 px = F.interpolate(input_224, 1008, "
                 "bilinear, align_corners=False)",
        "edits": "TinyViT img_size and embed_size set to the tested size (literal edits of the official builder)",
        "timm": __import__("timm").__version__, "torch": torch.__version__}
    (golden / "efficientsam3_trunks.json").write_text(json.dumps(meta, indent=1) + "\n")
    lines = []
    for kind, rows in manifests.items():
        body = ",\n".join(json.dumps(r) for r in rows)
        lines.append(f"{json.dumps(kind)}: [\n{body}\n]")
    (args.tests / "manifest_efficientsam3_trunks.json").write_text("{\n" + ",\n".join(lines) + "\n}\n")


if __name__ == "__main__":
    main()
