"""Video tracking: ``VideoTracker`` (SAM 2 family through ``memory_tracker.MemoryTracker``, or
the classic engine through ``flow_tracker.FlowTracker``: optical flow + GrabCut re-fit) and
its typed state ``TrackingSession`` / ``FrameResult``.

``session`` and ``memory_plan`` import no torch (``samkit.runtime.OnnxVideoTracker`` uses them);
``VideoTracker`` is imported on first use."""
from .._lazy import lazy_getattr
from .session import FrameResult, ObjectTrack, TrackingSession

__all__ = ["VideoTracker", "TrackingSession", "FrameResult", "ObjectTrack"]

__getattr__ = lazy_getattr("samkit.video", globals(), {"VideoTracker": ("samkit.video.tracker", "VideoTracker")})
