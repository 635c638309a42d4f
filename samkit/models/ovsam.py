"""Open-Vocabulary SAM (Yuan et al., ECCV 2024): SAM's prompt encoder and mask decoder on CLIP
features, with a name for every mask.

One image pass: the CLIP RN50x16 image tower (``backbone``) gives four stage maps (strides 4-32);
SAM2CLIP (``neck``, :class:`~samkit.backbones.ovsam_necks.Sam2ClipAdapter`) turns them into a
SAM-like 256 x 64 x 64 embedding and CLIP2SAM's FPN (``fpn_neck``) into four 256-channel maps.
Per prompt: SAM ViT-H's prompt encoder and OVSAM's decoder (one mask token, a label token) give
one mask; the region of its box in the FPN is classified against the class prototypes
(:class:`~samkit.heads.ovsam_head.Clip2SamHead`), the prompt box (or, for clicks, the mask's
box) is RoI-aligned on the last CLIP stage and pooled by CLIP's attention pool, and the two
class distributions are ensembled (seen classes weight CLIP by 0.1, unseen by 0.9).

Files (released on Hugging Face HarborYuan/ovsam_models, S-Lab License 1.0, non-commercial):
``clip2sam_{coco,lvis}_rn50x16.pth`` (the FPN and the decoder with its classifier, keys
``fpn_neck.*`` and ``mask_decoder.*``; the spec's own file), plus what upstream loads from other
releases: ``sam2clip_vith_rn50x16.pth`` (the adapter, keys ``neck_student.*``), OpenAI's
``RN50x16.pt`` (the backbone: ``visual.*``) and SAM ViT-H (only ``prompt_encoder.*``). The spec
lists them in ``extra["requires"]``; ``load_model`` resolves them like the main file.

Preprocessing (upstream's test pipeline): longest side to 1024 with bilinear interpolation
without antialiasing (mmcv/cv2; here torch, rounded to uint8: within one grey level of cv2),
SAM's mean/std in 0..255 units, zero padding bottom/right. Masks: SAM's postprocessing,
threshold 0 on the logits. OVSAM has no IoU head: ``scores`` are the stability scores.
Labels: ``DecoderOutput.label_ids`` / ``label_scores`` (B x 1; the probability of the class,
softmax over the classes and the background) and ``model.label_names``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..backbones.clip_resnet import ModifiedResNet
from ..backbones.ovsam_necks import ClipFpn, Sam2ClipAdapter
from ..errors import InputError
from ..families import register_builder, register_remap
from ..heads import PromptEncoder
from ..heads.ovsam_head import (Clip2SamHead, LabelTokenMaskDecoder, class_logits, ensemble_logits,
                                label_from_logits, mask_boxes)
from ..ops.mask_ops import stability_score
from ..ops.roi_align import roi_align
from ..specs import SAM_PIXEL_MEAN, SAM_PIXEL_STD
from . import ovsam_vocab
from .base import DecoderOutput, ImageFeatures, ImageTransform, PromptableModel, masks_of, postprocess_crop_upscale


@dataclass
class OvsamFeatures(ImageFeatures):
    """``embed`` B x 256 x 64 x 64 (SAM2CLIP), ``fpn`` four B x 256 maps (strides 4-32),
    ``clip_map`` the last CLIP stage B x C x 32 x 32."""

    fpn: Tuple[torch.Tensor, ...] = ()
    clip_map: Optional[torch.Tensor] = None

    def select(self, index: int) -> "OvsamFeatures":
        return OvsamFeatures(self.embed[index:index + 1], None, fpn=tuple(f[index:index + 1] for f in self.fpn),
                             clip_map=self.clip_map[index:index + 1])


def preprocess_longest_side_bilinear(image: np.ndarray, frame: int, mean, std, device) -> Tuple[torch.Tensor,
                                                                                                  ImageTransform]:
    """mmdet ``Resize(keep_ratio=True)`` + ``DetDataPreprocessor``: longest side to ``frame``
    (``int(s * scale + 0.5)``), bilinear without antialiasing on uint8 (rounded back to uint8),
    normalise in 0..255 units, zero-pad bottom/right. H x W x 3 uint8 -> 1 x 3 x frame x frame."""
    h, w = image.shape[:2]
    scale = frame / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    x = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).to(device).permute(2, 0, 1)[None].float()
    if (nh, nw) != (h, w):
        x = F.interpolate(x, (nh, nw), mode="bilinear", align_corners=False).round_().clamp_(0, 255)
    x = (x - torch.tensor(mean, device=device).view(1, 3, 1, 1)) / torch.tensor(std, device=device).view(1, 3, 1, 1)
    x = F.pad(x, (0, frame - nw, 0, frame - nh))
    return x, ImageTransform((h, w), (nh, nw), frame)


class OvsamModel(PromptableModel):
    """Open-Vocabulary SAM. Keys: ``backbone.*`` (CLIP ``visual.*``), ``neck.*`` (SAM2CLIP),
    ``fpn_neck.*``, ``prompt_encoder.*`` (SAM ViT-H), ``mask_decoder.*`` (label token as
    ``iou_token``), ``head.*`` (``label_mlp``, ``roi_conv``).

    ``trained_on``: the vocabulary of the released classifier ("coco" / "lvis"); with that
    vocabulary its base/novel split drives the ensemble (classes of neither split are never
    predicted, as upstream); any other vocabulary is treated as unseen classes.
    """

    default_selection = "native"

    def __init__(self, backbone: ModifiedResNet, neck: Sam2ClipAdapter, fpn_neck: ClipFpn,
                 prompt_encoder: PromptEncoder, mask_decoder: LabelTokenMaskDecoder, head: Clip2SamHead, *,
                 clip_roi_size: int = 12, alpha: float = 0.1, beta: float = 0.9, image_size: int = 1024,
                 trained_on: Optional[str] = None, clip_name: str = "clip_rn50x16") -> None:
        super().__init__()
        self.backbone, self.neck, self.fpn_neck = backbone, neck, fpn_neck
        self.prompt_encoder, self.mask_decoder, self.head = prompt_encoder, mask_decoder, head
        self.clip_roi_size, self.alpha, self.beta = clip_roi_size, alpha, beta
        self.image_size = image_size
        self.trained_on = trained_on
        self.clip_name = clip_name
        self.register_buffer("pixel_mean", torch.tensor(SAM_PIXEL_MEAN).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(SAM_PIXEL_STD).view(-1, 1, 1), persistent=False)
        self.register_buffer("prototypes", torch.zeros(0), persistent=False)  # (K+1) x P x D, last = background
        self.register_buffer("seen", torch.zeros(0, dtype=torch.bool), persistent=False)
        self.register_buffer("allowed", torch.zeros(0, dtype=torch.bool), persistent=False)
        self.label_names: Optional[List[str]] = None
        self.vocabulary_name: Optional[str] = None
        self._pending = trained_on  # the vocabulary set on first use (None: no naming)

    @property
    def embed_dim(self) -> int:
        """Dimension of the class prototypes (the CLIP embedding: 768 for RN50x16)."""
        return self.head.roi_conv[0].conv.weight.shape[0]

    # ------------------------------------------------------------------ vocabulary
    def set_vocabulary(self, vocabulary: Union[str, Sequence[str], None], *,
                       prototypes: Optional[torch.Tensor] = None, clip=None,
                       base: Optional[Sequence[int]] = None, novel: Optional[Sequence[int]] = None) -> "OvsamModel":
        """Name masks with ``vocabulary``: "coco", "lvis", a list of class names (synonyms
        separated by commas: ``"couch,sofa"``) or None (no naming: masks only, faster).
        ``prototypes`` K x P x D (unit rows) skips the text tower; otherwise they come from the
        disk cache or are computed with ``clip`` (a loaded ``ClipModel``; default: this model's
        CLIP from the registry, loaded once). ``base`` / ``novel``: class indices of a
        base/novel split for a list of names (the built-in vocabulary the head was trained on
        brings its own); with a split, classes in neither are never predicted."""
        self._pending = None
        if vocabulary is None:
            self.label_names = self.vocabulary_name = None
            self.prototypes = self.prototypes.new_zeros(0)
            return self
        label, names, split = ovsam_vocab.resolve(vocabulary, self.trained_on)
        if base is not None or novel is not None:
            split = ovsam_vocab.check_split(base or (), novel or (), len(names))
        if prototypes is None:
            if clip is not None:
                prototypes = ovsam_vocab.compute_prototypes(names, clip)
            else:
                prototypes = ovsam_vocab.cached_prototypes(names, self.clip_name, self._load_clip)
        prototypes = self._check_prototypes(prototypes, len(names))
        dev = self.pixel_mean.device
        bg = prototypes.new_zeros(1, *prototypes.shape[1:])
        self.prototypes = torch.cat([prototypes, bg]).to(dev)
        k = len(names)
        seen = torch.zeros(k + 1, dtype=torch.bool)
        seen[-1] = True
        allowed = None
        if split is not None:
            seen[list(split["base"])] = True
            allowed = seen.clone()
            allowed[list(split["novel"])] = True
        self.seen = seen.to(dev)
        self.allowed = allowed.to(dev) if allowed is not None else torch.zeros(0, dtype=torch.bool, device=dev)
        self.label_names, self.vocabulary_name = list(names), label
        return self

    def _check_prototypes(self, prototypes: torch.Tensor, k: int) -> torch.Tensor:
        if not isinstance(prototypes, torch.Tensor) or prototypes.dim() not in (2, 3):
            raise InputError("prototypes must be a K x D or K x P x D tensor. Fix: pass the output of "
                             "samkit.models.ovsam_vocab.compute_prototypes(names, clip).")
        if prototypes.dim() == 2:
            prototypes = prototypes[:, None]
        if prototypes.shape[0] != k:
            raise InputError(f"{prototypes.shape[0]} prototypes for {k} class names. Fix: one row per class name.")
        if prototypes.shape[-1] != self.embed_dim:
            raise InputError(
                f"prototypes have {prototypes.shape[-1]} dims but this OVSAM head compares {self.embed_dim}-dim "
                f"embeddings. Fix: compute them with the text tower of {self.clip_name} (the CLIP whose image "
                "tower this model uses).")
        if not torch.isfinite(prototypes).all():
            raise InputError("prototypes contain NaN or inf. Fix: recompute them.")
        return F.normalize(prototypes.float(), dim=-1)

    def _load_clip(self):
        from ..registry import load_model

        return load_model(self.clip_name, device=self.pixel_mean.device)

    def _ensure_vocabulary(self) -> bool:
        if self._pending is not None:
            self.set_vocabulary(self._pending)
        return self.label_names is not None

    # ------------------------------------------------------------------ image
    def preprocess(self, image: np.ndarray):
        return preprocess_longest_side_bilinear(image, self.image_size, SAM_PIXEL_MEAN, SAM_PIXEL_STD, self.device)

    def encode(self, x: torch.Tensor) -> OvsamFeatures:
        """``B x 3 x 1024 x 1024`` -> SAM2CLIP embedding, FPN maps and the last CLIP stage."""
        feats = self.backbone.stages(x)[1:]
        return OvsamFeatures(self.neck(feats), fpn=tuple(self.fpn_neck(feats)), clip_map=feats[-1])

    def decode(self, features: OvsamFeatures, points: Optional[torch.Tensor], labels: Optional[torch.Tensor],
               boxes: Optional[torch.Tensor], mask_input: Optional[torch.Tensor], multimask) -> DecoderOutput:
        """One mask per prompt whatever ``multimask`` says (OVSAM has one mask token): low-res
        logits B x 1 x 256 x 256, stability B x 1 as ``iou``, and with a vocabulary
        ``label_ids`` / ``label_scores`` B x 1."""
        pts = (points, labels) if points is not None else None
        sparse, dense = self.prompt_encoder(pts, boxes, mask_input)
        masks, _, _, _ = self.mask_decoder(features.embed, self.prompt_encoder.get_dense_pe(), sparse, dense, False,
                                           cache=features.cache)
        out = DecoderOutput(masks, stability_score(masks, self.mask_threshold, 1.0))
        if self._ensure_vocabulary():
            ids, scores = label_from_logits(self.label_logits(features, masks[:, 0], boxes))
            out.label_ids, out.label_scores = ids[:, None], scores.detach()[:, None]
        return out

    def label_logits(self, features: OvsamFeatures, low_res: torch.Tensor,
                     boxes: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Ensembled class logits N x (K+1) (last column: background) of N masks ``low_res``
        N x 256 x 256; ``boxes`` N x 4 (model frame) for the CLIP branch, else the masks' boxes."""
        query = self.head_logits(features, low_res)
        clip = self.clip_logits(features, mask_boxes(low_res) if boxes is None else boxes)
        grid = F.interpolate(low_res[:, None], size=features.clip_map.shape[-2:], mode="bilinear",
                             align_corners=False)
        valid = (grid > 0).flatten(1).any(dim=1)
        allowed = self.allowed if self.allowed.numel() else None
        return ensemble_logits(query, clip, valid, self.seen, allowed, self.alpha, self.beta)

    def _images(self, features: OvsamFeatures, n: int) -> torch.Tensor:
        """Image index of each of ``n`` prompts: all 0, or one image per prompt."""
        b = features.embed.shape[0]
        if b not in (1, n):
            raise InputError(f"{n} prompts for {b} images. Fix: one prompt set per image, or one image.")
        if b == n > 1:
            return torch.arange(n, device=features.embed.device)
        return torch.zeros(n, dtype=torch.long, device=features.embed.device)

    def head_logits(self, features: OvsamFeatures, low_res: torch.Tensor) -> torch.Tensor:
        """CLIP2SAM's class logits N x (K+1) of N masks (``low_res`` N x 256 x 256)."""
        images = self._images(features, low_res.shape[0])
        if features.embed.shape[0] == 1:
            region = self.head.embed(features.fpn, low_res)
        else:
            region = torch.cat([self.head.embed([f[i:i + 1] for f in features.fpn], low_res[j:j + 1])
                                for j, i in enumerate(images.tolist())])
        return class_logits(region, self.prototypes)

    def clip_logits(self, features: OvsamFeatures, boxes: torch.Tensor) -> torch.Tensor:
        """The CLIP branch's class logits N x (K+1) of N boxes (model frame): RoIAlign 12 x 12 on
        the last stage (stride 32), CLIP's attention pool."""
        images = self._images(features, boxes.shape[0])
        rois = torch.cat([images[:, None].to(boxes.dtype), boxes], dim=1)
        pooled = roi_align(features.clip_map, rois, self.clip_roi_size, 1.0 / 32, 0, aligned=True)
        return class_logits(self.backbone.attnpool(pooled), self.prototypes)

    def names_of(self, out: DecoderOutput) -> List[List[str]]:
        """``label_ids`` of a decoder output as class names, B lists of K names."""
        if out.label_ids is None or self.label_names is None:
            raise InputError("this output carries no labels. Fix: set a vocabulary (model.set_vocabulary('coco')) "
                             "before decoding.")
        return [[self.label_names[int(j)] for j in row] for row in out.label_ids]

    def postprocess(self, low_res: torch.Tensor, transform: ImageTransform) -> torch.Tensor:
        return postprocess_crop_upscale(low_res, transform)

    def postprocess_masks(self, low_res: torch.Tensor, transform: ImageTransform) -> torch.Tensor:
        return masks_of(low_res, transform, self.mask_threshold, crop=True)

    def forward(self, x: torch.Tensor, points: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                boxes: Optional[torch.Tensor] = None, mask_input: Optional[torch.Tensor] = None,
                multimask=False) -> DecoderOutput:
        """Torch-level batch API (prompts in model-frame coordinates), as ``SamModel.forward``."""
        return self.decode(self.encode(x), points, labels, boxes, mask_input, multimask)


