"""The HTTP API: a FastAPI app around one :class:`~sweet.predictor.Predictor` (``sweet.serving.create_app``).

Endpoints
---------
``POST /predict``
    Body ``{"texts": ["...", ...]}`` (pair tasks: ``{"pairs": [["a", "b"], ...]}``), optionally ``"threshold"``
    (a number in [0, 1]) and ``"policy"`` (``confidence``, ``entropy``, ``patience``, ``learned``). Answer:
    ``{"predictions": [{"label", "label_id", "exit_layer", "confidence"(, "score")}, ...]}`` in request order,
    what :meth:`Predictor.predict <sweet.predictor.Predictor.predict>` gives for the same inputs.
``GET /healthz``
    ``{"status": "ok"}`` (never needs the API key, for load balancers and probes).
``GET /info``
    :meth:`Predictor.info <sweet.predictor.Predictor.info>` (task, labels, method, exit layers, precision,
    device, default threshold and policy) plus the server's settings under ``"server"``.
``GET /metrics``
    Prometheus text format (:mod:`sweet.serving.prometheus`).

Every error is a one-line JSON body ``{"error": "..."}``: 400 for bad input (not UTF-8, not JSON, wrong fields,
wrong types, threshold outside [0, 1], unknown policy), 413 for a body over ``max_body_bytes`` or more than
``max_items`` texts, 401 without the API key, 404/405 for unknown routes and methods, 503 while shutting down,
500 if the model fails. None of them stops the server.

API key: ``api_key`` (default: the ``SWEET_API_KEY`` environment variable; ``""`` turns it off). When set, every
endpoint but ``/healthz`` requires ``Authorization: Bearer KEY``.
"""

