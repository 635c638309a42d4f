"""Print the max-abs difference per golden tensor between samkit and the official code.

    python scripts/parity_report.py sam_vit_b mobile_sam edge_sam efficient_sam_vitt \
        sam2.1_hiera_t edgetam efficienttam_ti [--markdown]

Loads the synthesized seed-0 weights through samkit's official-checkpoint loader, runs every
golden prompt set through ``ImagePredictor`` and compares with ``../shared/parity/golden``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from parity import golden, synth_checkpoint_file  # noqa: E402


def _prompt(g, key):
    get = lambda k: None if g.get(f"{key}.{k}") is None else g[f"{key}.{k}"].numpy()  # noqa: E731
    box = get("box")
    return get("point_coords"), get("point_labels"), None if box is None else box.reshape(4)


def report(name: str, workdir: Path):
    from samkit import ImagePredictor, load_model

    model = load_model(name, checkpoint=synth_checkpoint_file(name, workdir))
    g, meta = golden(name)
    rows = []
    for image in (0, 1):
        pred = ImagePredictor(model, selection="native").set_image(g[f"image_{image}"].numpy())
        if image == 0:
            x, _ = model.preprocess(g["image_0"].numpy())
            rows.append(("input_0_s8", (x[..., ::8, ::8] - g["input_0_s8"]).abs().max().item(),
                         meta["tensors"]["input_0_s8"].get("suggested_atol")))
            rows.append(("embed_0", (pred.features.embed - g["embed_0"]).abs().max().item(),
                         meta["tensors"]["embed_0"].get("suggested_atol")))
        for s in "abcde":
            key = f"p{image}{s}"
            if f"{key}.iou" not in g:
                continue
            pts, labels, box = _prompt(g, key)
            mask_input = None
            if s == "e":
                if image == 1:
                    mask_input = g["p1e.mask_input"].numpy()
                else:
                    best = int(torch.argmax(g["p0a.iou"]))
                    mask_input = g["p0a.lowres_logits"][best : best + 1].numpy()
            mm = meta["tensors"][key]["multimask_output"]
            out = pred.predict(points=pts, labels=labels, box=box, mask_input=mask_input, multimask=mm)
            rows.append((f"{key}.iou", float(np.abs(out.scores - g[f"{key}.iou"].numpy()).max()),
                         meta["tensors"][f"{key}.iou"].get("suggested_atol")))
            low = torch.from_numpy(out.low_res_logits)
            rows.append((f"{key}.lowres_logits", (low - g[f"{key}.lowres_logits"].float()).abs().max().item(),
                         meta["tensors"][f"{key}.lowres_logits"].get("suggested_atol")))
            if image == 0:
                full = model.postprocess(low[None], pred._state.transform)[0]
                rows.append((f"{key}.masks_logits", (full - g[f"{key}.masks_logits"].float()).abs().max().item(),
                             meta["tensors"][f"{key}.masks_logits"].get("suggested_atol")))
            else:
                c, h, w = out.masks.shape
                ref = np.unpackbits(g[f"{key}.masks_packed"].numpy())[: c * h * w].reshape(c, h, w).astype(bool)
                rows.append((f"{key}.masks (disagreeing px)", float((out.masks != ref).sum()), None))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            rows = report(name, Path(tmp))
            worst = max(r[1] / r[2] for r in rows if r[2])
            if args.markdown:
                print(f"\n### {name} (worst diff / suggested atol = {worst:.3f})\n\n| tensor | max abs diff | atol |\n|---|---|---|")
                for k, d, a in rows:
                    print(f"| {k} | {d:.3g} | {'' if a is None else f'{a:.2g}'} |")
            else:
                print(f"== {name}: worst diff/atol {worst:.3f}")
                for k, d, a in rows:
                    print(f"  {k:32s} {d:.3g}" + ("" if a is None else f"  (atol {a:.2g})"))


if __name__ == "__main__":
    main()