# --------------------------------------------------------------------------- builders
RN50X16 = dict(layers=(6, 8, 18, 8), output_dim=768, heads=48, input_resolution=384, width=96)


def build_ovsam(*, roi_size: int, trained_on: Optional[str], clip: Dict = RN50X16, adapter_dim: int = 1280,
                adapter_depth: int = 5, adapter_heads: int = 16, image_size: int = 1024) -> OvsamModel:
    """OVSAM with every number explicit (``clip``: ModifiedResNet arguments; stage channels
    ``4w, 8w, 16w, 32w`` for stem width ``w``)."""
    backbone = ModifiedResNet(**clip)
    w = clip["width"]
    channels = (4 * w, 8 * w, 16 * w, 32 * w)
    grid = image_size // 16
    neck = Sam2ClipAdapter(channels, (4, 8, 16, 32), adapter_dim, 256, grid, adapter_depth, adapter_heads)
    prompt_encoder = PromptEncoder(embed_dim=256, image_embedding_size=(grid, grid),
                                   input_image_size=(image_size, image_size), mask_in_chans=16)
    head = Clip2SamHead(clip["output_dim"], 256, roi_size)
    return OvsamModel(backbone, neck, ClipFpn(channels, 256), prompt_encoder, LabelTokenMaskDecoder(256), head,
                      image_size=image_size, trained_on=trained_on)


