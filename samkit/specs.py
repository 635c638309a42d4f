"""Released checkpoints: one ``ModelSpec`` per official file, in one plain dict.

This module is the single place where the registry is filled (timm style). It holds facts
only (names, URLs, hashes, licences, input geometry); builders are referenced by dotted
path and imported lazily, so importing ``samkit`` never imports a model family.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)  # 0..255 units
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # 0..1 units
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """One released checkpoint.

    ``name`` is samkit's name (``sam_vit_b``); ``tag`` the upstream release tag.
    ``builder`` is ``"module:function"`` returning an un-initialised model.
    ``sha256`` is the full digest when an official source publishes it; ``sha256_prefix`` a
    published prefix of it (verified as a prefix). Other digests live in ``extra``:
    ``md5_prefix`` is what SAM encodes in its file names (``_01ec64`` is the start of the file's
    MD5, not of its sha256) and ``git_blob_sha1`` is the blob id of a file committed to the
    official GitHub repository (what ``git hash-object FILE`` prints). ``samkit.hub`` checks
    every digest a spec records.
    ``checkpoint_format`` names the pure key-remap function in ``samkit.checkpoint``.
    """

    name: str
    family: str
    builder: str
    url: Optional[str]
    filename: Optional[str]
    license: str
    paper: str
    checkpoint_format: str
    input_size: int = 1024
    pixel_mean: Tuple[float, float, float] = SAM_PIXEL_MEAN
    pixel_std: Tuple[float, float, float] = SAM_PIXEL_STD
    sha256: Optional[str] = None
    sha256_prefix: Optional[str] = None
    tag: str = ""
    commercial_use: bool = True
    video: bool = False
    neural: bool = True
    aliases: Tuple[str, ...] = ()
    notes: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)


_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
_SAM2_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/"
_SAM21_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
_ETAM_URL = "https://huggingface.co/yunyangx/efficient-track-anything/resolve/main/"
_EDGESAM_URL = "https://huggingface.co/spaces/chongzhou/EdgeSAM/resolve/main/weights/"
_ESAM_URL = "https://github.com/yformer/EfficientSAM/raw/main/weights/"

_P_SAM = "Kirillov et al., Segment Anything, ICCV 2023 (arXiv:2304.02643)"
_P_MOBILE = "Zhang et al., Faster Segment Anything: Towards Lightweight SAM for Mobile Applications (arXiv:2306.14289)"
_P_EDGE = "Zhou et al., EdgeSAM: Prompt-In-the-Loop Distillation for On-Device Deployment of SAM (arXiv:2312.06660)"
_P_ESAM = "Xiong et al., EfficientSAM: Leveraged Masked Image Pretraining for Efficient Segment Anything, CVPR 2024 (arXiv:2312.00863)"
_P_SAM2 = "Ravi et al., SAM 2: Segment Anything in Images and Videos (arXiv:2408.00714)"
_P_ETAM = "Xiong et al., Efficient Track Anything (arXiv:2411.18933)"
_P_EDGETAM = "Zhou et al., EdgeTAM: On-Device Track Anything Model, CVPR 2025 (arXiv:2501.07256)"

_EDGESAM_LICENSE = "S-Lab License 1.0 (non-commercial use only)"

MODELS: dict[str, ModelSpec] = {}


def _add(spec: ModelSpec) -> None:
    if spec.name in MODELS:
        raise ValueError(f"duplicate model name {spec.name!r}")
    MODELS[spec.name] = spec


# --- SAM (segment-anything) -------------------------------------------------------------
for _size, _digest in (("b", "01ec64"), ("l", "0b3195"), ("h", "4b8939")):
    _add(ModelSpec(
        name=f"sam_vit_{_size}", family="sam", builder=f"samkit.models.sam:build_sam_vit_{_size}",
        url=f"{_SAM_URL}sam_vit_{_size}_{_digest}.pth", filename=f"sam_vit_{_size}_{_digest}.pth",
        license="Apache-2.0", paper=_P_SAM, checkpoint_format="sam",
        tag="2023-04", extra={"md5_prefix": _digest},
    ))

# --- MobileSAM (TinyViT-5M) ---------------------------------------------------------------
_add(ModelSpec(
    name="mobile_sam", family="mobile_sam", builder="samkit.models.efficient_image:build_mobile_sam",
    url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
    filename="mobile_sam.pt", license="Apache-2.0", paper=_P_MOBILE, checkpoint_format="mobile_sam",
    extra={"git_blob_sha1": "7ef2d090979fd9853adf17b7a99c8b94a1c5a6a7"},
))

# --- EdgeSAM (RepViT-M1) ------------------------------------------------------------------
for _name, _file in (("edge_sam", "edge_sam.pth"), ("edge_sam_3x", "edge_sam_3x.pth")):
    _add(ModelSpec(
        name=_name, family="edge_sam", builder="samkit.models.efficient_image:build_edge_sam",
        url=_EDGESAM_URL + _file, filename=_file, license=_EDGESAM_LICENSE, commercial_use=False,
        paper=_P_EDGE, checkpoint_format="edge_sam",
        notes="IoU head was not distilled; masks are selected by stability score by default.",
    ))

# --- EfficientSAM (yformer) ------------------------------------------------------------------
_add(ModelSpec(
    name="efficient_sam_vitt", family="efficient_sam",
    builder="samkit.models.efficient_image:build_efficient_sam_vitt",
    url=_ESAM_URL + "efficient_sam_vitt.pt", filename="efficient_sam_vitt.pt", license="Apache-2.0",
    paper=_P_ESAM, checkpoint_format="efficient_sam", pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD,
    extra={"git_blob_sha1": "af883c49e33c68f01107be52df0ecad26a48355f"},
))
_add(ModelSpec(
    name="efficient_sam_vits", family="efficient_sam",
    builder="samkit.models.efficient_image:build_efficient_sam_vits",
    url=_ESAM_URL + "efficient_sam_vits.pt.zip", filename="efficient_sam_vits.pt.zip", license="Apache-2.0",
    paper=_P_ESAM, checkpoint_format="efficient_sam", pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD,
    notes="Upstream ships this checkpoint zipped; samkit reads the .pt inside the zip.",
    extra={"git_blob_sha1": "fa4e9f05f753e109dbde052f97d37903b833cf53"},
))

# --- SAM 2 / SAM 2.1 (Hiera) -----------------------------------------------------------------
for _short, _long in (("t", "tiny"), ("s", "small"), ("b+", "base_plus"), ("l", "large")):
    for _prefix, _base, _tag in (("sam2", _SAM2_URL, "2024-07-29"), ("sam2.1", _SAM21_URL, "2024-09-28")):
        _add(ModelSpec(
            name=f"{_prefix}_hiera_{_short}", family="sam2",
            builder=f"samkit.models.sam2:build_{_prefix.replace('.', '')}_hiera_{_long}",
            url=f"{_base}{_prefix}_hiera_{_long}.pt", filename=f"{_prefix}_hiera_{_long}.pt",
            license="Apache-2.0", paper=_P_SAM2, checkpoint_format="sam2", tag=_tag, video=True,
            pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD,
        ))

# --- EdgeTAM ------------------------------------------------------------------------------
_add(ModelSpec(
    name="edgetam", family="edgetam", builder="samkit.models.edgetam:build_edgetam",
    url="https://github.com/facebookresearch/EdgeTAM/raw/main/checkpoints/edgetam.pt", filename="edgetam.pt",
    license="Apache-2.0", paper=_P_EDGETAM, checkpoint_format="edgetam", video=True,
    pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD,
    extra={"git_blob_sha1": "abd54d22bbd22ba3e53cf59a307e59e0f3701be6"},
))

# --- EfficientTAM -------------------------------------------------------------------------
for _size in ("ti", "s"):
    for _variant, _suffix, _res in (("", "", 1024), ("_1", "_1", 1024), ("_2", "_2", 1024),
                                    ("_512", "_512x512", 512)):
        _add(ModelSpec(
            name=f"efficienttam_{_size}{_variant}", family="efficienttam",
            builder=f"samkit.models.efficienttam:build_efficienttam_{_size}{_variant}",
            url=f"{_ETAM_URL}efficienttam_{_size}{_suffix}.pt", filename=f"efficienttam_{_size}{_suffix}.pt",
            license="Apache-2.0", paper=_P_ETAM, checkpoint_format="efficienttam", video=True,
            input_size=_res, pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD,
        ))

# --- classic (no learned weights) ----------------------------------------------------------
_add(ModelSpec(
    name="classic", family="classic", builder="samkit.models.classic:build_classic",
    url=None, filename=None, license="Apache-2.0",
    paper="Rother et al., GrabCut, SIGGRAPH 2004; Farneback, Two-Frame Motion Estimation, SCIA 2003",
    checkpoint_format="none", neural=False, video=True,
    notes="Offline fallback: OpenCV GrabCut seeded from the prompts; no learned weights. "
          "Far below any neural model in quality.",
))


def get_spec(name: str) -> ModelSpec:
    """Return the spec for ``name``; the error lists the known names."""
    try:
        return MODELS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, MODELS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(
            f"unknown model {name!r}.{hint} Known models: {', '.join(sorted(MODELS))} "
            "(run `samkit models ls`)."
        ) from None


def list_models(family: Optional[str] = None) -> list[str]:
    return [n for n, s in MODELS.items() if family is None or s.family == family]
