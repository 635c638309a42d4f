"""SAM 3's efficient students: what each part costs against SAM 3's own, in the same run.

Usage::

    python benchmarks/bench_sam3_students.py [--runs 3] [--warmup 1] [--size 1008] [--threads N]
                                             [--no-transformers] [--skip-sam3-vit]

Two tables, medians of ``--runs`` calls after ``--warmup`` untimed ones, contenders interleaved
run by run (``bench_image.interleaved``), synthesized weights in the released layouts (timings do
not depend on the values):

* **text encoders** (one batch of the texts ``TEXTS``): SAM 3's CLIP text tower (24 x 1024,
  context 32) and the SAM3-LiteText students (MobileCLIP-S0 / S1 / MobileCLIP2-L, contexts 16 and
  32), each beside transformers' ``Sam3LiteTextTextModel`` + projection on the same weights
  (test-only oracle; ``tests/sam3/litetext_oracle.py``).
* **image encoders** (``1 x 3 x S x S`` -> the 72 x 72 x 1024 map the necks read, S = ``--size``):
  SAM 3's Perception Encoder ViT and the EfficientSAM3 student trunks with their head (the
  released stage-3 models' EfficientViT-B1, RepViT-M1.1, TinyViT-11M and the other stage-1 ones). transformers has no EfficientSAM3 image student, so
  that table is samkit against SAM 3's ViT.

No timing is asserted anywhere in the tests.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from bench_image import interleaved  # same folder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "sam3"))

TEXTS = ["yellow school bus", "a dog", "person riding a bicycle"]
LITETEXT = (("MobileCLIP-S0", 16), ("MobileCLIP-S0", 32), ("MobileCLIP-S1", 16), ("MobileCLIP-S1", 32),
            ("MobileCLIP2-L", 16), ("MobileCLIP2-L", 32))


def _params(module: torch.nn.Module) -> str:
    return f"{sum(p.numel() for p in module.parameters()) / 1e6:.1f}M"


def _student_text(variant: str, ctx: int, with_transformers: bool):
    """(samkit encoder, transformers' features of ids or None) on one synthesized weight set
    (``litetext_oracle.text_pair``, the parity tests' pair)."""
    import litetext_oracle as L
    from samkit.backbones.mobileclip_text import variant_config

    text = variant_config(variant, ctx)
    sd = {k: L._synth(k, s, d, 0) for k, s, d in L.text_manifest(text)}
    if not with_transformers:
        return L.load_text_student(text, sd), None
    return L.text_pair(text, sd)


def text_table(runs: int, warmup: int, with_transformers: bool) -> str:
    from samkit.backbones.sam3_text import Sam3TextEncoder

    rows = ["| text encoder | context | params | samkit ms | transformers ms | samkit/transformers | vs SAM 3's |",
            "|---|---|---|---|---|---|---|"]
    sam3_text = Sam3TextEncoder().eval()  # timings do not depend on the values
    ids = sam3_text.tokenize(TEXTS)
    base = interleaved([lambda: sam3_text(ids)], warmup, runs)[0]
    rows.append(f"| SAM 3 (CLIP 24 x 1024) | 32 | {_params(sam3_text)} | {base * 1e3:.1f} | - | - | 1.00 |")
    for variant, ctx in LITETEXT:
        enc, ref = _student_text(variant, ctx, with_transformers)
        sid = enc.tokenize(TEXTS)
        fns = [lambda: enc(sid)] + ([lambda: ref(sid)] if ref is not None else [])
        t = interleaved(fns, warmup, runs)
        theirs = f"{t[1] * 1e3:.1f}" if len(t) > 1 else "-"
        ratio = f"{t[0] / t[1]:.2f}" if len(t) > 1 else "-"
        rows.append(f"| {variant} | {ctx} | {_params(enc)} | {t[0] * 1e3:.1f} | {theirs} | {ratio} | "
                    f"{t[0] / base:.2f} |")
    return "\n".join(rows)


def _trunks(size: int, skip_vit: bool):
    """(name, trunk) pairs: SAM 3's ViT, then every student trunk samkit registers."""
    from samkit.backbones.sam3_vit import Sam3ViT

    from dataclasses import replace

    from samkit.models.efficientsam3 import RELEASED_TRUNKS, STAGE1_TRUNKS, build_efficientsam3_trunk
    from samkit.models.sam3 import SAM3_CONFIG

    out = [] if skip_vit else [("SAM 3 ViT (PE, 32 x 1024)", Sam3ViT(img_size=size))]
    cfg = replace(SAM3_CONFIG, image_size=size)
    for (family, size_name), kind in STAGE1_TRUNKS.items():
        names = [f"efficientsam3_stage1_{family}_{size_name}"]
        if RELEASED_TRUNKS.get(family) == kind:
            names.insert(0, f"efficientsam3_{family}")
        out.append((f"{' / '.join(names)} ({kind} + head)", build_efficientsam3_trunk(kind, cfg)))
    return out


def image_table(size: int, runs: int, warmup: int, skip_vit: bool) -> str:
    rows = ["| image encoder | params | s per image | vs SAM 3's ViT | output |", "|---|---|---|---|---|"]
    x = torch.randn(1, 3, size, size)
    base = None
    for name, trunk in _trunks(size, skip_vit):
        trunk = trunk.eval()
        with torch.inference_mode():
            shape = tuple(trunk(x).shape)
        t = interleaved([lambda: trunk(x)], warmup, runs)[0]
        base = t if base is None and "ViT" in name else base
        rel = f"{t / base:.3f}" if base else "-"
        rows.append(f"| {name} | {_params(trunk)} | {t:.3f} | {rel} | {' x '.join(map(str, shape[1:]))} |")
    return "\n".join(rows)


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--size", type=int, default=1008, help="image input size (multiple of 14; released: 1008)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-transformers", action="store_true")
    ap.add_argument("--skip-sam3-vit", action="store_true", help="time only the students' trunks")
    ap.add_argument("--only", choices=("text", "image"), default=None)
    a = ap.parse_args(argv)
    from samkit.threads import configure_threads

    configure_threads(clamp_only=True)
    if a.threads:
        torch.set_num_threads(a.threads)
    head = (f"torch {torch.__version__} with {torch.get_num_threads()} threads, median of {a.runs} after "
            f"{a.warmup} warm-up")
    parts = [head]
    if a.only in (None, "text"):
        parts += ["", f"Text encoders, {len(TEXTS)} texts per call:", "", text_table(a.runs, a.warmup,
                                                                                   not a.no_transformers)]
    if a.only in (None, "image"):
        parts += ["", f"Image encoders at {a.size} x {a.size}:", "", image_table(a.size, a.runs, a.warmup,
                                                                                a.skip_sam3_vit)]
    out = "\n".join(parts)
    print(out)
    return out


if __name__ == "__main__":
    main()
