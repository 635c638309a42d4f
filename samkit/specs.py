"""Released checkpoints: one ``ModelSpec`` per official file, in one plain dict.

This module is the single place where the registry is filled (timm style). It holds facts
only (names, URLs, hashes, licences, input geometry) and, per entry, the family's model file
(``module``), which registers the builder and key remap (``samkit.families``); it is imported
on first use, so importing ``samkit`` never imports a model family.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import NamedTuple, Optional, Tuple

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)  # 0..255 units
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # 0..1 units
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # 0..1 units (OpenAI CLIP's preprocessing)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
KINDS = ("segmenter", "clip", "component")


@dataclass(frozen=True)
class ModelSpec:
    """One released checkpoint.

    ``name`` is samkit's name (``sam_vit_b``); ``tag`` the upstream release tag.
    ``module`` is the family's model file; it registers the builder of ``name`` and the key
    remap of ``checkpoint_format`` with the decorators of :mod:`samkit.families`.
    ``sha256`` is the full digest when an official source publishes it; ``sha256_prefix`` a
    published prefix of it (verified as a prefix). Other digests live in ``extra``:
    ``md5_prefix`` is what SAM encodes in its file names (``_01ec64`` is the start of the file's
    MD5, not of its sha256) and ``git_blob_sha1`` is the blob id of a file committed to the
    official GitHub repository (what ``git hash-object FILE`` prints); ``md5`` is a full MD5 and
    ``size`` the file size in bytes, both from a public source. ``samkit.hub`` checks every
    digest a spec records. ``digest_source`` names the public sources of the pinned digests
    (Hugging Face LFS pointers of the same file, other projects' pins); see ``_PINS`` below.
    ``checkpoint_format`` names the upstream key layout (its remap is registered by ``module``).
    ``kind`` says what the model does: ``"segmenter"`` (draws masks from prompts: everything the
    predictor, the trackers and the CLI's default model choice use) or ``"clip"`` (an image/text
    embedding model that names masks and finds them from text; never a default segmenter) or
    ``"component"`` (a file that is one part of another model, e.g. OVSAM's SAM2CLIP adapter: it is
    downloaded and loaded for the models that require it, never used alone).
    ``extra["requires"]``: the other files a model is made of, as ``(spec name, take, put)`` rows:
    the keys of that spec's file (after its own remap) that start with ``take`` are loaded with
    ``take`` replaced by ``put`` (see ``samkit.registry.load_model``).
    """

    name: str
    family: str
    module: str
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
    digest_source: str = ""
    kind: str = "segmenter"


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

_P_CLIP = ("Radford et al., Learning Transferable Visual Models From Natural Language Supervision, "
           "ICML 2021 (arXiv:2103.00020)")
_CLIP_URL = "https://openaipublic.azureedge.net/clip/models/"

_EDGESAM_LICENSE = "S-Lab License 1.0 (non-commercial use only)"

MODELS: dict[str, ModelSpec] = {}


def _add(spec: ModelSpec) -> None:
    if spec.name in MODELS:
        raise ValueError(f"duplicate model name {spec.name!r}")
    MODELS[spec.name] = spec


# --- SAM (segment-anything) -------------------------------------------------------------
for _size, _digest in (("b", "01ec64"), ("l", "0b3195"), ("h", "4b8939")):
    _add(ModelSpec(
        name=f"sam_vit_{_size}", family="sam", module="samkit.models.sam",
        url=f"{_SAM_URL}sam_vit_{_size}_{_digest}.pth", filename=f"sam_vit_{_size}_{_digest}.pth",
        license="Apache-2.0", paper=_P_SAM, checkpoint_format="sam",
        tag="2023-04", extra={"md5_prefix": _digest},
    ))

# --- MobileSAM (TinyViT-5M) ---------------------------------------------------------------
_add(ModelSpec(
    name="mobile_sam", family="mobile_sam", module="samkit.models.mobile_sam",
    url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
    filename="mobile_sam.pt", license="Apache-2.0", paper=_P_MOBILE, checkpoint_format="mobile_sam",
    extra={"git_blob_sha1": "7ef2d090979fd9853adf17b7a99c8b94a1c5a6a7"},
))

# --- EdgeSAM (RepViT-M1) ------------------------------------------------------------------
for _name, _file in (("edge_sam", "edge_sam.pth"), ("edge_sam_3x", "edge_sam_3x.pth")):
    _add(ModelSpec(
        name=_name, family="edge_sam", module="samkit.models.edge_sam",
        url=_EDGESAM_URL + _file, filename=_file, license=_EDGESAM_LICENSE, commercial_use=False,
        paper=_P_EDGE, checkpoint_format="edge_sam",
        notes="IoU head was not distilled; masks are selected by stability score by default.",
    ))

# --- EfficientSAM (yformer) ------------------------------------------------------------------
_add(ModelSpec(
    name="efficient_sam_vitt", family="efficient_sam",
    module="samkit.models.efficient_sam",
    url=_ESAM_URL + "efficient_sam_vitt.pt", filename="efficient_sam_vitt.pt", license="Apache-2.0",
    paper=_P_ESAM, checkpoint_format="efficient_sam", pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD,
    extra={"git_blob_sha1": "af883c49e33c68f01107be52df0ecad26a48355f"},
))
_add(ModelSpec(
    name="efficient_sam_vits", family="efficient_sam",
    module="samkit.models.efficient_sam",
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
            module="samkit.models.sam2",
            url=f"{_base}{_prefix}_hiera_{_long}.pt", filename=f"{_prefix}_hiera_{_long}.pt",
            license="Apache-2.0", paper=_P_SAM2, checkpoint_format="sam2", tag=_tag, video=True,
            pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD,
        ))

# --- EdgeTAM ------------------------------------------------------------------------------
_add(ModelSpec(
    name="edgetam", family="edgetam", module="samkit.models.edgetam",
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
            module="samkit.models.efficienttam",
            url=f"{_ETAM_URL}efficienttam_{_size}{_suffix}.pt", filename=f"efficienttam_{_size}{_suffix}.pt",
            license="Apache-2.0", paper=_P_ETAM, checkpoint_format="efficienttam", video=True,
            input_size=_res, pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD,
        ))

# --- SAM 3 (Perception Encoder ViT + concept detector + SAM 2-style tracker) -----------------------
_P_SAM3 = "Carion et al., SAM 3: Segment Anything with Concepts (arXiv:2511.16719)"
_SAM3_LICENSE = "SAM License (Meta, 2025-11-19)"
_SAM3_NOTICE = ("commercial use is allowed, but the SAM License forbids military, warfare, nuclear and espionage "
                "uses and uses under ITAR, requires compliance with trade controls, forbids reverse engineering, "
                "and derivatives must be distributed under the same licence")


def _sam3_student(name: str, family: str, module: str, extra: Optional[dict] = None, **fields) -> None:
    """A SAM 3 student: SAM 3's input (1008 px, mean = std = 0.5), video, and SAM 3's licence with
    its notice (the files hold SAM 3's weights; the students' code is Apache-2.0)."""
    _add(ModelSpec(name=name, family=family, module=module, license=_SAM3_LICENSE, input_size=1008, video=True,
                   pixel_mean=(0.5, 0.5, 0.5), pixel_std=(0.5, 0.5, 0.5),
                   extra={"license_notice": _SAM3_NOTICE, **(extra or {}), "code_license": "Apache-2.0"},
                   **fields))


_add(ModelSpec(
    name="sam3", family="sam3", module="samkit.models.sam3",
    url="https://huggingface.co/facebook/sam3/resolve/main/sam3.pt", filename="sam3.pt",
    license=_SAM3_LICENSE, paper=_P_SAM3, checkpoint_format="sam3", tag="2025-11", input_size=1008, video=True,
    pixel_mean=(0.5, 0.5, 0.5), pixel_std=(0.5, 0.5, 0.5),
    extra={"license_notice": _SAM3_NOTICE, "gated": True},
    notes="Finds every instance of a text or exemplar box (predict(text=...), predict(exemplars=...)) and "
          "answers points/boxes like SAM 2. The weights are gated on the Hugging Face hub: accept the licence "
          "at huggingface.co/facebook/sam3, download sam3.pt with your account and pass --checkpoint (or copy "
          "it to the cache path). The transformers file model.safetensors of the same repository loads too.",
))

# --- SAM3-LiteText (SAM 3 + a distilled MobileCLIP text encoder; SimonZeng7108/efficientsam3) ------
_P_LITETEXT = ("Zeng et al., SAM3-LiteText: An Anatomical Study of the SAM3 Text Encoder for Efficient "
               "Vision-Language Segmentation (arXiv:2602.12173)")
_ESAM3_URL = "https://huggingface.co/Simon7108528/EfficientSAM3/resolve/main/"
for _short, _file_part, _variant in (("s0", "mobileclip_s0", "MobileCLIP-S0"), ("s1", "mobileclip_s1", "MobileCLIP-S1"),
                                     ("l", "mobileclip2_l", "MobileCLIP2-L")):
    for _ctx in (16, 32):
        _file = f"sam3_litetext_{_file_part}_ctx{_ctx}.pt"
        _sam3_student(  # the weights hold SAM 3's vision encoder, detector and tracker
            f"sam3_litetext_{_short}_{_ctx}", "sam3_litetext", "samkit.models.sam3_litetext",
            url=f"{_ESAM3_URL}sam3_litetext/{_file}", filename=_file,
            paper=_P_LITETEXT, checkpoint_format="sam3_litetext", tag="2026-02",
            extra={"text_encoder": _variant, "context_length": _ctx},
            notes=f"SAM 3 with its text encoder replaced by a distilled {_variant} text encoder reading up to "
                  f"{_ctx - 2} tokens: predict(text=...) / exemplars / points like sam3, with a much smaller text "
                  "encoder (the image encoder is SAM 3's ViT: the image side costs what sam3 costs). The weights "
                  "carry SAM 3's, hence its licence; the students' code is Apache-2.0.",
        )

# --- EfficientSAM3 stage-3 models (distilled image + text encoders on SAM 3's heads) ------------------
_P_ES3 = ("Zeng et al., EfficientSAM3: Progressive Hierarchical Distillation for Video Concept Segmentation "
          "from SAM1, 2, and 3 (arXiv:2511.15833)")
_ES3_FT = "https://huggingface.co/Simon7108528/EfficientSAM3/resolve/main/efficientsam3_ft/"
for _fam, _label, _trunk in (("efficientvit", "EV-M", "EfficientViT-B1"), ("repvit", "RV-M", "RepViT-M1.1"),
                             ("tinyvit", "TV-M", "TinyViT-11M")):
    _sam3_student(
        f"efficientsam3_{_fam}", "efficientsam3", "samkit.models.efficientsam3",
        url=f"{_ES3_FT}efficientsam3_{_fam}.pt", filename=f"efficientsam3_{_fam}.pt",
        paper=_P_ES3, checkpoint_format=f"efficientsam3_{_fam}", tag="2026-06-11",
        notes=(f"EfficientSAM3 {_label}: SAM 3 with a distilled {_trunk} image encoder and the MobileCLIP-S0 text "
               "student (context 16), fine-tuned end to end (stage 3); predict(text=...), exemplars, points/boxes "
               "and concept tracking like sam3 with ~10x fewer parameters. Not gated; the file holds SAM 3's "
               "necks, detector and tracker, so SAM 3's licence applies (code: Apache-2.0)."),
    )

# --- EfficientSAM3 stage-1 image-encoder students (SAM 3 with a distilled trunk, SAM 3's text encoder) ---
_ES3_S1 = "https://huggingface.co/Simon7108528/EfficientSAM3/resolve/main/stage1_all_converted/"
for (_fam, _size), _trunk in {("efficientvit", "s"): "EfficientViT-B0", ("efficientvit", "m"): "EfficientViT-B1",
                              ("efficientvit", "l"): "EfficientViT-B2", ("repvit", "s"): "RepViT-M0.9",
                              ("repvit", "m"): "RepViT-M1.1", ("repvit", "l"): "RepViT-M2.3",
                              ("tinyvit", "s"): "TinyViT-5M", ("tinyvit", "m"): "TinyViT-11M",
                              ("tinyvit", "l"): "TinyViT-21M"}.items():
    _sam3_student(
        f"efficientsam3_stage1_{_fam}_{_size}", "efficientsam3", "samkit.models.efficientsam3",
        url=f"{_ES3_S1}efficient_sam3_{_fam}_{_size}.pt", filename=f"efficient_sam3_{_fam}_{_size}.pt",
        paper=_P_ES3, checkpoint_format=f"efficientsam3_{_fam}", tag="2025-12-02",
        notes=(f"EfficientSAM3 stage 1 (ES-{_fam[:2].upper()}-{_size.upper()}): SAM 3 with a distilled {_trunk} image "
               "encoder (encoder-only distillation, no fine-tuning) and SAM 3's own text encoder. Released 2025-12-02; "
               "the current upstream README lists only the stage-3 models (efficientsam3_*), so this file may have "
               "moved. Not gated; SAM 3's licence applies to the heads."),
    )

# --- classic (no learned weights) ----------------------------------------------------------
_add(ModelSpec(
    name="classic", family="classic", module="samkit.models.classic",
    url=None, filename=None, license="Apache-2.0",
    paper="Rother et al., GrabCut, SIGGRAPH 2004; Farneback, Two-Frame Motion Estimation, SCIA 2003",
    checkpoint_format="none", neural=False, video=True,
    notes="Offline fallback: OpenCV GrabCut seeded from the prompts; no learned weights. "
          "Far below any neural model in quality.",
))


# --- CLIP (OpenAI's released TorchScript archives; open_clip checkpoints load the same way) ------
# OpenAI's download URLs carry the file's sha256 as their folder (clip.py checks it); pinned below.
for _name, _digest, _file, _res in (
        ("clip_vit_b16", "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f", "ViT-B-16.pt", 224),
        ("clip_rn50x16", "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa", "RN50x16.pt", 384)):
    _add(ModelSpec(
        name=_name, family="clip", module="samkit.models.clip", kind="clip",
        url=f"{_CLIP_URL}{_digest}/{_file}", filename=_file, license="MIT", paper=_P_CLIP,
        checkpoint_format="openai_clip", input_size=_res, pixel_mean=CLIP_MEAN, pixel_std=CLIP_STD,
        tag="2021", notes="Image/text embedding model for naming masks and finding them from text "
                          "(samkit.vocab); not a segmenter. Also reads open_clip's checkpoints of it.",
    ))

# --- Open-Vocabulary SAM (CLIP RN50x16 + SAM2CLIP adapter + CLIP2SAM head + SAM ViT-H prompt encoder) --
# Upstream's inference (seg/configs/ovsam/ovsam_*_rn50x16_point.py) reads four releases: OpenAI's
# RN50x16 (backbone + attention pool), sam2clip_vith_rn50x16.pth (prefix neck_student), the
# clip2sam file (prefixes fpn_neck, mask_decoder) and SAM ViT-H (prefix prompt_encoder).
_OVSAM_URL = "https://huggingface.co/HarborYuan/ovsam_models/resolve/main/"
_P_OVSAM = ("Yuan et al., Open-Vocabulary SAM: Segment and Recognize Twenty-thousand Classes Interactively, "
            "ECCV 2024 (arXiv:2401.02955)")
_OVSAM_REQUIRES = (("clip_rn50x16", "visual.", "backbone."), ("ovsam_sam2clip_vith_rn50x16", "", "neck."),
                   ("sam_vit_h", "prompt_encoder.", "prompt_encoder."))
_add(ModelSpec(
    name="ovsam_sam2clip_vith_rn50x16", family="ovsam", module="samkit.models.ovsam", kind="component",
    url=_OVSAM_URL + "sam2clip_vith_rn50x16.pth", filename="sam2clip_vith_rn50x16.pth",
    license=_EDGESAM_LICENSE, commercial_use=False, paper=_P_OVSAM, checkpoint_format="ovsam_sam2clip",
    tag="2024-01", notes="SAM2CLIP adapter (CLIP RN50x16 stages -> SAM ViT-H-like embedding); a part of "
                         "ovsam_coco_rn50x16 / ovsam_lvis_rn50x16, not a model of its own.",
))
for _set, _tag in (("coco", "2024-01"), ("lvis", "2024-07")):
    _add(ModelSpec(
        name=f"ovsam_{_set}_rn50x16", family="ovsam", module="samkit.models.ovsam",
        url=f"{_OVSAM_URL}clip2sam_{_set}_rn50x16.pth", filename=f"clip2sam_{_set}_rn50x16.pth",
        license=_EDGESAM_LICENSE, commercial_use=False, paper=_P_OVSAM, checkpoint_format="ovsam_clip2sam",
        tag=_tag, extra={"requires": _OVSAM_REQUIRES, "vocabulary": _set},
        notes=f"Masks and names from a click or a box; CLIP2SAM head trained on the {_set.upper()} base "
              f"classes, names from the '{_set}' vocabulary by default (any list of names works). Also "
              "loads RN50x16.pt, sam2clip_vith_rn50x16.pth and SAM ViT-H's prompt encoder. "
              "No IoU head: scores are stability scores.",
    ))

# --- digests: public facts about the official files, each with its source ---------------------
# Keyed by file name and applied to every spec with that file. A sha256 is pinned only when a
# public source gives it for the same file (same release, same URL or a Hugging Face LFS pointer
# of the file under the same name and size); "HF" = the "oid sha256 / size" of a Hugging Face LFS
# pointer. Files committed to GitHub also keep their git blob id (``extra`` above). Checked by
# tests/test_hub.py: every neural model has a full digest or is listed in
# ``samkit.hub.NO_PUBLIC_DIGEST``.
class _Pin(NamedTuple):
    sha256: Optional[str]
    size: Optional[int]
    source: str
    md5: Optional[str] = None


_MICRO_SAM = "computational-cell-analytics/micro-sam"
_SLICER = "mazurowski-lab/SlicerSegmentWithSAM SegmentWithSAM/SegmentWithSAM.py"
_IOPAINT = "md5: Sanster/IOPaint iopaint/plugins/interactive_seg.py"
_SAM_SRC = (f"HF mashb1t/misc@78e1813 and netradrishti/sam@0ca332d; same sha256 for this URL in "
            f"{_MICRO_SAM} micro_sam/util.py@645dfbbd and {_SLICER}; {_IOPAINT}")
_SAM2_SRC = (f"sha256 for this URL: {_MICRO_SAM} micro_sam/v2/util.py@275b20eb (sam2.0) and {_SLICER}; "
             f"{_IOPAINT}; ")
_SAM21_SRC = (f"sha256 for this URL: {_MICRO_SAM} micro_sam/v2/util.py@275b20eb (sam2.1); "
              "HF camenduru/sam2-1-hiera@cdd35a4")
_ETAM_SRC = "HF yunyangx/efficient-track-anything@b308d79 (the repository of this URL)"
_CLIP_SRC = ("sha256 in the URL's path, checked by openai/CLIP clip/clip.py _download (_MODELS@d05afc4); "
             "the same URL in mlfoundations/open_clip src/open_clip/pretrained.py@cc1b4f5 (whose download "
             "checks the sha256 of the URL's path); exact size not seen")
_OVSAM_SRC = "HF HarborYuan/ovsam_models LFS pointer, commit "
_PINS = {
    # gated repository: the LFS pointer (sha256 / size) of facebook/sam3's sam3.pt was not seen
    "sam3.pt": _Pin(None, None, "HF facebook/sam3 (gated); its LFS pointer was not seen: no public sha256"),
    **{f"efficientsam3_{_f}.pt": _Pin(None, None, "HF Simon7108528/EfficientSAM3 efficientsam3_ft/; its LFS pointer "
                                      "was not seen: no public sha256") for _f in ("efficientvit", "repvit", "tinyvit")},
    **{f"efficient_sam3_{_f}_{_s}.pt": _Pin(None, None, "HF Simon7108528/EfficientSAM3 stage1_all_converted/; its LFS "
                                             "pointer was not seen: no public sha256")
       for _f in ("efficientvit", "repvit", "tinyvit") for _s in ("s", "m", "l")},
    **{f"sam3_litetext_{_p}_ctx{_c}.pt": _Pin(None, None, "HF Simon7108528/EfficientSAM3 sam3_litetext/; its LFS "
                                              "pointer was not seen: no public sha256")
       for _p in ("mobileclip_s0", "mobileclip_s1", "mobileclip2_l") for _c in (16, 32)},
    # renamed from sam2clip_vith_rn50.pth in a7abe75 "without changes"; pointer of 1b935e1
    "sam2clip_vith_rn50x16.pth": _Pin("f2b14b8e480626cffc815a7262297731ee1372c87d054836daad5148f636cfeb",
                                      536408050, _OVSAM_SRC + "1b935e1 (file renamed unchanged in a7abe75)"),
    "clip2sam_coco_rn50x16.pth": _Pin("c382555880466adafa2eff148851b3cc71e1ea5eb5ff8f36d0fab2047550e27e",
                                      31544126, _OVSAM_SRC + "a7abe75"),
    "clip2sam_lvis_rn50x16.pth": _Pin(None, None, "HF HarborYuan/ovsam_models c6f384f (31.5 MB); its LFS "
                                      "pointer was not seen: no public sha256"),
    "ViT-B-16.pt": _Pin("5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f", None, _CLIP_SRC),
    "RN50x16.pt": _Pin("52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa", None, _CLIP_SRC),
    "sam_vit_b_01ec64.pth": _Pin("ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
                                 375042383, _SAM_SRC, "01ec64d29a2fca3f0661936605ae66f8"),
    "sam_vit_l_0b3195.pth": _Pin("3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
                                 1249524607, _SAM_SRC, "0b3195507c641ddb6910d2bb5adee89c"),
    "sam_vit_h_4b8939.pth": _Pin("a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
                                 2564550879, _SAM_SRC, "4b8939a88964f0f4ff5f5b2642c598a6"),
    "mobile_sam.pt": _Pin("6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f", 40728226,
                          f"sha256 for this URL: {_MICRO_SAM} micro_sam/util.py@645dfbbd; "
                          "HF xingren23/comfyflow-models@8297c11 sams/mobile_sam.pt; git blob: "
                          "github.com/ChaoningZhang/MobileSAM weights/mobile_sam.pt (unchanged since a509aac)"),
    # the Space's own page for weights/edge_sam.pth was not seen: this pin rests on the authors'
    # model repository, uploaded the same week, whose edge_sam_3x.pth equals the Space's
    "edge_sam.pth": _Pin("439b086a20ab6fba90c12cba32e0001ba3aa726da5791ff8738acdd440330991", 38807540,
                         "HF chongzhou/EdgeSAM@e056412 (the authors' model repository; the Space's "
                         "weights/edge_sam_3x.pth is byte-identical to its copy there)"),
    "edge_sam_3x.pth": _Pin("5a3e3261da9e2f4c8154410885689ae57d09cbf4cf5d0c848b9d80b6df336ece", 38807540,
                            "HF Space chongzhou/EdgeSAM weights/edge_sam_3x.pth and HF chongzhou/EdgeSAM@e056412"),
    "efficient_sam_vitt.pt": _Pin("dff858b19600a46461cbb7de98f796b23a7a888d9f5e34c0b033f7d6eb9e4e6a", 40982470,
                                  "HF merve/EfficientSAM@38bb0b5; pinned for raw.githubusercontent.com/"
                                  "yformer/EfficientSAM/d525f622/weights/efficient_sam_vitt.pt by other "
                                  "projects; git blob: github.com/yformer/EfficientSAM (unchanged since 6970c72)"),
    "efficient_sam_vits.pt.zip": _Pin(None, None, "git blob only: github.com/yformer/EfficientSAM "
                                      "weights/efficient_sam_vits.pt.zip@d525f622; no public sha256 found"),
    "sam2_hiera_tiny.pt": _Pin("65b50056e05bcb13694174f51bb6da89c894b57b75ccdf0ba6352c597c5d1125", 155906050,
                               _SAM2_SRC + "HF facebook/sam2-hiera-tiny@a8e4b46", "99eacccce4ada0b35153d4fd7af05297"),
    "sam2_hiera_small.pt": _Pin("95949964d4e548409021d47b22712d5f1abf2564cc0c3c765ba599a24ac7dce3", None,
                                _SAM2_SRC + "HF facebook/sam2-hiera-small (file page; exact size not seen)",
                                "7f320dbeb497330a2472da5a16c7324d"),
    # one third-party script pinned 2257ced7... for this URL, then replaced it by d0bb7f23, which the
    # official HF pointer and three independent projects give: the first value was a mistake
    "sam2_hiera_base_plus.pt": _Pin("d0bb7f236400a49669ffdd1be617959a8b1d1065081789d7bbff88eded3a8071", 323493298,
                                    _SAM2_SRC + "HF facebook/sam2-hiera-base-plus (file page), "
                                    "merve/sam2-hiera-base-plus@838f027", "09dc5a3d7719f64aaea1d37341ef26f2"),
    "sam2_hiera_large.pt": _Pin("7442e4e9b732a508f80e141e7c2913437a3610ee0c77381a66658c3a445df87b", 897952466,
                                _SAM2_SRC + "HF merve/sam2-hiera-large@9551b5a", "08083462423be3260cd6a5eef94dc01c"),
    "sam2.1_hiera_tiny.pt": _Pin("7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69", 156008466,
                                 _SAM21_SRC),
    "sam2.1_hiera_small.pt": _Pin("6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38", 184416285,
                                  _SAM21_SRC + ", HF facebook/sam2.1-hiera-small (file page)"),
    "sam2.1_hiera_base_plus.pt": _Pin("a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",
                                      323606802, _SAM21_SRC),
    "sam2.1_hiera_large.pt": _Pin("2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318", 898083611,
                                  _SAM21_SRC),
    "edgetam.pt": _Pin("ed2d4850b8792c239689b043c47046ec239b6e808a3d9b6ae676c803fd8780df", 56116523,
                       "HF Space facebook/EdgeTAM checkpoints/edgetam.pt; pinned for github.com/"
                       "facebookresearch/EdgeTAM raw/7711e012/checkpoints/edgetam.pt by other projects; "
                       "git blob: github.com/facebookresearch/EdgeTAM (unchanged since 1c2ec21)"),
    "efficienttam_s.pt": _Pin("2b572be30d9e96ee29c8d785fe157c6b079ede7d56fbc8a3671d4120e63c89cd", 136375868,
                              _ETAM_SRC + "; also cubert-hyperspectral/cuvis-ai-core tools/mirror_weights.py"),
    "efficienttam_s_1.pt": _Pin("4fd5d1f7ae08a7e15086623bf8b12f0b111b773b15564b43c0a5d451fc1a4267", 136376327,
                                _ETAM_SRC),
    "efficienttam_s_2.pt": _Pin("253e490b4a3d56eedd64e4d466155ec538d1289f52abe78b091b14caefd92343", 136376327,
                                _ETAM_SRC),
    "efficienttam_s_512x512.pt": _Pin("67b5840012737ed2c94a4cb8787c5c1b27b3a946045d2e602e65ef77230b6085",
                                      136379145, _ETAM_SRC + "; also cubert-hyperspectral/cuvis-ai-core "
                                      "tools/mirror_weights.py"),
    "efficienttam_ti.pt": _Pin("acbb17b28cca1f860acee09c9ecb6efdb732080dc7a85a07292c31813175fa7d", 71616316,
                               _ETAM_SRC + "; also cubert-hyperspectral/cuvis-ai-core tools/mirror_weights.py"),
    "efficienttam_ti_1.pt": _Pin("5294bd68820ee1ee5203d54065d4384a6aa1fb4fc632c147417478fcac9576ea", None,
                                 _ETAM_SRC + " (file page; exact size not seen)"),
    "efficienttam_ti_2.pt": _Pin("d2a9ca0a736257ee9bb238d335ba7c794ad853e594cb4f679019ecc0854ee587", None,
                                 _ETAM_SRC + " (file page; exact size not seen)"),
    "efficienttam_ti_512x512.pt": _Pin("7d4d652a465f0081391050932f45d8a66768ccc99c8ea393ce8a5927e83f3b9b",
                                       71620052, _ETAM_SRC + "; also cubert-hyperspectral/cuvis-ai-core "
                                       "tools/mirror_weights.py"),
}


def _pinned(spec: ModelSpec) -> ModelSpec:
    pin = _PINS.get(spec.filename or "")
    if pin is None:
        return spec
    extra = dict(spec.extra)
    extra.update({k: v for k, v in (("size", pin.size), ("md5", pin.md5)) if v is not None})
    return replace(spec, sha256=pin.sha256 or spec.sha256, digest_source=pin.source, extra=extra)


for _name in list(MODELS):
    MODELS[_name] = _pinned(MODELS[_name])


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


def list_models(family: Optional[str] = None, kind: Optional[str] = None) -> list[str]:
    """Registered names, optionally of one ``family`` and / or one ``kind`` (``"segmenter"``, ``"clip"``)."""
    return [n for n, s in MODELS.items()
            if (family is None or s.family == family) and (kind is None or s.kind == kind)]
