"""Load test of ``sweet serve`` against the offline throughput of the same predictor (issue #13).

    PYTHONPATH=src python benchmarks/serving.py RUN_DIR --texts-tsv ../shared/glue/SST-2/dev.tsv \
        --threads 1 --output docs/results/serving.json

1. Offline: the same run loaded with ``sweet.load`` (same device, precision, threshold, threads), on the same texts:
   (a) ``sweet bench``'s protocol at batch 64: pre-tokenised batches in dataset order through
   ``EarlyExitEngine.predict_batch`` (tokenisation not timed); (b) ``Predictor.predict`` on all texts (tokenisation
   included, length-sorted batches of 64). Median of ``--repeats``; measured before and after the load tests.
2. Servers: ``sweet serve`` with batching on and one with ``--no-batching``, both up for the whole run (an idle
   server uses no CPU), each load level run against one then the other, so both see the same background load.
   Load levels: concurrency 1, 8, 32, 128 with one text per request, and 32 clients x 16 texts per request;
   bounded by request count and ``--duration-s`` each; a short warm-up load first. The CPU time of the load
   generator (this process, during the load) and of the server process (from /proc) are recorded.
3. Optionally (``--ray``) the same loads against ``sweet serve --backend ray --replicas N``.

Only 127.0.0.1; every server is stopped at the end.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

LEVELS = [(1, 1, 200), (8, 1, 400), (32, 1, 600), (128, 1, 600), (32, 16, 150)]  # (concurrency, texts/request, requests)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children (from /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and all its live descendants (Ray: the driver, raylet, replicas, proxy)."""
    total, todo, seen = 0.0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            total += cpu_seconds(p)
            for t in Path(f"/proc/{p}/task").iterdir():
                children = (t / "children").read_text().split()
                todo += [int(c) for c in children]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def start_server(run_dir: str, threads: int, *extra: str, ready_timeout: float = 300.0):
    from sweet.errors import SweetError
    from sweet.serving.loadtest import wait_until_ready

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    env.pop("SWEET_API_KEY", None)
    cmd = [sys.executable, "-m", "sweet.cli", "serve", run_dir, "--port", str(port), "--threads", str(threads), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, proc, timeout=ready_timeout, interval=0.5)
    except SweetError:
        stop_server(proc)
        raise
    return proc, url, " ".join(["sweet", *cmd[3:]])


def stop_server(proc) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(timeout=30)
    return proc.returncode


class Offline:
    """The same run in this process (same device, precision, threshold, threads) on the same texts."""

    def __init__(self, run_dir: str, texts: list[str], threshold: float):
        import numpy as np

        import sweet
        from sweet.data import Examples
        from sweet.encoding import encode
        from sweet.inference import EarlyExitEngine

        self.p = p = sweet.load(run_dir, threshold=threshold)
        self.texts = texts
        enc = encode(p.tokenizer, Examples([(t,) for t in texts], None, name="dev"), p.max_length, warn=False)
        self.batches = []
        for i in range(0, len(enc), 64):
            b = p.collator(enc, np.arange(i, min(i + 64, len(enc))))
            b.pop("labels", None)
            self.batches.append(b)
        self.engine = EarlyExitEngine(p.model, p.get_policy(p.policy), threshold)
        for b in self.batches[:3]:
            self.engine.predict_batch(**b)

    def measure(self, repeats: int) -> dict:
        """(a) ``sweet bench``'s protocol at batch 64: pre-tokenised batches in dataset order through
        ``EarlyExitEngine.predict_batch`` (tokenisation not timed); (b) ``Predictor.predict`` on all texts
        (tokenisation included). Median of ``repeats`` passes each."""
        import torch

        from sweet.cost import cost_ratio

        bench, full = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for b in self.batches:
                self.engine.predict_batch(**b)
            bench.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            rows = self.p.predict(self.texts)
            full.append(time.perf_counter() - t0)
        layers = self.p.model.exit_layers
        counts = [sum(r["exit_layer"] == L for r in rows) for L in layers]
        n = len(self.texts)
        return {"n_texts": n, "threads": torch.get_num_threads(), "load_average": os.getloadavg(),
                "bench_protocol_texts_per_s": n / statistics.median(bench), "predict_texts_per_s": n / statistics.median(full),
                "bench_protocol_seconds": bench, "predict_seconds": full, "exit_counts": counts,
                "cost_ratio": cost_ratio(counts, layers, self.p.model.config.method)}


