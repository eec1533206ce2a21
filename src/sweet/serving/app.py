"""The HTTP API: a FastAPI app around one :class:`~sweet.predictor.Predictor` (``sweet.serving.create_app``).

Endpoints
---------
``POST /predict``
    Body ``{"texts": ["...", ...]}`` (pair tasks: ``{"pairs": [["a", "b"], ...]}``), optionally ``"threshold"``
    (a number in [0, 1]) and ``"policy"`` (``confidence``, ``entropy``, ``patience``, ``learned``). Answer:
    ``{"predictions": [{"label", "label_id", "exit_layer", "confidence"(, "score")}, ...]}`` in request order,
    what :meth:`Predictor.predict <sweet.predictor.Predictor.predict>` gives for the same inputs. Both bodies are
    pydantic models (:mod:`sweet.serving.schema`) that FastAPI validates and publishes.
``GET /healthz``
    ``{"status": "ok"}`` (never needs the API key, for load balancers and probes).
``GET /info``
    :meth:`Predictor.info <sweet.predictor.Predictor.info>` (task, labels, method, exit layers, precision,
    device, default threshold and policy) plus the server's settings under ``"server"``.
``GET /metrics``
    Prometheus text format (:mod:`sweet.serving.prometheus`, ``prometheus_client``; OpenMetrics if the scraper
    asks for it).
``GET /openapi.json``, ``GET /docs``
    The OpenAPI schema and its Swagger UI page (whose scripts load from a CDN).

Every error is a one-line JSON body ``{"error": "..."}``: 400 for bad input (not UTF-8, not JSON, wrong fields,
wrong types, threshold outside [0, 1], unknown policy; never FastAPI's 422), 413 for a body over
``max_body_bytes`` or more than ``max_items`` texts, 401 without the API key, 429 past ``max_concurrent_requests``
``/predict`` requests in flight (backpressure: the client retries later), 404/405 for unknown routes and methods,
503 while shutting down, 500 if the model fails. None of them stops the server.

API key: ``api_key`` (default: the ``SWEET_API_KEY`` environment variable; ``""`` turns it off). When set, every
endpoint but ``/healthz`` (``/openapi.json`` and ``/docs`` included) requires ``Authorization: Bearer KEY``.
"""

import asyncio
import json
import os
import secrets
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# FastAPI is an optional extra ("sweet[serve]"): this module is only imported when an app is made (sweet.serving's
# create_app, `sweet serve`), never by `import sweet` or `sweet --help`. No "from __future__ import annotations"
# here: FastAPI reads the handlers' annotations (the request model) at runtime.
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import SweetError
from ..loader import load
from ..runtime import OnnxPredictor
from .batcher import Batcher, BatchLimits, ServerClosing
from .prometheus import UNMATCHED_ROUTE, Metrics
from .schema import ErrorBody, PredictResponse, Refusal, RequestSchema

DEFAULT_MAX_ITEMS = 256
DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB
DEFAULT_MAX_CONCURRENT_REQUESTS = 512  # as text-embeddings-inference
API_KEY_ENV = "SWEET_API_KEY"
ENDPOINTS = ("/predict", "/healthz", "/info", "/metrics", "/openapi.json", "/docs")


@dataclass(frozen=True)
class RequestLimits:
    """The largest request the app reads: ``max_items`` texts (or pairs) and ``max_body_bytes`` bytes (more is
    refused with 413), and at most ``max_concurrent_requests`` ``/predict`` requests at once (the next is refused
    with 429). Checked here, once (the messages name the ``sweet serve`` options)."""

    max_items: int = DEFAULT_MAX_ITEMS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS

    def __post_init__(self) -> None:
        for flag, value in (("--max-items", self.max_items), ("--max-body-bytes", self.max_body_bytes),
                            ("--max-concurrent-requests", self.max_concurrent_requests)):
            if not value >= 1:
                raise SweetError(f"{flag} must be positive, got {value}")


def check_app_options(*, max_batch_size: int = 64, max_wait_ms: float = 5.0, batching: bool = True,
                      max_items: int = DEFAULT_MAX_ITEMS, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                      max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS,
                      **_other) -> tuple[BatchLimits, RequestLimits]:
    """The limits :func:`create_app` makes of these options (a :class:`SweetError` for a bad one); other keys
    (``api_key``, ...) are ignored. For a caller that hands the options to other processes (Ray Serve replicas)
    and wants a bad one refused before they start."""
    return (BatchLimits(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, batching=batching),
            RequestLimits(max_items=max_items, max_body_bytes=max_body_bytes,
                          max_concurrent_requests=max_concurrent_requests))


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


class _ReadRequest(Request):
    """A ``/predict`` request whose body was read and parsed as JSON already (within ``max_body_bytes``, with the
    messages of docs/errors.md), shown to FastAPI as JSON whatever its Content-Type says (``curl -d`` sends
    ``application/x-www-form-urlencoded``); FastAPI then validates the parsed value against the request model."""

    def __init__(self, request: Request, raw: bytes, value: Any):
        headers = [(k, v) for k, v in request.scope["headers"] if k.lower() != b"content-type"]
        super().__init__({**request.scope, "headers": [*headers, (b"content-type", b"application/json")]},
                         request.receive)
        self._raw, self._value = raw, value

    async def body(self) -> bytes:
        return self._raw

    async def json(self) -> Any:
        return self._value


