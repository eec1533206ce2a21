"""Dynamic batching: concurrent requests merged into one model call, run off the event loop in one thread.

Requests wait in a queue. The worker (an asyncio task) takes the oldest request and waits until the queue holds
``max_batch_size`` rows or the oldest request has waited ``max_wait_ms``; then it takes requests in arrival order
while they fit into ``max_batch_size`` rows (a request is never split; a single request larger than the limit runs
alone, cut into batches of ``max_batch_size`` by the engine) and hands them to the model thread.

In the model thread the merged rows are grouped by (threshold, policy). Each group is tokenised in one call and
run through :meth:`sweet.predictor.Predictor.predict_encoded` (the :class:`~sweet.inference.EarlyExitEngine`:
length-sorted, segment by segment, the rows that leave at an exit are dropped from the later segments), and the
answers are split back to their requests in request order. So requests with different thresholds or policies share
a queue turn and a model thread call, and requests with the same threshold and policy (the usual case: the
server's default) share the engine's batches. Each row's answer depends only on its own text, threshold and
policy (padding is masked), so a request gets what ``Predictor.predict`` gives for its texts alone.

Each request's wait in the queue (arrival to the start of its model call) and the time of the model call that
answered it go to the ``sweet_queue_duration_seconds`` and ``sweet_inference_duration_seconds`` histograms
(:mod:`~sweet.serving.prometheus`).

There is exactly one model thread: the engine's fallback for other encoders swaps the encoder's layer list while it
runs, so calls on one model must not overlap. ``batching=False`` runs one model call per request (for comparison).

The batcher's own limits are a :class:`BatchLimits`, checked once when it is made (``create_app`` makes it before
it loads the model); the batcher trusts it, and the requests it gets were checked by the app.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..data import Examples
from ..errors import SweetError
from .prometheus import Metrics


class ServerClosing(SweetError):
    """The server is shutting down and takes no new requests."""


@dataclass(frozen=True)
class BatchLimits:
    """How requests are merged: at most ``max_batch_size`` rows per model call, the oldest request waiting at most
    ``max_wait_ms`` for others to join; ``batching=False``: one model call per request. Checked here, once (the
    messages name the ``sweet serve`` options)."""

    max_batch_size: int = 64
    max_wait_ms: float = 5.0
    batching: bool = True

    def __post_init__(self) -> None:
        if not self.max_batch_size >= 1:
            raise SweetError(f"--max-batch-size must be positive, got {self.max_batch_size}")
        if not self.max_wait_ms >= 0:  # NaN too
            raise SweetError(f"--max-wait-ms must be a non-negative number, got {self.max_wait_ms}")


@dataclass
class _Job:
    texts: list[tuple[str, ...]]
    threshold: float
    policy: str
    future: asyncio.Future
    arrived: float
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        self.rows = len(self.texts)


class Batcher:
    """Queue + worker task + one model thread for a :class:`~sweet.predictor.Predictor`."""

    def __init__(self, predictor, metrics: Metrics, limits: BatchLimits = BatchLimits()):
        self.predictor = predictor
        self.metrics = metrics
        self.limits = limits
        self.max_batch_size = int(limits.max_batch_size)
        self.max_wait = float(limits.max_wait_ms) / 1000.0
        self.batching = bool(limits.batching)
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: asyncio.Task | None = None
        self._jobs: deque[_Job] = deque()
        self._rows = 0
        self._wake: asyncio.Event | None = None
        self._closing = False

    # ------------------------------------------------------------------------------------------ lifecycle

    def _ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._worker is not None and not self._worker.done():
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sweet-model")
        self._loop = loop
        self._wake = asyncio.Event()
        self._jobs = deque()  # jobs of a previous (closed) event loop cannot be answered any more
        self._rows = 0
        self._worker = loop.create_task(self._work(), name="sweet-batcher")

    async def start(self, warmup: bool = True) -> None:
        """Start the worker now (else on the first request); ``warmup`` runs one input through the model first,
        so that the first request does not pay for one-time initialisation."""
        self._closing = False
        self._ensure_started()
        if warmup:
            text = ("warm up",) * len(self.predictor.task.text_fields)
            await asyncio.get_running_loop().run_in_executor(self._executor, self.predictor.predict, [text])

    async def close(self) -> None:
        """Take no new requests, answer every queued one, then stop the worker and the model thread."""
        self._closing = True
        if self._worker is not None and self._loop is asyncio.get_running_loop():
            self._wake.set()
            await self._worker
        self._worker = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    # ------------------------------------------------------------------------------------------ requests

    async def submit(self, texts: list[tuple[str, ...]], threshold: float, policy: str) -> list[dict]:
        """Answers for ``texts`` (already checked), in order."""
        if self._closing:
            raise ServerClosing("the server is shutting down")
        self._ensure_started()
        loop = asyncio.get_running_loop()
        job = _Job(list(texts), float(threshold), policy, loop.create_future(), loop.time())
        self._jobs.append(job)
        self._rows += job.rows
        self.metrics.add_queued(job.rows)
        self._wake.set()
        return await job.future

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._jobs:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
            if self.batching:
                deadline = self._jobs[0].arrived + self.max_wait
                while self._rows < self.max_batch_size and not self._closing:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), left)
                    except asyncio.TimeoutError:
                        break
            batch = [self._jobs.popleft()]
            rows = batch[0].rows
            while self.batching and self._jobs and rows + self._jobs[0].rows <= self.max_batch_size:
                batch.append(self._jobs.popleft())
                rows += batch[-1].rows
            self._rows -= rows
            self.metrics.add_queued(-rows)
            batch = [j for j in batch if not j.future.done()]  # a cancelled request (client gone) is skipped
            if not batch:
                continue
            now = loop.time()
            self.metrics.requests_queued([now - j.arrived for j in batch])
            try:
                answers = await loop.run_in_executor(self._executor, self._run, batch)
            except Exception as exc:  # answered as a 500 by the app; the worker keeps serving
                for j in batch:
                    if not j.future.done():
                        j.future.set_exception(exc)
            else:
                for j, a in zip(batch, answers):
                    if not j.future.done():
                        j.future.set_result(a)

    # ------------------------------------------------------------------------------------------ model thread

    def _run(self, batch: list[_Job]) -> list[list[dict]]:
        start = time.perf_counter()
        p = self.predictor
        groups: dict[tuple[float, str], list[int]] = {}
        for i, job in enumerate(batch):
            groups.setdefault((job.threshold, job.policy), []).append(i)
        answers: list[list[dict]] = [[] for _ in batch]
        layers: list[int] = []
        for (threshold, policy), members in groups.items():
            texts = [t for i in members for t in batch[i].texts]
            enc = p.encode(Examples(texts, None, name="request"))
            rows = p.predict_encoded(enc, threshold, policy, batch_size=self.max_batch_size)
            layers += [r["exit_layer"] for r in rows]
            at = 0
            for i in members:
                answers[i] = rows[at : at + batch[i].rows]
                at += batch[i].rows
        self.metrics.batch_done(sum(j.rows for j in batch), time.perf_counter() - start, layers, requests=len(batch))
        return answers