def load(url: str, server_pid: int, texts: list[str], concurrency: int, per_request: int, requests: int,
         duration_s: float, tree: bool = False) -> dict:
    from sweet.serving.loadtest import load_test

    cpu = tree_cpu_seconds if tree else cpu_seconds
    c0 = cpu(server_pid)
    r = load_test(url, concurrency=concurrency, requests=requests, texts_per_request=per_request,
                  duration_s=duration_s, timeout_s=120, texts=texts)
    r["server_cpu_s"] = cpu(server_pid) - c0
    r["load_average_after"] = os.getloadavg()
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--texts-tsv", required=True, help="GLUE TSV with a 'sentence' column (SST-2 dev.tsv)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration-s", type=float, default=120.0)
    ap.add_argument("--ray", action="store_true")
    ap.add_argument("--ray-replicas", type=int, default=2)
    ap.add_argument("--skip-local", action="store_true")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the request counts (e.g. 0.1 for a smoke run)")
    ap.add_argument("--output", required=True)
    a = ap.parse_args()
    levels = [(c, k, max(c, int(n * a.scale))) for c, k, n in LEVELS]

    import torch

    from sweet.experiments.store import machine

    torch.set_num_threads(a.threads)
    with open(a.texts_tsv, encoding="utf-8") as f:
        texts = [row["sentence"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    out_path = Path(a.output)
    result = json.loads(out_path.read_text()) if out_path.is_file() else {}
    result.update({"run_dir": a.run_dir, "texts": a.texts_tsv, "n_texts": len(texts), "threshold": a.threshold,
                   "threads": a.threads, "machine": {**machine(), "python": platform.python_version(),
                                                     "torch": torch.__version__},
                   "command": " ".join(["python", *sys.argv])})

    def save():
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=2) + "\n")

    off = Offline(a.run_dir, texts, a.threshold)
    result["info"] = off.p.info()

    def offline_now(label: str, key: str) -> dict:
        o = off.measure(a.repeats)
        o["before"] = label
        result[key].append(o)
        print("offline", f"bench protocol {o['bench_protocol_texts_per_s']:.1f} texts/s, predict "
              f"{o['predict_texts_per_s']:.1f} texts/s, load average {o['load_average'][0]:.1f}", flush=True)
        return o

    if not a.skip_local:
        result["offline_local"] = []
        servers = {}
        try:
            servers["batching"] = start_server(a.run_dir, a.threads, "--threshold", str(a.threshold))
            servers["no_batching"] = start_server(a.run_dir, a.threads, "--threshold", str(a.threshold), "--no-batching")
            result["server_commands"] = {k: v[2] for k, v in servers.items()}
            result["loads"] = []
            for mode, (proc, url, _) in servers.items():  # warm-up
                load(url, proc.pid, texts, 8, 1, 40, 60)
            for conc, per, n in levels:
                o = offline_now(f"{conc}x{per}", "offline_local")
                for mode, (proc, url, _) in servers.items():
                    r = load(url, proc.pid, texts, conc, per, n, a.duration_s)
                    r["mode"] = mode
                    r["offline_bench_protocol_texts_per_s"] = o["bench_protocol_texts_per_s"]
                    result["loads"].append(r)
                    print(mode, conc, per, f"{r['texts_per_s']:.1f} texts/s p50 {r['p50_ms']:.0f} p99 {r['p99_ms']:.0f} "
                          f"errors {r['errors']} loadgen cpu {r['loadgen_cpu_s']:.1f}s server cpu {r['server_cpu_s']:.1f}s",
                          flush=True)
                    save()
        finally:
            result["exit_codes"] = {mode: stop_server(s[0]) for mode, s in servers.items()}
        offline_now("end", "offline_local")
        save()
    if a.ray:
        result["offline_ray"] = []
        proc = None
        try:
            proc, url, cmd = start_server(a.run_dir, a.threads, "--threshold", str(a.threshold), "--backend", "ray",
                                          "--replicas", str(a.ray_replicas), "--cpus-per-replica", "1")
            result["ray_command"] = cmd
            result["ray_loads"] = []
            load(url, proc.pid, texts, 8, 1, 40, 60, tree=True)
            for conc, per, n in levels:
                o = offline_now(f"{conc}x{per}", "offline_ray")
                r = load(url, proc.pid, texts, conc, per, n, a.duration_s, tree=True)
                r["mode"] = f"ray_{a.ray_replicas}_replicas"
                r["offline_bench_protocol_texts_per_s"] = o["bench_protocol_texts_per_s"]
                result["ray_loads"].append(r)
                print("ray", conc, per, f"{r['texts_per_s']:.1f} texts/s p50 {r['p50_ms']:.0f} p99 {r['p99_ms']:.0f} "
                      f"errors {r['errors']}", flush=True)
                save()
        finally:
            if proc is not None:
                result["ray_exit_code"] = stop_server(proc)
            save()


def render(path: str) -> str:
    """The Markdown tables of a result JSON (``python benchmarks/serving.py render RESULT.json``)."""
    r = json.loads(Path(path).read_text())
    out = []

    def table(loads, title):
        out.append(f"#### {title}\n")
        out.append("| mode | clients | texts/request | requests ok / sent | errors | texts/s | x offline | p50 ms | p95 ms | "
                   "p99 ms | load generator CPU s (share of wall) | server CPU s | load avg |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for x in loads:
            ratio = x["texts_per_s"] / x["offline_bench_protocol_texts_per_s"]
            out.append(f"| {x['mode'].replace('_', ' ')} | {x['concurrency']} | {x['texts_per_request']} | "
                       f"{x['requests_ok']} / {x['requests_sent']} | {x['errors']} | {x['texts_per_s']:.1f} | {ratio:.2f} | "
                       f"{x['p50_ms']:.0f} | {x['p95_ms']:.0f} | {x['p99_ms']:.0f} | {x['loadgen_cpu_s']:.1f} "
                       f"({100 * x['loadgen_cpu_share']:.0f}%) | {x['server_cpu_s']:.1f} | {x['load_average_after'][0]:.1f} |")
        out.append("")

    for key, title in (("offline_local", "Offline, measured before each load level (local servers)"),
                       ("offline_ray", "Offline, measured before each load level (Ray Serve)")):
        if r.get(key):
            out.append(f"#### {title}\n")
            out.append("| before | sweet bench protocol, batch 64 (texts/s) | Predictor.predict incl. tokenisation (texts/s) | "
                       "cost ratio | load avg |")
            out.append("|---|---|---|---|---|")
            for o in r[key]:
                out.append(f"| {o['before']} | {o['bench_protocol_texts_per_s']:.1f} | {o['predict_texts_per_s']:.1f} | "
                           f"{o['cost_ratio']:.3f} | {o['load_average'][0]:.1f} |")
            out.append("")
    if r.get("loads"):
        table(r["loads"], "Local server (uvicorn), batching on and off")
    if r.get("ray_loads"):
        table(r["ray_loads"], "Ray Serve")
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "render":
        print(render(sys.argv[2]))
    else:
        main()