async def read_body(request: Request, max_body_bytes: int) -> bytes:
    """The request body, refused (413) past ``max_body_bytes``: by its Content-Length before reading, else while
    it streams."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_body_bytes:
        raise Refusal(413, f"request body too large: {int(length)} bytes (at most {max_body_bytes})", "too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body_bytes:
            raise Refusal(413, f"request body too large: over {max_body_bytes} bytes", "too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes, field: str) -> Any:
    """UTF-8 JSON, or a 400 saying why not (``field``: the texts field the empty-body message suggests)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refusal(400, f"request body is not valid UTF-8 (byte offset {exc.start}); send UTF-8 JSON") from None
    if not text.strip():
        raise Refusal(400, f'request body is empty; send a JSON object such as {{"{field}": [...]}}')
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise Refusal(400, f"request body is not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise Refusal(400, "request body is not valid JSON (nested too deeply)") from None


def _is_predictor(obj) -> bool:
    """A loaded sweet predictor of either runtime. The torch one is recognised without importing torch: an object of
    that class exists only once its module has been imported (an ONNX-only image never imports it)."""
    if isinstance(obj, OnnxPredictor):
        return True
    module = sys.modules.get("sweet.predictor")
    return module is not None and isinstance(obj, module.Predictor)


def create_app(predictor_or_run_dir, *, max_batch_size: int = 64, max_wait_ms: float = 5.0, batching: bool = True,
               max_items: int = DEFAULT_MAX_ITEMS, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS, api_key: str | None = None,
               warmup: bool = True, **load_kwargs):
    """A FastAPI app answering ``/predict`` with a :class:`~sweet.predictor.Predictor` (or a run directory, loaded
    with ``sweet.load(run_dir, **load_kwargs)``: ``device``, ``precision``, ``threshold``, ``policy``, ``task``).

    ``max_batch_size`` rows or ``max_wait_ms`` of waiting make a batch (:mod:`sweet.serving.batcher`);
    ``batching=False`` runs one model call per request. Past ``max_concurrent_requests`` ``/predict`` requests in
    flight, the next is answered 429 at once. The app can be mounted into another FastAPI/Starlette app; its
    batching worker starts with the app's lifespan (or on the first request) and drains on shutdown.

    The limits (``max_batch_size``, ``max_wait_ms``, ``max_items``, ``max_body_bytes``,
    ``max_concurrent_requests``) are checked first, before a run directory is loaded; a bad one is a
    :class:`SweetError` naming the ``sweet serve`` option.

    Long on purpose: FastAPI's route handlers are closures over the app's predictor, batcher, limits and metrics;
    each handler is short."""
    batch_limits, request_limits = check_app_options(
        max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, batching=batching, max_items=max_items,
        max_body_bytes=max_body_bytes, max_concurrent_requests=max_concurrent_requests)
    if isinstance(predictor_or_run_dir, (str, Path)):
        predictor = load(predictor_or_run_dir, **load_kwargs)
    elif _is_predictor(predictor_or_run_dir):
        if load_kwargs:
            raise SweetError(f"options {', '.join(sorted(load_kwargs))} apply to a run directory, not to a loaded predictor")
        predictor = predictor_or_run_dir
    else:
        raise SweetError(f"create_app takes a sweet.Predictor or a run directory, got {type(predictor_or_run_dir).__name__}")
    key = os.environ.get(API_KEY_ENV) if api_key is None else api_key
    key = key or None
    info = predictor.info()
    metrics = Metrics(info["exit_layers"], info["method"])
    batcher = Batcher(predictor, metrics, batch_limits)
    schema = RequestSchema(info["task"], info["text_fields"], request_limits.max_items)
    limit = request_limits.max_concurrent_requests
    settings = {"max_batch_size": batcher.max_batch_size, "max_wait_ms": float(max_wait_ms), "batching": batcher.batching,
                "max_items": request_limits.max_items, "max_body_bytes": request_limits.max_body_bytes,
                "max_concurrent_requests": limit, "api_key_required": key is not None, "process_id": os.getpid()}

    @asynccontextmanager
    async def lifespan(_app):
        await batcher.start(warmup=warmup)
        try:
            yield
        finally:
            await batcher.close()

    # FastAPI's own /docs and /openapi.json are off: the app serves them below, behind the API key when one is set
    app = FastAPI(title="sweet", summary="Early-exit inference", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.predictor, app.state.metrics, app.state.batcher, app.state.settings = predictor, metrics, batcher, settings
    app.add_middleware(_CountResponses, metrics=metrics)

    def error(refusal: Refusal) -> JSONResponse:
        response = JSONResponse({"error": refusal.message}, status_code=refusal.status)
        if refusal.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    def check_key(request: Request) -> None:
        if key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if not (scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(), key.encode())):
            raise Refusal(401, "missing or wrong API key: send 'Authorization: Bearer KEY'", "unauthorized")

    # the bearer scheme, published in the OpenAPI schema when a key is set (its "Authorize" button in /docs); the
    # key itself is checked by check_key
    bearer = [Depends(HTTPBearer(auto_error=False))] if key is not None else []
    guarded = [*bearer, Depends(check_key)]
    routes = "POST /predict, GET /healthz, GET /info, GET /metrics"

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):  # 404 / 405 as one-line JSON
        route = f"{request.method} {request.url.path}"
        if exc.status_code == 404:
            return error(Refusal(404, f"no endpoint {route}; the endpoints are {routes}"))
        if exc.status_code == 405:
            return error(Refusal(405, f"method not allowed: {route}; the endpoints are {routes}"))
        return error(Refusal(exc.status_code, str(exc.detail)))

    @app.exception_handler(Refusal)
    async def refused(request, exc: Refusal):  # the API key on /info, /metrics, /openapi.json, /docs
        return error(exc)

    in_flight = 0  # /predict requests admitted and not answered yet (the event loop is one thread: no lock)

    class PredictRoute(APIRoute):
        """``/predict``, in this order: the API key (401), the concurrency limit (429), the body (413; 400 if not
        UTF-8 JSON), FastAPI's validation against the request model (400/413 through :meth:`RequestSchema.explain`,
        not FastAPI's 422), then the endpoint. Every refusal is one line of JSON and counted by reason."""

        def get_route_handler(self):
            validate_and_answer = super().get_route_handler()

            async def answer(request: Request) -> Response:
                nonlocal in_flight
                start, value = time.perf_counter(), None
                try:
                    check_key(request)
                    if in_flight >= limit:
                        raise Refusal(429, f"too many requests in flight (at most {limit}, --max-concurrent-requests); "
                                           "retry later", "overloaded")
                    in_flight += 1
                    metrics.add_in_flight(1)
                    try:
                        raw = await read_body(request, request_limits.max_body_bytes)
                        value = parse_json(raw, schema.field)
                        response = await validate_and_answer(_ReadRequest(request, raw, value))
                    finally:
                        in_flight -= 1
                        metrics.add_in_flight(-1)
                except RequestValidationError as exc:
                    refusal = schema.explain(exc.errors(), value, predictor.examples, predictor.get_policy)
                except Refusal as exc:
                    refusal = exc
                else:
                    metrics.request_done(time.perf_counter() - start)
                    return response
                metrics.request_done(time.perf_counter() - start, reason=refusal.reason)
                return error(refusal)

            return answer

    refusals = {status: {"model": ErrorBody, "description": what} for status, what in (
        (400, "Bad input"), (401, "Missing or wrong API key"), (413, "Too many items or too large a body"),
        (429, "Too many requests in flight"), (500, "The model failed"), (503, "Shutting down"))}

    predict_router = APIRouter(route_class=PredictRoute)  # FastAPI's documented way to a custom route class

    @predict_router.post("/predict", response_model=PredictResponse, response_model_exclude_none=True,
                         responses=refusals, dependencies=bearer, summary="Early-exit predictions for texts (or pairs)")
    async def predict(body: schema.model):
        policy = body.policy or predictor.policy
        try:
            predictor.get_policy(policy)
            texts = predictor.examples(getattr(body, schema.field)).texts
        except SweetError as exc:
            raise Refusal(400, str(exc)) from None
        threshold = predictor.threshold if body.threshold is None else body.threshold
        try:
            answers = await batcher.submit(texts, threshold, policy)
        except ServerClosing as exc:
            raise Refusal(503, str(exc), "unavailable") from None
        except SweetError as exc:
            raise Refusal(400, str(exc)) from None
        except Exception as exc:  # the model failed: this request fails, the server keeps serving
            raise Refusal(500, f"internal error: {type(exc).__name__}: {exc}", "internal") from None
        metrics.items_answered(len(answers))
        return {"predictions": answers}

    app.include_router(predict_router)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/info", dependencies=guarded)
    async def info_endpoint():
        return {**predictor.info(), "server": settings}

    @app.get("/metrics", dependencies=guarded)
    async def metrics_endpoint(request: Request):
        body, content_type = metrics.render(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    def openapi() -> dict:  # FastAPI's schema, without the 422 answer it adds to every route that takes input
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            for operations in spec.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                spec.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # FastAPI's documented way to change the schema ("Extending OpenAPI")

    @app.get("/openapi.json", dependencies=guarded, include_in_schema=False)
    async def openapi_schema():
        return JSONResponse(app.openapi())

    @app.get("/docs", dependencies=guarded, include_in_schema=False)
    async def docs(request: Request):
        root = request.scope.get("root_path", "").rstrip("/")  # the prefix where this app is mounted, if any
        return get_swagger_ui_html(openapi_url=root + "/openapi.json", title="sweet: API")

    return app
