"""Lazy video frame sources: a folder of images, a video file (PyAV) or an iterator.

Every source returns frames as ``H x W x 3`` uint8 RGB through ``get(index)`` and never
holds more than a few decoded frames:

* ``FolderSource``: files sorted by the number in their name (``00012.jpg``), read on demand
  with the image loader (``samkit.io.image.load_image``): the same pixel limit
  (``SAMKIT_MAX_IMAGE_PIXELS``, decompression bombs), EXIF orientation and colour-mode
  conversions as single images.
* ``VideoFileSource``: PyAV; the packet index (pts of every video frame, demuxed without
  decoding) maps frame numbers to timestamps, so sequential reads decode forward and any
  other read seeks to the nearest keyframe and decodes up to the frame with that pts.
* ``IteratorSource``: pulls from an iterator on demand (live streams that never end work);
  keeps the last ``keep`` frames so that a prompt can still be placed on the current frame.
* ``ArraySource``: an in-memory ``T x H x W x 3`` array or list of frames.

One frame size per video: ``FrameSource.get`` (the one read path of every source and every
tracker) refuses a frame whose size differs from the video's with a ``VideoError`` naming that
frame. The video's size is that of the first frame read, except where it is known up front:
an array source checks every frame when it is opened, and a folder reads every file's header
(about 1 ms per frame, EXIF-aware: orientations 5-8 swap width and height) when it is opened,
so a mismatched frame is reported before any tracking. A file whose header cannot be read is
reported when it is reached (results of the earlier frames are kept). Frames are never
resized: masks would no longer match the pixels they were computed on.

Errors are ``VideoError`` with the fix in the message.
"""
from __future__ import annotations

import collections
import os
import re
from pathlib import Path
from typing import Any, Deque, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from ..errors import ImageError, VideoError
from .image import image_size, load_image, resolve_max_pixels

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")


def _as_rgb(frame: Any, where: str) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise VideoError(f"{where}: expected an H x W x 3 RGB frame, got shape {arr.shape}. "
                         "Fix: pass uint8 RGB arrays (H x W x 3).")
    if arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


