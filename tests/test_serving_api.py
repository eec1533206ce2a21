"""``sweet serve`` (issue #24, part 7): backpressure (429 past ``--max-concurrent-requests``), the queue- and
inference-time histograms, one Prometheus registry per app, the OpenAPI schema and ``/docs`` behind the API key, and
the pydantic request model answering every documented refusal exactly as docs/errors.md lists it.

The server of the 429 test is uvicorn on 127.0.0.1 (port 0) in a thread of this process, always stopped; every
request is bounded by a timeout, and the model thread is held by an event that is always released."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import sweet
from sweet.serving import create_app

from .test_serving import BAD_INPUTS, make_run, sentences, serving


ERRORS_MD = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


@pytest.fixture(scope="module")
def sst2_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("serve-api") / "sst2")


@pytest.fixture(scope="module")
def predictor(sst2_run):
    return sweet.load(sst2_run, threshold=0.9)


@contextmanager
def uvicorn_on_loopback(app, timeout: float = 30.0):
    """``app`` served by uvicorn on 127.0.0.1 (a free port) in a thread; yields the base URL; always stopped."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=timeout)
        assert not thread.is_alive(), "uvicorn did not stop"


# ---------------------------------------------------------------------------------------------- backpressure


def test_a_burst_past_max_concurrent_requests_gets_429_and_the_server_keeps_serving(predictor, monkeypatch):
    texts = [sentences(2, seed=400 + i) for i in range(3)]
    expected = [predictor.predict(t) for t in texts]
    app = create_app(predictor, max_concurrent_requests=2, max_wait_ms=0, api_key="")
    metrics = app.state.metrics
    hold, entered, held_s = threading.Event(), threading.Event(), 0.3
    real = predictor.predict_encoded

    def held(*args, **kwargs):  # the model thread waits (bounded) until the burst has been answered
        entered.set()
        assert hold.wait(timeout=30), "the model was held too long"
        return real(*args, **kwargs)

    with uvicorn_on_loopback(app) as url, ThreadPoolExecutor(8) as pool:
        monkeypatch.setattr(predictor, "predict_encoded", held)  # after the warm-up, which runs at startup
        try:
            def post(body):
                return httpx.post(url + "/predict", json=body, timeout=30)

            # the first request into the (held) model call, then the second: it must queue behind that call (sent
            # together, the batcher could merge them into one call, and nothing would wait in the queue)
            admitted = [pool.submit(post, {"texts": texts[0]})]
            assert entered.wait(timeout=20), "the first request did not reach the model"
            admitted.append(pool.submit(post, {"texts": texts[1]}))
            deadline = time.monotonic() + 20
            while metrics.in_flight < 2:  # one request in the (held) model call, one queued behind it
                assert time.monotonic() < deadline, "the first two requests did not reach the server"
                time.sleep(0.01)
            burst = list(pool.map(post, [{"texts": ["good"]}] * 6))  # 6 more at once: over the limit of 2
            time.sleep(held_s)
        finally:
            hold.set()
        answers = [f.result(timeout=30) for f in admitted]
        after = post({"texts": texts[2]})
    for r in burst:
        assert r.status_code == 429 and r.headers["content-type"] == "application/json"
        assert "\n" not in r.text and r.json() == {
            "error": "too many requests in flight (at most 2, --max-concurrent-requests); retry later"}
    for r, e in zip([*answers, after], expected):
        assert r.status_code == 200 and r.json()["predictions"] == e
    assert metrics.requests == {("/predict", "429"): 6, ("/predict", "200"): 3}
    assert metrics.errors == {"overloaded": 6} and metrics.in_flight == 0
    # the queued request waited for the held model call, and that call took at least as long as it was held
    assert metrics.queue_wait.count == 3 and metrics.queue_wait.sum >= held_s
    assert metrics.inference.count == 3 and metrics.inference.sum >= held_s


def test_max_concurrent_requests_default_is_shown_in_info(predictor):
    # a bad value: tests/test_serving.py's LIMIT_ERRORS and test_serve_option_errors_are_one_line
    app = create_app(predictor, api_key="")

    async def go():
        async with serving(app) as c:
            return (await c.get("/info")).json()

    assert asyncio.run(go())["server"]["max_concurrent_requests"] == 512


# ---------------------------------------------------------------------------------------------- metrics


