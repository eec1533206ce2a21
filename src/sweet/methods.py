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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

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
}
METHOD_NAMES = tuple(METHOD_TABLE)
#: Not a training method but a report entry: per task, the method on the gradient-scaling line (sweet = alpha 0,
#: grad_scale@ALPHA, early_exit = alpha 1) with the best calibration-split AUC (:func:`sweet.experiments.select_alpha`).
SELECTED_ALPHA = "grad_scale@selected"
DISTILL_TEMPERATURE = 2.0
METHODS_HELP = (
    "early_exit, sweet, multi_model (the paper), or grad_scale@ALPHA, grad_scale_first@ALPHA, pcgrad, "
    "sweet_then_ee@F, ee_then_sweet@F, distill@W (see docs/methods.md)"
)


@dataclass(frozen=True)
class Method:
    """A parsed method name. ``boundary_scales(progress, n)`` says how much of a later exit's gradient crosses
    each of the ``n`` exit boundaries at that point of training (0: none, SWEET; 1: all, Early-Exit); None for
    Multi-Model. ``gradient_scale(progress)`` is the first boundary's."""

    name: str
    param: float | None = None

    @property
    def canonical(self) -> str:
        return self.name if self.param is None else f"{self.name}@{self.param:g}"

    @property
    def projection(self) -> bool:
        return self.name == "pcgrad"

    @property
    def distill_weight(self) -> float:
        return float(self.param) if self.name == "distill" else 0.0

    @property
    def alpha(self) -> float | None:
        """The method's place on the gradient-scaling line, where one exists: ``sweet`` 0, ``early_exit`` 1,
        ``grad_scale@ALPHA`` ALPHA (the three are one computation at those values, tested); None for every
        other method (they combine or schedule gradients in other ways)."""
        return {"sweet": 0.0, "early_exit": 1.0}.get(self.name, self.param if self.name == "grad_scale" else None)

    def gradient_scale(self, progress: float = 1.0) -> float | None:
        """``progress``: the fraction of training done before this step (0 at the first step)."""
        if self.name == "multi_model":
            return None
        if self.name == "sweet":
            return 0.0
        if self.name in ("grad_scale", "grad_scale_first"):
            return float(self.param)
        if self.name == "sweet_then_ee":
            return 0.0 if progress < self.param else 1.0
        if self.name == "ee_then_sweet":
            return 1.0 if progress < self.param else 0.0
        return 1.0  # early_exit, pcgrad, distill

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
    if name in ("sweet_then_ee", "ee_then_sweet") and not 0.0 < value < 1.0:
        raise SweetError(f"method '{method}': the switch point F is a fraction of training in (0, 1), got {value:g}")
    if name == "distill" and value < 0:
        raise SweetError(f"method '{method}': the distillation weight must be >= 0, got {value:g}")
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
            "ee_then_sweet": f"EE→SWEET@{p}", "distill": f"EE+KD w={p}"}[m.name]


# ------------------------------------------------------------------------------------------- gradient scaling


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``scale`` on the way back."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` with the same value whose gradient is multiplied by ``scale`` (0 detaches, 1 is ``x`` itself)."""
    if scale == 1.0 or not x.requires_grad:
        return x
    if scale == 0.0:
        return x.detach()
    return _ScaleGrad.apply(x, float(scale))


# ---------------------------------------------------------------------------------------- self-distillation


def distillation_loss(logits: tuple[torch.Tensor, ...], weight: float, temperature: float = DISTILL_TEMPERATURE) -> torch.Tensor:
    """W * T^2 * sum over earlier exits of KL(teacher || student), teacher = the last exit, detached."""
    teacher = F.log_softmax(logits[-1].detach().float() / temperature, dim=-1)
    total = logits[-1].new_zeros((), dtype=torch.float32)
    for z in logits[:-1]:
        student = F.log_softmax(z.float() / temperature, dim=-1)
        total = total + F.kl_div(student, teacher, reduction="batchmean", log_target=True)
    return weight * temperature**2 * total


# ---------------------------------------------------------------------------------- conflict projection


def project_conflicts(grads: list[torch.Tensor], order: list[list[int]] | None = None) -> tuple[list[torch.Tensor], int]:
    """PCGrad on one block: for each gradient g_i (a flat vector), for each other g_j in ``order[i]`` (default:
    ascending), if g_i' . g_j < 0 remove the component of g_i' along g_j. The g_j are the *original* gradients.
    Returns the projected gradients and the number of projections made."""
    n = len(grads)
    out = [g.clone() for g in grads]
    sq = [torch.dot(g, g) for g in grads]
    made = 0
    for i in range(n):
        for j in (order[i] if order is not None else range(n)):
            if j == i or sq[j] <= 0:
                continue
            dot = torch.dot(out[i], grads[j])
            if dot < 0:
                out[i] = out[i] - (dot / sq[j]) * grads[j]
                made += 1
    return out, made


def pcgrad_backward(losses: tuple[torch.Tensor, ...], blocks: list[list[torch.nn.Parameter]],
                    generator: torch.Generator | None = None) -> dict:
    """Set ``.grad`` of every parameter in ``blocks`` to the PCGrad combination of the per-loss gradients,
    projected block by block (a parameter appears in exactly one block). Parameters no loss reaches get no
    gradient. Returns counts: projections made and pairs compared."""
    params = [p for block in blocks for p in block if p.requires_grad]
    per_loss = []
    for k, loss in enumerate(losses):
        per_loss.append(torch.autograd.grad(loss, params, retain_graph=k < len(losses) - 1, allow_unused=True))
    index = {id(p): n for n, p in enumerate(params)}
    made = compared = 0
    for block in blocks:
        idx = [index[id(p)] for p in block if p.requires_grad]
        if not idx:
            continue
        reaching = [k for k in range(len(losses)) if any(per_loss[k][n] is not None for n in idx)]
        if not reaching:
            continue
        vectors = [
            torch.cat([(per_loss[k][n] if per_loss[k][n] is not None else torch.zeros_like(params[n])).reshape(-1)
                       for n in idx])
            for k in reaching
        ]
        if len(vectors) > 1:
            m = len(vectors)
            order = [torch.randperm(m, generator=generator).tolist() for _ in range(m)]
            vectors, k_made = project_conflicts(vectors, order)
            made += k_made
            compared += m * (m - 1)
        total = torch.stack(vectors).sum(0)
        offset = 0
        for n in idx:
            p = params[n]
            p.grad = total[offset:offset + p.numel()].view_as(p).clone()
            offset += p.numel()
    return {"projections": made, "pairs": compared}
