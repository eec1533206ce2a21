"""``sweet serve`` and ``sweet loadtest``: a trained run over HTTP, and a bounded load test of it (loopback)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import SweetError, install_hint, one_line
from .base import app
from .options import (
    NON_NEGATIVE,
    POSITIVE,
    DefaultThreshold,
    Device,
    Policy,
    Precision,
    Runtime,
    Threads,
    one_of,
)


def need_serving_packages(*names: str) -> None:
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        raise SweetError(f"this command needs {', '.join(missing)}: {install_hint('serve')}")


@app.command()
def serve(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by 'sweet train' (or its model/ directory).")],
    host: Annotated[str, typer.Option(help="Address to bind (127.0.0.1: this machine only; 0.0.0.0 exposes the server to the network, set SWEET_API_KEY then).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar=NON_NEGATIVE, help="TCP port (1-65535).")] = 8000,
    threshold: DefaultThreshold = None,
    policy: Policy = "confidence",
    task: Annotated[Optional[str], typer.Option(help="Task (default: the one the model was trained on).")] = None,
    device: Device = "auto",
    precision: Precision = "auto",
    runtime: Runtime = "torch",
    max_batch_size: Annotated[int, typer.Option(metavar=POSITIVE, help="Most rows per model call; concurrent requests are merged up to it.")] = 64,
    max_wait_ms: Annotated[float, typer.Option(help="How long the oldest queued request may wait for others to join its batch (ms, >= 0).")] = 5.0,
    batching: Annotated[bool, typer.Option("--batching/--no-batching", help="Merge concurrent requests (--no-batching: one model call per request).")] = True,
    max_items: Annotated[int, typer.Option(metavar=POSITIVE, help="Most texts (or pairs) per request; more is refused with 413.")] = 256,
    max_body_bytes: Annotated[int, typer.Option(metavar=POSITIVE, help="Largest request body in bytes; larger is refused with 413.")] = 1 << 20,
    max_concurrent_requests: Annotated[int, typer.Option(metavar=POSITIVE, help="Most /predict requests in flight; past it a request is refused at once with 429 (backpressure: the client retries later). Ray: per replica.")] = 512,
    threads: Threads = None,
    backend: Annotated[str, typer.Option(**one_of(("local", "ray"), lambda v: f"--backend must be local or ray, got {v!r}"),
                                         help="'local' (one uvicorn process) or 'ray' (a Ray Serve deployment of --replicas replicas).")] = "local",
    replicas: Annotated[int, typer.Option(metavar=POSITIVE, help="Ray: number of replicas (each loads the model and batches on its own).")] = 1,
    cpus_per_replica: Annotated[float, typer.Option(help="Ray: CPUs reserved per replica.")] = 1.0,
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster to join ('auto', 'ray://host:10001'); default: $RAY_ADDRESS, else a local Ray instance.")] = None,
) -> None:
    """Serve a trained run over HTTP: POST /predict with a JSON body {"texts": ["...", ...]} (pair tasks: "pairs", a
    list of two-text lists), GET /healthz, /info, /metrics, and the OpenAPI schema at /openapi.json and /docs. Concurrent requests
    are batched dynamically. With $SWEET_API_KEY set, requests need 'Authorization: Bearer KEY'. SIGTERM: finish the requests in
    flight, then exit 0."""
    need_serving_packages("fastapi", "uvicorn", "prometheus_client")
    # optional extra (fastapi, uvicorn, ray): imported only when the command runs
    from ..serving.server import (
        LOOPBACK_HOSTS,
        announce,
        check_port_free,
        serve_local,
        serve_ray,
    )

    check_port_free(host, port)  # before the model is loaded (seconds): a busy port fails at once
    if backend == "local" and replicas != 1:
        raise SweetError("--replicas needs --backend ray (the local backend is one process)")
    if threads is not None and runtime == "torch":  # ONNX Runtime takes them through load(threads=...)
        import torch  # not imported with --runtime onnxruntime: an ONNX-only image may have no torch

        torch.set_num_threads(threads)
    api_key = os.environ.get("SWEET_API_KEY") or None
    if host not in LOOPBACK_HOSTS and api_key is None:
        typer.echo(f"warning: serving on {host} without an API key: anyone who can reach it can use it (set SWEET_API_KEY)", err=True)
    app_options = dict(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, batching=batching, max_items=max_items,
                       max_body_bytes=max_body_bytes, max_concurrent_requests=max_concurrent_requests, api_key=api_key or "")
    load_options = dict(device=device, precision=precision, threshold=threshold, policy=policy, task=task,
                        runtime=runtime, **({"threads": threads} if runtime == "onnxruntime" else {}))
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    if backend == "ray":
        serve_ray(run_dir, host=host, port=port, replicas=replicas, cpus_per_replica=cpus_per_replica, threads=threads,
                  ray_address=ray_address, app_options=app_options, load_options=load_options,
                  on_ready=lambda: announce(f"sweet serve: {run_dir} on {url} (Ray Serve, {replicas} replica(s)); "
                                            "Ctrl-C or SIGTERM stops it"))
        return
    from ..serving.app import create_app

    app_ = create_app(run_dir, **app_options, **load_options)
    info = app_.state.predictor.info()
    batching_note = (f"up to {max_batch_size} rows / {format(max_wait_ms, 'g')} ms" if batching else "off")
    serve_local(app_, host=host, port=port,
                on_ready=lambda: announce(f"sweet serve: {run_dir} ({info['task']}, {info['method']}, {info['precision']} on "
                                          f"{info['device']}) on {url}; batching {batching_note}; "
                                          "Ctrl-C or SIGTERM stops it"))


@app.command()
def loadtest(
    url: Annotated[str, typer.Argument(help="The server (this machine only: 127.0.0.1, ::1 or localhost).")] = "http://127.0.0.1:8000",
    concurrency: Annotated[int, typer.Option(metavar=POSITIVE, help="Concurrent clients (each sends its next request when its answer arrives).")] = 8,
    requests: Annotated[int, typer.Option(metavar=POSITIVE, help="Requests to send in total (the test stops after them).")] = 200,
    texts_per_request: Annotated[int, typer.Option(metavar=POSITIVE, help="Texts (or pairs) per request.")] = 1,
    duration_s: Annotated[float, typer.Option(help="Stop sending after this many seconds even if requests are left.")] = 60.0,
    timeout_s: Annotated[float, typer.Option(help="Timeout of each request (counted as an error).")] = 30.0,
    texts: Annotated[Optional[Path], typer.Option(help="Text file, one text per line (pairs: two tab-separated texts); default: a few built-in sentences.")] = None,
    pairs: Annotated[bool, typer.Option(help="Send {'pairs': ...} (for a pair-task server).")] = False,
    threshold: Annotated[Optional[float], typer.Option(help="Send this threshold with every request (default: the server's).")] = None,
    output_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    output: Annotated[Optional[Path], typer.Option(help="Also write the JSON result to this file.")] = None,
) -> None:
    """Load-test a sweet server on this machine: throughput, p50/p95/p99 latency, errors, and the CPU time the
    load generator used. Bounded by --requests and --duration-s. Sends $SWEET_API_KEY as a bearer token if set.
    Exit code 0 when every request was answered, 1 when any failed, 2 when no server listens at URL."""
    need_serving_packages("httpx")
    # optional extra (httpx): imported only when the command runs
    from ..io import atomic_write_json
    from ..serving.loadtest import (
        LoadtestFailed,
        check_load_test,
        format_load_test,
        load_test,
        read_texts,
    )

    items = read_texts(str(texts), pairs) if texts is not None else None
    result = load_test(url, concurrency=concurrency, requests=requests, texts_per_request=texts_per_request,
                       duration_s=duration_s, timeout_s=timeout_s, texts=items, threshold=threshold,
                       api_key=os.environ.get("SWEET_API_KEY") or None, pairs=pairs)
    if output is not None:
        atomic_write_json(output, result)
    typer.echo(json.dumps(result, indent=2) if output_json else format_load_test(result))
    try:
        check_load_test(result)  # a load test whose requests failed is a failed command
    except LoadtestFailed as exc:
        typer.echo(f"error: {one_line(exc)}", err=True)
        raise typer.Exit(exc.exit_code)
