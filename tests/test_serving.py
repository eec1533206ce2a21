"""``sweet serve`` (issue #13): the HTTP API, dynamic batching, bad input, the API key, SIGTERM, Ray Serve, loadtest.

The model is a tiny random BERT whose weights are scaled so that its exits disagree and inputs leave at different
exits for different thresholds and policies (so answering a request with another request's threshold, policy or
rows would show). Servers started here bind 127.0.0.1 on a free port and are always stopped; every request loop
is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import sweet  # noqa: E402
from sweet.errors import SweetError  # noqa: E402
from sweet.serving import create_app  # noqa: E402
from sweet.serving.loadtest import wait_until_ready  # noqa: E402

from .conftest import VOCAB, WORDS_NEG, WORDS_NEUTRAL, WORDS_POS, tiny_model  # noqa: E402


POLICY_MIX = [(None, None), (0.6, "confidence"), (0.95, "confidence"), (0.9, "entropy"), (0.95, "entropy"),
              (0.5, "patience"), (1.0, None), (0.0, None)]


def make_run(path: Path, task: str = "sst2", labels: tuple[str, ...] = ("negative", "positive")) -> Path:
    """A run directory (model/ only) holding a random tiny BERT with strongly scaled weights (spread-out
    confidences, so exits and labels vary with the input, the threshold and the policy)."""
    from transformers import BertTokenizer

    tok = BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)}, do_lower_case=True)
    model = tiny_model("bert", "early_exit", exit_layers=(1, 2, 4), num_labels=len(labels), seed=0, task=task,
                       label_names=list(labels), pooling="mean")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, prm in model.named_parameters():
            if name.startswith("backbones"):
                prm.add_(torch.randn(prm.shape, generator=g) * 0.3)
            elif name.startswith("heads") and prm.dim() == 2:
                prm.copy_(torch.randn(prm.shape, generator=g))
    model.save_pretrained(path / "model", tokenizer=tok)
    return path


@pytest.fixture(scope="module")
def sst2_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("serve") / "sst2")


@pytest.fixture(scope="module")
def rte_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("serve") / "rte", "rte", ("entailment", "not_entailment"))


@pytest.fixture(scope="module")
def predictor(sst2_run):
    return sweet.load(sst2_run, threshold=0.9)


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = rng.sample(WORDS_NEUTRAL, rng.randint(1, 8)) + [rng.choice(WORDS_POS + WORDS_NEG)]
        rng.shuffle(words)
        out.append(" ".join(words))
    return out


@asynccontextmanager
async def serving(app):
    """The app with its lifespan (batching worker started, drained at the end) and an in-process client."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sweet.test", timeout=60) as client:
            yield client


def body(**fields) -> bytes:
    return json.dumps(fields).encode()


# ---------------------------------------------------------------------------------------------- schema


def same_answers(got: list[dict], expected: list[dict]) -> bool:
    """Equal labels and exit layers, the same fields, and probabilities equal up to float32 rounding: a merged batch
    has another shape than the request alone, and matrix kernels sum in an order that depends on the shape
    (differences of ~1e-7 seen)."""
    def close(a, b):
        return a == pytest.approx(b, abs=2e-6)

    return len(got) == len(expected) and all(
        set(g) == set(e) and (g["label"], g["label_id"], g["exit_layer"]) == (e["label"], e["label_id"], e["exit_layer"])
        and close(g["confidence"], e["confidence"]) and close(g.get("score", 0.0), e.get("score", 0.0))
        for g, e in zip(got, expected))


