"""The fixed inputs of the OVSAM goldens, shared by ``make_goldens.py`` and the tests (no official
code here): configurations, prompts, synthesized weights and class prototypes."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests"))

EMBED_STEP = 4  # the stored SAM2CLIP embedding is embed[..., ::4, ::4]
LOW_STEP = 2  # stored low-res logits are low[..., ::2, ::2]

CONFIGS = {
    # reduced widths, same code paths; prompt encoder and mask decoder at their real size
    "tiny": dict(clip=dict(layers=(1, 1, 1, 1), output_dim=32, heads=4, input_resolution=384, width=8),
                 adapter_dim=64, roi_size=12, classes=6, prototypes=2, base=(0, 1, 3), novel=(2, 4)),
    # the released sizes: RN50x16, ViT-H-width adapter, COCO head (RoI 12)
    "full": dict(clip=dict(layers=(6, 8, 18, 8), output_dim=768, heads=48, input_resolution=384, width=96),
                 adapter_dim=1280, roi_size=12, classes=6, prototypes=2, base=(0, 1, 3), novel=(2, 4)),
}

# prompts in the 1024 x 1024 model frame of samkit/assets/truck.png (400 x 267 -> 1024 x 684).
# ``boxes`` of point prompts are what upstream's CLIP branch pools (its ground-truth boxes).
CASES = {
    "points": dict(kind="point", points=[[520.0, 300.0], [180.0, 420.0], [900.0, 600.0]],
                   boxes=[[300.0, 150.0, 760.0, 520.0], [40.0, 330.0, 330.0, 600.0], [850.0, 560.0, 990.0, 640.0]]),
    "boxes": dict(kind="box", boxes=[[120.0, 100.0, 860.0, 620.0], [600.0, 380.0, 700.0, 470.0]]),
}


# classifier inputs chosen so that the mask boxes fall on every FPN level (sqrt(area) 27, 160, 358,
# 759 px) and one mask is empty: (x0, y0, x1, y1) in low-res (256 x 256) cells; CLIP boxes = 4 x
HEAD_RECTS = [(30, 40, 38, 46), (100, 60, 140, 100), (20, 90, 120, 170), (10, 10, 210, 190), None]


def head_masks() -> torch.Tensor:
    """N x 1 x 256 x 256 low-res logits: +2 inside ``HEAD_RECTS``, -2 outside, plus a smooth ripple."""
    yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    ripple = 0.5 * torch.sin(xx / 7.0) * torch.cos(yy / 11.0)
    out = []
    for r in HEAD_RECTS:
        m = torch.full((256, 256), -2.0)
        if r is not None:
            m[r[1]:r[3], r[0]:r[2]] = 2.0
        out.append(m + ripple.clamp(max=1.0) * (m > 0) - ripple.clamp(min=-1.0).abs() * (m < 0))
    return torch.stack(out)[:, None]


def head_boxes() -> list:
    return [[4.0 * v for v in r] if r is not None else [0.0, 0.0, 0.0, 0.0] for r in HEAD_RECTS]


def synth(manifest) -> dict:
    """Weights of a manifest with the shared parity rules, seed 0."""
    from parity import _synth_module

    return _synth_module().synth_state_dict(manifest, 0)


def manifest(cfg_name: str, part: str) -> list:
    return json.loads((HERE / "manifests" / f"{cfg_name}_{part}.json").read_text())


def prototypes(cfg: dict) -> torch.Tensor:
    """K x P x D unit class prototypes (upstream's classifier file layout), seeded."""
    g = torch.Generator().manual_seed(1234)
    p = torch.randn(cfg["classes"], cfg["prototypes"], cfg["clip"]["output_dim"], generator=g, dtype=torch.float64)
    return F.normalize(p, dim=-1).float()


def image() -> np.ndarray:
    from samkit.io.image import load_image

    return load_image(REPO / "samkit" / "assets" / "truck.png")


def input_tensor():
    """(1 x 3 x 1024 x 1024 input, ImageTransform) by samkit's OVSAM preprocessing."""
    from samkit.models.ovsam import preprocess_longest_side_bilinear
    from samkit.specs import SAM_PIXEL_MEAN, SAM_PIXEL_STD

    return preprocess_longest_side_bilinear(image(), 1024, SAM_PIXEL_MEAN, SAM_PIXEL_STD, torch.device("cpu"))


def data_sample(ns, case: dict, transform):
    """An mmdet ``DetDataSample`` carrying the prompts as upstream's test pipeline does."""
    sample = ns.DetDataSample()
    inst = ns.InstanceData()
    inst.bboxes = torch.tensor(case["boxes"])
    if case["kind"] == "point":
        inst.point_coords = torch.tensor(case["points"])[:, None, :]
    inst.labels = torch.zeros(len(case["boxes"]), dtype=torch.long)
    sample.gt_instances = inst
    h, w = transform.input_size
    sample.set_metainfo(dict(batch_input_shape=(1024, 1024), img_shape=(h, w), ori_shape=transform.original_size,
                             pad_shape=(1024, 1024), scale_factor=(w / transform.original_size[1],
                                                                   h / transform.original_size[0])))
    return sample


def stats(t: torch.Tensor) -> dict:
    t = t.double()
    return {"mean": float(t.mean()), "std": float(t.std()), "absmax": float(t.abs().max()), "sum": float(t.sum())}


# --------------------------------------------------------------------------- samkit side
def _builder(cfg_name: str):
    def build():
        from samkit.models.ovsam import build_ovsam

        cfg = CONFIGS[cfg_name]
        return build_ovsam(roi_size=cfg["roi_size"], trained_on=None, clip=cfg["clip"], adapter_dim=cfg["adapter_dim"])
    return build


def register_test_builders() -> None:
    """``ovsam_tiny_test`` / ``ovsam_full_test``: builders of samkit's OVSAM in these configurations."""
    import samkit.models.ovsam  # noqa: F401  (registers the OVSAM remaps the test specs use)
    from samkit.families import register_builder

    for name in CONFIGS:
        register_builder(f"ovsam_{name}_test")(_builder(name))


register_test_builders()


def spec_of(cfg_name: str, **extra):
    """A spec of the configuration, made of the same four files as the released OVSAM models."""
    from samkit.specs import MODELS, ModelSpec

    extra = {"requires": MODELS["ovsam_coco_rn50x16"].extra["requires"], **extra}
    return ModelSpec(name=f"ovsam_{cfg_name}_test", family="ovsam", module="ovsam_cases", url=None,
                     filename=f"clip2sam_{cfg_name}.pth", license="-", paper="-",
                     checkpoint_format="ovsam_clip2sam", extra=extra)


def write_files(cfg_name: str, folder: Path) -> dict:
    """The four files upstream reads, with synthesized weights in their official layouts:
    ``{"clip", "sam2clip", "clip2sam", "prompt_encoder"} -> path``."""
    paths = {}
    for part in ("clip", "sam2clip", "clip2sam", "prompt_encoder"):
        path = Path(folder) / f"{cfg_name}_{part}.pth"
        if not path.exists():
            torch.save(synth(manifest(cfg_name, part)), path)
        paths[part] = path
    return paths


def companions(paths: dict) -> dict:
    return {"clip_rn50x16": paths["clip"], "ovsam_sam2clip_vith_rn50x16": paths["sam2clip"],
            "sam_vit_h": paths["prompt_encoder"]}


def load_ovsam(cfg_name: str, folder: Path, vocabulary: bool = True):
    """samkit's OVSAM of the configuration loaded through ``load_model`` from the four files; with
    the golden vocabulary (K class names, seeded prototypes, the base/novel split)."""
    from samkit import load_model

    paths = write_files(cfg_name, folder)
    model = load_model(spec_of(cfg_name), checkpoint=paths["clip2sam"], companions=companions(paths))
    if not vocabulary:
        return model
    cfg = CONFIGS[cfg_name]
    names = [f"class {i}" for i in range(cfg["classes"])]
    return model.set_vocabulary(names, prototypes=prototypes(cfg), base=cfg["base"], novel=cfg["novel"])
