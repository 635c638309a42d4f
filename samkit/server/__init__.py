"""``samkit serve``: a FastAPI server (extra ``samkit[server]``) with the browser annotator, image
and video endpoints, and a Label Studio ML backend. ``create_app`` builds the ASGI app; the CLI
(``samkit.cli.serve_cmd``) loads the models and runs it with uvicorn. See ``app.py`` for the routes.
"""
from __future__ import annotations


def create_app(*args, **kwargs):
    """See ``samkit.server.app.create_app`` (imported lazily: FastAPI is an extra)."""
    from .app import create_app as _create

    return _create(*args, **kwargs)


__all__ = ["create_app"]
