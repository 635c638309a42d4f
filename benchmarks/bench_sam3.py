"""SAM 3 latency: samkit vs Hugging Face transformers' ``Sam3Model`` in the same process.

Usage::

    python benchmarks/bench_sam3.py [--size 1008] [--runs 3] [--warmup 1] [--threads N]
                                    [--text "yellow school bus"] [--no-transformers]

Per image, both sides: the **encoder** (Perception Encoder ViT + necks on a ``1 x 3 x S x S``
input; samkit's ``Sam3Model.encode``, transformers' ``get_vision_features``) and the **text
detection** on those features (text encoder, geometry encoder with the CLS token, DETR encoder /
decoder with the presence token, scoring, mask head: samkit's ``detect``, transformers'
``Sam3Model.forward(vision_embeds=..., input_ids=...)``). Medians of ``--runs`` calls after
``--warmup`` untimed ones; the contenders' calls are interleaved run by run, so a change of
machine load hits both alike. ``--size`` builds both models at another input size (a multiple of
14; the released model is 1008: smaller sizes change what the model sees and are for latency
only). Both sides run the same synthesized released-layout weights (``tests/sam3/oracle.py``:
``synth_official`` -> samkit's loader, ``official_to_hf`` -> transformers, tensors shared).
transformers is the test-only oracle (``make test`` installs it ``--no-deps``); without it only
samkit's numbers are printed. The **click** row: one point on the encoded image -> three masks
upsampled to a 1200 x 1800 image (samkit's ``decode``; transformers' ``Sam3TrackerModel`` on its
image embeddings). No timing is asserted anywhere in the tests.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench_image import interleaved  # same folder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "sam3"))


def _models(size: int, with_transformers: bool, reduced: bool = False):
    """(config, samkit model, transformers model or None) on the same synthesized weights."""
    import oracle as O

    from samkit.checkpoint import remap
    from samkit.models.sam3 import Sam3Config, Sam3Model

    cfg = replace(O.REDUCED if reduced else Sam3Config(), image_size=size)
    sd = O.synth_official(cfg)
    with torch.device("meta"):
        ours = Sam3Model(cfg).eval()
    ours.load_state_dict(remap(sd, "sam3"), strict=True, assign=True)
    ref = None
    if with_transformers:
        try:
            ref = O.hf_detector(cfg, O.official_to_hf(sd), assign=True)
        except Exception as exc:  # noqa: BLE001 - the oracle is optional
            print(f"  (transformers unavailable: {type(exc).__name__}: {exc})")
    return cfg, ours, ref


def run(size: int = 1008, runs: int = 3, warmup: int = 1, text: str = "yellow school bus",
        with_transformers: bool = True, reduced: bool = False) -> str:
    """Time both sides; returns the markdown table."""
    from samkit.threads import configure_threads

    configure_threads(clamp_only=True)  # what load_model does for every model
    t0 = time.perf_counter()
    cfg, ours, ref = _models(size, with_transformers, reduced)
    build_s = time.perf_counter() - t0
    torch.manual_seed(0)
    x = torch.randn(1, 3, cfg.image_size, cfg.image_size)
    ids = ours.text_encoder.tokenize([text])
    mask = (ids != 0).long()
    with torch.inference_mode():
        feats = ours.encode(x)
        vis = ref.get_vision_features(pixel_values=x) if ref is not None else None
    enc = [lambda: ours.encode(x)] + ([lambda: ref.get_vision_features(pixel_values=x)] if ref is not None else [])
    det = [lambda: ours.detect(feats, texts=[text])] + (
        [lambda: ref(vision_embeds=vis, input_ids=ids, attention_mask=mask)] if ref is not None else [])
    t_enc = interleaved(enc, warmup, runs)
    t_det = interleaved(det, warmup, runs)
    t_click = _click_times(cfg, ours, feats, x, with_transformers and ref is not None, warmup, runs)

    def cell(ts, i):
        return f"{ts[i]:.3f}" if i < len(ts) else "-"

    def ratio(ts):
        return f"{ts[0] / ts[1]:.2f}" if len(ts) > 1 else "-"

    name = "sam3 (reduced test config)" if reduced else "sam3"
    lines = [f"input {cfg.image_size} x {cfg.image_size}, text {text!r}, torch {torch.__version__} with "
             f"{torch.get_num_threads()} threads, median of {runs} after {warmup} warm-up; models built and "
             f"weights synthesized in {build_s:.0f} s", "",
             "| model | part | samkit s | transformers s | samkit/transformers |", "|---|---|---|---|---|",
             f"| {name} | encoder | {cell(t_enc, 0)} | {cell(t_enc, 1)} | {ratio(t_enc)} |",
             f"| {name} | text detection | {cell(t_det, 0)} | {cell(t_det, 1)} | {ratio(t_det)} |"]
    total = [a + b for a, b in zip(t_enc, t_det)]
    lines.append(f"| {name} | image + one text | {cell(total, 0)} | {cell(total, 1)} | {ratio(total)} |")
    lines.append(f"| {name} | click -> {CLICK_IMAGE[0]} x {CLICK_IMAGE[1]} masks | {cell(t_click, 0)} | "
                 f"{cell(t_click, 1)} | {ratio(t_click)} |")
    return "\n".join(lines)


CLICK_IMAGE = (1200, 1800)  # the masks of a click are upsampled to an image of this size (H x W)


def _click_times(cfg, ours, feats, x, with_transformers: bool, warmup: int, runs: int):
    """One point on the encoded image -> 3 masks at ``CLICK_IMAGE`` (the interactive head:
    samkit's ``decode`` on its features, transformers' ``Sam3TrackerModel`` on its image
    embeddings, both then upsampled bilinearly and thresholded)."""
    import torch.nn.functional as F

    pts = torch.tensor([[[cfg.image_size * 0.4, cfg.image_size * 0.6]]])
    lab = torch.ones(1, 1, dtype=torch.long)

    def full(low):
        return F.interpolate(low.float(), CLICK_IMAGE, mode="bilinear", align_corners=False) > 0

    calls = [lambda: full(ours.decode(feats, points=pts, labels=lab, boxes=None, mask_input=None,
                                      multimask=True).low_res)]
    if with_transformers:
        import oracle as O

        trk = O.hf_tracker(cfg, O.official_to_hf(O.synth_official(cfg)), assign=True)
        with torch.inference_mode():
            emb = trk.get_image_embeddings(pixel_values=x)
        calls.append(lambda: full(trk(image_embeddings=emb, input_points=pts[:, None],
                                      input_labels=lab[:, None], multimask_output=True).pred_masks[:, 0]))
    return interleaved(calls, warmup, runs)


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=1008, help="input size (multiple of 14; released: 1008)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--text", default="yellow school bus")
    ap.add_argument("--no-transformers", action="store_true")
    ap.add_argument("--reduced", action="store_true", help="the tests' small configuration (checks the script only)")
    a = ap.parse_args(argv)
    if a.size % 14:
        ap.error(f"--size {a.size} is not a multiple of 14 (the patch size)")
    if a.threads:
        torch.set_num_threads(a.threads)
    table = run(a.size, a.runs, a.warmup, a.text, not a.no_transformers, a.reduced)
    print(table)
    return table


if __name__ == "__main__":
    main()
