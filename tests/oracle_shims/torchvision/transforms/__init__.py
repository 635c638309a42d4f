"""TEST-ONLY: torchvision.transforms subset. ``Resize`` and ``Normalize`` are TorchScript-able
(sam2 wraps them in ``torch.jit.script(nn.Sequential(...))``); their scripted path handles
tensors only, the eager path also PIL images."""
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import functional  # noqa: F401
from .functional import InterpolationMode


class ToTensor:
    """PIL image / HWC ndarray -> CHW float tensor in [0, 1] for uint8 input."""

    def __call__(self, pic):
        return functional.to_tensor(pic)

    def __repr__(self) -> str:
        return "ToTensor()"


class Normalize(nn.Module):
    def __init__(self, mean: List[float], std: List[float], inplace: bool = False):
        super().__init__()
        self.mean: List[float] = [float(v) for v in mean]
        self.std: List[float] = [float(v) for v in std]
        self.inplace = inplace

    def forward(self, tensor: Tensor) -> Tensor:
        if not self.inplace:
            tensor = tensor.clone()
        m = torch.tensor(self.mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        s = torch.tensor(self.std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        return tensor.sub_(m).div_(s)


class Resize(nn.Module):
    __jit_ignored_attributes__ = ["interpolation", "max_size"]

    """``size`` (h, w) or int (short edge); bilinear with antialias=True by default."""

    def __init__(self, size, interpolation: InterpolationMode = InterpolationMode.BILINEAR,
                 max_size: Optional[int] = None, antialias: Optional[bool] = True):
        super().__init__()
        self.size: List[int] = [int(size)] if isinstance(size, int) else [int(v) for v in size]
        self.interpolation = interpolation
        self.mode: str = interpolation.value
        self.max_size = max_size
        self._max_size: int = -1 if max_size is None else int(max_size)
        self.antialias: bool = True if antialias is None else bool(antialias)

    @torch.jit.unused
    def _eager(self, img):
        return functional.resize(img, self.size, self.interpolation, self.max_size, self.antialias)

    def forward(self, img: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            return self._eager(img)
        h = img.shape[-2]
        w = img.shape[-1]
        if len(self.size) == 2:
            oh = self.size[0]
            ow = self.size[1]
        else:
            short = min(h, w)
            long = max(h, w)
            ns = self.size[0]
            nl = int(ns * long / short)
            mx = self._max_size
            if mx > 0 and nl > mx:
                ns = int(mx * ns / nl)
                nl = mx
            oh = nl if w <= h else ns
            ow = ns if w <= h else nl
        if oh == h and ow == w:
            return img
        squeeze = img.dim() == 3
        x = img.unsqueeze(0) if squeeze else img
        out_dtype = x.dtype
        if not x.is_floating_point():
            x = x.float()
        if self.mode == "bilinear" or self.mode == "bicubic":
            x = F.interpolate(x, size=[oh, ow], mode=self.mode, align_corners=False, antialias=self.antialias)
        else:
            x = F.interpolate(x, size=[oh, ow], mode=self.mode)
        if self.mode == "bicubic" and out_dtype == torch.uint8:
            x = x.clamp(min=0, max=255)
        if not x.dtype == out_dtype:
            x = torch.round(x).to(out_dtype)
        return x.squeeze(0) if squeeze else x


class Compose:
    """Apply the transforms in order."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img


class CenterCrop(nn.Module):
    """``size`` (h, w) or int: the centre crop, top ``int(round((H - h) / 2))`` and left
    ``int(round((W - w) / 2))`` as torchvision; PIL images and ``... x H x W`` tensors. An image
    smaller than the crop (torchvision pads it) is not needed by the oracles and is refused."""

    def __init__(self, size):
        super().__init__()
        self.size = [int(size), int(size)] if isinstance(size, int) else [int(v) for v in size]
        if len(self.size) == 1:
            self.size = self.size * 2

    def forward(self, img):
        return functional.center_crop(img, self.size)


class _TrainOnly:
    """Training augmentations open_clip imports but its evaluation transforms never build."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError(f"test-only torchvision stand-in: {type(self).__name__} is not implemented "
                                  "(only the evaluation transforms are)")


class RandomResizedCrop(_TrainOnly):
    pass


class ColorJitter(_TrainOnly):
    pass


class Grayscale(_TrainOnly):
    pass
