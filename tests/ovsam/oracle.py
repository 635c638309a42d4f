"""TEST-ONLY: import the official Open-Vocabulary SAM modules (HarborYuan/ovsam) as an oracle.

Used only to (re)build the goldens in ``tests/ovsam/`` (``python tests/ovsam/make_goldens.py``);
the default suite compares against the stored goldens and never imports this file. Nothing of the
official code is in this repository. What has to be on this machine, all OUTSIDE the repository:

* ``OVSAM_REPO``: a checkout of github.com/HarborYuan/ovsam (commit 137d2c2 was used), the
  folders ``seg/`` and ``ext/``;
* ``OVSAM_ORACLE_SITE``: a folder with the pure-Python mm-stack the official code imports,
  ``pip install --no-deps --target DIR mmengine==0.10.7 mmdet==3.3.0 mmcv-lite==2.1.0 addict yapf
  termcolor terminaltables``;
* ``OVSAM_MMCV_ROI``: a folder with ``mmcv_roi.py`` exposing ``roi_align(x, rois, output_size,
  spatial_scale, sampling_ratio, aligned)`` built from mmcv's own CPU kernel
  (``mmcv/ops/csrc/pytorch/cpu/roi_align.cpp`` of mmcv 2.1.0, forward launcher only, compiled with
  ``torch.utils.cpp_extension.load``): mmcv-lite has no compiled ops.

Stubbed (not run by OVSAM inference, or replaced by the same kernel):
* ``mmcv.ops``: a module whose ``RoIAlign`` is mmcv's ``RoIAlign`` interface (output_size,
  spatial_scale, sampling_ratio, pool_mode='avg', aligned=True) over that kernel; every other name
  is a placeholder class (mmdet imports NMS, deformable convolutions, ... at import time);
* ``matplotlib``, ``seaborn`` (mmdet's visualisation modules import them);
* ``timm.layers.resample_abs_pos_embed`` (ViT backbones only) and ``kornia`` (training-time point
  sampling only);
* ``ext.open_clip``: only ``create_model`` / ``create_model_from_pretrained`` (which would
  download OpenAI's weights) returning a holder whose ``visual`` is the official
  ``ext/open_clip/modified_resnet.py`` ``ModifiedResNet`` with the requested numbers;
* ``load_checkpoint_with_prefix`` of the official modules returns the synthesized state dicts
  given to :func:`build_official` instead of reading files or URLs.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

from torch import nn


def _env(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"set {name} (see tests/ovsam/oracle.py)")
    return Path(value)


class _Placeholder:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("an mmcv op that OVSAM inference does not run was called")


def _stub_mmcv_ops():
    sys.path.insert(0, str(_env("OVSAM_MMCV_ROI")))
    import mmcv_roi  # noqa: E402

    class RoIAlign(nn.Module):
        def __init__(self, output_size, spatial_scale=1.0, sampling_ratio=0, pool_mode="avg", aligned=True,
                     use_torchvision=False):
            super().__init__()
            assert pool_mode == "avg" and not use_torchvision
            self.output_size = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * 2
            self.spatial_scale, self.sampling_ratio, self.aligned = float(spatial_scale), int(sampling_ratio), aligned

        def forward(self, x, rois):
            return mmcv_roi.roi_align(x, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)

    def placeholder_module(name):
        mod = types.ModuleType(name)
        mod.__path__ = []

        def attr(item):
            if item.startswith("__"):
                raise AttributeError(item)
            return _Placeholder

        mod.__getattr__ = attr
        return mod

    class _Finder:
        """Every ``mmcv.ops.*`` submodule is a module of placeholders."""

        def find_spec(self, name, path=None, target=None):
            if name.startswith(_STUBBED):
                return importlib.util.spec_from_loader(name, self)
            return None

        def create_module(self, spec):
            return placeholder_module(spec.name)

        def exec_module(self, module):
            pass

    ops = placeholder_module("mmcv.ops")
    ops.RoIAlign = RoIAlign
    sys.modules["mmcv.ops"] = ops
    sys.meta_path.insert(0, _Finder())


def _stub_misc(repo: Path):
    timm = types.ModuleType("timm")
    layers = types.ModuleType("timm.layers")
    layers.resample_abs_pos_embed = _Placeholder
    timm.layers = layers
    sys.modules.setdefault("timm", timm)
    sys.modules.setdefault("timm.layers", layers)
    kornia = types.ModuleType("kornia")
    contrib = types.ModuleType("kornia.contrib")
    contrib.distance_transform = _Placeholder
    kornia.contrib = contrib
    sys.modules.setdefault("kornia", kornia)
    sys.modules.setdefault("kornia.contrib", contrib)
    # ext.open_clip without its package __init__ (which imports the whole factory / hub code)
    pkg = types.ModuleType("ext.open_clip")
    pkg.__path__ = [str(repo / "ext" / "open_clip")]
    utils = types.ModuleType("ext.open_clip.utils")
    utils.freeze_batch_norm_2d = _Placeholder
    sys.modules["ext.open_clip"] = pkg
    sys.modules["ext.open_clip.utils"] = utils
    spec = importlib.util.spec_from_file_location("ext.open_clip.modified_resnet",
                                                  repo / "ext" / "open_clip" / "modified_resnet.py")
    mr = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mr
    spec.loader.exec_module(mr)
    return pkg, mr


_LOADED = {}
#: packages imported at import time by mmdet's visualisation / dataset code only
_STUBBED = ("mmcv.ops.", "matplotlib", "seaborn")


def official():
    """The official modules (imported once): a namespace with OVSAM, OVSAMHead, SAMPromptEncoder,
    MultiLayerTransformerNeck, OpenCLIPBackbone, FPN, SingleRoIExtractor, RoIAlign, ModifiedResNet,
    InstanceData, DetDataSample and the ``open_clip`` stub."""
    if _LOADED:
        return _LOADED["ns"]
    repo = _env("OVSAM_REPO")
    sys.path.insert(0, str(_env("OVSAM_ORACLE_SITE")))
    sys.path.insert(0, str(repo))
    import mmcv  # noqa: F401  (mmcv-lite: python parts only)

    _stub_mmcv_ops()
    open_clip, mr = _stub_misc(repo)
    ns = types.SimpleNamespace(ModifiedResNet=mr.ModifiedResNet, open_clip=open_clip)
    from mmdet.models import FPN, SingleRoIExtractor
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    ns.FPN, ns.SingleRoIExtractor = FPN, SingleRoIExtractor
    ns.DetDataSample, ns.InstanceData = DetDataSample, InstanceData
    ns.RoIAlign = sys.modules["mmcv.ops"].RoIAlign
    for mod, names in (("seg.models.necks.transformer_neck", ["MultiLayerTransformerNeck"]),
                       ("seg.models.necks.sam_pe", ["SAMPromptEncoder"]),
                       ("seg.models.heads.ovsam_head", ["OVSAMHead"]),
                       ("seg.models.backbones.openclip_backbone", ["OpenCLIPBackbone"]),
                       ("seg.models.detectors.ovsam", ["OVSAM"])):
        m = importlib.import_module(mod)
        for n in names:
            setattr(ns, n, getattr(m, n))
    _LOADED["ns"] = ns
    return ns
