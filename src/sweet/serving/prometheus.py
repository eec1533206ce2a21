"""Server metrics in the Prometheus text exposition format (``GET /metrics``), without a client library.

Counters and histograms are updated from the event loop (requests) and from the model thread (batches, exits),
so every update takes one lock. Exposed (all prefixed ``sweet_``):

* ``requests_total{route,status}``: every answered HTTP request, by endpoint (``/predict``, ``/healthz``, ``/info``,
  ``/metrics``; ``unmatched`` for any path that is no endpoint, so the label set stays bounded) and status code
  (401, 404, 405, 413 and 500 included);
* ``request_errors_total{reason}``: refused or failed ``/predict`` requests by reason (``bad_request``,
  ``too_large``, ``unauthorized``, ``internal``);
* ``request_duration_seconds``: latency histogram of answered ``/predict`` requests (body read to answer);
* ``items_total``: texts (or pairs) answered;
* ``batch_size``: histogram of rows per model call (a merged batch of requests);
* ``batches_total``, ``model_seconds_total``: model calls and the time spent in them;
* ``exit_samples_total{exit_layer}``: samples that left at each exit layer;
* ``cost_ratio``: realised cost ratio of every sample answered so far (:func:`sweet.cost.cost_ratio`: 1.0 is the
  full model for every sample);
* ``in_flight_requests``, ``queued_rows``: gauges.
"""

from __future__ import annotations

import bisect
import threading
from typing import Sequence

from .. import cost

UNMATCHED_ROUTE = "unmatched"  # the route label of a request to a path that is no endpoint (404)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Histogram:
    def __init__(self, buckets: Sequence[float]):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # last: above every bucket (+Inf only)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, c in zip(self.buckets, self.counts):
            running += c
            out.append(f'{name}_bucket{{le="{_num(bound)}"}} {running}')
        out.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        out.append(f"{name}_sum {_num(self.sum)}")
        out.append(f"{name}_count {self.count}")
        return out


def _num(x: float) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


class Metrics:
    """What ``/metrics`` reports; thread-safe."""

    def __init__(self, exit_layers: Sequence[int], method: str):
        self.exit_layers = list(exit_layers)
        self.method = method
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = {}  # (route, status) -> answered requests
        self.errors: dict[str, int] = {}
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batch_rows = Histogram(BATCH_BUCKETS)
        self.items = 0
        self.batches = 0
        self.model_seconds = 0.0
        self.exits = [0] * len(self.exit_layers)
        self.in_flight = 0
        self.queued_rows = 0

    def response_sent(self, route: str, status: int) -> None:
        """Count one answered HTTP request (any endpoint, any status); called for every response."""
        key = (route, str(status))
        with self._lock:
            self.requests[key] = self.requests.get(key, 0) + 1

    def request_done(self, seconds: float, items: int = 0, reason: str | None = None) -> None:
        """A ``/predict`` request finished: its latency and items, or why it was refused (``reason``). Its status
        is counted by :meth:`response_sent`, with every other response."""
        with self._lock:
            if reason is not None:
                self.errors[reason] = self.errors.get(reason, 0) + 1
            else:
                self.latency.observe(seconds)
                self.items += items

    def batch_done(self, rows: int, seconds: float, exit_layers: Sequence[int]) -> None:
        index = {layer: i for i, layer in enumerate(self.exit_layers)}
        with self._lock:
            self.batches += 1
            self.batch_rows.observe(rows)
            self.model_seconds += seconds
            for layer in exit_layers:
                self.exits[index[layer]] += 1

    def add_in_flight(self, delta: int) -> None:
        with self._lock:
            self.in_flight += delta

    def add_queued(self, delta: int) -> None:
        with self._lock:
            self.queued_rows += delta

    def cost_ratio(self) -> float | None:
        return cost.cost_ratio(self.exits, self.exit_layers, self.method) if sum(self.exits) else None

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP sweet_requests_total Answered HTTP requests by endpoint (unmatched: no such endpoint) "
                     "and status.", "# TYPE sweet_requests_total counter"]
            lines += [f'sweet_requests_total{{route="{route}",status="{status}"}} {n}'
                      for (route, status), n in sorted(self.requests.items())]
            lines += ["# HELP sweet_request_errors_total Refused or failed /predict requests by reason.",
                      "# TYPE sweet_request_errors_total counter"]
            lines += [f'sweet_request_errors_total{{reason="{k}"}} {v}' for k, v in sorted(self.errors.items())]
            lines += ["# HELP sweet_request_duration_seconds Latency of answered /predict requests.",
                      "# TYPE sweet_request_duration_seconds histogram", *self.latency.lines("sweet_request_duration_seconds")]
            lines += ["# HELP sweet_items_total Texts (or pairs) answered.", "# TYPE sweet_items_total counter",
                      f"sweet_items_total {self.items}"]
            lines += ["# HELP sweet_batch_size Rows per model call (requests merged by dynamic batching).",
                      "# TYPE sweet_batch_size histogram", *self.batch_rows.lines("sweet_batch_size")]
            lines += ["# HELP sweet_batches_total Model calls.", "# TYPE sweet_batches_total counter",
                      f"sweet_batches_total {self.batches}",
                      "# HELP sweet_model_seconds_total Seconds spent in model calls.",
                      "# TYPE sweet_model_seconds_total counter", f"sweet_model_seconds_total {_num(self.model_seconds)}"]
            lines += ["# HELP sweet_exit_samples_total Samples that left at each exit layer.",
                      "# TYPE sweet_exit_samples_total counter"]
            lines += [f'sweet_exit_samples_total{{exit_layer="{layer}"}} {c}' for layer, c in zip(self.exit_layers, self.exits)]
            cost = self.cost_ratio()
            lines += ["# HELP sweet_cost_ratio Realised cost ratio of the samples answered so far (1 = full model; "
                      "NaN before the first).", "# TYPE sweet_cost_ratio gauge",
                      f"sweet_cost_ratio {'NaN' if cost is None else _num(cost)}"]
            lines += ["# HELP sweet_in_flight_requests /predict requests being answered.",
                      "# TYPE sweet_in_flight_requests gauge", f"sweet_in_flight_requests {self.in_flight}",
                      "# HELP sweet_queued_rows Rows waiting for the model.", "# TYPE sweet_queued_rows gauge",
                      f"sweet_queued_rows {self.queued_rows}"]
        return "\n".join(lines) + "\n"