def test_request_response_schema_and_endpoints(sst2_run, predictor):
    app = create_app(predictor, api_key="")
    texts = sentences(5, seed=1)

    async def go():
        async with serving(app) as c:
            r = await c.post("/predict", json={"texts": texts})
            health = await c.get("/healthz")
            info = await c.get("/info")
            metrics = await c.get("/metrics")
            return r, health, info, metrics

    r, health, info, metrics = asyncio.run(go())
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    preds = r.json()["predictions"]
    assert list(r.json()) == ["predictions"] and len(preds) == 5
    for p in preds:
        assert set(p) == {"label", "label_id", "exit_layer", "confidence"}
        assert p["label"] == ["negative", "positive"][p["label_id"]]
        assert p["exit_layer"] in (1, 2, 4) and 0.5 <= p["confidence"] <= 1.0
    assert preds == predictor.predict(texts)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    i = info.json()
    for key in ("task", "labels", "method", "exit_layers", "precision", "device", "threshold", "policy"):
        assert key in i, key
    assert (i["task"], i["labels"], i["exit_layers"], i["threshold"]) == ("sst2", ["negative", "positive"], [1, 2, 4], 0.9)
    assert i["server"]["max_batch_size"] == 64 and i["server"]["batching"] is True
    text = metrics.text
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    for route in ("/predict", "/healthz", "/info"):  # /metrics counts itself once it has answered
        assert f'sweet_requests_total{{route="{route}",status="200"}} 1' in text
    assert "sweet_items_total 5" in text
    assert 'sweet_request_duration_seconds_bucket{le="+Inf"} 1' in text
    counts = Counter(p["exit_layer"] for p in preds)
    for layer in (1, 2, 4):
        assert f'sweet_exit_samples_total{{exit_layer="{layer}"}} {counts[layer]}' in text
    from sweet.cost import cost_ratio

    expected_cost = cost_ratio([counts[layer] for layer in (1, 2, 4)], [1, 2, 4], "early_exit")
    line = next(ln for ln in text.splitlines() if ln.startswith("sweet_cost_ratio "))
    assert float(line.split()[1]) == pytest.approx(expected_cost)
    # with another policy, each answer also carries that policy's score
    async def other():
        async with serving(app) as c:
            return await c.post("/predict", json={"texts": texts, "policy": "entropy", "threshold": 0.8})

    other_preds = asyncio.run(other()).json()["predictions"]
    assert all(set(p) == {"label", "label_id", "exit_layer", "confidence", "score"} for p in other_preds)
    assert other_preds == predictor.predict(texts, threshold=0.8, policy="entropy")


def test_pairs_for_a_pair_task(rte_run):
    pred = sweet.load(rte_run)
    pairs = [[a, b] for a, b in zip(sentences(6, seed=2), sentences(6, seed=3))]
    app = create_app(pred, api_key="")

    async def go():
        async with serving(app) as c:
            ok = await c.post("/predict", json={"pairs": pairs, "threshold": 0.95})
            wrong_field = await c.post("/predict", json={"texts": sentences(2)})
            one = await c.post("/predict", json={"pairs": [["only one text"]]})
            three = await c.post("/predict", json={"pairs": [["a", "b", "c"]]})
            not_str = await c.post("/predict", json={"pairs": [["a", 3]]})
            return ok, wrong_field, one, three, not_str

    ok, wrong_field, one, three, not_str = asyncio.run(go())
    assert ok.status_code == 200
    assert ok.json()["predictions"] == pred.predict(pairs, threshold=0.95)
    assert {p["label"] for p in ok.json()["predictions"]} <= {"entailment", "not_entailment"}
    assert wrong_field.status_code == 400 and 'takes "pairs"' in wrong_field.json()["error"]
    assert one.status_code == 400 and "item 0: rte expects a pair of 2 texts" in one.json()["error"]
    assert three.status_code == 400 and "item 0" in three.json()["error"]
    assert not_str.status_code == 400 and "texts must be strings" in not_str.json()["error"]


# ---------------------------------------------------------------------------------------------- batching


def _concurrent_requests(n_clients: int, per_client: int, seed: int = 0) -> list[dict]:
    """Request bodies of 1..5 texts with a mix of thresholds and policies (some the server's defaults)."""
    rng = random.Random(seed)
    out = []
    for k in range(n_clients * per_client):
        threshold, policy = POLICY_MIX[k % len(POLICY_MIX)]
        req = {"texts": sentences(rng.randint(1, 5), seed=1000 + k)}
        if threshold is not None:
            req["threshold"] = threshold
        if policy is not None:
            req["policy"] = policy
        out.append(req)
    return out


