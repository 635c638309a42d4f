"""Video tracking: ``VideoTracker`` (SAM 2 family or the classic optical-flow engine) and
its typed state ``TrackingSession`` / ``FrameResult``."""
from .session import FrameResult, ObjectTrack, TrackingSession
from .tracker import VideoTracker

__all__ = ["VideoTracker", "TrackingSession", "FrameResult", "ObjectTrack"]
