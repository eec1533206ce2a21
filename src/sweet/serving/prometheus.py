"""Server metrics for ``GET /metrics``, kept by ``prometheus_client`` in one registry per app.

Every :class:`Metrics` owns its own :class:`~prometheus_client.CollectorRegistry`, so two apps in one process (two
runs mounted side by side, or tests) never share a counter. The collectors are thread-safe: requests update them
from the event loop, batches from the model thread. Exposed (all prefixed ``sweet_``):

* ``requests_total{route,status}``: every answered HTTP request, by endpoint (``/predict``, ``/healthz``, ``/info``,
  ``/metrics``, ``/openapi.json``, ``/docs``; ``unmatched`` for any path that is no endpoint, so the label set
  stays bounded) and status code (401, 404, 405, 413, 429 and 500 included);
* ``request_errors_total{reason}``: refused or failed ``/predict`` requests by reason (``bad_request``,
  ``too_large``, ``unauthorized``, ``overloaded``, ``unavailable``, ``internal``);
* ``request_duration_seconds``: latency histogram of answered ``/predict`` requests (body read to answer);
* ``queue_duration_seconds``: per ``/predict`` request, how long it waited in the batching queue for its model call;
* ``inference_duration_seconds``: per ``/predict`` request, how long the model call that answered it took (the
  requests merged into one call share it);
* ``items_total``: texts (or pairs) answered;
* ``batch_size``: histogram of rows per model call (a merged batch of requests);
* ``batches_total``, ``model_seconds_total``: model calls and the time spent in them;
* ``exit_samples_total{exit_layer}``: samples that left at each exit layer;
* ``cost_ratio``: realised cost ratio of every sample answered so far (:func:`sweet.cost.cost_ratio`: 1.0 is the
  full model for every sample; NaN before the first);
* ``in_flight_requests``, ``queued_rows``: gauges.

``prometheus_client`` also writes a ``_created`` timestamp next to each counter and histogram, as it does for
every counter.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from .. import cost

UNMATCHED_ROUTE = "unmatched"  # the route label of a request to a path that is no endpoint (404)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass(frozen=True)
class HistogramCounts:
    """A histogram's state: ``counts[i]`` observations in bucket ``i`` (not cumulative; the last one is above every
    bound), their ``sum`` and ``count``."""

    buckets: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float
    count: int


class Metrics:
    """What ``/metrics`` reports, in a registry of its own; thread-safe. The properties (``requests``, ``errors``,
    ``items``, ``batches``, ``batch_rows``, ...) read the current values back, for tests and callers."""

    def __init__(self, exit_layers: Sequence[int], method: str):
        self.exit_layers = [int(layer) for layer in exit_layers]
        self.method = method
        self.registry = r = CollectorRegistry()
        self._requests = Counter("sweet_requests", "Answered HTTP requests by endpoint (unmatched: no such endpoint) "
                                 "and status.", ["route", "status"], registry=r)
        self._errors = Counter("sweet_request_errors", "Refused or failed /predict requests by reason.", ["reason"],
                               registry=r)
        self._latency = Histogram("sweet_request_duration_seconds", "Latency of answered /predict requests.",
                                  buckets=LATENCY_BUCKETS, registry=r)
        self._queue = Histogram("sweet_queue_duration_seconds", "Seconds a /predict request waited in the batching "
                                "queue for its model call.", buckets=LATENCY_BUCKETS, registry=r)
        self._inference = Histogram("sweet_inference_duration_seconds", "Seconds of the model call that answered a "
                                    "/predict request (shared by the requests merged into it).",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self._items = Counter("sweet_items", "Texts (or pairs) answered.", registry=r)
        self._batch_rows = Histogram("sweet_batch_size", "Rows per model call (requests merged by dynamic batching).",
                                     buckets=BATCH_BUCKETS, registry=r)
        self._batches = Counter("sweet_batches", "Model calls.", registry=r)
        self._model_seconds = Counter("sweet_model_seconds", "Seconds spent in model calls.", registry=r)
        self._exits = Counter("sweet_exit_samples", "Samples that left at each exit layer.", ["exit_layer"], registry=r)
        for layer in self.exit_layers:  # every exit is listed from the start, at 0
            self._exits.labels(str(layer))
        cost_gauge = Gauge("sweet_cost_ratio", "Realised cost ratio of the samples answered so far (1 = full model; "
                           "NaN before the first).", registry=r)
        cost_gauge.set_function(lambda: math.nan if (c := self.cost_ratio()) is None else c)
        self._in_flight = Gauge("sweet_in_flight_requests", "/predict requests being answered.", registry=r)
        self._queued = Gauge("sweet_queued_rows", "Rows waiting for the model.", registry=r)

    # ------------------------------------------------------------------------------------------ updates

    def response_sent(self, route: str, status: int) -> None:
        """Count one answered HTTP request (any endpoint, any status); called for every response."""
        self._requests.labels(route, str(status)).inc()

    def request_done(self, seconds: float, reason: str | None = None) -> None:
        """A ``/predict`` request finished: its latency, or why it was refused (``reason``). Its status is counted
        by :meth:`response_sent`, with every other response."""
        if reason is not None:
            self._errors.labels(reason).inc()
        else:
            self._latency.observe(seconds)

    def items_answered(self, items: int) -> None:
        self._items.inc(items)

    def requests_queued(self, waits: Sequence[float]) -> None:
        """The requests of one model call leave the queue after waiting ``waits`` seconds each."""
        for seconds in waits:
            self._queue.observe(seconds)

    def batch_done(self, rows: int, seconds: float, exit_layers: Sequence[int], requests: int = 1) -> None:
        """One model call: ``rows`` rows of ``requests`` requests in ``seconds``; each row left at ``exit_layers``."""
        self._batches.inc()
        self._batch_rows.observe(rows)
        self._model_seconds.inc(seconds)
        for _ in range(requests):
            self._inference.observe(seconds)
        for layer, n in collections.Counter(exit_layers).items():
            self._exits.labels(str(layer)).inc(n)

    def add_in_flight(self, delta: int) -> None:
        self._in_flight.inc(delta)

    def add_queued(self, delta: int) -> None:
        self._queued.inc(delta)

    # ------------------------------------------------------------------------------------------ reading

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition (body, content type) for a scraper's ``Accept`` header: the Prometheus text format
        (0.0.4) unless it asks for OpenMetrics."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    @property
    def requests(self) -> dict[tuple[str, str], int]:
        """(route, status) -> answered requests."""
        return {(s.labels["route"], s.labels["status"]): int(s.value)
                for s in _samples(self._requests, "sweet_requests_total")}

    @property
    def errors(self) -> dict[str, int]:
        return {s.labels["reason"]: int(s.value) for s in _samples(self._errors, "sweet_request_errors_total")}

    @property
    def items(self) -> int:
        return int(self._value("sweet_items_total"))

    @property
    def batches(self) -> int:
        return int(self._value("sweet_batches_total"))

    @property
    def model_seconds(self) -> float:
        return self._value("sweet_model_seconds_total")

    @property
    def exits(self) -> list[int]:
        """Samples that left at each exit, in the order of ``exit_layers``."""
        by_layer = {s.labels["exit_layer"]: int(s.value) for s in _samples(self._exits, "sweet_exit_samples_total")}
        return [by_layer.get(str(layer), 0) for layer in self.exit_layers]

    @property
    def in_flight(self) -> int:
        return int(self._value("sweet_in_flight_requests"))

    @property
    def queued_rows(self) -> int:
        return int(self._value("sweet_queued_rows"))

    @property
    def latency(self) -> HistogramCounts:
        return _histogram(self._latency)

    @property
    def queue_wait(self) -> HistogramCounts:
        return _histogram(self._queue)

    @property
    def inference(self) -> HistogramCounts:
        return _histogram(self._inference)

    @property
    def batch_rows(self) -> HistogramCounts:
        return _histogram(self._batch_rows)

    def _value(self, sample: str) -> float:
        return self.registry.get_sample_value(sample)

    def cost_ratio(self) -> float | None:
        exits = self.exits
        return cost.cost_ratio(exits, self.exit_layers, self.method) if sum(exits) else None


def _samples(metric, name: str) -> list:
    """The samples called ``name`` of a labelled metric, one per label set."""
    return [s for family in metric.collect() for s in family.samples if s.name == name]


def _histogram(metric: Histogram) -> HistogramCounts:
    family = next(iter(metric.collect()))
    samples, name = family.samples, family.name
    cumulative = [(s.labels["le"], s.value) for s in samples if s.name == name + "_bucket"]
    counts, previous = [], 0.0
    for _, running in cumulative:
        counts.append(int(running - previous))
        previous = running
    bounds = tuple(float(le) for le, _ in cumulative if le != "+Inf")
    total = next(s.value for s in samples if s.name == name + "_sum")
    return HistogramCounts(bounds, tuple(counts), total, int(previous))
