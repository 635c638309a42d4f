"""SAM 3 (Carion et al., "SAM 3: Segment Anything with Concepts", arXiv:2511.16719): one
Perception Encoder ViT feeding a concept detector (text and box exemplars -> every instance)
and a SAM 2-style interactive head (points / boxes -> one object, and the video tracker).

* Image preprocessing (official ``Sam3Processor``): the uint8 image resized to 1008 x 1008
  (bilinear, antialiased, aspect ratio not kept), then ``(x / 255 - 0.5) / 0.5``; the
  interactive head uses the same frame.
* Concepts: the text (context 32; exemplar-only prompts use the text ``"visual"`` as upstream)
  and the geometry tokens of the exemplar boxes form the prompt of the detector
  (``samkit.heads.sam3_detector``); the mask head (``samkit.heads.sam3_seg``) gives one
  288 x 288 mask per query. An instance is kept when ``sigmoid(logit) * sigmoid(presence)``
  exceeds ``score_threshold`` (0.5 upstream); its mask is the logits upsampled bilinearly to
  the image and thresholded at 0 (= probability 0.5).
* Points / boxes: :class:`samkit.models.sam2.Sam2Model`'s image path on the tracker neck
  (``no_mem_embed`` added, ``conv_s0`` / ``conv_s1`` high-res features, dynamic multimask), with
  SAM 2.1's video memory (``samkit.memory.config.SAM3``).

Module names follow the released ``sam3.pt`` with its ``detector.`` / ``tracker.`` parts merged
(``samkit.models.sam3_remap`` maps that file and the Hugging Face ``facebook/sam3`` layout).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.sam3_text import Sam3TextEncoder
from ..backbones.sam3_vit import Sam3ViT, Sam3VisionBackbone
from ..errors import InputError
from ..families import register_builder
from ..heads import MaskDecoder, PromptEncoder, TwoWayTransformer
from ..heads.sam3_detector import DetrDecoder, DetrEncoder, DotProductScoring, GeometryEncoder
from ..heads.sam3_seg import SegmentationHead
from ..masks import Masks
from ..memory.config import SAM3 as SAM3_MEMORY, MemoryConfig
from .base import ImageFeatures, ImageTransform
from .sam2 import Sam2Model

SAM3_MEAN = (0.5, 0.5, 0.5)  # 0..1 units
SAM3_STD = (0.5, 0.5, 0.5)
VISUAL_TEXT = "visual"  # the text upstream pairs with exemplar-only prompts


@dataclass(frozen=True)
class Sam3Config:
    """Every number of a SAM 3 model (defaults: the released ``sam3.pt``)."""

    image_size: int = 1008
    patch_size: int = 14
    vit_dim: int = 1024
    vit_depth: int = 32
    vit_heads: int = 16
    vit_mlp: int = 4736
    window: int = 24
    global_blocks: Tuple[int, ...] = (7, 15, 23, 31)
    pretrain_size: int = 336
    d_model: int = 256
    heads: int = 8
    ffn: int = 2048
    geometry_layers: int = 3
    encoder_layers: int = 6
    decoder_layers: int = 6
    num_queries: int = 200
    text_width: int = 1024
    text_heads: int = 16
    text_layers: int = 24
    context_length: int = 32
    vocab_size: int = 49408
    sam_heads: int = 8
    sam_mlp: int = 2048
    iou_hidden: int = 256
    memory: MemoryConfig = SAM3_MEMORY


@dataclass
class Sam3Features(ImageFeatures):
    """:class:`ImageFeatures` of the interactive head plus the detector neck's levels
    (``detector``: ``B x 256 x h x w``, finest first: 288, 144, 72 at 1008 px) and their sine
    position encodings (``pos``, ``1 x 256 x h x w``). ``trunk`` (``B x C x h x w``): the trunk's
    map while the interactive head's levels (``embed``, ``high_res``) are not computed yet
    (:meth:`Sam3Model.encode` leaves them to the first point / box prompt); then None."""

    detector: Tuple[torch.Tensor, ...] = ()
    pos: Tuple[torch.Tensor, ...] = ()
    trunk: Optional[torch.Tensor] = field(default=None, repr=False)

    def select(self, index: int) -> "Sam3Features":
        detector = tuple(t[index:index + 1] for t in self.detector)
        if self.embed is None:
            return Sam3Features(None, None, detector=detector, pos=self.pos, trunk=self.trunk[index:index + 1])
        base = super().select(index)
        return Sam3Features(base.embed, base.high_res, detector=detector, pos=self.pos)


@dataclass
class Detections:
    """Raw detector output for B prompts: ``logits`` B x Q, ``boxes`` B x Q x 4 (cx, cy, w, h in
    [0, 1] of the image), ``presence`` B x 1 logits, ``masks`` B x Q x h x w logits (288 x 288),
    ``semantic`` B x 1 x h x w logits or None."""

    logits: torch.Tensor
    boxes: torch.Tensor
    presence: torch.Tensor
    masks: torch.Tensor
    semantic: Optional[torch.Tensor] = field(default=None)

    @property
    def scores(self) -> torch.Tensor:
        """``sigmoid(logits) * sigmoid(presence)``: B x Q."""
        return self.logits.sigmoid() * self.presence.sigmoid()


class _Transformer(nn.Module):
    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder


def interactive_heads(cfg: Sam3Config) -> Tuple[PromptEncoder, MaskDecoder]:
    """The tracker's SAM 2-style prompt encoder and mask decoder (``Sam3TrackerBase._build_sam_heads``)."""
    grid = cfg.image_size // cfg.patch_size
    d = cfg.d_model
    prompt_encoder = PromptEncoder(embed_dim=d, image_embedding_size=(grid, grid),
                                   input_image_size=(cfg.image_size, cfg.image_size), mask_in_chans=16)
    mask_decoder = MaskDecoder(
        transformer_dim=d, transformer=TwoWayTransformer(depth=2, embedding_dim=d, num_heads=cfg.sam_heads,
                                                         mlp_dim=cfg.sam_mlp),
        num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=cfg.iou_hidden, use_high_res_features=True,
        pred_obj_scores=True, pred_obj_scores_mlp=True, use_multimask_token_for_obj_ptr=True,
        iou_prediction_use_sigmoid=True, dynamic_multimask_via_stability=True, dynamic_multimask_stability_delta=0.05,
        dynamic_multimask_stability_thresh=0.98)
    return prompt_encoder, mask_decoder


