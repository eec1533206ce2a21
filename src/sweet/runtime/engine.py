"""The early-exit engine on ONNX Runtime: :class:`sweet.inference.EarlyExitEngine`'s design, with the exported
per-segment graphs instead of the torch model, and NumPy instead of torch.

Every row that reached a segment waits in that segment's queue; the queue is cut into full batches of
``batch_size`` rows, each re-padded to its longest row; the segment's graph runs; the exit policy decides at its
exit (:mod:`sweet.runtime.policies`, the same decisions as the torch policies); the rows that stay move on to the
next queue with their hidden states, each kept up to its own last token. Multi-Model folders hold one graph per
member: member k runs whole on the rows that reach it.

Needs onnxruntime and numpy only (the ``tokenizers`` library tokenises, :mod:`sweet.runtime.tokenize`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import SweetError, install_hint
from .manifest import ONNX_PRECISIONS, Manifest
from .policies import NumpyPolicy
from .result import BatchResult


def onnxruntime_missing() -> str | None:
    """None when onnxruntime imports; else the one-line reason, naming the extra that installs it."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return f"the ONNX runtime needs onnxruntime, which is not installed: {install_hint('onnx')}"
    return None


def session_options(threads: int | None):
    """ONNX Runtime session options: ``threads`` intra-op threads (None: its default), one inter-op thread,
    sequential execution, every graph optimization."""
    import onnxruntime as ort  # optional extra

    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


class OnnxGraphs:
    """One ONNX Runtime session per exit graph of an exported folder, at one precision (fp32 or int8)."""

    def __init__(self, folder: str | Path, manifest: Manifest, precision: str = "fp32", threads: int | None = None,
                 providers: Sequence | None = None):
        reason = onnxruntime_missing()
        if reason:
            raise SweetError(reason)
        import onnxruntime as ort  # optional extra

        if precision not in ONNX_PRECISIONS:
            raise SweetError(f"the ONNX runtime runs fp32 or int8, not {precision!r}; choose --precision fp32 or int8")
        if precision not in manifest.precisions:
            raise SweetError(f"{folder} holds no {precision} graphs (it has {', '.join(manifest.precisions)}); "
                             f"export with{'' if precision == 'int8' else 'out'} --int8"
                             + (" (sweet export RUN_DIR --format onnx --int8)" if precision == "int8" else ""))
        self.precision = precision
        self.threads = threads
        opts = session_options(threads)
        self.sessions = [ort.InferenceSession(str(Path(folder) / name), sess_options=opts,
                                              providers=list(providers or ["CPUExecutionProvider"]))
                         for name in manifest.precisions[precision]]
        self.input_names = [[i.name for i in s.get_inputs()] for s in self.sessions]


