"""Batched early-exit inference that actually skips work, with full batches at every depth.

:class:`EarlyExitEngine` runs rows through the model *segment by segment*: a segment is the run of layers from one
exit to the next (Multi-Model: one member model). Every row that reached a segment waits in that segment's queue;
the queue is cut into batches of ``batch_size`` rows (re-padded to the longest row of each batch), the segment
runs, the exit policy decides at the segment's exit, and the rows that stay move on to the next queue with their
hidden states. So batches stay full at every depth, not only at the first one: shrinking batches lose most of the
advantage of bf16/int8 matrix units (and of GPUs), because small matrices use them poorly.

* :meth:`EarlyExitEngine.predict` takes a whole set of rows (``Encoded``) and processes it in windows of
  ``batch_size * window_batches`` rows, so memory stays bounded for any input size.
* :meth:`EarlyExitEngine.predict_batch` takes one padded batch (e.g. what a server merged from concurrent
  requests); later segments then run on the rows that remain (compaction).

How a segment runs: for BERT (MiniLM included), MPNet and DeBERTa-v2 through explicit segment functions
(:class:`~sweet.modeling.SegmentRunner`): the embeddings are computed once, in segment 0; each segment then calls
its layers directly on the stored hidden states, with the attention mask and the relative-position tables its
encoder needs built once per batch from the attention mask (BERT under SDPA: the padding mask as a broadcast
view, not the [B, 1, T, T] tensor ``create_bidirectional_mask`` builds). No backbone forward, no hooks, no exception.
Each exit decides on the model's device with one softmax (:meth:`~sweet.policies.ExitPolicy.score_and_probabilities`);
its results (leave, label, score, probabilities) come to the host in one transfer per batch (on the CPU they are
read in place). An exit no row can take at the engine's threshold (:meth:`~sweet.policies.ExitPolicy.may_exit`:
threshold 1 under a policy without state) is skipped, head and policy, so at threshold 1 the engine does the full
model's work: its layers and the last head. The rows that go on keep their hidden states as the batches that produced them (one ``index_select`` per
source batch gathers the next batch). Other encoders fall back to the backbone's own forward with the encoder's
layer list temporarily replaced by the segment's layers, hooks substituting the stored hidden states and recording
the exit's representation, and an exception stopping the forward there (so it recomputes the embeddings and masks
per segment; DeBERTa-v2's convolution, which its encoder applies after layer 1 only, is switched off for segments
that start later). Either way exit ``s`` reads exactly what :mod:`sweet.modeling` hands exit head ``s``.

Padding: a row's hidden state is used up to its last unmasked position; a batch of a later segment is cut or
padded to its longest row, with every position past a row's length zeroed (padded positions are masked out of
attention and of mean pooling, but SDPA's CPU kernels round real positions slightly differently when they hold
values), so a row's numbers do not depend on its batch partners (tested: decisions equal those of the evaluation
path, :func:`sweet.policies.decide`, at the same precision).

Precision and device come from the model (:func:`sweet.precision.prepare_for_inference`): the engine moves each
batch to the model's device and compares float32 logits, so decisions use full-precision probabilities.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .modeling import MultiExitModel, SegmentRunner, find_layer_list
from .policies import ExitPolicy
from .precision import model_placement
from .runtime.result import BatchResult  # noqa: F401 (public here too: shared with the ONNX engine)


def _layer_list_owner(backbone: nn.Module) -> tuple[nn.Module, str]:
    """(parent module, attribute name) of the encoder's layer list, so that it can be swapped temporarily."""
    layers = find_layer_list(backbone)
    for name, mod in backbone.named_modules():
        for attr, child in mod.named_children():
            if child is layers:
                return mod, attr
    raise RuntimeError("layer list not found")  # find_layer_list found it, so this does not happen


def _assign_state(state, rows: torch.Tensor, sub):
    """Write the per-row policy state ``sub`` of ``rows`` back into the window's ``state`` (None, a tensor or a
    tuple/list of tensors indexed by row)."""
    if state is None:
        return None
    if torch.is_tensor(state):
        state[rows] = sub
        return state
    for full, part in zip(state, sub):
        full[rows] = part
    return state


