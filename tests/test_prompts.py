"""One prompt contract (``samkit.prompts``): the rules as a table, and the same answer (same
error message, same accepted edge cases) from every caller: ``ImagePredictor`` (neural),
the ``classic`` model, and ``VideoTracker`` (neural and classic) against the frame size."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from samkit.errors import InputError
from samkit.prompts import (Prompt, check_box, check_mask, check_mask_input, check_points, check_prompt,
                            check_video_prompt, require_prompt)
from tiny import tiny_sam

H, W = 48, 64
SIZE = (H, W)

# (kwargs, words in the message): each rule once
BAD = [
    (dict(points=[[W + 0.01, 10]], labels=[1]), "point (64.01, 10) lies outside the image (64 x 48"),
    (dict(points=[[10, -0.5]], labels=[1]), "outside the image"),
    (dict(points=[[10, H + 1]], labels=[1]), "y in [0, 48]"),
    (dict(points=[[np.nan, 10]], labels=[1]), "NaN or infinity"),
    (dict(points=[[np.inf, 10]], labels=[1]), "NaN or infinity"),
    (dict(points=[10, 10], labels=[1]), "shape N x 2"),
    (dict(points=[[10, 10, 1]], labels=[1]), "got (1, 3)"),
    (dict(points=[["a", 1]], labels=[1]), "numeric"),
    (dict(points=[[10, 10]]), "without labels"),
    (dict(labels=[1]), "without points"),
    (dict(points=[], labels=[1]), "without points"),
    (dict(points=[[10, 10], [20, 20]], labels=[1]), "one label per point"),
    (dict(points=[[10, 10]], labels=[[1]]), "one label per point"),
    (dict(points=[[10, 10]], labels=[2]), "labels must be 1 (foreground) or 0 (background), got 2"),
    (dict(points=[[10, 10], [1, 1]], labels=[1, -1]), "padding label -1"),
    (dict(points=[[10, 10]], labels=[0.5]), "labels must be 1"),
    (dict(box=[30, 10, 20, 40]), "inverted or empty"),
    (dict(box=[10, 10, 10, 40]), "inverted or empty"),  # zero width
    (dict(box=[10, 20, 30, 20]), "inverted or empty"),  # zero height
    (dict(box=[10, 10, np.nan, 40]), "NaN or infinity"),
    (dict(box=[-1, 10, 30, 40]), "Fix: clip it to the image: box=[0, 10, 30, 40]"),
    (dict(box=[10, 10, 30, H + 2]), "box=[10, 10, 30, 48]"),
    (dict(box=[W + 1, 10, W + 9, 40]), "Fix: give the box in pixels of the original image"),
    (dict(box=[10, 10, 40]), "4 numbers"),
    (dict(box=[[10, 10, 40, 40]]), "shape (4,)"),
]


@pytest.mark.parametrize("kwargs, words", BAD)
def test_rules(kwargs, words):
    with pytest.raises(InputError) as err:
        check_prompt(kwargs.get("points"), kwargs.get("labels"), kwargs.get("box"), SIZE)
    assert words in str(err.value) and "Fix:" in str(err.value)


def test_valid_prompts_and_their_types():
    p = check_prompt([[W, H], [0, 0], [10.25, 3]], [1, 0, 1], [0, 0, W, H], SIZE)
    assert p.points.dtype == np.float32 and p.points.shape == (3, 2) and p.points[0].tolist() == [W, H]
    assert p.labels.dtype == np.int32 and p.labels.tolist() == [1, 0, 1]
    assert p.box.dtype == np.float32 and p.box.tolist() == [0, 0, W, H] and not p.empty
    p64 = check_prompt(torch.tensor([[1.1, 2.0]]), np.array([True]), None, SIZE, dtype=np.float64)
    assert p64.points.dtype == np.float64 and p64.points[0, 0] == 1.100000023841858  # the tensor's float32
    assert check_prompt(None, None, None, SIZE).empty
    empty = check_prompt(np.zeros((0, 2)), [], None, SIZE)
    assert empty == Prompt() and empty.empty  # an empty points array is no points
    with pytest.raises(InputError, match="no prompt given: a prompt needs points, a box or a mask_input"):
        require_prompt(empty)
    require_prompt(empty, mask=np.zeros((256, 256)))  # a mask input alone is a prompt


def test_batched_forms():
    pts, lab = check_points(np.ones((3, 2, 2)), np.ones((3, 2)), SIZE, batched=True)
    assert pts.shape == (3, 2, 2) and lab.shape == (3, 2)
    assert check_points(np.zeros((3, 0, 2)), np.zeros((3, 0)), SIZE, batched=True) == (None, None)
    assert check_box(np.zeros((0, 4)), SIZE, batched=True) is None
    assert check_box([[0, 0, 5, 5], [1, 1, W, H]], SIZE, batched=True).shape == (2, 4)
    with pytest.raises(InputError, match=r"box \[3, 3, 1, 9\] is inverted"):  # the first bad row
        check_box([[0, 0, 5, 5], [3, 3, 1, 9]], SIZE, batched=True)
    with pytest.raises(InputError, match="B x 4"):
        check_box([0, 0, 5, 5], SIZE, batched=True)
    with pytest.raises(InputError, match="B x P x 2"):
        check_points(np.ones((3, 2)), np.ones(3), SIZE, batched=True)


def test_mask_input_and_mask_prompt():
    assert check_mask_input(np.zeros((256, 256)), (256, 256)).shape == (1, 1, 256, 256)
    assert check_mask_input(torch.zeros(1, 256, 256), (256, 256)).dtype == np.float32
    assert check_mask_input(np.zeros((3, 1, 8, 8)), (8, 8), batch=3).shape == (3, 1, 8, 8)
    assert check_mask_input(np.zeros(SIZE), (256, 256), image_hw=SIZE).shape == (1, 1, H, W)
    for bad, words in [(np.zeros((2, 1, 8, 8)), "1 x 8 x 8"), (np.zeros(SIZE), "got shape (48, 64)"),
                       (np.full((8, 8), np.inf), "NaN or infinity")]:
        with pytest.raises(InputError, match=words.replace("(", r"\(").replace(")", r"\)")):
            check_mask_input(bad, (8, 8))
    assert check_mask(np.ones(SIZE, bool), SIZE).dtype == bool
    with pytest.raises(InputError, match="H x W = 48 x 64"):
        check_mask(np.ones((24, 32), bool), SIZE)
    with pytest.raises(InputError, match="cannot be combined"):
        check_video_prompt([[1, 1]], [1], None, np.ones(SIZE, bool), SIZE)
    with pytest.raises(InputError, match="points, a box or a mask. Fix"):
        check_video_prompt([], [], None, None, SIZE)
    prompt, m = check_video_prompt(np.zeros((0, 2)), None, None, np.ones(SIZE), SIZE)
    assert prompt.empty and m.shape == SIZE


# ----------------------------------------------------------------------------- every caller
@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def callers(image):
    """name -> function(points, labels, box) that prompts one caller on an H x W image/frame."""
    pytest.importorskip("cv2")
    from samkit import ImagePredictor
    from samkit.models.classic import GrabCutModel
    from samkit.video import VideoTracker
    from _tiny_video import build_tiny_video_model

    predictor = ImagePredictor(tiny_sam()).set_image(image)
    grabcut = GrabCutModel(work_side=64, iters=1)
    frames = np.stack([image] * 2)
    trackers = {"track_neural": VideoTracker(build_tiny_video_model(64, 32, seed=0)),
                "track_classic": VideoTracker(GrabCutModel(work_side=64, iters=1))}
    out = {"predictor": lambda p, lab, b: predictor.predict(points=p, labels=lab, box=b),
           "classic": lambda p, lab, b: grabcut.predict_image(image, p, lab, b)}
    for name, tr in trackers.items():
        out[name] = (lambda tr: lambda p, lab, b: tr.add_prompt(tr.start(frames), 0, 1, points=p, labels=lab,
                                                                 box=b))(tr)
    return out


CALLERS = ["predictor", "classic", "track_neural", "track_classic"]


@pytest.mark.parametrize("kwargs, words", [case for case in BAD if "numeric" not in case[1]])
def test_every_caller_gives_the_same_error(callers, kwargs, words):
    args = (kwargs.get("points"), kwargs.get("labels"), kwargs.get("box"))
    messages = {}
    for name in CALLERS:
        with pytest.raises(InputError) as err:
            callers[name](*args)
        messages[name] = str(err.value)
    assert len(set(messages.values())) == 1, messages
    assert words in messages["predictor"]


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("points, labels, box", [
    ([[W, H]], [1], None),  # the far corner (W, H) is a valid point everywhere
    ([[0, 0], [W, H], [W / 2, H / 2]], [0, 0, 1], None),
    (None, None, [0, 0, W, H]),  # the whole image
    (np.zeros((0, 2)), [], [2, 2, W - 2.5, H - 0.5]),  # empty points beside a box: a box prompt
])
def test_every_caller_accepts_image_edges(callers, caller, points, labels, box):
    out = callers[caller](points, labels, box)
    masks = out.masks[1] if isinstance(out.masks, dict) else out.masks  # FrameResult or Masks
    assert np.asarray(masks).shape[-2:] == (H, W)


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("points, labels", [(None, None), ([], []), (np.zeros((0, 2)), np.zeros(0))])
def test_no_prompt_everywhere(callers, caller, points, labels):
    with pytest.raises(InputError, match="no prompt given: a prompt needs points, a box or a mask"):
        callers[caller](points, labels, None)
