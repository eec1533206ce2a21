"""Training methods: what each exit's gradient may reach, and how the exits' gradients are combined.

A method is named ``NAME`` or ``NAME@PARAM``. Every method gives the same network and the same forward values
(Multi-Model aside); they differ only in training. The paper's three:

``early_exit``
    Loss = sum of the exits' cross-entropies; every exit's gradient reaches every layer below it.
``sweet``
    Exit *i*'s gradient stops at the layer after exit *i-1* (the hidden state passed on is detached).
``multi_model``
    Independent truncated backbones, one per exit (see :mod:`sweet.modeling`).

Candidates beyond the paper (issue #8: a method never worse than either EE or SWEET):

``grad_scale@ALPHA`` (ALPHA in [0, 1], default 0.5)
    At each exit boundary the gradient flowing back into the earlier blocks is multiplied by ALPHA; the
    forward values are unchanged. ALPHA = 0 is SWEET and ALPHA = 1 is Early-Exit, exactly (tested). Scaling
    happens once per boundary crossed, so exit *j*'s gradient reaches the segment *k* boundaries below its own
    scaled by ALPHA**k: nearer blocks hear a later exit more than distant ones.
``grad_scale_first@ALPHA`` (ALPHA in [0, 1], default 0.1)
    Gradient scaling at the first exit boundary only: the later exits' gradient into the embeddings and the
    layers up to exit 1 is multiplied by ALPHA; every later boundary passes gradients in full, as Early-Exit.
    The first exit keeps (most of) SWEET's isolation, while the deeper exits shape every layer above exit 1.
    ALPHA = 1 is Early-Exit; ALPHA = 0 isolates exit 1's layers alone.
``pcgrad``
    Early-Exit's gradients, combined PCGrad-style (Yu et al., 2020) per block of shared parameters (the
    embeddings, each encoder layer, the encoder's other parameters): every exit's gradient on a block is
    computed separately; where two exits' gradients have a negative inner product, the conflicting component
    is removed from the first (projection onto the normal plane of the second, in a random order per step);
    the projected gradients are summed. Costs one backward pass per exit (each only down to its own layer).
``sweet_then_ee@F`` / ``ee_then_sweet@F`` (F in (0, 1), default 0.5)
    A schedule: the first F of the optimizer steps train as SWEET (resp. Early-Exit), the rest as the other.
``distill@W`` (W >= 0, default 1.0)
    Early-Exit plus self-distillation: each earlier exit also matches the last exit's softened prediction,
    loss += W * T^2 * KL(softmax(z_last / T) || softmax(z_i / T)) with T = 2 and the teacher detached (the last
    exit is trained by its own cross-entropy only).

Issue #26 (a method never worse than max(EE, SWEET)):

``ee_anchor@F`` (F in (0, 1), default 0.5)
    Two stages with an anchor. The first F of the optimizer steps train as Early-Exit (bit for bit). At the
    switch the trainer freezes a copy of the model, the *anchor* (eval mode: no dropout; no gradient; not in
    the optimizer; never saved with the model, only in training checkpoints). From then on the model trains
    with SWEET's isolation (every boundary scale 0) plus a term tying every exit after the first to the
    anchor's logits on the same batch: loss += ANCHOR_WEIGHT * T^2 * sum_{k >= 2} KL(softmax(a_k / T) ||
    softmax(z_k / T)), with ANCHOR_WEIGHT = 1 and T = ANCHOR_TEMPERATURE = 1 (a_k: the anchor's exit-k logits,
    recomputed on every batch; caching them per example would not be exact, since a batch's padding changes
    the logits in the last bits). The aim: the shared layers were shaped by every exit until the switch;
    after it the first exit trains its layers alone (SWEET's gain), while the KL term keeps each deep exit's
    predictions near what they were under Early-Exit as the layers below it move (against SWEET's loss at the
    late exits). Costs one extra forward pass (no backward) per step after the switch.

``own@RHO`` (RHO in [0, 1], default 0.5)
    Partial ownership: in each segment (the layers between exit *i-1* and exit *i*), exit *i* owns the first
    round(RHO * n) attention heads and the first round(RHO * m) FFN hidden units of every layer (n heads, m
    units per layer; halves round up). Deeper exits see the owned units' outputs with the same values but no
    gradient (nor through them into lower layers); exit *i* trains them and, as in Early-Exit, everything below
    (seeing lower exits' owned units detached too). RHO = 0 is Early-Exit (the same code path); RHO = 1 is close to
    SWEET (the residual stream, LayerNorms, output-projection biases and embeddings still hear deeper exits).
    Forward values and inference are Early-Exit's; training recomputes each non-final segment once more
    (:mod:`sweet.modeling.ownership`). BERT, MPNet and DeBERTa-v2 encoders only.

Everything that depends on the method is asked of its :class:`Method` (how many backbones, what leaving at an
exit costs, the cost points reported, how the engine runs it); no other module compares method names. The
gradient operations the methods use (scaling, distillation, conflict projection) are in :mod:`sweet.gradients`;
this module imports no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from .errors import SweetError

#: The paper's three methods (what ``all`` means on the command line).
PAPER_METHODS = ("early_exit", "sweet", "multi_model")
#: name -> (default parameter or None if it takes none, one-line description)
METHOD_TABLE: dict[str, tuple[float | None, str]] = {
    "early_exit": (None, "Early-Exit: every exit's gradient reaches every layer below it"),
    "sweet": (None, "SWEET: each exit trains only the layers after the previous exit"),
    "multi_model": (None, "Multi-Model: one truncated backbone per exit"),
    "grad_scale": (0.5, "gradient of later exits into earlier blocks scaled by ALPHA (0 = SWEET, 1 = EE)"),
    "grad_scale_first": (0.1, "like grad_scale, but at the first exit boundary only (later boundaries: EE)"),
    "pcgrad": (None, "Early-Exit with PCGrad-style projection of conflicting per-exit gradients"),
    "sweet_then_ee": (0.5, "SWEET for the first F of the steps, then Early-Exit"),
    "ee_then_sweet": (0.5, "Early-Exit for the first F of the steps, then SWEET"),
    "distill": (1.0, "Early-Exit + self-distillation from the last exit, weight W (T = 2)"),
    "ee_anchor": (0.5, "Early-Exit for the first F of the steps, then SWEET + KL of exits 2..M to a frozen anchor"),
    "own": (0.5, "partial ownership: exit i owns a fraction RHO of its segment's heads and FFN units (0 = EE)"),
}
METHOD_NAMES = tuple(METHOD_TABLE)
#: Not a training method but a report entry: per task, the method on the gradient-scaling line (sweet = alpha 0,
#: grad_scale@ALPHA, early_exit = alpha 1) with the best calibration-split AUC (:func:`sweet.experiments.select_alpha`).
SELECTED_ALPHA = "grad_scale@selected"
DISTILL_TEMPERATURE = 2.0
#: ``ee_anchor@F``: the weight and temperature of the KL term tying exits 2..M to the anchor's logits.
ANCHOR_WEIGHT = 1.0
ANCHOR_TEMPERATURE = 1.0
METHODS_HELP = (
    "early_exit, sweet, multi_model (the paper), or grad_scale@ALPHA, grad_scale_first@ALPHA, pcgrad, "
    "sweet_then_ee@F, ee_then_sweet@F, distill@W, ee_anchor@F, own@RHO (see docs/methods.md)"
)
#: Multi-Model's cost points above 1 (the paper's 1 3/8 and 1 3/4); only those the ladder reaches are reported.
MULTI_MODEL_COST_POINTS = (1.375, 1.75)
#: Training time per example relative to Early-Exit (default backbone, 2 cores, measured), for the grid's ETA:
#: Multi-Model trains one backbone per exit; pcgrad runs one backward pass per exit plus the projection (SST-2,
#: 320 examples: 20.9 s vs 7.4 s); ee_anchor at its default F = 0.5 runs the anchor's forward pass on the last
#: half of the steps (benchmarks/anchor_train_time.py: CPU-time ratio 1.152 at F = 0.5, 1.221 at F = 0.25, SST-2,
#: 64 examples x 2 epochs, one thread, 7 interleaved rounds; docs/results/methods/anchor-training-time.json), and
#: other F scale the extra part by (1 - F) / 0.5 (:attr:`Method.train_time_factor`); own@RHO runs each non-final
#: segment twice (SST-2, batch 16, 1 thread, median of 40 per-batch ratios 1.47: benchmarks/own_train_time.py,
#: docs/results/own/; own@0 is Early-Exit's code, 1.0). Every other method costs what Early-Exit does.
TRAIN_TIME_FACTOR = {"multi_model": 2.2, "pcgrad": 2.8, "ee_anchor": 1.15, "own": 1.5}


@dataclass(frozen=True)
class Method:
    """A parsed method name, and everything that depends on it.

    Structure and cost: :attr:`shares_backbone` (one encoder whose exits read it between layers, or one truncated
    encoder per exit: Multi-Model), :meth:`num_backbones`, :meth:`backbone_depths`, :meth:`exit_costs` (what
    leaving at each exit costs, in layers) and :attr:`cost_points_above_one`. Training:
    ``boundary_scales(progress, n)`` says how much of a later exit's gradient crosses each of the ``n`` exit
    boundaries at that point of training (0: none, SWEET; 1: all, Early-Exit); None for Multi-Model.
    ``gradient_scale(progress)`` is the first boundary's."""

    name: str
    param: float | None = None

    @property
    def canonical(self) -> str:
        return self.name if self.param is None else f"{self.name}@{self.param:g}"

    # ------------------------------------------------------------------------------- structure and cost

    @property
    def shares_backbone(self) -> bool:
        """True for every method but Multi-Model: one encoder, each exit reads the hidden state after its layer,
        so a later exit reuses the layers an earlier one ran (the engine runs the encoder segment by segment,
        handing each row's hidden state on). False for Multi-Model: one truncated encoder per exit, with disjoint
        parameters, each run whole, one after another (the engine runs model ``i`` for the rows still there)."""
        return self.name != "multi_model"

    def num_backbones(self, num_exits: int) -> int:
        """How many encoders a model with ``num_exits`` exits holds: 1, or one per exit."""
        return 1 if self.shares_backbone else int(num_exits)

    def backbone_depths(self, exit_layers: Sequence[int]) -> list[int]:
        """The depth each encoder is truncated to: ``[L_M]`` for a shared backbone, ``[L_1, ..., L_M]`` one per
        exit."""
        layers = [int(x) for x in exit_layers]
        return layers if not self.shares_backbone else layers[-1:]

    def exit_costs(self, exit_layers: Sequence[int]) -> list[float]:
        """Layers a sample leaving at each exit has run: ``L_i`` on a shared backbone (computation is reused by
        later exits); ``L_1 + ... + L_i`` with one model per exit (models 1..i run in full)."""
        layers = [float(x) for x in exit_layers]
        if self.shares_backbone:
            return layers
        out, total = [], 0.0
        for x in layers:
            total += x
            out.append(total)
        return out

    @property
    def cost_points_above_one(self) -> tuple[float, ...]:
        """Cost ratios above 1 (the full model once) where this method's curve is also read: Multi-Model's 1 3/8
        and 1 3/4 (the paper's; :func:`sweet.cost.fixed_cost_points` keeps those its ladder reaches); none for a
        shared backbone, which never costs more than 1."""
        return () if self.shares_backbone else MULTI_MODEL_COST_POINTS

    @property
    def train_time_factor(self) -> float:
        """Training time per example relative to Early-Exit (measured; the grid's ETA before any run finished)."""
        if self.name == "own" and self.owned_fraction == 0:
            return 1.0  # own@0 runs Early-Exit's code
        factor = TRAIN_TIME_FACTOR.get(self.name, 1.0)
        if self.anchor_from is not None:  # measured at the default F; the anchor runs on the last 1 - F of the steps
            default = METHOD_TABLE[self.name][0]
            factor = 1.0 + (factor - 1.0) * (1.0 - self.anchor_from) / (1.0 - default)
        return factor

    @property
    def every_exit_reaches_every_layer(self) -> bool:
        """Whether each exit's loss sends gradient, in full, to every layer below it at every point of training
        (a shared backbone whose exit boundaries never scale the gradient and no unit is owned): early_exit,
        pcgrad, distill@W, grad_scale@1, grad_scale_first@1 and own@0. What the conflicting-gradient analysis
        needs."""
        if not self.shares_backbone or self.owned_fraction > 0:
            return False
        return all(s == 1.0 for progress in (0.0, 1.0) for s in self.boundary_scales(progress, 2))

    # ------------------------------------------------------------------------------------------- training

    @property
    def projection(self) -> bool:
        return self.name == "pcgrad"

    @property
    def owned_fraction(self) -> float:
        """``own@RHO``: the fraction RHO of each layer's attention heads and FFN units that the exit closing the
        layer's segment owns (:mod:`sweet.modeling.ownership`); 0.0 for every other method."""
        return float(self.param) if self.name == "own" else 0.0

    @property
    def distill_weight(self) -> float:
        return float(self.param) if self.name == "distill" else 0.0

    @property
    def anchor_from(self) -> float | None:
        """``ee_anchor@F``: the fraction of training at which the anchor (a frozen copy of the model) is taken
        and the deep exits are tied to it from then on; None for every other method."""
        return float(self.param) if self.name == "ee_anchor" else None

    def anchored(self, progress: float) -> bool:
        """Whether a step at ``progress`` (the fraction of training done before it) trains against the anchor."""
        return self.anchor_from is not None and progress >= self.anchor_from

    @property
    def alpha(self) -> float | None:
        """The method's place on the gradient-scaling line, where one exists: ``sweet`` 0, ``early_exit`` 1,
        ``grad_scale@ALPHA`` ALPHA (the three are one computation at those values, tested); None for every
        other method (they combine or schedule gradients in other ways)."""
        return {"sweet": 0.0, "early_exit": 1.0}.get(self.name, self.param if self.name == "grad_scale" else None)

    @property
    def alpha_is_parameter(self) -> bool:
        """Whether the method's place on the gradient-scaling line is its parameter (``grad_scale@ALPHA``), not
        fixed by the method itself (``sweet`` 0, ``early_exit`` 1)."""
        return self.name == "grad_scale"

    def gradient_scale(self, progress: float = 1.0) -> float | None:
        """``progress``: the fraction of training done before this step (0 at the first step)."""
        if not self.shares_backbone:
            return None
        if self.name == "sweet":
            return 0.0
        if self.name in ("grad_scale", "grad_scale_first"):
            return float(self.param)
        if self.name == "sweet_then_ee":
            return 0.0 if progress < self.param else 1.0
        if self.name in ("ee_then_sweet", "ee_anchor"):
            return 1.0 if progress < self.param else 0.0
        return 1.0  # early_exit, pcgrad, distill, own (its isolation is per unit, not at the boundaries)

    def boundary_scales(self, progress: float, n_boundaries: int) -> tuple[float, ...] | None:
        """The gradient scale at each of the ``n_boundaries`` exit boundaries (first = the one after exit 1)."""
        first = self.gradient_scale(progress)
        if first is None:
            return None
        rest = 1.0 if self.name == "grad_scale_first" else first
        return tuple(first if i == 0 else rest for i in range(n_boundaries))


