"""Video by name: find objects on one frame by text and track each one with its label.

``add_text_objects`` (``VideoTracker.add_text_prompt``) reads the frame, finds the instances
of every text through the same path as ``ImagePredictor.predict(text=...)`` (the tracker's
model as image segmenter: SAM 2-family models and ``classic`` both work; see
``samkit.vocab.text_predict``), and adds one object per instance, prompted with its mask. The
object's label (the text) is kept in ``TrackingSession.labels`` and reported in every
``FrameResult.labels``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from ..errors import InputError
from .vocabularies import check_texts


def add_text_objects(tracker, session, frame: int, text: Any, clip: Any = None, first_obj_id: Optional[int] = None,
                     **text_options: Any) -> Dict[int, str]:
    """Add one object per instance of ``text`` (str or list of str) found on ``frame``;
    returns {obj_id: label} of the new objects (empty when nothing was found)."""
    from ..predict.image import ImagePredictor

    frame = tracker._check_frame(session, frame)
    texts = check_texts([text] if isinstance(text, str) else text, "text")
    if first_obj_id is not None and (isinstance(first_obj_id, bool) or not isinstance(first_obj_id, int)):
        raise InputError(f"first_obj_id must be an integer, got {first_obj_id!r}. Fix: pass e.g. first_obj_id=1.")
    predictor = ImagePredictor(tracker.model, clip=clip).set_image(session.source.get(frame))
    found = predictor.predict_batch(texts=texts, **text_options)
    n = sum(len(m) for m in found)
    start = max(session.objects, default=0) + 1 if first_obj_id is None else int(first_obj_id)
    taken = sorted(set(range(start, start + n)) & set(session.objects))
    if taken:
        raise InputError(f"object ids {taken} are already in use in this session. Fix: pass a first_obj_id above "
                         f"{max(session.objects)}, or leave it out.")
    added: Dict[int, str] = {}
    oid = start
    for label, masks in zip(texts, found):
        for m in masks.masks:
            tracker.add_prompt(session, frame=frame, obj_id=oid, mask=m)
            session.labels[oid] = label
            added[oid] = label
            oid += 1
    return added
