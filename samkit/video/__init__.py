"""Video tracking: ``VideoTracker`` (SAM 2 family through ``memory_tracker.MemoryTracker``, or
the classic engine through ``flow_tracker.FlowTracker``: optical flow + GrabCut re-fit) and
its typed state ``TrackingSession`` / ``FrameResult``."""
from .session import FrameResult, ObjectTrack, TrackingSession
from .tracker import VideoTracker

__all__ = ["VideoTracker", "TrackingSession", "FrameResult", "ObjectTrack"]
