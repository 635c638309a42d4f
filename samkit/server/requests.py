"""What a route reads from a request: its JSON object and the image it names.

Shared by every route module of ``samkit serve`` (``app``, ``routes_image``, ``routes_video``,
``labelstudio``), so none of them imports another."""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .config import ServerState
from .errors import HTTPProblem
from .paths import IMAGE_EXTS

ASSETS = Path(__file__).resolve().parent.parent / "assets"
EXAMPLE_PREFIX = "@example/"
EXAMPLES = ("truck.png",)


def resolve_image(state: ServerState, rel: str) -> Path:
    """The real file of image ``rel``: a bundled example, or a file of the data folder."""
    if isinstance(rel, str) and rel.startswith(EXAMPLE_PREFIX):
        name = rel[len(EXAMPLE_PREFIX):]
        if name not in EXAMPLES:
            raise HTTPProblem(404, f"no example {name!r}. Fix: use one of {', '.join(EXAMPLES)}.")
        return ASSETS / name
    real = state.data.resolve(rel, kind="file")
    if real.suffix.lower() not in IMAGE_EXTS:
        raise InputError(f"{rel!r} is not an image ({', '.join(IMAGE_EXTS)}). Fix: pick an image file.")
    return real


async def read_json(request) -> dict:
    """The request's JSON object (400 naming the problem otherwise)."""
    try:
        body = await request.json()
    except ValueError:
        raise HTTPProblem(400, "the request body is not JSON. Fix: send a JSON object with "
                               "Content-Type: application/json.") from None
    if not isinstance(body, dict):
        raise HTTPProblem(400, "the request body must be a JSON object. Fix: send {...}.")
    return body