def parse_method(method: str) -> Method:
    """``NAME`` or ``NAME@PARAM`` -> :class:`Method`; raises SweetError naming the problem."""
    if not isinstance(method, str) or not method.strip():
        raise SweetError(f"method must be a name such as early_exit, got {method!r}")
    name, sep, raw = method.strip().partition("@")
    if name not in METHOD_TABLE:
        raise SweetError(f"unknown method '{method}'; choose one of: {METHODS_HELP}")
    default, _ = METHOD_TABLE[name]
    if default is None:
        if sep:
            raise SweetError(f"method '{name}' takes no parameter, got '{method}'")
        return Method(name)
    if not sep:
        return Method(name, float(default))
    try:
        value = float(raw)
    except ValueError:
        raise SweetError(f"method '{method}': the parameter after '@' must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise SweetError(f"method '{method}': the parameter must be finite")
    if name == "grad_scale" and not 0.0 <= value <= 1.0:
        raise SweetError(f"method '{method}': ALPHA must lie in [0, 1] (0 = sweet, 1 = early_exit), got {value:g}")
    if name == "grad_scale_first" and not 0.0 <= value <= 1.0:
        raise SweetError(f"method '{method}': ALPHA must lie in [0, 1] (1 = early_exit), got {value:g}")
    if name in ("sweet_then_ee", "ee_then_sweet", "ee_anchor") and not 0.0 < value < 1.0:
        raise SweetError(f"method '{method}': the switch point F is a fraction of training in (0, 1), got {value:g}")
    if name == "distill" and value < 0:
        raise SweetError(f"method '{method}': the distillation weight must be >= 0, got {value:g}")
    if name == "own" and not 0.0 <= value <= 1.0:
        raise SweetError(f"method '{method}': RHO is the owned fraction of heads and FFN units, in [0, 1] "
                         f"(0 = early_exit), got {value:g}")
    return Method(name, value)


def check_method(method: str) -> str:
    """Validate a method name and return its canonical spelling (``grad_scale`` -> ``grad_scale@0.5``)."""
    return parse_method(method).canonical


def method_label(method: str) -> str:
    """Short label for tables and plots."""
    short = {"early_exit": "EE", "sweet": "SWEET", "multi_model": "MM", "pcgrad": "PCGrad",
             SELECTED_ALPHA: "GS α selected"}
    if method in short:
        return short[method]
    try:
        m = parse_method(method)
    except SweetError:
        return method
    if m.name in short:
        return short[m.name]
    p = f"{m.param:g}"
    return {"grad_scale": f"GS α={p}", "grad_scale_first": f"GS-first α={p}", "sweet_then_ee": f"SWEET→EE@{p}",
            "ee_then_sweet": f"EE→SWEET@{p}", "distill": f"EE+KD w={p}", "ee_anchor": f"EE→anchor@{p}",
            "own": f"Own ρ={p}"}[m.name]
