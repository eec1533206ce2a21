"""``sweet loadtest URL``: a bounded load generator for a sweet server on this machine.

``concurrency`` clients (asyncio tasks, each with its own httpx client and keep-alive connection) send
``POST /predict`` requests back to back (closed loop: a client sends its next request when its answer arrives)
until ``requests`` requests have been sent or ``duration_s`` seconds have passed, whichever comes first; every
request has a timeout. Each request carries ``texts_per_request`` texts taken in turn from the given texts.

Reported: requests and texts per second, latency percentiles (p50/p95/p99/max, per request), errors by kind,
and the CPU time this process used (user + system), because the load generator shares the machine with the server.
Only loopback targets are accepted (127.0.0.0/8, ::1, localhost): this is a benchmark tool, not a traffic generator.

Before the first request a TCP connect checks that a server listens at the URL; if none does, :func:`load_test`
raises a one-line :class:`SweetError` (the CLI exits 2). A test in which any request failed (or none was sent) is
not ``ok``: :func:`check_load_test` then raises :class:`LoadtestFailed` (the CLI prints the result, then that line,
and exits 1).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import time
from typing import Sequence
from urllib.parse import urlsplit

import numpy as np

from ..errors import SweetError, one_line
from ..io import decode_utf8

EXIT_REQUESTS_FAILED = 1  # `sweet loadtest`: some requests failed (bad input, e.g. no server, is 2 like every error)
DEFAULT_TEXTS = (
    "a gripping, funny and beautifully acted film",
    "tedious and far too long",
    "the plot makes no sense but the actors seem to enjoy themselves",
    "one of the best movies of the year",
    "i wanted to leave after twenty minutes",
    "a quiet, moving story that stays with you",
    "flat characters and a predictable ending",
    "it is neither good nor bad, just there",
)


def check_loopback_url(url: str) -> str:
    """The ``/predict`` URL for a server URL on this machine; anything else is a :class:`SweetError`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SweetError(f"loadtest URL must look like http://127.0.0.1:8000, got {url!r}")
    host = parts.hostname
    try:
        parts.port
    except ValueError:
        raise SweetError(f"loadtest URL has a bad port (0..65535), got {url!r}") from None
    loopback = host == "localhost"
    if not loopback:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
    if not loopback:
        raise SweetError(f"loadtest only targets this machine (127.0.0.1, ::1 or localhost), got host {host!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/predict"):
        path += "/predict"
    return f"{parts.scheme}://{parts.netloc}{path}"