def test_queue_and_inference_histograms_in_metrics(predictor):
    app = create_app(predictor, max_wait_ms=20, api_key="")
    requests = [sentences(1 + i % 3, seed=500 + i) for i in range(12)]

    async def go():
        async with serving(app) as c:
            answers = await asyncio.gather(*(c.post("/predict", json={"texts": t}) for t in requests))
            return answers, await c.get("/metrics")

    answers, scrape = asyncio.run(go())
    assert all(r.status_code == 200 for r in answers)
    text = scrape.text
    m = app.state.metrics
    for name, help_text in (("sweet_queue_duration_seconds", "waited in the batching queue"),
                            ("sweet_inference_duration_seconds", "model call that answered")):
        assert f"# TYPE {name} histogram" in text and help_text in text
        assert f'{name}_bucket{{le="+Inf"}} 12.0' in text and f"{name}_count 12.0" in text
    # one observation per request: the requests merged into one model call share its inference time
    assert m.batches < 12 and m.inference.count == m.queue_wait.count == 12
    assert 0 < m.model_seconds <= m.inference.sum * (1 + 1e-9)  # every model call counted once per request in it
    assert 0 <= m.queue_wait.sum and m.latency.count == 12
    # the other metrics keep their names
    for name in ("sweet_requests_total", "sweet_request_errors_total", "sweet_request_duration_seconds",
                 "sweet_items_total", "sweet_batch_size", "sweet_batches_total", "sweet_model_seconds_total",
                 "sweet_exit_samples_total", "sweet_cost_ratio", "sweet_in_flight_requests", "sweet_queued_rows"):
        assert f"# TYPE {name} " in text, name


def test_each_app_has_its_own_registry(predictor):
    from prometheus_client import REGISTRY

    first, second = create_app(predictor, api_key=""), create_app(predictor, api_key="")
    assert first.state.metrics.registry is not second.state.metrics.registry

    async def go():
        async with serving(first) as a, serving(second) as b:
            for _ in range(3):
                assert (await a.post("/predict", json={"texts": ["good", "bad"]})).status_code == 200
            return (await a.get("/metrics")).text, (await b.get("/metrics")).text

    one, other = asyncio.run(go())
    assert 'sweet_requests_total{route="/predict",status="200"} 3.0' in one and "sweet_items_total 6.0" in one
    assert 'route="/predict"' not in other and "sweet_items_total 0.0" in other
    assert "sweet_request_duration_seconds_count 0.0" in other and "sweet_queue_duration_seconds_count 0.0" in other
    assert first.state.metrics.items == 6 and second.state.metrics.items == 0
    assert not [n for n in REGISTRY._names_to_collectors if n.startswith("sweet_")]  # the process-wide one is untouched


def test_metrics_negotiate_openmetrics(predictor):
    app = create_app(predictor, api_key="")

    async def go():
        async with serving(app) as c:
            return await c.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})

    r = asyncio.run(go())
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n")


# ---------------------------------------------------------------------------------------------- OpenAPI, /docs


def test_openapi_and_docs_without_a_key(predictor, monkeypatch):
    monkeypatch.delenv("SWEET_API_KEY", raising=False)
    app = create_app(predictor)

    async def go():
        async with serving(app) as c:
            return await c.get("/openapi.json"), await c.get("/docs")

    spec, docs = asyncio.run(go())
    assert spec.status_code == 200 and docs.status_code == 200
    s = spec.json()
    assert set(s["paths"]) == {"/predict", "/healthz", "/info", "/metrics"}
    post = s["paths"]["/predict"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/TextsRequest"}
    assert set(post["responses"]) == {"200", "400", "401", "413", "429", "500", "503"}  # never FastAPI's 422
    schemas = s["components"]["schemas"]
    request = schemas["TextsRequest"]
    assert request["required"] == ["texts"] and request["additionalProperties"] is False
    assert (request["properties"]["texts"]["minItems"], request["properties"]["texts"]["maxItems"]) == (1, 256)
    policy = request["properties"]["policy"]["anyOf"][0]
    assert policy["enum"] == ["confidence", "entropy", "patience", "learned"]
    assert set(schemas["Prediction"]["properties"]) == {"label", "label_id", "exit_layer", "confidence", "score"}
    assert "HTTPValidationError" not in schemas and "securitySchemes" not in s.get("components", {})
    assert docs.headers["content-type"].startswith("text/html") and "/openapi.json" in docs.text


def test_openapi_and_docs_need_the_key_when_one_is_set(predictor):
    app = create_app(predictor, api_key="s3cret-key")
    auth = {"Authorization": "Bearer s3cret-key"}

    async def go():
        async with serving(app) as c:
            return ([await c.get(p) for p in ("/openapi.json", "/docs")],
                    [await c.get(p, headers={"Authorization": "Bearer nope"}) for p in ("/openapi.json", "/docs")],
                    [await c.get(p, headers=auth) for p in ("/openapi.json", "/docs")])

    without, wrong, right = asyncio.run(go())
    for r in without + wrong:
        assert r.status_code == 401 and r.json() == {"error": "missing or wrong API key: send 'Authorization: Bearer KEY'"}
        assert r.headers["www-authenticate"] == "Bearer"
    spec, docs = right
    assert spec.status_code == 200 and docs.status_code == 200
    assert spec.json()["components"]["securitySchemes"] == {"HTTPBearer": {"type": "http", "scheme": "bearer"}}
    assert all(spec.json()["paths"][p][m].get("security") == [{"HTTPBearer": []}]
               for p in ("/predict", "/info", "/metrics") for m in spec.json()["paths"][p])
    assert app.state.metrics.requests == {("/openapi.json", "401"): 2, ("/docs", "401"): 2,
                                          ("/openapi.json", "200"): 1, ("/docs", "200"): 1}


def test_pair_task_schema_and_docs_under_a_mount(tmp_path):
    from fastapi import FastAPI

    app = create_app(sweet.load(make_run(tmp_path / "rte", "rte", ("entailment", "not_entailment"))),
                     max_items=8, api_key="")
    outer = FastAPI()
    outer.mount("/sweet", app)

    async def go():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=outer)
            async with httpx.AsyncClient(transport=transport, base_url="http://sweet.test", timeout=60) as c:
                return await c.get("/sweet/openapi.json"), await c.get("/sweet/docs")

    spec, docs = asyncio.run(go())
    pairs = spec.json()["components"]["schemas"]["PairsRequest"]["properties"]["pairs"]
    assert pairs["maxItems"] == 8 and (pairs["items"]["minItems"], pairs["items"]["maxItems"]) == (2, 2)
    assert "'/sweet/openapi.json'" in docs.text or '"/sweet/openapi.json"' in docs.text