@pytest.mark.parametrize("batching", [True, False], ids=["batching", "no-batching"])
def test_answers_equal_predict_under_32_concurrent_clients(predictor, batching):
    n_clients, per_client = 32, 3
    requests = _concurrent_requests(n_clients, per_client)
    expected = [predictor.predict(r["texts"], threshold=r.get("threshold"), policy=r.get("policy")) for r in requests]
    # the mix really differs: the same texts get other exits under other thresholds/policies
    assert len({(r.get("threshold"), r.get("policy")) for r in requests}) == len(POLICY_MIX)
    probe = requests[0]["texts"] * 1
    assert len({json.dumps(predictor.predict(probe, threshold=t, policy=p)) for t, p in POLICY_MIX}) > 3
    assert len({p["exit_layer"] for e in expected for p in e}) == 3
    app = create_app(predictor, max_batch_size=64, max_wait_ms=20, batching=batching, api_key="")

    async def go():
        async with serving(app) as c:
            async def client(i: int):
                answers = []
                for j in range(per_client):
                    k = i * per_client + j
                    r = await c.post("/predict", json=requests[k])
                    answers.append((k, r.status_code, r.json()))
                return answers

            results = await asyncio.gather(*(client(i) for i in range(n_clients)))
            return [a for res in results for a in res]

    answers = asyncio.run(go())
    assert len(answers) == len(requests)
    for k, status, payload in answers:
        assert status == 200, payload
        assert same_answers(payload["predictions"], expected[k]), f"request {k} ({requests[k].get('threshold')}, {requests[k].get('policy')})"
    m = app.state.metrics
    assert m.requests == {("/predict", "200"): len(requests)}
    assert m.items == sum(len(r["texts"]) for r in requests)
    assert m.batch_rows.sum == m.items
    if batching:  # concurrent requests were merged: far fewer model calls than requests, some of many rows
        assert m.batches < len(requests) / 2
        assert max(b for b, c in zip(m.batch_rows.buckets, m.batch_rows.counts) if c) >= 32
    else:  # one model call per request
        assert m.batches == len(requests)


def test_a_request_larger_than_the_batch_runs_alone_in_engine_batches(predictor):
    texts = sentences(50, seed=7)
    app = create_app(predictor, max_batch_size=8, max_wait_ms=1, api_key="")

    async def go():
        async with serving(app) as c:
            return await asyncio.gather(c.post("/predict", json={"texts": texts}),
                                        c.post("/predict", json={"texts": texts[:3], "threshold": 0.6}))

    big, small = asyncio.run(go())
    assert same_answers(big.json()["predictions"], predictor.predict(texts))
    assert same_answers(small.json()["predictions"], predictor.predict(texts[:3], threshold=0.6))


# ---------------------------------------------------------------------------------------------- bad input

LONG = "x" * 5000

BAD_INPUTS = [
    ("invalid-json", b'{"texts": ["good movie"', 400, "request body is not valid JSON"),
    ("not-an-object", b'["good movie"]', 400, "request body must be a JSON object"),
    ("empty-body", b"", 400, "request body is empty"),
    ("missing-texts", b"{}", 400, 'request body needs "texts"'),
    ("empty-texts", body(texts=[]), 400, '"texts" is empty'),
    ("texts-not-a-list", body(texts="good movie"), 400, '"texts" must be a list, got a string'),
    ("non-string-item", body(texts=["good movie", 5]), 400, "item 1: sst2 expects a text per item, got 5"),
    ("null-item", body(texts=[None]), 400, "item 0"),
    ("blank-item", body(texts=["good", "  "]), 400, "item 1: empty text"),
    ("pair-for-single-task", body(pairs=[["a", "b"]]), 400, 'takes "texts"'),
    ("pair-item-in-texts", body(texts=[["a", "b"]]), 400, "item 0: sst2 expects a text per item"),
    ("unknown-field", body(texts=["good"], thresh=0.5), 400, "unknown field(s) in request body: thresh"),
    ("threshold-above-one", body(texts=["good"], threshold=1.5), 400, "threshold must be a number in [0, 1], got 1.5"),
    ("threshold-negative", body(texts=["good"], threshold=-0.1), 400, "threshold must be a number in [0, 1], got -0.1"),
    ("threshold-nan", b'{"texts": ["good"], "threshold": NaN}', 400, "threshold must be a number in [0, 1], got nan"),
    ("threshold-string", body(texts=["good"], threshold="0.5"), 400, '"threshold" must be a number in [0, 1], got a string'),
    ("threshold-boolean", body(texts=["good"], threshold=True), 400, '"threshold" must be a number'),
    ("unknown-policy", body(texts=["good"], policy="fast"), 400, "unknown exit policy 'fast'"),
    ("policy-not-a-string", body(texts=["good"], policy=1), 400, '"policy" must be a string'),
    ("learned-policy-without-predictors", body(texts=["good"], policy="learned"), 400, "no learning-to-exit predictors"),
    ("too-many-items", body(texts=["good"] * 9), 413, "too many items: 9"),
    ("too-large-body", body(texts=[LONG]), 413, "request body too large"),
    ("non-utf8", b'{"texts": ["caf\xe9"]}', 400, "request body is not valid UTF-8 (byte offset 15)"),
    ("deeply-nested", b"[" * 2000 + b"]" * 2000, 400, "request body is not valid JSON (nested too deeply)"),
]


