"""HTTP errors of ``samkit serve``: every failure is a JSON body ``{"error": MESSAGE, "status": CODE}``
(the message names the problem and the fix, as samkit's errors do), never a traceback.

``HTTPProblem`` is raised by the server's own checks; ``status_of`` maps samkit's error types
(``samkit.errors``) to a status code. Anything else is a bug: 500 with an error id that the
server log prints beside the traceback.
"""
from __future__ import annotations

from typing import Optional

from ..errors import (CheckpointError, DownloadError, ImageError, InputError, MissingExtraError, SamkitError,
                      VideoError)


class HTTPProblem(Exception):
    """An error answered with ``status`` and a JSON body; ``headers`` (e.g. Retry-After) are added."""

    def __init__(self, status: int, message: str, headers: Optional[dict] = None) -> None:
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> HTTPProblem:
    return HTTPProblem(400, message)


def not_found(message: str) -> HTTPProblem:
    return HTTPProblem(404, message)


def forbidden(message: str) -> HTTPProblem:
    return HTTPProblem(403, message)


def too_large(message: str) -> HTTPProblem:
    return HTTPProblem(413, message)


def busy(message: str, retry_after: int = 1) -> HTTPProblem:
    return HTTPProblem(429, message, {"Retry-After": str(int(retry_after))})


def status_of(exc: BaseException) -> Optional[int]:
    """The HTTP status of an error samkit raises on purpose; None for anything else (a bug)."""
    if isinstance(exc, HTTPProblem):
        return exc.status
    if isinstance(exc, ImageError) and ("pixel" in str(exc) and "limit" in str(exc) or "bomb" in str(exc)):
        return 413  # decompression bombs and images over the pixel limit
    if isinstance(exc, (ImageError, VideoError, InputError)):
        return 400
    if isinstance(exc, MissingExtraError):
        return 501
    if isinstance(exc, (CheckpointError, DownloadError, SamkitError)):
        return 500
    if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return 404
    if isinstance(exc, PermissionError):
        return 403
    return None


def message_of(exc: BaseException) -> str:
    """One line: the problem and the fix."""
    if isinstance(exc, HTTPProblem):
        text = exc.message
    elif isinstance(exc, OSError) and getattr(exc, "strerror", None):
        text = f"{exc.strerror}. Fix: check the path (relative to the server's --data folder)."
    else:
        text = str(exc) or type(exc).__name__
    text = " ".join(text.split())
    return text