class Sam3Model(Sam2Model):
    """SAM 3: text / exemplar concepts (:meth:`predict_text`, :meth:`predict_exemplars`,
    :meth:`detect`) and SAM 2-style points / boxes (the inherited ``decode``)."""

    default_selection = "native"
    score_threshold = 0.5

    def __init__(self, cfg: Sam3Config = Sam3Config(), trunk: Optional[nn.Module] = None,
                 text_encoder: Optional[nn.Module] = None) -> None:
        """``trunk`` (``B x 3 x S x S -> B x C x S/14 x S/14``, with ``channel_list``) and
        ``text_encoder`` (``tokenize(texts) -> ids``, ``forward(ids) -> (B x L x 256, valid)``)
        are injected by the student builders; by default SAM 3's own, from ``cfg``."""
        if trunk is None:
            trunk = Sam3ViT(cfg.image_size, cfg.patch_size, cfg.vit_dim, cfg.vit_depth, cfg.vit_heads, cfg.vit_mlp,
                            cfg.window, cfg.global_blocks, cfg.pretrain_size)
        grid = cfg.image_size // cfg.patch_size  # masks reach the memory grid at 16 px per cell (1152 / 72)
        memory = replace(cfg.memory, hidden_dim=cfg.d_model, image_size=cfg.image_size, backbone_stride=cfg.patch_size,
                         mask_interpol_size=16 * grid)
        super().__init__(Sam3VisionBackbone(trunk, cfg.d_model), image_size=cfg.image_size,
                         backbone_stride=cfg.patch_size, embed_dim=cfg.d_model, use_high_res_features=True,
                         memory_config=memory, pixel_mean=SAM3_MEAN, pixel_std=SAM3_STD, heads=interactive_heads(cfg))
        self.config = cfg
        d, h, f = cfg.d_model, cfg.heads, cfg.ffn
        if text_encoder is None:
            text_encoder = Sam3TextEncoder(d, cfg.text_width, cfg.text_heads, cfg.text_layers, cfg.context_length,
                                           cfg.vocab_size)
        self.text_encoder = text_encoder
        self.geometry_encoder = GeometryEncoder(d, h, f, cfg.geometry_layers)
        self.transformer = _Transformer(DetrEncoder(d, h, f, cfg.encoder_layers),
                                        DetrDecoder(d, h, f, cfg.decoder_layers, cfg.num_queries))
        self.segmentation_head = SegmentationHead(d, h)
        self.dot_prod_scoring = DotProductScoring(d, f)

    # ------------------------------------------------------------------ image
    def preprocess(self, image: np.ndarray) -> Tuple[torch.Tensor, ImageTransform]:
        """H x W x 3 uint8 -> (1 x 3 x S x S, transform): uint8 antialiased bilinear resize to
        S x S, then ``(x / 255 - mean) / std`` (mean = std = 0.5)."""
        s = self.image_size
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
        x = F.interpolate(x, (s, s), mode="bilinear", align_corners=False, antialias=True)
        x = x.to(self.device).float() / 255.0
        mean = torch.tensor(self.pixel_mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.pixel_std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std, ImageTransform(tuple(image.shape[:2]), (s, s), s)

    def forward_image(self, x: torch.Tensor) -> dict:
        """SAM 2's ``backbone_out`` of the tracker neck (see :meth:`Sam2Model.forward_image`) plus
        ``detector_fpn`` (the detector neck's levels, finest first)."""
        out = self.image_encoder(x)
        fpn = list(out["tracker_fpn"])
        fpn[0], fpn[1] = self.mask_decoder.project_high_res(fpn[0], fpn[1])
        return {"vision_features": out["tracker_fpn"][-1], "vision_pos_enc": list(out["pos"]), "backbone_fpn": fpn,
                "detector_fpn": list(out["detector_fpn"])}

    def encode(self, x: torch.Tensor) -> Sam3Features:
        """The trunk and the detector neck (what text and exemplar prompts read). The tracker
        neck, which only points / boxes read, runs on the first :meth:`decode` of these features
        (:meth:`interactive_features`): a text-only use of an image never pays for it."""
        out = self.image_encoder(x, necks=("detector",))
        return Sam3Features(None, None, detector=tuple(out["detector_fpn"]), pos=tuple(p[:1] for p in out["pos"]),
                            trunk=out["trunk"])

    def interactive_features(self, features: Sam3Features) -> Sam3Features:
        """Fill ``embed`` / ``high_res`` of ``features`` from its trunk map (the tracker neck, as in
        :meth:`forward_image`, plus ``no_mem_embed``) if :meth:`encode` left them; in place, returns it."""
        if features.embed is None:
            fpn = self.image_encoder.run_neck(self.image_encoder.sam2_convs, features.trunk)
            fpn[0], fpn[1] = self.mask_decoder.project_high_res(fpn[0], fpn[1])
            features.embed = fpn[-1] + self.no_mem_embed.reshape(1, -1, 1, 1)
            features.high_res = (fpn[0], fpn[1])
            features.trunk = None
        return features

    def decode(self, features: ImageFeatures, *args, **kwargs):
        """:meth:`Sam2Model.decode` on the interactive head's levels (computed on first use)."""
        if isinstance(features, Sam3Features):
            features = self.interactive_features(features)
        return super().decode(features, *args, **kwargs)

    # ------------------------------------------------------------------ concepts
    def encode_text(self, texts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        """N texts -> (tokens ``N x L x 256``, padding ``N x L``, True = padding). A text longer
        than the context raises ``InputError``."""
        feats, valid = self.text_encoder(self.text_encoder.tokenize(texts))
        return feats, ~valid

    def detect(self, features: Sam3Features, texts: Optional[Sequence[str]] = None,
               text_tokens: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
               boxes: Optional[torch.Tensor] = None, box_labels: Optional[torch.Tensor] = None,
               semantic: bool = False) -> Detections:
        """Run the detector for B prompts on one image's ``features``: B ``texts`` (or
        ``text_tokens`` from :meth:`encode_text`), and/or exemplar ``boxes`` B x N x 4 (cx, cy, w,
        h in [0, 1]) with ``box_labels`` B x N (1 positive, 0 negative)."""
        if text_tokens is None:
            n = len(texts) if texts is not None else (boxes.shape[0] if boxes is not None else 1)
            text_tokens = self.encode_text(list(texts) if texts is not None else [VISUAL_TEXT] * n)
        prompt_text, text_pad = text_tokens
        b = prompt_text.shape[0]
        level, pos = features.detector[-1], features.pos[-1]
        if boxes is None:
            boxes = level.new_zeros(b, 0, 4)
            box_labels = torch.zeros(b, 0, dtype=torch.long, device=level.device)
        elif box_labels is None:
            box_labels = torch.ones(boxes.shape[:2], dtype=torch.long, device=boxes.device)
        geo, geo_pad = self.geometry_encoder(boxes.to(level.dtype), box_labels, None, level.expand(b, -1, -1, -1),
                                             pos.expand(b, -1, -1, -1))
        prompt = torch.cat([prompt_text, geo], dim=1)
        pad = torch.cat([text_pad, geo_pad], dim=1)
        hw = tuple(level.shape[-2:])
        tokens = level.flatten(2).transpose(1, 2).expand(b, -1, -1)
        pos_flat = pos.flatten(2).transpose(1, 2).expand(b, -1, -1)
        memory = self.transformer.encoder(tokens, pos_flat, prompt, pad)
        queries, ref, presence = self.transformer.decoder(memory, pos_flat, hw, prompt, pad)
        logits = self.dot_prod_scoring(queries, prompt, pad)
        masks, sem = self.segmentation_head(queries, features.detector, memory, prompt, pad, semantic=semantic)
        return Detections(logits, ref, presence, masks, sem)

    def instances(self, det: Detections, index: int, transform: ImageTransform, label: str,
                  threshold: Optional[float] = None) -> Masks:
        """Prompt ``index`` of ``det`` -> ``Masks`` of the instances scoring above ``threshold``
        (``score_threshold`` by default), best first, with ``labels`` = ``label``."""
        thr = self.score_threshold if threshold is None else float(threshold)
        scores = det.scores[index]
        keep = torch.nonzero(scores > thr).flatten()
        keep = keep[torch.argsort(scores[keep], descending=True, stable=True)]
        low = det.masks[index, keep].float()
        h, w = transform.original_size
        full = F.interpolate(low[None], (h, w), mode="bilinear", align_corners=False)[0] > 0 if len(keep) else \
            torch.zeros(0, h, w, dtype=torch.bool)
        s = scores[keep].float().cpu().numpy()
        return Masks(full.cpu().numpy(), s, low.cpu().numpy(), labels=[label] * len(keep), label_scores=s)

    def _features(self, image: np.ndarray, features, transform):
        if features is None or transform is None:
            with torch.inference_mode():
                x, transform = self.preprocess(image)
                features = self.encode(x)
        return features, transform

    def predict_text(self, image: np.ndarray, texts: Sequence[str], features: Optional[Sam3Features] = None,
                     transform: Optional[ImageTransform] = None) -> List[Masks]:
        """Every instance of each text (the ``samkit.vocab.text_predict`` hook): one ``Masks``
        per text, best first, ``labels`` = the text, ``label_scores`` = ``scores``."""
        features, transform = self._features(image, features, transform)
        with torch.inference_mode():
            det = self.detect(features, texts=list(texts))
            return [self.instances(det, i, transform, t) for i, t in enumerate(texts)]

    def predict_exemplars(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, text: Optional[str] = None,
                          features: Optional[Sam3Features] = None,
                          transform: Optional[ImageTransform] = None) -> Masks:
        """Every instance like the exemplar ``boxes`` (N x 4 x0, y0, x1, y1 pixels, checked)
        with ``labels`` N (1 positive, 0 negative), optionally with a ``text``. Labels of the
        masks: the text, else ``"exemplar"``."""
        features, transform = self._features(image, features, transform)
        h, w = transform.original_size
        b = torch.as_tensor(np.asarray(boxes, np.float64)).reshape(-1, 4)
        if b.shape[0] == 0:
            raise InputError("no exemplar box given. Fix: pass exemplars=[[x0, y0, x1, y1]].")
        b = b / torch.tensor([w, h, w, h], dtype=torch.float64)
        cxcywh = torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
        lab = torch.as_tensor(np.asarray(labels)).long().reshape(1, -1).to(self.device)
        with torch.inference_mode():
            det = self.detect(features, texts=[text if text is not None else VISUAL_TEXT],
                              boxes=cxcywh.float()[None].to(self.device), box_labels=lab)
            return self.instances(det, 0, transform, text if text is not None else "exemplar")


# ----------------------------------------------------------------------------- builders
SAM3_CONFIG = Sam3Config()


def at_image_size(cfg: Sam3Config, image_size: Optional[int]) -> Sam3Config:
    """``cfg`` with a lower input size (``None``: unchanged). The weights do not depend on it:
    the ViT tiles its 336 px position grid and scales its global RoPE to the token grid, the
    necks, heads and memory follow the grid. Allowed: a multiple of the patch size (14) from
    the pretraining size (336) to ``cfg.image_size`` (1008); ``InputError`` otherwise."""
    if image_size is None:
        return cfg
    p, lo, hi = cfg.patch_size, cfg.pretrain_size, cfg.image_size
    ok = isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool)
    if not ok or not lo <= int(image_size) <= hi or int(image_size) % p:
        sizes = ", ".join(str(s) for s in range(lo, hi + 1, p * 6))
        raise InputError(f"image_size {image_size!r} is not an input size SAM 3 can run at: it needs a multiple of "
                         f"{p} (the patch size) from {lo} (the position grid it was trained with) to {hi} (its "
                         f"released size). Fix: pass one such as {sizes}.")
    return replace(cfg, image_size=int(image_size))


def takes_image_size(fn):
    """Mark a SAM 3-family builder ``fn(image_size=None)`` as taking SAM 3's input sizes (checked by
    ``samkit.registry`` before any file is read)."""
    fn.check_image_size = lambda size: at_image_size(SAM3_CONFIG, size)
    return fn


@register_builder("sam3")
@takes_image_size
def build_sam3(image_size: Optional[int] = None) -> Sam3Model:
    return Sam3Model(at_image_size(SAM3_CONFIG, image_size))


from . import sam3_remap  # noqa: E402,F401  (registers the "sam3" key remap)
