"""Rebuild the OVSAM goldens of ``tests/ovsam/`` with the official code (TEST-ONLY tool).

    OVSAM_REPO=... OVSAM_ORACLE_SITE=... OVSAM_MMCV_ROI=... SAMKIT_PARITY_DIR=.../shared/parity \\
        PYTHONPATH=. python tests/ovsam/make_goldens.py [tiny|full ...]

(see ``oracle.py`` for the three folders). For each configuration it writes
``manifests/<config>_{clip,sam2clip,clip2sam,prompt_encoder}.json`` (the official files' keys and
shapes, taken from the official modules' ``state_dict()``), then builds the official ``OVSAM``
detector with those numbers, loads weights synthesized from the manifests (seed 0, the rules of
``shared/parity/synth_weights.py``) through the official modules, runs it on the fixed inputs
of :mod:`ovsam_cases` and writes ``golden_<config>.safetensors`` + ``.json``.

``tiny``: the same code paths at reduced width (CLIP ResNet width 8, one bottleneck per stage,
embedding 32; SAM2CLIP width 64; the SAM prompt encoder and mask decoder at their real size).
``full``: RN50x16, SAM2CLIP ViT-H width, the released sizes.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import ovsam_cases as cases  # noqa: E402
import oracle  # noqa: E402


def _manifest(sd, prefix=""):
    return [[prefix + k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in sd.items()]


def _strip(sd, prefix):
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def build(cfg: dict, ns, weights: dict, prototypes: torch.Tensor, home: Path):
    """The official OVSAM detector of ``cfg`` with the synthesized ``weights`` (file key layouts)."""
    c = cfg["clip"]
    visual = ns.ModifiedResNet(c["layers"], c["output_dim"], c["heads"], image_size=c["input_resolution"],
                               width=c["width"])
    visual.load_state_dict(_strip(weights["clip"], "visual."))
    ns.open_clip.create_model_from_pretrained = lambda *a, **k: type("Clip", (), {"visual": visual})()
    ns.open_clip.create_model = ns.open_clip.create_model_from_pretrained
    files = {"sam_pe": weights["prompt_encoder"], "clip2sam": weights["clip2sam"]}

    def load_with_prefix(path, prefix=None, **_):
        return _strip(files[path], prefix + ".")

    import seg.models.heads.ovsam_head as head_mod
    import seg.models.necks.sam_pe as pe_mod

    head_mod.load_checkpoint_with_prefix = load_with_prefix
    pe_mod.load_checkpoint_with_prefix = lambda path, prefix=None, **_: load_with_prefix("sam_pe", prefix)
    pe_mod.checkpoint_dict = {"vit_h": "sam_pe"}
    (home / ".cache" / "embd").mkdir(parents=True, exist_ok=True)
    torch.save(prototypes, home / ".cache" / "embd" / "synthetic.pth")
    w = c["width"]
    channels = [4 * w, 8 * w, 16 * w, 32 * w]
    model = ns.OVSAM(
        backbone=dict(type=ns.OpenCLIPBackbone, model_name="RN50x16", fix=True,
                      init_cfg=dict(type="clip_pretrain", checkpoint="openai")),
        neck=dict(type=oracle_neck(ns), input_size=(1024, 1024), in_channels=channels, strides=[4, 8, 16, 32],
                  layer_ids=(0, 1, 2, 3), embed_channels=cfg["adapter_dim"], out_channels=256, fix=True),
        fpn_neck=dict(type=ns.FPN, in_channels=channels, out_channels=256, num_outs=4),
        prompt_encoder=dict(type=ns.SAMPromptEncoder, model_name="vit_h", fix=True,
                            init_cfg=dict(type="sam_pretrain", checkpoint="vit_h")),
        mask_decoder=dict(type=ns.OVSAMHead, gen_box=True, model_name="vit_h", with_label_token=True, fix=False,
                          ov_classifier_name="synthetic",
                          roi_extractor=dict(type=ns.SingleRoIExtractor,
                                             roi_layer=dict(type=ns.RoIAlign, output_size=cfg["roi_size"],
                                                            sampling_ratio=0),
                                             out_channels=256, featmap_strides=[4, 8, 16, 32]),
                          init_cfg=dict(type="Pretrained", checkpoint="clip2sam", prefix="mask_decoder")),
        use_gt_prompt=True, use_clip_feat=True, use_head_feat=True, use_point=True,
        num_classes=prototypes.shape[0], base_classes=list(cfg["base"]), novel_classes=list(cfg["novel"]),
    )
    model.neck.load_state_dict(_strip(weights["sam2clip"], "neck_student."))
    model.fpn_neck.load_state_dict(_strip(weights["clip2sam"], "fpn_neck."))
    return model.eval()


def oracle_neck(ns):
    return ns.MultiLayerTransformerNeck


def official_manifests(cfg: dict, ns) -> dict:
    """Key layouts of the four files for ``cfg``, from the official modules."""
    c = cfg["clip"]
    visual = ns.ModifiedResNet(c["layers"], c["output_dim"], c["heads"], image_size=c["input_resolution"],
                               width=c["width"])
    w = c["width"]
    channels = [4 * w, 8 * w, 16 * w, 32 * w]
    neck = ns.MultiLayerTransformerNeck(input_size=(1024, 1024), in_channels=channels, strides=[4, 8, 16, 32],
                                        layer_ids=(0, 1, 2, 3), embed_channels=cfg["adapter_dim"], out_channels=256)
    fpn = ns.FPN(in_channels=channels, out_channels=256, num_outs=4)
    from ext.sam import MaskDecoder, PromptEncoder
    from ext.sam.mask_decoder import MLP

    dec = MaskDecoder(num_multimask_outputs=0, transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
                      with_iou=False)
    head = torch.nn.Module()
    head.mask_decoder = dec
    head.label_token = torch.nn.Embedding(1, 256)
    head.label_mlp = MLP(256, 256, c["output_dim"], 3)
    conv = torch.nn.Module()
    conv.conv = torch.nn.Conv2d(256, c["output_dim"], 1, bias=False)
    head.roi_conv = torch.nn.Sequential(conv)
    pe = PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16)
    return {"clip": _manifest(visual.state_dict(), "visual."),
            "sam2clip": _manifest(neck.state_dict(), "neck_student."),
            "clip2sam": _manifest(fpn.state_dict(), "fpn_neck.") + _manifest(head.state_dict(), "mask_decoder."),
            "prompt_encoder": _manifest(pe.state_dict(), "prompt_encoder.")}


def run(cfg_name: str) -> None:
    import tempfile

    ns = oracle.official()
    cfg = cases.CONFIGS[cfg_name]
    manifests = official_manifests(cfg, ns)
    (HERE / "manifests").mkdir(exist_ok=True)
    for part, m in manifests.items():
        (HERE / "manifests" / f"{cfg_name}_{part}.json").write_text(json.dumps(m))
    weights = {part: cases.synth(m) for part, m in manifests.items()}
    protos = cases.prototypes(cfg)
    home = Path(tempfile.mkdtemp())
    import os

    old_home = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    try:
        model = build(cfg, ns, weights, protos, home)
    finally:
        if old_home is not None:
            os.environ["HOME"] = old_home
    out, meta = {}, {"config": cfg_name, "official_commit": "137d2c2", "cases": {}}
    x, transform = cases.input_tensor()
    with torch.no_grad():
        feats = model.backbone(x)
        embed = model.neck(feats)
        fpn = model.fpn_neck(feats)
        out["embed_s"] = embed[..., ::cases.EMBED_STEP, ::cases.EMBED_STEP].contiguous()
        meta["embed_stats"] = cases.stats(embed)
        for name, case in cases.CASES.items():
            out.update(run_case(model, ns, name, case, feats, embed, fpn, transform, meta))
        out.update(run_head(model, ns, feats, fpn, transform))
    from safetensors.torch import save_file

    save_file(out, str(HERE / f"golden_{cfg_name}.safetensors"))
    (HERE / f"golden_{cfg_name}.json").write_text(json.dumps(meta, indent=1))
    print(cfg_name, {k: tuple(v.shape) for k, v in out.items()})


def run_case(model, ns, name, case, feats, embed, fpn, transform, meta):
    """One prompt set through the official OVSAM (the steps of ``OVSAM.predict``, intermediate
    tensors kept), then the whole ``OVSAM.predict`` for the final masks and labels."""
    sample = cases.data_sample(ns, case, transform)
    kind = dict(with_points=True) if case["kind"] == "point" else dict(with_bboxes=True)
    sparse, dense = model.pe(sample.gt_instances, image_size=(1024, 1024), **kind)
    low, _, query = model.mask_decoder(image_embeddings=embed[0:1], image_pe=model.pe.get_dense_pe(),
                                       sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                       multi_mask_output=False, fpn_feats=[f[0:1] for f in fpn],
                                       data_samples=sample)
    clip_map = model.backbone.get_clip_feature(feats[-1])
    from mmdet.structures.bbox import bbox2roi

    inst = model.backbone.forward_feat(model.roi(clip_map, bbox2roi([sample.gt_instances.bboxes])))
    clip_logit = model.mask_decoder.forward_logit(inst[:, None])
    ens = model.open_voc_inference(feats, query, low, data_samples=sample)
    assert torch.isfinite(ens).all(), f"{name}: official ensemble is not finite"
    model.use_point = case["kind"] == "point"
    result = model.predict(cases.input_tensor()[0], [cases.data_sample(ns, case, transform)])[0].pred_instances
    masks = result.masks.numpy()
    meta["cases"][name] = {"labels": result.labels.tolist(), "n": int(low.shape[0]),
                           "lowres_stats": cases.stats(low)}
    return {f"{name}.lowres_s": low[..., ::cases.LOW_STEP, ::cases.LOW_STEP].contiguous(),
            f"{name}.query": query[:, 0].contiguous(), f"{name}.clip": clip_logit[:, 0].contiguous(),
            f"{name}.ensemble": ens[:, 0].contiguous(), f"{name}.labels": result.labels.clone(),
            f"{name}.masks_packed": torch.from_numpy(np.packbits(masks.reshape(-1)))}


def run_head(model, ns, feats, fpn, transform):
    """The classifier on given masks (``ovsam_cases.head_masks``): the statements of
    ``OVSAMHead.predict_masks`` after the mask (mmdet ``mask2bbox`` x 4, ``bbox2roi``, the
    ``SingleRoIExtractor``, ``roi_conv``, spatial mean, ``forward_logit``), then the official
    ``OVSAM.open_voc_inference`` with the masks' boxes as the CLIP branch's boxes."""
    from mmdet.structures.bbox import bbox2roi
    from mmdet.structures.mask import mask2bbox

    head = model.mask_decoder
    masks = cases.head_masks()
    boxes = mask2bbox(masks.sigmoid()[:, 0] > 0.5) * 4
    roi = head.roi([f[0:1] for f in fpn], bbox2roi([boxes]))
    region = head.roi_conv(roi).mean(dim=-1).mean(dim=-1)
    query = head.forward_logit(region[:, None])
    sample = cases.data_sample(ns, dict(kind="box", boxes=cases.head_boxes()), transform)
    ens = model.open_voc_inference(feats, query, masks, data_samples=sample)
    assert torch.isfinite(ens).all()
    return {"head.boxes": boxes, "head.query": query[:, 0].contiguous(), "head.ensemble": ens[:, 0].contiguous()}


if __name__ == "__main__":
    for cfg_name in sys.argv[1:] or ["tiny"]:
        run(cfg_name)