class FrameSource:
    """Base class. ``num_frames`` is None while unknown (live streams); ``random_access``
    tells whether earlier frames can be read again; ``ended`` becomes True when a live stream
    runs out; ``size`` is ``(height, width)`` of every frame once known.

    Subclasses implement ``_read(index)``; ``get`` adds the frame-size check."""

    num_frames: Optional[int] = None
    random_access: bool = True
    ended: bool = False
    name: str = "<frames>"
    size: Optional[Tuple[int, int]] = None
    _size_frame: int = 0  # the frame that set ``size``

    def get(self, index: int) -> np.ndarray:
        """Frame ``index`` as ``H x W x 3`` uint8 RGB; ``VideoError`` when it cannot be read or
        its size differs from the video's."""
        frame = self._read(index)
        self._check_size(index, frame.shape[:2])
        return frame

    def _read(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def can_read(self, index: int) -> bool:
        return index >= 0 and (self.num_frames is None or index < self.num_frames)

    def first_available(self) -> int:
        return 0

    def close(self) -> None:
        pass

    def describe(self, index: int) -> str:
        """How errors name frame ``index``."""
        return f"frame {index} of {self.name}"

    def _check_size(self, index: int, hw: Tuple[int, int]) -> None:
        """Record the video's size on the first frame seen; refuse any other size."""
        hw = (int(hw[0]), int(hw[1]))
        if self.size is None:
            self.size, self._size_frame = hw, index
        elif hw != self.size:
            (h, w), (vh, vw) = hw, self.size
            raise VideoError(f"{self.describe(index)} is {w} x {h} px but {self.describe(self._size_frame)} is "
                             f"{vw} x {vh} px; all frames of a video must have the same size. Fix: resize the "
                             f"frames to one size (e.g. ffmpeg -i INPUT -vf scale={vw}:{vh} OUTPUT) or remove "
                             "the odd ones.")

    def _check_index(self, index: int) -> None:
        if index < 0:
            raise VideoError(f"{self.name}: frame index {index} is negative. Fix: use 0-based frame numbers.")
        if self.num_frames is not None and index >= self.num_frames:
            raise VideoError(f"{self.name}: frame {index} is beyond the end of the video "
                             f"({self.num_frames} frames, last index {self.num_frames - 1}). "
                             "Fix: use a frame number below the frame count.")


def _natural_key(path: Path) -> Tuple:
    parts = re.split(r"(\d+)", path.stem)
    return tuple(int(p) if p.isdigit() else p for p in parts) + (path.suffix,)


class FolderSource(FrameSource):
    """Image files of a folder, in numeric order of their names, decoded by ``load_image``.

    ``max_pixels``: the largest frame accepted (default: ``$SAMKIT_MAX_IMAGE_PIXELS``, else
    the image loader's default). Every file's header is read when the folder is opened, so a
    frame of another size is reported before any work."""

    def __init__(self, folder: os.PathLike, max_pixels: Optional[int] = None) -> None:
        self.folder = Path(folder)
        self.name = str(self.folder)
        files = [p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file()]
        if not files:
            raise VideoError(f"{self.folder}: no image files ({', '.join(IMAGE_EXTS)}) in this folder. "
                             "Fix: point to a folder of frames such as 00000.jpg, 00001.jpg, ...")
        self.files: List[Path] = sorted(files, key=_natural_key)
        self.num_frames = len(self.files)
        self.max_pixels = resolve_max_pixels(max_pixels)
        for i, path in enumerate(self.files):
            try:
                hw = image_size(path)
            except ImageError:
                continue  # unreadable header: reported with the fix when the frame is read
            self._check_size(i, hw)

    def describe(self, index: int) -> str:
        return f"frame {index} ({self.files[index]})"

    def _read(self, index: int) -> np.ndarray:
        self._check_index(index)
        try:
            return load_image(self.files[index], max_pixels=self.max_pixels)
        except ImageError as exc:
            raise VideoError(f"frame {index} of {self.folder} cannot be used: {exc}") from exc


class ArraySource(FrameSource):
    """Frames already in memory (``T x H x W x 3`` array or a list of arrays)."""

    def __init__(self, frames: Any) -> None:
        self.frames = frames
        self.num_frames = len(frames)
        self.name = "<array>"
        if isinstance(frames, np.ndarray):
            if len(frames):
                self._check_size(0, frames.shape[1:3])
        else:
            for i, f in enumerate(frames):
                shape = getattr(f, "shape", None)
                shape = np.shape(f) if shape is None else shape
                if len(shape) >= 2:  # anything else fails with the fix when it is read
                    self._check_size(i, shape[:2])

    def describe(self, index: int) -> str:
        return f"frame {index} of the array"

    def _read(self, index: int) -> np.ndarray:
        self._check_index(index)
        return _as_rgb(self.frames[index], f"frame {index}")


class IteratorSource(FrameSource):
    """Frames pulled from an iterator on demand; only the last ``keep`` are retained."""

    random_access = False

    def __init__(self, iterable: Iterable, keep: int = 2) -> None:
        self._it: Iterator = iter(iterable)
        self._buf: Deque[Tuple[int, np.ndarray]] = collections.deque(maxlen=max(1, keep))
        self._next = 0
        self.name = "<stream>"
        self.num_frames = None
        try:
            self.num_frames = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            pass
        if self.num_frames is not None and not isinstance(iterable, (list, tuple)):
            self.num_frames = None
        self.ended = False

    def first_available(self) -> int:
        return self._buf[0][0] if self._buf else self._next

    def describe(self, index: int) -> str:
        return f"frame {index} of the stream"

    def can_read(self, index: int) -> bool:
        if index < self.first_available():
            return False
        return not (self.ended and index >= self._next)

    def _read(self, index: int) -> np.ndarray:
        if index < 0:
            self._check_index(index)
        for i, f in self._buf:
            if i == index:
                return f
        if index < self._next:
            raise VideoError(f"{self.name}: frame {index} was already released (a live stream keeps only the "
                             f"last {self._buf.maxlen} frames; the oldest available is {self.first_available()}). "
                             "Fix: prompt on the current frame, or pass a file/folder for random access.")
        while self._next <= index:
            try:
                raw = next(self._it)
            except StopIteration:
                self.ended = True
                self.num_frames = self._next
                raise VideoError(f"{self.name}: the stream ended after {self._next} frames; frame {index} "
                                 "does not exist. Fix: use a frame number below the frame count.") from None
            except Exception as exc:  # noqa: BLE001 - the user's iterator failed
                raise VideoError(f"{self.name}: reading frame {self._next} failed: {exc!r}. "
                                 "Fix: check the frame producer.") from exc
            frame = _as_rgb(raw, f"frame {self._next}")
            self._buf.append((self._next, frame))
            self._next += 1
        return self._buf[-1][1]


class VideoFileSource(FrameSource):
    """A video file read with PyAV, frames indexed by presentation timestamp."""

    def __init__(self, path: os.PathLike) -> None:
        try:
            import av
        except ImportError as exc:
            from ..errors import MissingExtraError

            raise MissingExtraError("reading video files needs the optional package 'av'. "
                                    "Fix: pip install 'samkit[video]'") from exc
        self.path = Path(path)
        self.name = str(self.path)
        if not self.path.exists():
            raise VideoError(f"{self.path}: file not found. Fix: check the path.")
        try:
            self._container = av.open(str(self.path))
            self._stream = self._container.streams.video[0]
        except (av.error.FFmpegError, IndexError, OSError) as exc:
            raise VideoError(f"{self.path}: not a readable video ({exc}). "
                             "Fix: convert it with ffmpeg to H.264 MP4 or extract frames to a folder.") from exc
        self._pts = self._index_pts(av)
        self.num_frames = len(self._pts)
        if self.num_frames == 0:
            raise VideoError(f"{self.path}: the video has no frames. Fix: check the file.")
        self._decoder = None
        self._pos = -1  # index of the last decoded frame

    def _index_pts(self, av) -> List[int]:
        pts = []
        try:
            for packet in self._container.demux(self._stream):
                if packet.pts is not None and packet.size > 0:
                    pts.append(int(packet.pts))
        except av.error.FFmpegError:
            pass  # a truncated file: index what was readable; reading beyond raises VideoError
        self._container.seek(0, stream=self._stream)
        return sorted(set(pts))

    def _restart_at(self, index: int) -> None:
        target = self._pts[index]
        self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
        self._decoder = self._container.decode(self._stream)
        self._pos = None  # unknown until a frame with known pts is decoded

    def _read(self, index: int) -> np.ndarray:
        self._check_index(index)
        import av

        target = self._pts[index]
        if self._decoder is None or self._pos is None or index <= self._pos or index > self._pos + 8:
            self._restart_at(index)
        try:
            for frame in self._decoder:
                if frame.pts is None:
                    continue
                if frame.pts >= target:
                    self._pos = index
                    if frame.pts != target:
                        self._pos = None
                    return _as_rgb(frame.to_ndarray(format="rgb24"), f"frame {index}")
        except av.error.FFmpegError as exc:
            self._decoder = None
            raise VideoError(f"{self.path}: frame {index} cannot be decoded ({exc}). "
                             "Fix: re-encode the video (ffmpeg -i in.mp4 -c:v libx264 out.mp4).") from exc
        self._decoder = None
        raise VideoError(f"{self.path}: the video ended early, before frame {index} (the container lists "
                         f"{self.num_frames} frames). Results up to the previous frame are complete. "
                         "Fix: re-encode or trim the video.")

    def close(self) -> None:
        try:
            self._container.close()
        except Exception:  # noqa: BLE001
            pass


def open_frames(source: Any, keep: int = 2) -> FrameSource:
    """A ``FrameSource`` for a folder path, a video path, an array / list of frames, an
    existing ``FrameSource`` or any iterator of ``H x W x 3`` arrays."""
    if isinstance(source, FrameSource):
        return source
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if p.is_dir():
            return FolderSource(p)
        if not p.exists():
            raise VideoError(f"{p}: no such file or folder. Fix: pass a video file, a folder of frames or an "
                             "iterator of arrays.")
        if p.suffix.lower() in IMAGE_EXTS:
            raise VideoError(f"{p} is a single image. Fix: pass the folder that holds the frames.")
        return VideoFileSource(p)
    if isinstance(source, np.ndarray):
        if source.ndim != 4:
            raise VideoError(f"an array of frames must be T x H x W x 3, got shape {source.shape}. "
                             "Fix: stack frames along a first axis.")
        return ArraySource(source)
    if isinstance(source, (list, tuple)):
        return ArraySource(source)
    if hasattr(source, "__iter__") or hasattr(source, "__next__"):
        return IteratorSource(source, keep=keep)
    raise VideoError(f"cannot read frames from {type(source).__name__}. Fix: pass a folder, a video file, "
                     "a T x H x W x 3 array or an iterator of frames.")
