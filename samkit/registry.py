"""From a model name to a ready model: spec -> builder -> checkpoint -> eval model.

Each spec names its family's model file, which registers the builder
(:mod:`samkit.families`); the file is imported on first use, so ``import samkit`` never
imports a model family.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Union

import torch

from . import checkpoint as _ckpt
from . import hub
from .errors import CheckpointError, DownloadError, InputError
from .families import builder_for
from .specs import ModelSpec, get_spec
from .threads import configure_threads

_LICENSE_WARNED: set = set()


def _spec(name_or_spec: Union[str, ModelSpec]) -> ModelSpec:
    if isinstance(name_or_spec, ModelSpec):
        return name_or_spec
    if not isinstance(name_or_spec, str):
        raise InputError(
            f"model must be a name such as 'sam_vit_b' or a ModelSpec, got "
            f"{type(name_or_spec).__name__}. Fix: pass one of samkit.list_models().")
    return get_spec(name_or_spec)  # KeyError listing the known names


def builder(name_or_spec: Union[str, ModelSpec]):
    """The builder function of a spec, registered by its model file (``samkit.families``)."""
    return builder_for(_spec(name_or_spec))


def build_model(name_or_spec: Union[str, ModelSpec], image_size: Optional[int] = None):
    """Build a model with freshly initialised (not loaded) weights and set ``model.spec``.
    ``image_size``: another input size, for models whose builder takes one (``sam3``,
    ``sam3_litetext_*``); others refuse it with ``InputError``."""
    spec = _spec(name_or_spec)
    fn = builder(spec)
    if image_size is None:
        model = fn()
    else:
        _check_image_size(spec, image_size)
        model = fn(image_size=image_size)
    try:
        model.spec = spec
    except AttributeError:  # objects with __slots__ or read-only attributes
        pass
    return model


def _check_image_size(spec: ModelSpec, image_size) -> None:
    """``InputError`` unless the builder of ``spec`` takes other input sizes (its model file marks it
    with ``check_image_size``, e.g. ``samkit.models.sam3.takes_image_size``) and accepts this one."""
    check = getattr(builder(spec), "check_image_size", None) if spec.neural else None
    if check is None:
        fixed = f" of {spec.input_size} px" if spec.input_size else ""
        raise InputError(f"{spec.name} has a fixed input size{fixed}: its weights were trained for it and it has "
                         "no other. Fix: drop image_size / --image-size (models that take one: sam3 and "
                         "sam3_litetext_*).")
    check(image_size)


def _warn_license(spec: ModelSpec) -> None:
    notice = spec.extra.get("license_notice")
    if (spec.commercial_use and not notice) or spec.name in _LICENSE_WARNED:
        return
    _LICENSE_WARNED.add(spec.name)
    if spec.commercial_use:  # allowed, with terms beyond a permissive licence (SAM 3)
        warnings.warn(f"{spec.name} weights are released under the {spec.license}: {notice}.", UserWarning,
                      stacklevel=3)
        return
    warnings.warn(
        f"{spec.name} weights are released under the {spec.license}. "
        "Choose a model with commercial_use=True (e.g. mobile_sam, sam2.1_hiera_t) for "
        "commercial work.",
        UserWarning, stacklevel=3)


def requirements(name_or_spec: Union[str, ModelSpec]) -> List[ModelSpec]:
    """The specs of the other files a model is made of (``extra["requires"]``), in order."""
    return [get_spec(row[0]) for row in _spec(name_or_spec).extra.get("requires", ())]


def _companion_keys(spec: ModelSpec, row, path: Path) -> Dict[str, torch.Tensor]:
    """The keys one required file contributes: its own remap, those starting with ``take``, renamed
    to start with ``put``. A file of another model is refused, naming what it is."""
    name, take, put = row
    cspec = get_spec(name)
    raw = _ckpt.read_state_dict(path)
    fits = _ckpt.identify(raw)
    if fits and name not in fits:
        raise CheckpointError(
            f"{path} was given as the {name} file that {spec.name} needs, but it is a checkpoint of "
            f"{' / '.join(fits)}. Fix: pass the {cspec.filename} file of {name} (`samkit models download {name}`).")
    sd = _ckpt.remap(raw, cspec)
    picked = {put + k[len(take):]: v for k, v in sd.items() if k.startswith(take)}
    if not picked:
        raise CheckpointError(
            f"{path} has no '{take}*' keys, so it is not the {name} file that {spec.name} needs. "
            f"Fix: pass the {cspec.filename} file of {name} (`samkit models download {name}`).")
    return picked


def _companion_path(spec: ModelSpec, name: str, given: Mapping[str, Union[str, Path]], download: bool,
                    progress: Optional[hub.ProgressFn]) -> Path:
    if name in given:
        return Path(given[name]).expanduser()
    cspec = get_spec(name)
    try:
        return hub.resolve(cspec, offline=True if not download else None, progress=progress)
    except DownloadError as exc:
        raise DownloadError(
            f"{spec.name} also needs {cspec.filename} (model {name}), which could not be found or fetched: {exc} "
            f"(Or pass companions={{{name!r}: PATH}} to load_model.)") from None


def _load_state(spec: ModelSpec, path: Path, companions: Optional[Mapping[str, Union[str, Path]]],
                download: bool, progress: Optional[hub.ProgressFn], strict: bool):
    """(state dict, False) for a one-file model (upstream keys), or (merged state dict in the
    model's keys, the main file's raw state dict) for a model made of several files."""
    state_dict = _ckpt.read_state_dict(path)
    rows = spec.extra.get("requires", ())
    given = dict(companions or {})
    unknown = sorted(set(given) - {row[0] for row in rows})
    if unknown:
        needed = ", ".join(row[0] for row in rows) or "no other files"
        raise InputError(f"companions names {', '.join(unknown)}, which {spec.name} does not use. "
                         f"Fix: {spec.name} needs {needed}.")
    if not rows:
        return state_dict, False
    merged = _ckpt.remap(state_dict, spec)
    if strict:
        _check_main(spec, merged, state_dict, path)
    for row in rows:
        merged.update(_companion_keys(spec, row, _companion_path(spec, row[0], given, download, progress)))
    return merged, state_dict


def _check_main(spec: ModelSpec, sd: Dict[str, torch.Tensor], raw, path: Path) -> None:
    """The main file of a model made of several files must hold exactly the keys the other files
    do not provide; checked before any other file is looked for."""
    sig = _ckpt.model_signature(spec)
    if sig is None:
        return
    puts = tuple(row[2] for row in spec.extra.get("requires", ()))
    own = {k: v for k, v in sig.items() if not any(k.startswith(p) for p in puts)}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [f"{k} checkpoint {tuple(sd[k].shape)} vs model {own[k]}" for k in sd
                  if k in own and tuple(sd[k].shape) != own[k]]
    if not (missing or unexpected or mismatched):
        return
    text = (f"{path} is not the main file ({spec.filename}) of {spec.name}: {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(mismatched)} mis-shaped keys.")
    for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            text += _ckpt._listing(title, items)
    others = _ckpt.identify(raw, exclude=(spec.name,))
    if others:
        text += f"\nIt is a checkpoint of {' / '.join(others)}; call load_model({others[0]!r}, checkpoint=...)."
    raise CheckpointError(text + f"\nFix: pass the {spec.name} file (`samkit models download {spec.name}`).")


def _load_checked(model, spec: ModelSpec, sd, raw, strict: bool, path: Path) -> None:
    """``load_into`` for one file, or for the merged files of a model made of several (whose main
    file was checked by ``_check_main``; what is left to report comes from the other files)."""
    if raw is False:
        _ckpt.load_into(model, sd, spec, strict=strict, source=path)
    else:
        _ckpt.load_into(model, sd, spec, strict=strict, remapped=True, source=path)


def _check_quantize(spec: ModelSpec, quantize: Optional[str], device, backend: str, compile: bool) -> None:
    """Refuse a bad ``quantize`` value, or one that cannot apply here, before any file is read."""
    if quantize is None:
        return
    from .quant import check_quantize

    check_quantize(quantize)
    if not spec.neural:
        raise InputError(f"{spec.name} is not a neural model, so quantize (--int8) does not apply. Fix: drop it.")
    if backend != "torch" or compile:
        raise InputError("quantize='int8' (--int8) is torch's dynamic int8 and does not combine with "
                         "backend='onnxruntime' or compile=True. Fix: drop one of them (onnxruntime int8: "
                         "samkit export --quantize int8).")
    try:
        check_quantize(quantize, torch.device(device))
    except (RuntimeError, TypeError):
        pass  # an invalid device is reported by load_model itself


def load_model(name: Union[str, ModelSpec], checkpoint: Optional[Union[str, Path]] = None,
               device: Union[str, torch.device] = "cpu", *, strict: Optional[bool] = None,
               download: bool = True, progress: Optional[hub.ProgressFn] = None,
               backend: str = "torch", compile: bool = False, channels_last: bool = False,
               fuse: bool = False, companions: Optional[Mapping[str, Union[str, Path]]] = None,
               image_size: Optional[int] = None, quantize: Optional[str] = None):
    """A model with loaded weights, in eval mode, on ``device``, with ``model.spec`` set.

    ``checkpoint``: a file (safetensors, torch ``weights_only`` pickle, or a zip holding one);
    None uses the official weights from the cache, downloading them unless ``download`` is
    False (or offline mode is on), in which case a missing file fails at once saying where
    to put it. ``strict`` (default: ``spec.extra.get("strict", True)``) makes every key of
    the model and the file match; otherwise the fitting subset is loaded.
    Non-neural engines (``classic``) are built and returned without any file.
    A model made of several files (``spec.extra["requires"]``, e.g. OVSAM) reads the others from
    the cache (downloading them like the main file) or from ``companions`` ({model name: path}).
    Unknown names raise ``KeyError`` listing the known ones.
    ``backend`` (``"torch"`` or ``"onnxruntime"``), ``compile`` and ``channels_last`` speed up
    the image encoder: see :func:`samkit.accel.accelerate`. ``fuse`` re-parameterises encoders
    that have BatchNorm / RepVGG branches (MobileSAM, EdgeSAM, EdgeTAM; others are unchanged)
    before any acceleration. An oversubscribed torch thread pool is lowered to the usable CPU
    count (:func:`samkit.threads.configure_threads`). ``image_size``: a lower input size for
    models that allow one (sam3 and sam3_litetext_*, which keep SAM 3's ViT: a multiple of 14 from 336 to 1008), checked
    before any file is read; faster, but its quality is the user's to judge on their images.
    ``quantize="int8"``: dynamic int8 for the image encoder's linear layers on the CPU, opt-in
    (see :mod:`samkit.quant`; not with ``backend="onnxruntime"`` or ``compile``); its quality
    needs the real weights and your images to judge."""
    spec = _spec(name)
    if image_size is not None:
        _check_image_size(spec, image_size)  # before any file is read
    from .accel import check_options

    check_options(backend, compile, channels_last)  # before any file is read
    _check_quantize(spec, quantize, device, backend, compile)
    accelerated = backend != "torch" or compile or channels_last
    if (accelerated or fuse) and not spec.neural:
        raise InputError(f"{spec.name} is not a neural model, so backend/compile/channels_last/fuse do not apply. "
                         "Fix: drop those options or choose a neural model (samkit.list_models()).")
    _warn_license(spec)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"device {device!r} is not a valid torch device ({exc}). "
                         "Fix: pass 'cpu', 'cuda', 'cuda:0' or 'mps'.") from None
    if not spec.neural:
        model = build_model(spec)
        if isinstance(model, torch.nn.Module):
            model = model.to(dev).eval()
        return model
    if checkpoint is None:
        path = hub.resolve(spec, offline=True if not download else None, progress=progress)
    else:
        path = Path(checkpoint).expanduser()
    if strict is None:
        strict = bool(spec.extra.get("strict", True))
    state_dict, raw = _load_state(spec, path, companions, download, progress, strict)
    model = build_model(spec) if image_size is None else build_model(spec, image_size=image_size)
    _load_checked(model, spec, state_dict, raw, strict, path)
    del state_dict, raw
    model = model.to(dev).eval()
    model.spec = spec
    configure_threads(clamp_only=True)
    if fuse and hasattr(model, "fuse"):
        model.fuse()
    if quantize is not None:
        from .quant import quantize as quantize_model

        quantize_model(model, quantize)
    if accelerated:
        from .accel import accelerate

        accelerate(model, backend=backend, compile=compile, channels_last=channels_last)
    return model