@pytest.mark.parametrize("raw,status,message", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gets_a_4xx_one_line_error_and_the_server_keeps_serving(predictor, raw, status, message):
    app = create_app(predictor, max_items=8, max_body_bytes=4096, api_key="")
    good = sentences(3, seed=5)

    async def go():
        async with serving(app) as c:
            bad = await c.post("/predict", content=raw, headers={"content-type": "application/json"})
            after = await c.post("/predict", json={"texts": good})
            return bad, after

    bad, after = asyncio.run(go())
    assert bad.status_code == status
    assert bad.headers["content-type"] == "application/json"
    assert "\n" not in bad.text and list(bad.json()) == ["error"]
    assert message in bad.json()["error"], bad.json()["error"]
    assert after.status_code == 200 and after.json()["predictions"] == predictor.predict(good)
    m = app.state.metrics
    assert m.requests == {("/predict", str(status)): 1, ("/predict", "200"): 1} and sum(m.errors.values()) == 1


def test_unknown_routes_and_methods_are_json_errors(predictor):
    app = create_app(predictor, api_key="")

    async def go():
        async with serving(app) as c:
            return await c.get("/predict"), await c.post("/nothing", json={}), await c.post("/predict", json={"texts": ["good"]})

    wrong_method, missing, ok = asyncio.run(go())
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {"error": "method not allowed: GET /predict; the endpoints are POST /predict, "
                                            "GET /healthz, GET /info, GET /metrics"}
    assert missing.status_code == 404 and missing.json()["error"].startswith("no endpoint POST /nothing; ")
    assert ok.status_code == 200


def test_metrics_count_every_answer_404_and_405_included(predictor, monkeypatch):
    monkeypatch.setenv("SWEET_API_KEY", "s3cret-key")
    app = create_app(predictor)
    auth = {"Authorization": "Bearer s3cret-key"}

    async def go():
        async with serving(app) as c:
            assert (await c.get("/predict", headers=auth)).status_code == 405
            assert (await c.delete("/metrics", headers=auth)).status_code == 405
            for i in range(3):  # any number of distinct unknown paths: one "unmatched" label
                assert (await c.post(f"/nothing/{i}", json={}, headers=auth)).status_code == 404
            assert (await c.get("/info")).status_code == 401
            assert (await c.get("/healthz")).status_code == 200
            assert (await c.post("/predict", json={"texts": ["good"]}, headers=auth)).status_code == 200
            assert (await c.post("/predict", json={"texts": []}, headers=auth)).status_code == 400
            return (await c.get("/metrics", headers=auth)).text

    text = asyncio.run(go())
    counted = {ln.split(" ")[0]: float(ln.split(" ")[1]) for ln in text.splitlines()  # prometheus_client writes 1.0
               if ln.startswith("sweet_requests_total{")}
    assert counted == {'sweet_requests_total{route="/predict",status="405"}': 1,
                       'sweet_requests_total{route="/metrics",status="405"}': 1,
                       'sweet_requests_total{route="unmatched",status="404"}': 3,
                       'sweet_requests_total{route="/info",status="401"}': 1,
                       'sweet_requests_total{route="/healthz",status="200"}': 1,
                       'sweet_requests_total{route="/predict",status="200"}': 1,
                       'sweet_requests_total{route="/predict",status="400"}': 1}
    assert app.state.metrics.requests[("/metrics", "200")] == 1  # the scrape itself, counted once it was answered
    assert 'sweet_request_duration_seconds_bucket{le="+Inf"} 1' in text  # latency: answered /predict requests only


def test_bad_request_interleaved_with_concurrent_good_ones(predictor):
    """Bad requests among concurrent good ones fail alone; no good request is lost or gets another's answer."""
    good = [sentences(2, seed=100 + i) for i in range(16)]
    expected = [predictor.predict(t) for t in good]
    app = create_app(predictor, max_wait_ms=20, api_key="")

    async def go():
        async with serving(app) as c:
            calls = []
            for i, t in enumerate(good):
                calls.append(c.post("/predict", json={"texts": t}))
                calls.append(c.post("/predict", json={"texts": t, "threshold": 7}))
            return await asyncio.gather(*calls)

    res = asyncio.run(go())
    for i in range(16):
        assert res[2 * i].status_code == 200 and same_answers(res[2 * i].json()["predictions"], expected[i])
        assert res[2 * i + 1].status_code == 400


def test_model_failure_is_a_500_and_the_server_keeps_serving(predictor, monkeypatch):
    app = create_app(predictor, api_key="")
    calls = {"n": 0}
    real = predictor.predict_encoded

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated failure")
        return real(*args, **kwargs)

    async def go():
        async with serving(app) as c:
            monkeypatch.setattr(predictor, "predict_encoded", flaky)
            first = await c.post("/predict", json={"texts": ["good"]})
            second = await c.post("/predict", json={"texts": ["good"]})
            return first, second

    first, second = asyncio.run(go())
    monkeypatch.undo()
    assert first.status_code == 500 and "simulated failure" in first.json()["error"]
    assert second.status_code == 200 and second.json()["predictions"] == predictor.predict(["good"])


# ---------------------------------------------------------------------------------------------- API key


def test_api_key_on(predictor, monkeypatch):
    monkeypatch.setenv("SWEET_API_KEY", "s3cret-key")
    app = create_app(predictor)  # the key comes from SWEET_API_KEY

    async def go():
        async with serving(app) as c:
            payload = {"texts": ["good"]}
            return {
                "none": await c.post("/predict", json=payload),
                "wrong": await c.post("/predict", json=payload, headers={"Authorization": "Bearer nope"}),
                "not-bearer": await c.post("/predict", json=payload, headers={"Authorization": "Basic s3cret-key"}),
                "right": await c.post("/predict", json=payload, headers={"Authorization": "Bearer s3cret-key"}),
                "info-none": await c.get("/info"),
                "metrics-none": await c.get("/metrics"),
                "info-right": await c.get("/info", headers={"Authorization": "Bearer s3cret-key"}),
                "healthz": await c.get("/healthz"),
            }

    r = asyncio.run(go())
    for name in ("none", "wrong", "not-bearer", "info-none", "metrics-none"):
        assert r[name].status_code == 401, name
        assert "API key" in r[name].json()["error"]
    assert r["none"].headers["www-authenticate"] == "Bearer"
    assert r["right"].status_code == 200 and r["right"].json()["predictions"] == predictor.predict(["good"])
    assert r["info-right"].status_code == 200 and r["info-right"].json()["server"]["api_key_required"] is True
    assert r["healthz"].status_code == 200
    assert app.state.metrics.errors == {"unauthorized": 3}


def test_api_key_off(predictor, monkeypatch):
    monkeypatch.delenv("SWEET_API_KEY", raising=False)
    off = create_app(predictor)
    monkeypatch.setenv("SWEET_API_KEY", "s3cret-key")
    explicit_off = create_app(predictor, api_key="")  # "" turns the environment's key off
    explicit_on = create_app(predictor, api_key="other")

    async def go(app, headers=None):
        async with serving(app) as c:
            return await c.post("/predict", json={"texts": ["good"]}, headers=headers or {})

    assert asyncio.run(go(off)).status_code == 200
    assert asyncio.run(go(explicit_off)).status_code == 200
    assert asyncio.run(go(explicit_on, {"Authorization": "Bearer s3cret-key"})).status_code == 401
    assert asyncio.run(go(explicit_on, {"Authorization": "Bearer other"})).status_code == 200


# ---------------------------------------------------------------------------------------------- real servers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def sweet_serve(run_dir: Path, *args: str, ready_timeout: float = 120.0, env_extra: dict | None = None):
    """``sweet serve RUN_DIR --port FREE ...`` as a subprocess (its own process group); yields (process, base URL)
    once /healthz answers; always stopped (SIGKILL to the group if it is still running at the end)."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    env.pop("SWEET_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "sweet.cli", "serve", str(run_dir), "--port", str(port),
                             "--threads", "1", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_ready(url, proc, timeout=ready_timeout)
        except SweetError as exc:
            pytest.fail(f"sweet serve: {exc}")
        yield proc, url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pass


@pytest.mark.slow
def test_sigterm_finishes_requests_in_flight_and_exits_0(sst2_run, predictor):
    # a long batching wait keeps the requests queued in the server when SIGTERM arrives
    requests = [sentences(3, seed=200 + i) for i in range(8)]
    expected = [predictor.predict(t) for t in requests]
    with sweet_serve(sst2_run, "--max-wait-ms", "1500", "--max-batch-size", "64") as (proc, url):
        with ThreadPoolExecutor(len(requests)) as pool:
            futures = [pool.submit(httpx.post, url + "/predict", json={"texts": t}, timeout=60) for t in requests]
            deadline = time.monotonic() + 20
            while "sweet_in_flight_requests 8" not in httpx.get(url + "/metrics", timeout=5).text:
                assert time.monotonic() < deadline, "the requests did not reach the server"
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            answers = [f.result(timeout=60) for f in futures]
        code = proc.wait(timeout=60)
        _, err = proc.communicate(timeout=10)
        assert code == 0, err[-2000:]
        for r, e in zip(answers, expected):
            assert r.status_code == 200
            assert same_answers(r.json()["predictions"], e)
        with pytest.raises(httpx.HTTPError):  # it no longer accepts connections
            httpx.post(url + "/predict", json={"texts": ["good"]}, timeout=5)


@pytest.mark.slow
def test_cli_serve_and_loadtest_end_to_end(sst2_run, predictor, tmp_path):
    from sweet.serving.loadtest import load_test

    texts = sentences(40, seed=300)
    with sweet_serve(sst2_run, "--threshold", "0.95", "--policy", "entropy") as (proc, url):
        r = httpx.post(url + "/predict", json={"texts": texts[:5]}, timeout=30)
        assert same_answers(r.json()["predictions"], predictor.predict(texts[:5], threshold=0.95, policy="entropy"))
        result = load_test(url, concurrency=8, requests=40, texts_per_request=2, duration_s=60, texts=texts)
        assert result["requests_ok"] == 40 and result["errors"] == 0 and result["requests_sent"] == 40
        assert result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"] <= result["max_ms"]
        assert result["texts_per_s"] == pytest.approx(2 * result["requests_per_s"])
        assert result["loadgen_cpu_s"] > 0
        # the CLI: JSON out, bounded by --duration-s even when --requests is far away
        out = tmp_path / "lt.json"
        cli = subprocess.run([sys.executable, "-m", "sweet.cli", "loadtest", url, "--concurrency", "2", "--requests",
                              "1000000", "--duration-s", "1.5", "--json", "--output", str(out)],
                             capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0, cli.stderr
        printed = json.loads(cli.stdout)
        assert printed == json.loads(out.read_text())
        assert printed["errors"] == 0 and 0 < printed["requests_sent"] < 1000000 and printed["wall_s"] < 30
        metrics = httpx.get(url + "/metrics", timeout=10).text
        assert 'sweet_requests_total{route="/predict",status="200"}' in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


@pytest.mark.slow
def test_loadtest_refuses_other_hosts_and_bad_limits():
    from sweet.serving.loadtest import check_loopback_url, load_test

    assert check_loopback_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/predict"
    assert check_loopback_url("http://localhost:9/predict") == "http://localhost:9/predict"
    assert check_loopback_url("http://[::1]:8000/") == "http://[::1]:8000/predict"
    assert check_loopback_url("http://127.3.4.5:80") == "http://127.3.4.5:80/predict"
    for url in ("http://10.0.0.1:8000", "http://example.com", "http://192.168.1.10", "ftp://127.0.0.1", "127.0.0.1:8000"):
        with pytest.raises(sweet.SweetError, match="loadtest"):
            load_test(url, requests=1)
    with pytest.raises(sweet.SweetError, match="must be positive"):
        load_test("http://127.0.0.1:9", concurrency=0)
    r = subprocess.run([sys.executable, "-m", "sweet.cli", "loadtest", "http://93.184.216.34:80", "--requests", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: loadtest only targets this machine (127.0.0.1, ::1 or localhost), got host '93.184.216.34'"


@pytest.mark.slow
def test_loadtest_without_a_server_is_a_one_line_error():
    from sweet.serving.loadtest import load_test

    port = free_port()
    expected = (f"no server is listening at http://127.0.0.1:{port}; start one with 'sweet serve RUN --port {port}' "
                "(RUN: a run directory), or give the URL of a running one")
    with pytest.raises(SweetError) as info:
        load_test(f"http://127.0.0.1:{port}", concurrency=2, requests=6, duration_s=10, timeout_s=5)
    assert str(info.value) == expected
    r = subprocess.run([sys.executable, "-m", "sweet.cli", "loadtest", f"http://127.0.0.1:{port}", "--requests", "5"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == f"error: {expected}\n"
    with pytest.raises(SweetError, match="bad port"):
        load_test("http://127.0.0.1:99999", requests=1)


@contextmanager
def answering_404():
    """A plain HTTP server on 127.0.0.1 (not sweet) that answers every request 404, in a thread; always stopped."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class NotFound(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            payload = b'{"detail": "Not Found"}'
            self.send_response(404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_loadtest_with_failed_requests_is_not_ok_and_says_why():
    from sweet.serving.loadtest import (EXIT_REQUESTS_FAILED, LoadtestFailed, check_load_test, format_load_test,
                                        load_test)

    with answering_404() as url:
        r = load_test(url, concurrency=2, requests=5, duration_s=20, timeout_s=5)
    assert (r["requests_sent"], r["requests_ok"], r["errors"], r["error_kinds"]) == (5, 0, 5, {"http_404": 5})
    assert r["ok"] is False and r["first_error"] == 'http_404: {"detail": "Not Found"}'
    line = format_load_test(r)
    assert line.startswith("0/5 requests ok, 5 errors (http_404: 5) in "), line
    with pytest.raises(LoadtestFailed) as info:
        check_load_test(r)
    assert isinstance(info.value, SweetError) and info.value.exit_code == EXIT_REQUESTS_FAILED == 1
    assert str(info.value) == ('5 of 5 requests failed (http_404: 5); is this a sweet server? loadtest sends POST '
                               '/predict; first error: http_404: {"detail": "Not Found"}')
    # no request sent at all (the duration ran out first) is not ok either
    with pytest.raises(LoadtestFailed, match="no request was sent"):
        check_load_test({**r, "requests_sent": 0, "requests_ok": 0, "errors": 0, "error_kinds": {}, "ok": False})
    ok = {**r, "requests_ok": 5, "errors": 0, "error_kinds": {}, "ok": True, "first_error": None}
    check_load_test(ok)
    assert format_load_test(ok).startswith("5/5 requests ok, 0 errors in ")


@pytest.mark.parametrize("args,message", [
    (["--port", "70000"], "port must be in 0..65535, got 70000"),
    (["--backend", "k8s"], "--backend must be local or ray, got 'k8s'"),
    (["--replicas", "2"], "--replicas needs --backend ray"),
    (["--threshold", "2"], "threshold must be a number in [0, 1], got 2.0"),
    (["--policy", "fast"], "unknown exit policy 'fast'"),
    (["--max-batch-size", "0"], "--max-batch-size must be positive, got 0"),
    (["--max-items", "0"], "--max-items must be positive, got 0"),
    (["--max-body-bytes", "-1"], "--max-body-bytes must be positive, got -1"),
    (["--max-wait-ms", "-1"], "--max-wait-ms must be a non-negative number, got -1.0"),
    (["--max-concurrent-requests", "0"], "--max-concurrent-requests must be positive, got 0"),
])
@pytest.mark.slow
def test_serve_option_errors_are_one_line(sst2_run, args, message):
    r = subprocess.run([sys.executable, "-m", "sweet.cli", "serve", str(sst2_run), "--port", "0", *args],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


LIMIT_ERRORS = [
    ({"max_batch_size": 0}, "--max-batch-size must be positive, got 0"),
    ({"max_wait_ms": -1.0}, "--max-wait-ms must be a non-negative number, got -1.0"),
    ({"max_wait_ms": float("nan")}, "--max-wait-ms must be a non-negative number, got nan"),
    ({"max_items": 0}, "--max-items must be positive, got 0"),
    ({"max_body_bytes": -1}, "--max-body-bytes must be positive, got -1"),
    ({"max_concurrent_requests": 0}, "--max-concurrent-requests must be positive, got 0"),
]


@pytest.mark.parametrize("options,message", LIMIT_ERRORS)
def test_the_app_checks_its_limits_once_before_loading_the_model(tmp_path, predictor, options, message):
    from sweet.serving.app import RequestLimits
    from sweet.serving.batcher import Batcher, BatchLimits

    missing_run = tmp_path / "no-such-run"  # loading it would fail with another message
    with pytest.raises(SweetError) as info:
        create_app(missing_run, **options)
    assert str(info.value) == message
    with pytest.raises(SweetError, match=message.split(" must")[0]):
        create_app(predictor, **options)
    # the batcher and the app each own their limits (typed, checked when made); the batcher trusts them
    owner = BatchLimits if {"max_batch_size", "max_wait_ms"} & set(options) else RequestLimits
    with pytest.raises(SweetError) as info:
        owner(**options)
    assert str(info.value) == message
    batcher = Batcher(predictor, None, BatchLimits(max_batch_size=3, max_wait_ms=0, batching=False))
    assert (batcher.max_batch_size, batcher.max_wait, batcher.batching) == (3, 0.0, False)


def test_serve_ray_refuses_bad_limits_before_starting_ray(tmp_path):
    from sweet.serving.server import serve_ray

    with pytest.raises(SweetError) as info:  # before the run directory is looked at or Ray is started
        serve_ray(tmp_path / "no-such-run", app_options={"max_items": 0, "api_key": ""})
    assert str(info.value) == "--max-items must be positive, got 0"


def test_limit_and_port_errors_are_listed_in_the_error_table_verbatim():
    table = (Path(__file__).parents[1] / "docs" / "errors.md").read_text(encoding="utf-8")
    for _, message in LIMIT_ERRORS[:2] + LIMIT_ERRORS[3:]:
        assert f"`{message}`" in table, message
    from sweet.serving.server import check_port_free

    with listening_socket() as port:
        with pytest.raises(SweetError) as info:
            check_port_free("127.0.0.1", port)
    assert f"`{str(info.value).replace(str(port), '8000')}`" in table
    from sweet.serving.loadtest import load_test

    port = free_port()
    with pytest.raises(SweetError) as info:
        load_test(f"http://127.0.0.1:{port}", requests=1)
    assert f"`{str(info.value).replace(str(port), '8000')}`" in table


@contextmanager
def listening_socket(host: str = "127.0.0.1", family: int = socket.AF_INET):
    """A socket listening on ``host`` on a free port, as a running server's would; yields the port."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, 0))
        s.listen()
        yield s.getsockname()[1]


def test_check_port_free_refuses_a_port_in_use_in_one_line():
    from sweet.serving.server import check_port_free

    with listening_socket() as port:
        for host in ("127.0.0.1", "localhost"):
            with pytest.raises(SweetError) as info:
                check_port_free(host, port)
            assert str(info.value) == (f"port {port} on {host} is already in use; pick another with --port N "
                                       "(or stop the process that listens there)")
            assert "\n" not in str(info.value)
    check_port_free("127.0.0.1", port)  # closed: free again (SO_REUSEADDR, as uvicorn binds)
    check_port_free("127.0.0.1", free_port())
    check_port_free("127.0.0.1", 0)  # any free port
    with pytest.raises(SweetError, match="port must be in 0..65535, got 70000"):
        check_port_free("127.0.0.1", 70000)
    with pytest.raises(SweetError, match="cannot serve on host 'no-such-host.invalid'"):
        check_port_free("no-such-host.invalid", 8000)


# ---------------------------------------------------------------------------------------------- Ray Serve


@pytest.mark.slow
def test_ray_serve_deployment_with_two_replicas(sst2_run, predictor):
    pytest.importorskip("ray.serve")
    requests = _concurrent_requests(16, 2, seed=9)
    expected = [predictor.predict(r["texts"], threshold=r.get("threshold"), policy=r.get("policy")) for r in requests]
    with sweet_serve(sst2_run, "--backend", "ray", "--replicas", "2", "--cpus-per-replica", "0.5",
                     ready_timeout=300) as (proc, url):
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda r: httpx.post(url + "/predict", json=r, timeout=120), requests))
            pids = set()
            deadline = time.monotonic() + 60
            while len(pids) < 2 and time.monotonic() < deadline:
                infos = list(pool.map(lambda _: httpx.get(url + "/info", timeout=60), range(16)))
                pids |= {i.json()["server"]["process_id"] for i in infos}
        for r, e in zip(answers, expected):
            assert r.status_code == 200, r.text
            assert same_answers(r.json()["predictions"], e)
        assert len(pids) == 2, pids  # two replicas answered
        bad = httpx.post(url + "/predict", json={"texts": []}, timeout=60)
        assert bad.status_code == 400 and '"texts" is empty' in bad.json()["error"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
