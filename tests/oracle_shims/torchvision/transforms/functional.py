"""TEST-ONLY: torchvision.transforms.functional subset (resize, to_pil_image, to_tensor,
normalize, InterpolationMode) with torchvision's v1 semantics."""
from enum import Enum
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor


class InterpolationMode(Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


_PIL_MODES = {
    InterpolationMode.NEAREST: Image.NEAREST,
    InterpolationMode.NEAREST_EXACT: Image.NEAREST,
    InterpolationMode.BILINEAR: Image.BILINEAR,
    InterpolationMode.BICUBIC: Image.BICUBIC,
    InterpolationMode.BOX: Image.BOX,
    InterpolationMode.HAMMING: Image.HAMMING,
    InterpolationMode.LANCZOS: Image.LANCZOS,
}


def _output_size(image_hw: Tuple[int, int], size: List[int], max_size: Optional[int]) -> List[int]:
    """torchvision's rule: one int -> the SHORTER edge becomes ``size`` (long edge truncated
    with ``int()``), optionally capped by ``max_size``; two ints -> (h, w) exactly."""
    h, w = image_hw
    if len(size) == 2:
        return [int(size[0]), int(size[1])]
    short, long = (w, h) if w <= h else (h, w)
    new_short = int(size[0])
    new_long = int(new_short * long / short)
    if max_size is not None:
        if max_size <= new_short:
            raise ValueError(f"max_size = {max_size} must be strictly greater than the requested size {new_short}")
        if new_long > max_size:
            new_short, new_long = int(max_size * new_short / new_long), max_size
    return [new_long, new_short] if w <= h else [new_short, new_long]


def _resize_tensor(img: Tensor, out_hw: List[int], mode: str, antialias: bool) -> Tensor:
    squeeze = img.dim() == 3
    x = img[None] if squeeze else img
    out_dtype = x.dtype
    if not x.is_floating_point():
        x = x.float()
    align = False if mode in ("bilinear", "bicubic") else None
    use_aa = antialias and mode in ("bilinear", "bicubic")
    x = F.interpolate(x, size=[out_hw[0], out_hw[1]], mode=mode, align_corners=align, antialias=use_aa)
    if mode == "bicubic" and out_dtype == torch.uint8:
        x = x.clamp(min=0, max=255)
    if not out_dtype.is_floating_point:
        x = torch.round(x).to(out_dtype)
    return x[0] if squeeze else x


def resize(img, size: Union[int, List[int], Tuple[int, int]],
           interpolation: InterpolationMode = InterpolationMode.BILINEAR,
           max_size: Optional[int] = None, antialias: Optional[bool] = True):
    """PIL image -> PIL resize (BILINEAR by default); tensor ... x H x W -> F.interpolate
    (bilinear with antialias=True by default). ``size``: (h, w), or an int for the short edge."""
    if isinstance(size, int):
        size = [size]
    size = list(size)
    if isinstance(img, torch.Tensor):
        hw = (int(img.shape[-2]), int(img.shape[-1]))
    else:
        hw = (img.size[1], img.size[0])
    out = _output_size(hw, size, max_size)
    if [hw[0], hw[1]] == out:
        return img
    if not isinstance(img, torch.Tensor):
        return img.resize((out[1], out[0]), _PIL_MODES[interpolation])
    return _resize_tensor(img, out, interpolation.value, bool(antialias))


def to_pil_image(pic, mode: Optional[str] = None) -> Image.Image:
    """CHW tensor (float in [0, 1] is scaled by 255 and truncated to uint8) or HWC ndarray -> PIL."""
    if isinstance(pic, torch.Tensor):
        if pic.dim() == 2:
            pic = pic[None]
        if pic.is_floating_point() and mode != "F":
            pic = pic.mul(255).byte()
        npimg = np.transpose(pic.cpu().numpy(), (1, 2, 0))
    elif isinstance(pic, np.ndarray):
        npimg = pic[:, :, None] if pic.ndim == 2 else pic
    else:
        raise TypeError(f"pic should be Tensor or ndarray. Got {type(pic)}.")
    channels = npimg.shape[2]
    if channels == 1:
        npimg = npimg[:, :, 0]
        if mode is None:
            mode = {np.dtype(np.uint8): "L", np.dtype(np.int16): "I;16", np.dtype(np.int32): "I",
                    np.dtype(np.float32): "F"}.get(npimg.dtype)
            if mode is None:
                raise TypeError(f"Input type {npimg.dtype} is not supported")
        return Image.fromarray(npimg, mode) if mode not in ("L",) else Image.fromarray(npimg)
    if channels in (2, 3, 4):
        if npimg.dtype != np.uint8:
            raise TypeError(f"Input type {npimg.dtype} with {channels} channels is not supported")
        return Image.fromarray(npimg)
    raise ValueError(f"pic should have 1 to 4 channels, got {channels}")


def to_tensor(pic) -> Tensor:
    """HWC ndarray / PIL image -> CHW tensor; uint8 data becomes float32 in [0, 1]."""
    if isinstance(pic, np.ndarray):
        arr = pic[:, :, None] if pic.ndim == 2 else pic
        img = torch.from_numpy(arr.transpose((2, 0, 1))).contiguous()
        return img.to(torch.get_default_dtype()).div(255) if img.dtype == torch.uint8 else img
    if not isinstance(pic, Image.Image):
        raise TypeError(f"pic should be PIL Image or ndarray. Got {type(pic)}")
    nptype = {"I": np.int32, "I;16": np.int16, "F": np.float32}.get(pic.mode, np.uint8)
    arr = np.array(pic, nptype, copy=True)
    if pic.mode == "1":
        arr = 255 * arr
    if arr.ndim == 2:
        arr = arr[:, :, None]
    img = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    return img.to(torch.get_default_dtype()).div(255) if img.dtype == torch.uint8 else img


def normalize(tensor: Tensor, mean: List[float], std: List[float], inplace: bool = False) -> Tensor:
    """(tensor - mean) / std per channel, in the tensor's dtype."""
    if not inplace:
        tensor = tensor.clone()
    m = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    return tensor.sub_(m).div_(s)


def center_crop(img, output_size: List[int]):
    """torchvision's centre crop (see ``transforms.CenterCrop``)."""
    crop_h, crop_w = int(output_size[0]), int(output_size[-1])
    if isinstance(img, torch.Tensor):
        h, w = int(img.shape[-2]), int(img.shape[-1])
    else:
        w, h = img.size
    if crop_h > h or crop_w > w:
        raise NotImplementedError("test-only stand-in: center_crop of an image smaller than the crop")
    top = int(round((h - crop_h) / 2.0))
    left = int(round((w - crop_w) / 2.0))
    if isinstance(img, torch.Tensor):
        return img[..., top:top + crop_h, left:left + crop_w]
    return img.crop((left, top, left + crop_w, top + crop_h))