def check_server_listening(url: str, timeout: float = 5.0) -> None:
    """A :class:`SweetError` unless a TCP connect to the server of ``url`` succeeds (nothing is sent)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    base = f"{parts.scheme}://{parts.netloc}"
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            pass
    except ConnectionRefusedError:
        raise SweetError(f"no server is listening at {base}; start one with 'sweet serve RUN --port {port}' "
                         "(RUN: a run directory), or give the URL of a running one") from None
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise SweetError(f"cannot connect to {base} ({reason}); is a server running there? start one with "
                         f"'sweet serve RUN --port {port}'") from None


class LoadtestFailed(SweetError):
    """Some requests of a load test failed, or none was sent. ``exit_code``: what ``sweet loadtest`` exits with
    (a plain :class:`SweetError`, bad input such as no server, is 2)."""

    exit_code = EXIT_REQUESTS_FAILED


def check_load_test(result: dict) -> None:
    """Raise :class:`LoadtestFailed` (one line: how many requests failed, why, and a hint) unless ``result`` (of
    :func:`load_test`) is ``ok``: at least one request sent and every one answered 200 with all its predictions."""
    if result["ok"]:
        return
    sent, errors, kinds = result["requests_sent"], result["errors"], result["error_kinds"]
    if sent == 0:
        raise LoadtestFailed(f"no request was sent within --duration-s {result['duration_limit_s']:g}")
    why = _error_kinds(kinds)
    hints = []
    if "http_401" in kinds:
        hints.append("the server needs its API key: set SWEET_API_KEY")
    if "http_404" in kinds or "http_405" in kinds:
        hints.append(f"is this a sweet server? loadtest sends POST {urlsplit(result['url']).path}")
    if result.get("first_error"):
        hints.append(f"first error: {result['first_error']}")
    message = f"{errors} of {sent} requests failed ({why})"
    raise LoadtestFailed(one_line("; ".join([message, *hints])))


def wait_until_ready(url: str, process=None, timeout: float = 60.0, interval: float = 0.25) -> None:
    """Poll ``URL/healthz`` until it answers 200. Raises SweetError if ``process`` (the server's
    ``subprocess.Popen``, optional) exits first, or after ``timeout`` seconds."""
    import httpx  # an optional extra (sweet[serve]); imported here so that `sweet --help` does not load it

    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            err = process.stderr.read() if process.stderr is not None else ""
            raise SweetError(f"the server exited with {process.returncode} before answering: {one_line(err[-2000:])}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SweetError(f"the server did not answer {url}/healthz within {timeout:.0f}s")
        time.sleep(interval)


def _error_kinds(kinds: dict) -> str:
    """``"http_404: 5, timeout: 1"``: the most frequent first."""
    return ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))


def _error_detail(response) -> str:
    """What a refused request's answer says: a sweet server's ``{"error": ...}``, else the start of the body."""
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300]




def read_texts(path: str | None, pairs: bool = False) -> list:
    """Texts for the requests: one per line of ``path`` (pairs: two tab-separated texts), blank lines skipped."""
    if path is None:
        n = len(DEFAULT_TEXTS)
        return [[DEFAULT_TEXTS[i], DEFAULT_TEXTS[(i + 1) % n]] for i in range(n)] if pairs else list(DEFAULT_TEXTS)
    try:
        raw = open(path, "rb").read()
    except OSError as exc:
        raise SweetError(f"cannot read texts file {path}: {exc.strerror}") from None
    lines = [ln for ln in decode_utf8(raw, str(path)).splitlines() if ln.strip()]
    if not lines:
        raise SweetError(f"{path}: no texts (one text per line)")
    if pairs:
        out = [ln.split("\t") for ln in lines]
        bad = next((i for i, p in enumerate(out) if len(p) != 2), None)
        if bad is not None:
            raise SweetError(f"{path}, line {bad + 1}: expected two tab-separated texts for a pair task")
        return out
    return lines


def _percentiles(values: Sequence[float]) -> dict:
    if not values:
        return {k: None for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms")}
    ms = np.asarray(values) * 1000.0
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()), "mean_ms": float(ms.mean())}


async def _run(url: str, texts: list, concurrency: int, requests: int, per_request: int, duration_s: float,
               timeout_s: float, threshold: float | None, api_key: str | None, field: str) -> dict:
    import httpx  # an optional extra (sweet[serve]); imported here so that `sweet --help` does not load it

    headers = {"content-type": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    extra = {} if threshold is None else {"threshold": threshold}
    bodies = []  # pre-serialised request bodies, cycled through (serialisation is not what is measured)
    n_bodies = max(1, min(requests, (len(texts) + per_request - 1) // per_request))
    for b in range(n_bodies):
        chunk = [texts[(b * per_request + j) % len(texts)] for j in range(per_request)]
        bodies.append(json.dumps({field: chunk, **extra}).encode())
    latencies: list[float] = []
    errors: dict[str, int] = {}
    first_error: list[str] = []  # the first failure, as said by the server (or the exception), for the report
    sent = 0
    done_texts = 0
    start = time.perf_counter()
    stop_at = start + duration_s

    def error(kind: str, detail: str = "") -> None:
        errors[kind] = errors.get(kind, 0) + 1
        if not first_error:
            first_error.append(one_line(f"{kind}: {detail}" if detail else kind)[:300])

    async def client_loop() -> None:
        nonlocal sent, done_texts
        # one client (one keep-alive connection) per simulated user: a shared pool of N connections costs
        # httpx O(N) work per request, which at 128 users made the load generator the main CPU consumer
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(limits=limits, timeout=timeout_s, headers=headers) as client:
            while sent < requests and time.perf_counter() < stop_at:
                i = sent
                sent += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post(url, content=bodies[i % len(bodies)])
                except httpx.TimeoutException:
                    error("timeout")
                    continue
                except httpx.HTTPError as exc:
                    error(type(exc).__name__, str(exc))
                    continue
                t1 = time.perf_counter()
                if r.status_code != 200:
                    error(f"http_{r.status_code}", _error_detail(r))
                    continue
                try:
                    n = len(r.json()["predictions"])
                except (ValueError, KeyError, TypeError):
                    error("bad_response")
                    continue
                if n != per_request:
                    error("wrong_count")
                    continue
                latencies.append(t1 - t0)
                done_texts += n

    cpu0, wall0 = os.times(), time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    wall, cpu1 = time.perf_counter() - wall0, os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    ok = len(latencies)
    return {
        "url": url, "concurrency": concurrency, "texts_per_request": per_request, "requests_limit": requests,
        "duration_limit_s": duration_s, "requests_sent": sent, "requests_ok": ok,
        "errors": sum(errors.values()), "error_kinds": errors, "wall_s": wall,
        "requests_per_s": ok / wall if wall > 0 else 0.0, "texts_per_s": done_texts / wall if wall > 0 else 0.0,
        **_percentiles(latencies), "loadgen_cpu_s": cpu, "loadgen_cpu_share": cpu / wall if wall > 0 else 0.0,
        "threshold": threshold, "ok": sent > 0 and ok == sent, "first_error": first_error[0] if first_error else None,
    }


def load_test(url: str, *, concurrency: int = 8, requests: int = 200, texts_per_request: int = 1,
              duration_s: float = 60.0, timeout_s: float = 30.0, texts: list | None = None,
              threshold: float | None = None, api_key: str | None = None, pairs: bool = False) -> dict:
    """Drive the server at ``url`` (loopback only) and measure it; see the module docstring. A
    :class:`SweetError` for bad options or when no server listens at ``url`` (checked before the first request);
    failed requests are counted in the result (``"ok"`` is false then: see :func:`check_load_test`)."""
    target = check_loopback_url(url)
    if concurrency < 1 or requests < 1 or texts_per_request < 1:
        raise SweetError(f"concurrency, requests and texts per request must be positive, got "
                         f"{concurrency}, {requests} and {texts_per_request}")
    if not duration_s > 0 or not timeout_s > 0:
        raise SweetError(f"duration and timeout must be positive seconds, got {duration_s} and {timeout_s}")
    if concurrency > 1024:
        raise SweetError(f"concurrency must be at most 1024, got {concurrency}")
    texts = list(texts) if texts else read_texts(None, pairs)
    check_server_listening(target, timeout=min(timeout_s, 5.0))
    return asyncio.run(_run(target, texts, concurrency, requests, texts_per_request, duration_s, timeout_s,
                            threshold, api_key, "pairs" if pairs else "texts"))


def format_load_test(r: dict) -> str:
    def ms(x):
        return "-" if x is None else f"{x:.1f}"

    kinds = f" ({_error_kinds(r['error_kinds'])})" if r["error_kinds"] else ""
    return (f"{r['requests_ok']}/{r['requests_sent']} requests ok, {r['errors']} errors{kinds} in "
            f"{r['wall_s']:.2f}s | concurrency {r['concurrency']} x {r['texts_per_request']} text(s)/request | "
            f"{r['requests_per_s']:.1f} req/s, {r['texts_per_s']:.1f} texts/s | latency ms p50 {ms(r['p50_ms'])} "
            f"p95 {ms(r['p95_ms'])} p99 {ms(r['p99_ms'])} max {ms(r['max_ms'])} | load generator CPU "
            f"{r['loadgen_cpu_s']:.2f}s ({100 * r['loadgen_cpu_share']:.0f}% of one core)")