class OnnxEngine:
    """Predict with early exits on ONNX Runtime, in full batches at every depth.

    >>> engine = OnnxEngine(graphs, manifest, make_numpy_policy("confidence", manifest), threshold=0.9)
    >>> result = engine.predict(rows, batch_size=64)       # rows: TokenRows or sweet.encoding.Encoded
    """

    def __init__(self, graphs: OnnxGraphs, manifest: Manifest, policy: NumpyPolicy, threshold: float):
        self.graphs, self.manifest, self.policy = graphs, manifest, policy
        self.threshold = float(threshold)
        self.segmented = manifest.segmented
        self.num_exits = manifest.num_exits
        self.num_labels = manifest.num_labels
        self.needs_pooled = getattr(policy, "needs_pooled", False)

    # ------------------------------------------------------------------------------------------ public API

    def predict_batch(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None,
                      token_type_ids: np.ndarray | None = None) -> BatchResult:
        """One right-padded batch; later segments run on the rows that remain."""
        input_ids = np.asarray(input_ids, np.int64)
        mask = np.ones_like(input_ids) if attention_mask is None else np.asarray(attention_mask, np.int64)
        tt = None if token_type_ids is None else np.asarray(token_type_ids, np.int64)
        return self._run_window(input_ids, mask, tt, batch_size=max(len(input_ids), 1), sort=False)

    def predict(self, rows, batch_size: int = 64, sort_by_length: bool = True, window_batches: int = 16) -> BatchResult:
        """Predict every row (``input_ids`` lists, ``token_type_ids`` lists or None); results in input order.
        Windows of ``batch_size * window_batches`` rows bound the memory, as in the torch engine."""
        n = len(rows)
        lengths = np.fromiter((len(x) for x in rows.input_ids), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable") if sort_by_length else np.arange(n)
        window = max(1, batch_size * max(1, window_batches))
        out = BatchResult.empty(n, self.num_labels)
        for start in range(0, n, window):
            idx = order[start : start + window]
            ids, mask, tt = self._pad(rows, idx, lengths)
            res = self._run_window(ids, mask, tt, batch_size=batch_size, sort=sort_by_length)
            out.exit_index[idx], out.label[idx], out.score[idx], out.probabilities[idx] = (
                res.exit_index, res.label, res.score, res.probabilities)
        return out

    # ------------------------------------------------------------------------------------------ internals

    def _pad(self, rows, idx: np.ndarray, lengths: np.ndarray):
        width = int(lengths[idx].max()) if len(idx) else 1
        ids = np.full((len(idx), width), self.manifest.pad_token_id, np.int64)
        mask = np.zeros((len(idx), width), np.int64)
        tt = np.zeros((len(idx), width), np.int64) if rows.token_type_ids is not None else None
        for j, r in enumerate(idx):
            k = int(lengths[r])
            ids[j, :k] = rows.input_ids[r]
            mask[j, :k] = 1
            if tt is not None:
                tt[j, :k] = rows.token_type_ids[r]
        return ids, mask, tt

    def _run_window(self, input_ids, attention_mask, token_type_ids, batch_size: int, sort: bool) -> BatchResult:
        n = input_ids.shape[0]
        out = BatchResult.empty(n, self.num_labels)
        if n == 0:
            return out
        # the last used column of each row (right padding: its length); a row's hidden state is kept up to it
        cols = np.arange(attention_mask.shape[1])
        widths = np.maximum(((attention_mask != 0) * (cols + 1)).max(1), 1)
        state = self.policy.init_state(n)
        alive = np.arange(n)
        stored: dict[int, np.ndarray] = {}  # row -> hidden state entering the next segment
        for s in range(self.num_exits):
            if len(alive) == 0:
                break
            queue = alive[np.argsort(-widths[alive], kind="stable")] if sort else alive
            survivors, next_stored = [], {}
            hand_on = self.segmented and s < self.num_exits - 1
            for b in range(0, len(queue), batch_size):
                rows = queue[b : b + batch_size]
                width = int(widths[rows].max())
                feed = {"attention_mask": attention_mask[rows, :width]}
                if s == 0 or not self.segmented:
                    feed["input_ids"] = input_ids[rows, :width]
                    if "token_type_ids" in self.graphs.input_names[s]:
                        feed["token_type_ids"] = (token_type_ids[rows, :width] if token_type_ids is not None
                                                  else np.zeros_like(feed["input_ids"]))
                else:
                    hidden = np.zeros((len(rows), width, self.manifest.hidden_size), np.float32)
                    for j, r in enumerate(rows.tolist()):
                        h = stored[r]
                        hidden[j, : len(h)] = h
                    feed["hidden"] = hidden
                names = ["logits", *(["pooled"] if self.needs_pooled else []), *(["hidden_out"] if hand_on else [])]
                outputs = dict(zip(names, self.graphs.sessions[s].run(names, feed)))
                keep, state = self._apply_exit(s, outputs["logits"], outputs.get("pooled"), rows, state, out)
                kept = rows[keep]
                if len(kept) and s < self.num_exits - 1:
                    survivors.append(kept)
                    if hand_on:
                        h = outputs["hidden_out"]
                        for j, r in zip(np.nonzero(keep)[0].tolist(), kept.tolist()):
                            next_stored[r] = h[j, : int(widths[r])]
            alive = np.concatenate(survivors) if survivors else np.zeros(0, np.int64)
            stored = next_stored
        assert (out.exit_index >= 0).all()
        return out

    def _apply_exit(self, i: int, logits: np.ndarray, pooled, rows: np.ndarray, state, out: BatchResult):
        """Exit ``i`` on a batch of ``rows``: record the rows that leave; return (keep-mask, window state)."""
        logits = logits.astype(np.float32, copy=False)
        sub = self.policy.select_state(state, rows) if state is not None else None
        score, sub = self.policy.score(i, logits, pooled, sub)
        state = self.policy.assign_state(state, rows, sub) if state is not None else None
        last = i == self.num_exits - 1
        leave = np.ones(len(rows), bool) if last else self.policy.should_exit(score, self.threshold)
        if leave.any():
            idx = rows[leave]
            out.exit_index[idx] = i
            out.label[idx] = logits[leave].argmax(-1)
            out.score[idx] = score[leave]
            out.probabilities[idx] = self.policy.probabilities(i, logits[leave])
        return ~leave, state
