"""Partial ownership (``own@RHO``): each exit owns a fraction RHO of the attention heads and FFN units of its segment.

*Which units.* Segment ``i`` is the run of layers between exit ``i-1`` and exit ``i``. In every layer of segment
``i``, exit ``i`` owns the first ``round(RHO * n)`` of the layer's ``n`` attention heads and the first
``round(RHO * m)`` of its ``m`` FFN hidden units (halves round up: :func:`owned_count`). The choice is fixed by the
method name (``own@RHO``) and the backbone's shape, both saved in ``sweet_config.json``, so a model reloaded with
:meth:`~sweet.modeling.MultiExitModel.from_pretrained` has the same ownership; nothing is stored in the weights.
Which units (first or any other fixed subset) is immaterial for a pretrained encoder: its heads and FFN units have
no order.

*What an owned unit is.* A unit's output is its contribution to the residual stream through the layer's output
projection: for head ``h``, columns ``[h * d_head, (h + 1) * d_head)`` of the input of the attention output
projection (BERT and DeBERTa-v2: ``attention.output.dense``; MPNet: ``attention.attn.o``); for FFN unit ``u``,
column ``u`` of the input of the FFN output projection (``output.dense``). The unit's parameters are those only it
uses: its rows of the query, key and value projections (and DeBERTa-v2's ``pos_key_proj`` / ``pos_query_proj``
where present), or its row of ``intermediate.dense``, and its columns of the output projection. Everything else
(the output projections' biases, LayerNorms, the embeddings, encoder-level tables such as MPNet's
``relative_attention_bias`` and DeBERTa-v2's ``rel_embeddings``) is shared by all exits, as in Early-Exit.

*How deeper exits see them.* With the owned units' input columns ``c`` (the first ``c`` of the projection's
input), the projection is computed as ``F.linear(detach_prefix(x, c), detach_prefix(W, c), b)``
(:func:`sweet.gradients.detach_prefix`: identity forward, no gradient back through the first ``c`` entries of the
last dimension). The value is bit for bit the plain projection's; the gradient reaches neither the owned units (nor,
through them, the layers below) nor ``W``'s owned columns (detaching ``x`` alone would still train those).

*Two streams.* Exit ``i`` must see its own units live while deeper exits see them detached, which one graph cannot
give. So, segment by segment (:class:`~sweet.modeling.segments.SegmentRunner`; embeddings once):

* the *live* branch runs segment ``i`` on the trunk's input to segment ``i`` with its units live and feeds exit head
  ``i`` (exit ``i`` therefore sees the lower exits' owned units detached, and trains everything else below it as
  Early-Exit does);
* the *trunk* runs segment ``i`` again with its owned units detached and feeds segment ``i + 1``.

The last segment runs once, live. On the ladder [1, 2, 4, 6], layers 1-4 run twice in the forward and the backward.

*Dropout.* The live branch runs inside :func:`torch.random.fork_rng` (the CPU generator and the generator of the
hidden state's device), so it draws exactly the random numbers the trunk then draws: both see the same dropout
masks, and the random stream after the forward is the one a single Early-Exit pass leaves. Every exit's training
logits therefore equal Early-Exit's for the same weights and generator state (tested bit for bit), and training
is deterministic for a seed.

*When.* Only while autograd records (``torch.is_grad_enabled()``). Under ``torch.no_grad`` / ``inference_mode``
(evaluation, calibration, the engine, export) the model runs as Early-Exit, with the same forward values: own@RHO
costs nothing at inference. RHO = 0 (or a RHO that owns no unit of this shape) is Early-Exit's code path.

Encoders: BERT (MiniLM included), MPNet and DeBERTa-v2, the ones :class:`SegmentRunner` runs;
:meth:`Ownership.of` raises a :class:`~sweet.errors.SweetError` for any other when RHO > 0.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SweetError
from ..gradients import detach_prefix
from .segments import SegmentRunner


def owned_count(rho: float, n: int) -> int:
    """How many of ``n`` units a fraction ``rho`` owns: ``round(rho * n)``, halves rounding up."""
    return min(int(n), int(math.floor(float(rho) * int(n) + 0.5)))


class LayerParts(NamedTuple):
    """The modules of one encoder layer that ownership reads: the self-attention module (its head count and head
    size; its query/key/value rows are per head), the attention output projection, the FFN input projection (one
    row per unit) and the FFN output projection (one column per unit)."""

    attention: nn.Module
    attention_out: nn.Linear
    ffn_in: nn.Linear
    ffn_out: nn.Linear


def layer_parts(kind: str, layer: nn.Module) -> LayerParts:
    """:class:`LayerParts` of one layer of a ``kind`` encoder (a :data:`~sweet.modeling.segments.SUPPORTED_ENCODERS`
    family)."""
    if kind == "mpnet":
        attention, attention_out = layer.attention.attn, layer.attention.attn.o
    else:  # bert, deberta-v2
        attention, attention_out = layer.attention.self, layer.attention.output.dense
    return LayerParts(attention, attention_out, layer.intermediate.dense, layer.output.dense)


@dataclass(frozen=True)
class Ownership:
    """What each exit owns in every layer of its segment: the first :attr:`heads` heads (of :attr:`head_size`
    each) and the first :attr:`units` FFN units. Built by :meth:`of` from a model; holds numbers only."""

    rho: float
    heads: int
    head_size: int
    units: int

    @property
    def attention_columns(self) -> int:
        """Owned input columns of the attention output projection (the owned heads' outputs)."""
        return self.heads * self.head_size

    @classmethod
    def of(cls, model: nn.Module) -> "Ownership | None":
        """The ownership of a MultiExitModel trained as ``own@RHO``; None for any other method, for RHO = 0 and
        for a RHO that owns no head and no unit of this backbone (all three train as Early-Exit). Raises
        :class:`SweetError` for RHO > 0 on an encoder the segment runner does not support."""
        rho = model.method_spec.owned_fraction
        if rho <= 0:
            return None
        if not SegmentRunner.supports(model):
            name = getattr(getattr(model.backbones[0], "config", None), "model_type", type(model.backbones[0]).__name__)
            raise SweetError(f"own@RHO needs a BERT, MPNet or DeBERTa-v2 encoder (it trains segment by segment), "
                             f"not {name}; train this backbone with another method, e.g. early_exit")
        runner = SegmentRunner(model)
        parts = layer_parts(runner.kind, runner.layers[0])
        n_heads = int(parts.attention.num_attention_heads)
        plan = cls(rho=float(rho), heads=owned_count(rho, n_heads), head_size=int(parts.attention.attention_head_size),
                   units=owned_count(rho, int(parts.ffn_in.out_features)))
        return plan if plan.heads or plan.units else None


def _owned_detached_linear(linear: nn.Linear, columns: int, x: torch.Tensor) -> torch.Tensor:
    """``linear(x)``, the same value, with no gradient through the first ``columns`` input columns nor the weight's
    first ``columns`` columns."""
    return F.linear(detach_prefix(x, columns), detach_prefix(linear.weight, columns), linear.bias)


@contextmanager
def _owned_units_detached(plan: Ownership, runner: SegmentRunner, s: int) -> Iterator[None]:
    """Inside: the output projections of segment ``s``'s layers pass no gradient to the owned units (the projections'
    ``forward`` is replaced on the instance, and restored on leaving)."""
    start, end = runner.segments[s]
    patched: list[nn.Linear] = []
    try:
        for layer in runner.layers[start:end]:
            parts = layer_parts(runner.kind, layer)
            for linear, columns in ((parts.attention_out, plan.attention_columns), (parts.ffn_out, plan.units)):
                if columns > 0:
                    linear.forward = partial(_owned_detached_linear, linear, columns)
                    patched.append(linear)
        yield
    finally:
        for linear in patched:
            del linear.forward


def _forked_rng(device: torch.device):
    """Restore, on leaving, the CPU generator and the generator of ``device``: what runs inside draws the random
    numbers that the code after it draws again."""
    if device.type == "cpu":
        return torch.random.fork_rng(devices=[], device_type="cpu")
    index = device.index if device.index is not None else torch.get_device_module(device.type).current_device()
    return torch.random.fork_rng(devices=[index], device_type=device.type)


def owned_representations(model: nn.Module, plan: Ownership, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                          token_type_ids: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Each exit's representation (what its head reads) under ``own@RHO``: the live branch of its segment on the
    trunk (see the module docstring). Same values as the Early-Exit forward; different gradients."""
    runner = SegmentRunner(model)
    hidden = runner.embed(input_ids, attention_mask, token_type_ids)
    reps: list[torch.Tensor] = []
    last = len(runner.segments) - 1
    for s in range(last + 1):
        if s == last:
            reps.append(runner.run(s, hidden, attention_mask))
            break
        with _forked_rng(hidden.device):
            reps.append(runner.run(s, hidden, attention_mask))  # live: exit s trains its own units
        with _owned_units_detached(plan, runner, s):
            hidden = runner.run(s, hidden, attention_mask)  # trunk: deeper exits see them detached
    return reps