class EarlyExitEngine:
    """Predict with early exits, in batches, doing only the work each row needs.

    >>> engine = EarlyExitEngine(model, ConfidencePolicy(model.config.temperatures), threshold=0.9)
    >>> result = engine.predict(encoded, collator, batch_size=64)        # a whole set, full batches at every depth
    >>> result = engine.predict_batch(input_ids, attention_mask)          # one batch, compacted as rows leave
    """

    def __init__(self, model: MultiExitModel, policy: ExitPolicy, threshold: float):
        self.model = model.eval()
        self.policy = policy
        self.threshold = float(threshold)
        # one shared backbone, run segment by segment with each row's hidden state handed on; else one model per
        # exit (Multi-Model), model i run whole on the rows that reach it
        self.segmented = model.method_spec.shares_backbone
        self.placement = model_placement(model)
        self.device = self.placement.device
        self.num_exits = model.num_exits
        # explicit segment functions where the encoder family is supported; else the backbone's own forward
        self.runner = SegmentRunner(model) if SegmentRunner.supports(model) else None
        if self.segmented and self.runner is None:
            backbone = model.backbones[0]
            self.layers = list(find_layer_list(backbone))
            self._owner, self._attr = _layer_list_owner(backbone)
            # segment s runs layers [start_s, end_s) (0-based); exit s reads the input of layer end_s
            ends = list(model.exit_layers)
            self.segments = list(zip([0, *ends[:-1]], ends))

    # ------------------------------------------------------------------------------------------ public API

    @torch.inference_mode()
    def predict_batch(self, input_ids, attention_mask=None, token_type_ids=None) -> BatchResult:
        """One padded batch; later segments run on the rows that remain."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        n = input_ids.shape[0]
        return self._run_window(input_ids, attention_mask, token_type_ids, batch_size=max(n, 1), sort=False)

    @torch.inference_mode()
    def predict(self, encoded, collator, batch_size: int = 64, sort_by_length: bool = True,
                window_batches: int = 16) -> BatchResult:
        """Predict every row of an :class:`~sweet.encoding.Encoded` set; results in input order.

        Rows are processed in windows of ``batch_size * window_batches`` rows; within a window every segment's
        queue is cut into full batches. ``sort_by_length`` orders rows by length first (less padding); without it
        rows keep their arrival order (what a benchmark of arriving requests should use)."""
        n = len(encoded)
        order = np.argsort(-encoded.lengths, kind="stable") if sort_by_length else np.arange(n)
        window = max(1, batch_size * max(1, window_batches))
        out = BatchResult.empty(n, self.model.config.num_labels)
        for start in range(0, n, window):
            rows = order[start : start + window]
            batch = collator(encoded, rows)
            batch.pop("labels", None)
            res = self._run_window(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                                   batch_size=batch_size, sort=sort_by_length)
            out.exit_index[rows], out.label[rows], out.score[rows], out.probabilities[rows] = (
                res.exit_index, res.label, res.score, res.probabilities)
        return out

    # ------------------------------------------------------------------------------------------ internals

    def _run_window(self, input_ids, attention_mask, token_type_ids, batch_size: int, sort: bool) -> BatchResult:
        n = input_ids.shape[0]
        out = BatchResult.empty(n, self.model.config.num_labels)
        if n == 0:
            return out
        # rows are selected on the CPU; each batch moves to the model's device when its segment runs
        input_ids, attention_mask = input_ids.cpu(), attention_mask.cpu()
        token_type_ids = None if token_type_ids is None else token_type_ids.cpu()
        with self.placement.no_autocast():
            return self._run_segments(input_ids, attention_mask, token_type_ids, batch_size, sort, out)

    def _run_segments(self, input_ids, attention_mask, token_type_ids, batch_size: int, sort: bool,
                      out: BatchResult) -> BatchResult:
        n = input_ids.shape[0]
        dev = self.device
        # the last used column of each row (right padding: its length); a row's hidden state is kept up to it
        cols = torch.arange(attention_mask.shape[1])
        widths = ((attention_mask != 0) * (cols + 1)).amax(1).clamp_min(1)
        state = self.policy.init_state(n)
        alive = torch.arange(n)
        store: _HiddenStore | None = None  # where each remaining row's hidden state (the next segment's input) is
        for s in range(self.num_exits):
            if len(alive) == 0:
                break
            queue = alive[torch.argsort(-widths[alive], stable=True)] if sort else alive
            survivors, next_store = [], _HiddenStore(n)
            last = s == self.num_exits - 1
            may_exit = self.policy.may_exit(s, self.threshold)
            for b in range(0, len(queue), batch_size):
                rows = queue[b : b + batch_size]
                width = int(widths[rows].max())
                mask = attention_mask[rows, :width].to(dev)
                hidden_in = store.gather(rows, width) if s > 0 and self.segmented else None
                if hidden_in is not None:
                    # zero each row past its own length: what a padded position holds is masked out of attention,
                    # yet SDPA's CPU kernels round real positions differently when it is not zero (seen: 1.5e-5 in
                    # a probability, against 1e-7), so a row's answer would depend on the batch it shares
                    hidden_in = hidden_in * mask[..., None].to(hidden_in.dtype)
                if self.runner is not None:
                    if s == 0:
                        tt = None if token_type_ids is None else token_type_ids[rows, :width].to(dev)
                        hidden_in = self.runner.embed(input_ids[rows, :width].to(dev), mask, tt)
                    hidden = self.runner.run(s, hidden_in, mask)
                else:
                    tt = None if token_type_ids is None else token_type_ids[rows, :width]
                    hidden = self._segment_via_forward(s, input_ids[rows, :width], mask, tt, hidden_in)
                if last or may_exit:
                    keep, state = self._apply_exit(s, hidden, mask, rows, state, out)
                else:  # no row can leave here at this threshold (ExitPolicy.may_exit): the exit is skipped
                    keep = np.ones(len(rows), dtype=bool)
                if last or not keep.any():
                    continue
                kept = rows[keep]
                survivors.append(kept)
                if self.segmented:
                    next_store.add(kept, hidden if keep.all() else hidden[torch.from_numpy(keep).to(hidden.device)])
            alive = torch.cat(survivors) if survivors else torch.zeros(0, dtype=torch.long)
            store = next_store
        assert (out.exit_index >= 0).all()
        return out

    def _apply_exit(self, i: int, hidden: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor, state,
                    out: BatchResult) -> tuple[np.ndarray, object]:
        """Exit ``i`` on a batch of ``rows``: record the rows that leave; return (keep-mask as numpy, window state).
        The decision is taken on the model's device, with one softmax per exit; off the CPU its results come to the
        host in one transfer (on the CPU the tensors are read in place, no copy)."""
        logits, pooled = self.model.heads[i](hidden, mask)
        logits = logits.float()
        sub = self.policy.select_state(state, rows) if state is not None else None
        score, probs, sub = self.policy.score_and_probabilities(i, logits, pooled, sub)
        state = _assign_state(state, rows, sub)
        last = i == self.num_exits - 1
        leave = None if last else self.policy.should_exit(score, self.threshold)
        if probs.device.type == "cpu":
            go = np.ones(len(rows), dtype=bool) if last else leave.numpy()
            if not go.any():
                return ~go, state
            label, score, probs = logits.argmax(-1).numpy(), score.float().numpy(), probs.numpy()
        else:
            if last:
                leave = torch.ones_like(score, dtype=torch.bool)
            packed = torch.cat([leave.to(probs.device, torch.float32)[:, None], logits.argmax(-1).float()[:, None],
                                score.to(probs.device, torch.float32)[:, None], probs], 1).cpu().numpy()
            go, label, score, probs = packed[:, 0] > 0, packed[:, 1].astype(np.int64), packed[:, 2], packed[:, 3:]
        if go.all():
            idx = rows.numpy()
            out.exit_index[idx], out.label[idx], out.score[idx], out.probabilities[idx] = i, label, score, probs
        else:
            idx = rows.numpy()[go]
            out.exit_index[idx], out.label[idx], out.score[idx], out.probabilities[idx] = (
                i, label[go], score[go], probs[go])
        return ~go, state

    def _segment_via_forward(self, s: int, ids, mask, tt, hidden_in) -> torch.Tensor:
        """Segment ``s`` of an encoder :class:`~sweet.modeling.SegmentRunner` does not support (or model ``s`` of a
        Multi-Model) on one batch, through the backbone's own forward; returns the exit's representation [B, W, d].

        The encoder's layer list is temporarily replaced by the segment's layers; a pre-hook on the first of them
        substitutes ``hidden_in``, a pre-hook on the layer after the segment records its input and stops the
        forward. DeBERTa-v2's convolution, which follows layer 1 only, is switched off for segments that start
        later."""
        dev = self.device
        kwargs = self.model._backbone_kwargs(ids.to(dev), mask, None if tt is None else tt.to(dev))
        if not self.segmented:
            return self.model.backbones[s](**kwargs).last_hidden_state
        start, end = self.segments[s]
        last = end >= len(self.layers)
        seg = self.layers[start : end if last else end + 1]
        captured: list[torch.Tensor] = []

        def substitute(module, args, kw):
            if args:
                return (hidden_in, *args[1:]), kw
            return args, {**kw, "hidden_states": hidden_in}

        def capture(module, args, kw):
            captured.append(args[0] if args else kw["hidden_states"])
            raise _SegmentDone

        handles = []
        if hidden_in is not None:
            handles.append(seg[0].register_forward_pre_hook(substitute, with_kwargs=True))
        if not last:
            handles.append(seg[-1].register_forward_pre_hook(capture, with_kwargs=True))
        original = getattr(self._owner, self._attr)
        conv = getattr(self._owner, "conv", None)
        try:
            setattr(self._owner, self._attr, nn.ModuleList(seg))
            if start > 0 and conv is not None:  # DeBERTa-v2: its convolution follows layer 1 only
                self._owner.conv = None
            out = self.model.backbones[0](**kwargs).last_hidden_state
        except _SegmentDone:
            out = captured[0]
        finally:
            setattr(self._owner, self._attr, original)
            if conv is not None:
                self._owner.conv = conv
            for h in handles:
                h.remove()
        return out


class _SegmentDone(Exception):
    """Raised inside the forward at the layer after a segment, to stop the forward there (fallback path)."""


class _HiddenStore:
    """The hidden states of the rows that go on to the next segment, kept as the batches that produced them
    ([k, W, d] tensors on the model's device, W the batch's width) plus, per row, its batch and position. A batch
    of the next segment gathers its rows with one ``index_select`` per source batch (rows of a batch come from one
    or two consecutive source batches, since queues keep their order), cut or zero-padded to the new width."""

    def __init__(self, n: int):
        self.chunks: list[torch.Tensor] = []
        self.chunk = np.full(n, -1, np.int64)
        self.pos = np.full(n, -1, np.int64)

    def add(self, rows: torch.Tensor, hidden: torch.Tensor) -> None:
        r = rows.numpy()
        self.chunk[r] = len(self.chunks)
        self.pos[r] = np.arange(len(r))
        self.chunks.append(hidden)

    def gather(self, rows: torch.Tensor, width: int) -> torch.Tensor:
        r = rows.numpy()
        chunk, pos = self.chunk[r], self.pos[r]
        # runs of consecutive rows from the same source batch, in order
        starts = np.flatnonzero(np.r_[True, chunk[1:] != chunk[:-1]])
        ends = np.r_[starts[1:], len(r)]
        parts = []
        for a, b in zip(starts, ends):
            src = self.chunks[int(chunk[a])]
            p = pos[a:b]
            if b - a == src.shape[0] and (p == np.arange(b - a)).all():
                part = src  # the whole source batch, in order
            else:
                part = src.index_select(0, torch.from_numpy(p).to(src.device))
            parts.append(_fit_width(part, width))
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def _fit_width(hidden: torch.Tensor, width: int) -> torch.Tensor:
    """``hidden`` [k, W, d] cut to ``width`` positions or zero-padded to it. Positions past a row's own length are
    masked out of attention (and of pooling); the engine zeroes them before the next segment runs (see
    ``_run_segments``), so that a row's numbers do not depend on the rows it shares a batch with."""
    w = hidden.shape[1]
    if w >= width:
        return hidden[:, :width]
    return torch.nn.functional.pad(hidden, (0, 0, 0, width - w))