@register_builder("ovsam_coco_rn50x16")
def build_ovsam_coco_rn50x16() -> OvsamModel:
    """CLIP2SAM trained on the 48 COCO base classes: RoI 12 x 12 on the FPN."""
    return build_ovsam(roi_size=12, trained_on="coco")


@register_builder("ovsam_lvis_rn50x16")
def build_ovsam_lvis_rn50x16() -> OvsamModel:
    """CLIP2SAM trained on the 866 LVIS base (frequent + common) classes: RoI 7 x 7 on the FPN."""
    return build_ovsam(roi_size=7, trained_on="lvis")


@register_builder("ovsam_sam2clip_vith_rn50x16")
def build_sam2clip_vith_rn50x16() -> Sam2ClipAdapter:
    """The SAM2CLIP adapter alone (a component of the OVSAM models): RN50x16 stages -> ViT-H-like
    embedding (width 1280, 5 blocks, 16 heads)."""
    return Sam2ClipAdapter((384, 768, 1536, 3072), (4, 8, 16, 32), 1280, 256, 64, 5, 16)


@register_remap("ovsam_sam2clip")
def remap_sam2clip(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``neck_student.X`` (upstream's distillation model) -> ``X``; other keys are kept (the
    strict load reports them)."""
    p = "neck_student."
    return {k[len(p):] if k.startswith(p) else k: v for k, v in state_dict.items()}


_CLIP2SAM_KEYS = (("mask_decoder.mask_decoder.", "mask_decoder."),
                  ("mask_decoder.label_token.", "mask_decoder.iou_token."),
                  ("mask_decoder.label_mlp.", "head.label_mlp."), ("mask_decoder.roi_conv.", "head.roi_conv."))


@register_remap("ovsam_clip2sam")
def remap_clip2sam(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The CLIP2SAM file: ``fpn_neck.*`` as is; ``mask_decoder.mask_decoder.*`` -> ``mask_decoder.*``;
    the label token takes the first output-token slot (``mask_decoder.iou_token``); ``label_mlp``
    and ``roi_conv`` -> ``head.*``. Other keys are kept (the strict load reports them)."""
    out = {}
    for k, v in state_dict.items():
        for old, new in _CLIP2SAM_KEYS:
            if k.startswith(old):
                k = new + k[len(old):]
                break
        out[k] = v
    return out
