"""Batched early-exit inference that actually skips work.

:class:`EarlyExitEngine` runs a batch through the model once, layer by layer. At each exit it applies the
exit policy, emits the rows that leave, and continues with the remaining rows only: hidden states,
attention masks and every other per-row tensor a layer receives (MPNet's position bias, the 4-D masks
of BERT/DeBERTa) are compacted. Multi-Model runs as a cascade: model *i* sees only the rows that no
earlier model was confident about (padding is trimmed to the longest remaining row).

How: forward pre-hooks on the encoder layers, as in :mod:`sweet.modeling`, so the model's own forward
(and its own attention-mask construction) is used unchanged for BERT-, MPNet- and DeBERTa-v2-style
encoders. When every row has left, the forward is stopped early.

The decisions are those of :func:`sweet.policies.decide` on the logits of every exit (the evaluation
path): the policy sees the same exits in the same order with the same per-row state (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .modeling import MultiExitModel, find_layer_list
from .policies import ExitPolicy


class _AllExited(Exception):
    """Raised inside the forward when no row is left, to skip the remaining layers."""


@dataclass
class BatchResult:
    exit_index: np.ndarray  # [B] index of the exit each row left at
    label: np.ndarray  # [B] predicted label id
    score: np.ndarray  # [B] the policy's score at that exit (the confidence, for ConfidencePolicy)
    probabilities: np.ndarray  # [B, K] class probabilities at that exit (temperature-scaled if the policy has T)

    def __len__(self) -> int:
        return len(self.label)


class _Collector:
    """Per-batch bookkeeping: which original rows are still running, and what the finished ones got."""

    def __init__(self, model: MultiExitModel, policy: ExitPolicy, threshold: float, batch_size: int):
        k = model.config.num_labels
        self.model, self.policy, self.threshold = model, policy, threshold
        self.last = model.num_exits - 1
        self.alive = torch.arange(batch_size)
        self.state = policy.init_state(batch_size)
        self.exit_index = np.full(batch_size, -1, dtype=np.int64)
        self.label = np.zeros(batch_size, dtype=np.int64)
        self.score = np.zeros(batch_size, dtype=np.float32)
        self.probs = np.zeros((batch_size, k), dtype=np.float32)

    def apply_exit(self, i: int, hidden: torch.Tensor, mask2d: torch.Tensor) -> torch.Tensor:
        """Run exit ``i`` on the alive rows, record those that leave; return the keep-mask (over alive rows)."""
        logits, pooled = self.model.heads[i](hidden, mask2d)
        score, self.state = self.policy.score(i, logits, pooled, self.state)
        leave = torch.ones_like(score, dtype=torch.bool) if i == self.last else self.policy.should_exit(score, self.threshold)
        if leave.any():
            rows = self.alive[leave].numpy()
            self.exit_index[rows] = i
            self.label[rows] = logits[leave].argmax(-1).numpy()
            self.score[rows] = score[leave].float().numpy()
            self.probs[rows] = self.policy.probabilities(i, logits[leave]).numpy()
        keep = ~leave
        if not keep.all():
            self.alive = self.alive[keep]
            self.state = self.policy.select_state(self.state, keep.nonzero().squeeze(1))
        return keep

    def result(self) -> BatchResult:
        assert (self.exit_index >= 0).all()
        return BatchResult(self.exit_index, self.label, self.score, self.probs)


class EarlyExitEngine:
    """Predict with early exits, in batches, doing only the work each row needs.

    >>> engine = EarlyExitEngine(model, ConfidencePolicy(model.config.temperatures), threshold=0.9)
    >>> result = engine.predict_batch(input_ids, attention_mask)
    """

    def __init__(self, model: MultiExitModel, policy: ExitPolicy, threshold: float):
        self.model = model.eval()
        self.policy = policy
        self.threshold = float(threshold)
        self.multi_model = model.config.method == "multi_model"
        if not self.multi_model:
            self.layers = find_layer_list(model.backbones[0])
            self.boundaries = {layer: i for i, layer in enumerate(model.exit_layers[:-1])}

    @torch.inference_mode()
    def predict_batch(self, input_ids, attention_mask=None, token_type_ids=None) -> BatchResult:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        col = _Collector(self.model, self.policy, self.threshold, input_ids.shape[0])
        if self.multi_model:
            self._cascade(col, input_ids, attention_mask, token_type_ids)
        else:
            self._early_exit(col, input_ids, attention_mask, token_type_ids)
        return col.result()

    def _cascade(self, col: _Collector, input_ids, attention_mask, token_type_ids) -> None:
        for i, backbone in enumerate(self.model.backbones):
            rows = col.alive
            width = int(attention_mask[rows].sum(1).max())  # trim padding to the longest remaining row
            mask = attention_mask[rows, :width]
            kwargs = self.model._backbone_kwargs(input_ids[rows, :width], mask,
                                                 None if token_type_ids is None else token_type_ids[rows, :width])
            hidden = backbone(**kwargs).last_hidden_state
            keep = col.apply_exit(i, hidden, mask)
            if not keep.any():
                return

    def _early_exit(self, col: _Collector, input_ids, attention_mask, token_type_ids) -> None:
        n0 = input_ids.shape[0]

        def compact(v):
            # per-row tensors of the original batch (masks, position bias) follow the alive rows
            if torch.is_tensor(v) and v.dim() >= 3 and v.shape[0] == n0 and len(col.alive) < n0:
                return v[col.alive]
            return v

        def hook(index):
            def pre_hook(module, args, kwargs):
                hidden = args[0] if args else kwargs["hidden_states"]
                if index in self.boundaries:
                    keep = col.apply_exit(self.boundaries[index], hidden, attention_mask[col.alive])
                    if not keep.any():
                        raise _AllExited
                    if not keep.all():
                        hidden = hidden[keep]
                rest = [compact(v) for v in (args[1:] if args else ())]
                kwargs = {k: compact(v) for k, v in kwargs.items() if k != "hidden_states"}
                if args:
                    return (hidden, *rest), kwargs
                return tuple(rest), {**kwargs, "hidden_states": hidden}

            return pre_hook

        first = self.model.exit_layers[0]
        handles = [self.layers[j].register_forward_pre_hook(hook(j), with_kwargs=True) for j in range(first, len(self.layers))]
        try:
            kwargs = self.model._backbone_kwargs(input_ids, attention_mask, token_type_ids)
            hidden = self.model.backbones[0](**kwargs).last_hidden_state
        except _AllExited:
            return
        finally:
            for h in handles:
                h.remove()
        col.apply_exit(self.model.num_exits - 1, hidden, attention_mask[col.alive])

    def predict(self, encoded, collator, batch_size: int = 64, sort_by_length: bool = True) -> BatchResult:
        """Predict every row of an :class:`~sweet.batching.Encoded` set; results in input order."""
        from .batching import sorted_batches

        n = len(encoded)
        lengths = encoded.lengths
        order = sorted_batches(lengths, batch_size) if sort_by_length else [
            np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
        out = None
        for rows in order:
            batch = collator(encoded, rows)
            batch.pop("labels", None)
            res = self.predict_batch(**batch)
            if out is None:
                out = BatchResult(np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.float32),
                                  np.zeros((n, res.probabilities.shape[1]), np.float32))
            out.exit_index[rows], out.label[rows], out.score[rows], out.probabilities[rows] = (
                res.exit_index, res.label, res.score, res.probabilities)
        return out