import asyncio
import json
import os
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# FastAPI is an optional extra ("sweet[serve]"): this module is only imported when an app is made (sweet.serving's
# create_app, `sweet serve`), never by `import sweet` or `sweet --help`.
from fastapi import (  # no "from __future__ import annotations" here: FastAPI reads the
    FastAPI,
    Request,
)
from fastapi.responses import (  # handlers' annotations at runtime
    JSONResponse,
    PlainTextResponse,
    Response,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import SweetError, one_line
from ..policies import check_threshold
from ..loader import load
from ..predictor import Predictor
from ..runtime import OnnxPredictor
from .batcher import Batcher, BatchLimits, ServerClosing
from .prometheus import UNMATCHED_ROUTE, Metrics

DEFAULT_MAX_ITEMS = 256
DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB
API_KEY_ENV = "SWEET_API_KEY"
_FIELDS = ("texts", "pairs", "threshold", "policy")
ENDPOINTS = ("/predict", "/healthz", "/info", "/metrics")


@dataclass(frozen=True)
class RequestLimits:
    """The largest request the app reads: ``max_items`` texts (or pairs) and ``max_body_bytes`` bytes; more is
    refused with 413. Checked here, once (the messages name the ``sweet serve`` options)."""

    max_items: int = DEFAULT_MAX_ITEMS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def __post_init__(self) -> None:
        for flag, value in (("--max-items", self.max_items), ("--max-body-bytes", self.max_body_bytes)):
            if not value >= 1:
                raise SweetError(f"{flag} must be positive, got {value}")


def check_app_options(*, max_batch_size: int = 64, max_wait_ms: float = 5.0, batching: bool = True,
                      max_items: int = DEFAULT_MAX_ITEMS, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                      **_other) -> tuple[BatchLimits, RequestLimits]:
    """The limits :func:`create_app` makes of these options (a :class:`SweetError` for a bad one); other keys
    (``api_key``, ...) are ignored. For a caller that hands the options to other processes (Ray Serve replicas)
    and wants a bad one refused before they start."""
    return (BatchLimits(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, batching=batching),
            RequestLimits(max_items=max_items, max_body_bytes=max_body_bytes))


class _CountResponses:
    """ASGI middleware: counts every answered HTTP request in ``sweet_requests_total{route,status}``, the 404s and
    405s that the router answers before any endpoint runs included. The route label is one of :data:`ENDPOINTS`
    or ``unmatched`` (any other path), so its set of values stays bounded whatever paths clients send."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        outer_route = scope.get("route")  # set by an enclosing router when this app is mounted in another
        status = None

        async def send_counted(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        def count(code: int) -> None:
            route = scope.get("route")
            path = getattr(route, "path", None) if route is not outer_route else None
            self.metrics.response_sent(path if path in ENDPOINTS else UNMATCHED_ROUTE, code)

        try:
            await self.app(scope, receive, send_counted)
        except asyncio.CancelledError:  # the client went away: count only what was answered
            if status is not None:
                count(status)
            raise
        except Exception:  # answered 500 by Starlette's error middleware, outside this one
            count(status or 500)
            raise
        count(status or 500)


class BadRequest(Exception):
    def __init__(self, status: int, message: str, reason: str = "bad_request"):
        super().__init__(message)
        self.status, self.message, self.reason = status, one_line(message), reason




def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def create_app(predictor_or_run_dir, *, max_batch_size: int = 64, max_wait_ms: float = 5.0, batching: bool = True,
               max_items: int = DEFAULT_MAX_ITEMS, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               api_key: str | None = None, warmup: bool = True, **load_kwargs):
    """A FastAPI app answering ``/predict`` with a :class:`~sweet.predictor.Predictor` (or a run directory, loaded
    with ``sweet.load(run_dir, **load_kwargs)``: ``device``, ``precision``, ``threshold``, ``policy``, ``task``).

    ``max_batch_size`` rows or ``max_wait_ms`` of waiting make a batch (:mod:`sweet.serving.batcher`);
    ``batching=False`` runs one model call per request. The app can be mounted into another FastAPI/Starlette
    app; its batching worker starts with the app's lifespan (or on the first request) and drains on shutdown.

    The limits (``max_batch_size``, ``max_wait_ms``, ``max_items``, ``max_body_bytes``) are checked first, before
    a run directory is loaded; a bad one is a :class:`SweetError` naming the ``sweet serve`` option.

    Long on purpose: FastAPI's route handlers are closures over the app's predictor, batcher, limits and metrics; each handler is short."""
    batch_limits, request_limits = check_app_options(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                                                     batching=batching, max_items=max_items,
                                                     max_body_bytes=max_body_bytes)
    if isinstance(predictor_or_run_dir, (str, Path)):
        predictor = load(predictor_or_run_dir, **load_kwargs)
    elif isinstance(predictor_or_run_dir, (Predictor, OnnxPredictor)):
        if load_kwargs:
            raise SweetError(f"options {', '.join(sorted(load_kwargs))} apply to a run directory, not to a loaded predictor")
        predictor = predictor_or_run_dir
    else:
        raise SweetError(f"create_app takes a sweet.Predictor or a run directory, got {type(predictor_or_run_dir).__name__}")
    max_items, max_body_bytes = request_limits.max_items, request_limits.max_body_bytes
    key = os.environ.get(API_KEY_ENV) if api_key is None else api_key
    key = key or None
    metrics = Metrics(predictor.exit_layers, predictor.method)
    batcher = Batcher(predictor, metrics, batch_limits)
    pair_task = len(predictor.task.text_fields) > 1
    field_name = "pairs" if pair_task else "texts"
    want = (f'"pairs" (a list of [{", ".join(predictor.task.text_fields)}] pairs)' if pair_task
            else '"texts" (a list of strings)')
    settings = {"max_batch_size": batcher.max_batch_size, "max_wait_ms": float(max_wait_ms), "batching": batcher.batching,
                "max_items": int(max_items), "max_body_bytes": int(max_body_bytes), "api_key_required": key is not None,
                "process_id": os.getpid()}

    @asynccontextmanager
    async def lifespan(_app):
        await batcher.start(warmup=warmup)
        try:
            yield
        finally:
            await batcher.close()

    app = FastAPI(title="sweet", summary="Early-exit inference", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.predictor, app.state.metrics, app.state.batcher, app.state.settings = predictor, metrics, batcher, settings
    app.add_middleware(_CountResponses, metrics=metrics)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": one_line(message)}, status_code=status)

    def authorised(request: Request) -> bool:
        if key is None:
            return True
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        return scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(), key.encode())

    routes = "POST /predict, GET /healthz, GET /info, GET /metrics"

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):  # 404 / 405 as one-line JSON
        route = f"{request.method} {request.url.path}"
        if exc.status_code == 404:
            return error(404, f"no endpoint {route}; the endpoints are {routes}")
        if exc.status_code == 405:
            return error(405, f"method not allowed: {route}; the endpoints are {routes}")
        return error(exc.status_code, str(exc.detail))

    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            raise BadRequest(413, f"request body too large: {int(length)} bytes (at most {max_body_bytes})", "too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise BadRequest(413, f"request body too large: over {max_body_bytes} bytes", "too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    def parse(raw: bytes) -> tuple[list, float, str]:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(400, f"request body is not valid UTF-8 (byte offset {exc.start}); send UTF-8 JSON") from None
        if not text.strip():
            raise BadRequest(400, f'request body is empty; send a JSON object such as {{{want.split(" ")[0]}: [...]}}')
        try:
            body = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadRequest(400, f"request body is not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})") from None
        except RecursionError:
            raise BadRequest(400, "request body is not valid JSON (nested too deeply)") from None
        if not isinstance(body, dict):
            raise BadRequest(400, f"request body must be a JSON object with {want}, got {_type_name(body)}")
        unknown = [k for k in body if k not in _FIELDS]
        if unknown:
            raise BadRequest(400, f"unknown field(s) in request body: {', '.join(map(str, unknown))}; "
                                  f"expected {field_name}, threshold, policy")
        other = "texts" if pair_task else "pairs"
        if other in body:
            raise BadRequest(400, f"task {predictor.task.name} takes {want}, not \"{other}\"")
        if field_name not in body:
            raise BadRequest(400, f"request body needs {want}")
        items = body[field_name]
        if not isinstance(items, list):
            raise BadRequest(400, f'"{field_name}" must be a list, got {_type_name(items)}')
        if not items:
            raise BadRequest(400, f'"{field_name}" is empty: give at least one item')
        if len(items) > max_items:
            raise BadRequest(413, f'too many items: {len(items)} in "{field_name}" (at most {max_items} per request; '
                                  "split the request)", "too_large")
        threshold = body.get("threshold")
        if threshold is None:
            threshold = predictor.threshold
        elif isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise BadRequest(400, f'"threshold" must be a number in [0, 1], got {_type_name(threshold)}')
        policy = body.get("policy")
        if policy is None:
            policy = predictor.policy
        elif not isinstance(policy, str):
            raise BadRequest(400, f'"policy" must be a string, got {_type_name(policy)}')
        try:
            # checked here, not only by the predictor in the model thread: a bad threshold gets its documented 400
            # before the request joins a merged batch, where it would fail the batch's other requests with it
            threshold = check_threshold(threshold)
            predictor.get_policy(policy)
            texts = predictor.examples(items).texts
        except SweetError as exc:
            raise BadRequest(400, str(exc)) from None
        return texts, threshold, policy

    @app.post("/predict")
    async def predict(request: Request):
        start = time.perf_counter()
        metrics.add_in_flight(1)
        try:
            if not authorised(request):
                raise BadRequest(401, "missing or wrong API key: send 'Authorization: Bearer KEY'", "unauthorized")
            texts, threshold, policy = parse(await read_body(request))
            try:
                answers = await batcher.submit(texts, threshold, policy)
            except ServerClosing as exc:
                raise BadRequest(503, str(exc), "unavailable") from None
            except SweetError as exc:
                raise BadRequest(400, str(exc)) from None
            except Exception as exc:  # the model failed: this request fails, the server keeps serving
                raise BadRequest(500, f"internal error: {type(exc).__name__}: {exc}", "internal") from None
        except BadRequest as exc:
            metrics.request_done(time.perf_counter() - start, reason=exc.reason)
            response = error(exc.status, exc.message)
            if exc.status == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
            return response
        finally:
            metrics.add_in_flight(-1)
        body = json.dumps({"predictions": answers}, separators=(",", ":"))
        metrics.request_done(time.perf_counter() - start, items=len(answers))
        return Response(body, media_type="application/json")

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/info")
    async def info(request: Request):
        if not authorised(request):
            return error(401, "missing or wrong API key: send 'Authorization: Bearer KEY'")
        return {**predictor.info(), "server": settings}

    @app.get("/metrics")
    async def metrics_endpoint(request: Request):
        if not authorised(request):
            return error(401, "missing or wrong API key: send 'Authorization: Bearer KEY'")
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
