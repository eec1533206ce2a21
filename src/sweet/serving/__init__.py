"""``sweet serve``: an HTTP server for early-exit inference with dynamic batching (FastAPI + uvicorn), optionally
scaled out as a Ray Serve deployment, and ``sweet loadtest`` to measure it.

>>> from sweet.serving import create_app
>>> app = create_app("runs/demo/sst2-sweet", max_batch_size=64, max_wait_ms=5)   # an ASGI app; mount or run it

Modules: :mod:`~sweet.serving.app` (endpoints, API key, backpressure, OpenAPI and ``/docs``),
:mod:`~sweet.serving.schema` (the request and response bodies as pydantic models; refusals and their messages),
:mod:`~sweet.serving.batcher` (dynamic batching, one model thread), :mod:`~sweet.serving.prometheus` (metrics in
a ``prometheus_client`` registry per app), :mod:`~sweet.serving.server` (uvicorn with graceful SIGTERM, Ray Serve),
:mod:`~sweet.serving.loadtest` (bounded load generator). FastAPI, pydantic, uvicorn, prometheus_client and httpx
come with the ``serve`` extra (``pip install "sweet[serve]"``, or from a clone ``pip install -e ".[serve]"``).
"""

from __future__ import annotations


def create_app(*args, **kwargs):
    """See :func:`sweet.serving.app.create_app`."""
    from .app import (
        create_app as _create_app,  # FastAPI is an optional extra: needed only when an app is made
    )

    return _create_app(*args, **kwargs)


__all__ = ["create_app"]
