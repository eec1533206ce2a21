"""The gradient operations the training methods use (:mod:`sweet.methods` says which method uses which):
scaling the gradient that crosses an exit boundary (``grad_scale@ALPHA``; 0 detaches, as SWEET), detaching the
first entries of a tensor's last dimension (``own@RHO``'s owned units), the self-distillation loss
(``distill@W``), the anchor loss (``ee_anchor@F``) and the PCGrad-style projection of conflicting per-exit
gradients (``pcgrad``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .methods import ANCHOR_TEMPERATURE, ANCHOR_WEIGHT, DISTILL_TEMPERATURE

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


class _DetachPrefix(torch.autograd.Function):
    """Identity forward; zeroes the gradient of the first ``n`` entries of the last dimension on the way back."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, n: int) -> torch.Tensor:
        ctx.n = n
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.clone()
        grad[..., : ctx.n] = 0
        return grad, None


def detach_prefix(x: torch.Tensor, n: int) -> torch.Tensor:
    """``x`` with the same value, as if ``x[..., :n]`` were detached: no gradient flows back through the first
    ``n`` entries of the last dimension; the others pass theirs unchanged (``own@RHO``: an owned unit's input column
    of an output projection, and the weight's owned columns, seen by deeper exits)."""
    if n <= 0 or not x.requires_grad:
        return x
    return _DetachPrefix.apply(x, int(n))


# ---------------------------------------------------------------------------------------- self-distillation


def distillation_loss(logits: tuple[torch.Tensor, ...], weight: float, temperature: float = DISTILL_TEMPERATURE) -> torch.Tensor:
    """W * T^2 * sum over earlier exits of KL(teacher || student), teacher = the last exit, detached."""
    teacher = F.log_softmax(logits[-1].detach().float() / temperature, dim=-1)
    total = logits[-1].new_zeros((), dtype=torch.float32)
    for z in logits[:-1]:
        student = F.log_softmax(z.float() / temperature, dim=-1)
        total = total + F.kl_div(student, teacher, reduction="batchmean", log_target=True)
    return weight * temperature**2 * total


def anchor_kl(student: torch.Tensor, anchor: torch.Tensor, temperature: float = ANCHOR_TEMPERATURE) -> torch.Tensor:
    """T^2 * KL(softmax(anchor / T) || softmax(student / T)), averaged over the batch, for one exit (float32).
    ``anchor`` is the frozen anchor's logits (no gradient flows into it)."""
    target = F.log_softmax(anchor.detach().float() / temperature, dim=-1)
    log_p = F.log_softmax(student.float() / temperature, dim=-1)
    return temperature**2 * F.kl_div(log_p, target, reduction="batchmean", log_target=True)


def anchor_loss(logits: tuple[torch.Tensor, ...], anchor_logits: tuple[torch.Tensor, ...],
                weight: float = ANCHOR_WEIGHT) -> torch.Tensor:
    """``ee_anchor@F``: W * sum over exits 2..M of :func:`anchor_kl` (exit k tied to the anchor's exit k)."""
    total = logits[0].new_zeros((), dtype=torch.float32)
    for z, a in zip(logits[1:], anchor_logits[1:]):
        total = total + anchor_kl(z, a)
    return weight * total


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