# ---------------------------------------------------------------------------------------------- refusals


def documented_refusals() -> dict[str, tuple[int, str]]:
    """case -> (status, message) from docs/errors.md's table of refused requests."""
    text = ERRORS_MD.read_text(encoding="utf-8")
    section = text.split("## `sweet serve`: refused requests", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(r"S\d+", cells[0]):
            out[cells[1].strip("`")] = (int(cells[3]), cells[4][1:-1])
    return out


def test_every_documented_refusal_is_answered_exactly_as_listed(predictor):
    documented = documented_refusals()
    assert set(documented) == {case for case, *_ in BAD_INPUTS}
    app = create_app(predictor, max_items=8, max_body_bytes=4096, api_key="")

    async def go():
        async with serving(app) as c:
            return {case: await c.post("/predict", content=raw, headers={"content-type": "application/json"})
                    for case, raw, *_ in BAD_INPUTS}

    for case, r in asyncio.run(go()).items():
        assert (r.status_code, r.json()) == (documented[case][0], {"error": documented[case][1]}), case


def test_the_first_problem_wins_in_a_fixed_order(predictor):
    app = create_app(predictor, max_items=2, api_key="")
    cases = [  # (body, expected message): several problems at once, the one the old hand-written checks saw first
        ({"texts": "x", "thresh": 1}, "unknown field(s) in request body: thresh; expected texts, threshold, policy"),
        ({"texts": ["a"], "pairs": [], "x": 1, "y": 2}, "unknown field(s) in request body: x, y; expected texts, threshold, policy"),
        ({"threshold": "high"}, 'request body needs "texts" (a list of strings)'),
        ({"texts": [1, 2, 3], "threshold": "x"}, 'too many items: 3 in "texts" (at most 2 per request; split the request)'),
        ({"texts": [1], "threshold": "x", "policy": 3}, '"threshold" must be a number in [0, 1], got a string'),
        ({"texts": [1], "threshold": 2, "policy": 3}, '"policy" must be a string, got a number'),
        ({"texts": [1], "threshold": 2, "policy": "fast"}, "threshold must be a number in [0, 1], got 2"),
        ({"texts": [1], "policy": "fast"}, "unknown exit policy 'fast'; choose one of: confidence, entropy, patience, learned"),
        ({"texts": [1], "policy": "learned"}, "this model has no learning-to-exit predictors"),
        ({"texts": ["ok", None]}, "item 1: sst2 expects a text per item, got None"),
        ({"texts": ["ok"], "threshold": None, "policy": None}, None),  # null: the server's defaults
        ({"texts": ["ok"], "threshold": 1}, None),  # an integer threshold is a number
    ]

    async def go():
        async with serving(app) as c:
            return [await c.post("/predict", json=body) for body, _ in cases]

    for (body, message), r in zip(cases, asyncio.run(go())):
        if message is None:
            assert r.status_code == 200, (body, r.text)
        else:
            assert r.status_code in (400, 413) and r.json()["error"].startswith(message), (body, r.json())


def test_any_content_type_is_read_as_json(predictor):
    """``curl -d`` sends application/x-www-form-urlencoded; the server reads the body as JSON whatever it says."""
    app = create_app(predictor, api_key="")
    raw = json.dumps({"texts": ["good", "bad"]}).encode()

    async def go():
        async with serving(app) as c:
            return [await c.post("/predict", content=raw, headers={"content-type": ct} if ct else {})
                    for ct in ("application/x-www-form-urlencoded", "text/plain", "application/json; charset=utf-8", None)]

    for r in asyncio.run(go()):
        assert r.status_code == 200 and r.json()["predictions"] == predictor.predict(["good", "bad"])
