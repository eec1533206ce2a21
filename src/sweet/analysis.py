"""Conflicting-gradient analysis (the paper's Section 3.1 / Figure 3): ``sweet analyze gradients``.

What is compared, exactly
-------------------------
An Early-Exit model (one encoder, a head after each exit layer L_1 < ... < L_M, loss = sum of the heads'
cross-entropies) is fine-tuned for ``steps`` optimizer steps. For every *analysed layer* -- each layer that
precedes a classifier, L_1 .. L_{M-1}; the last layer L_M is left out because only the last classifier
updates it (the paper's footnote 8) -- we take the **last feed-forward weight matrix** of that transformer
layer: the output dense layer of its FFN block (``layer.output.dense.weight`` in BERT, MPNet and
DeBERTa-v2; shape [hidden, intermediate]). Classifier C-i (1-based) reaches layer L_j iff i >= j.

At every training step, on the training batch (train mode, i.e. with dropout, exactly the forward whose
gradient is applied), we compute for each classifier C-i separately the gradient of *its own* loss
(the mean cross-entropy of head i over the batch) with respect to each analysed weight matrix it reaches,
``G_i = d loss_i / d W`` (``torch.autograd.grad``, one call per head, only for these matrices). Then:

- **pairwise similarity** of classifiers C-a and C-b at layer L_j: the mean, over the rows r of W, of
  ``cos(G_a[r, :], G_b[r, :])`` -- "we average the cosine similarity between the rows of gradient matrices
  for every pair of classifiers" (a row is one output unit's incoming weights). Rows where either gradient
  row is exactly zero are left out of the mean (none are in practice).
- **others vs own**: for classifier C-i at layer L_j, the same row-averaged cosine between ``G_i`` and
  ``sum_{h != i} G_h`` (the gradient of the other classifiers' summed loss, the part of the update C-i does
  not ask for). Only classifiers that reach L_j contribute to the sum (the others' gradient there is zero).

Both are reported per step, and as mean and standard deviation over the steps. The training update itself
is the ordinary Early-Exit one (sum of the losses, AdamW (0.9, 0.999), linear decay to 0 over ``steps``
as with the Hugging Face Trainer's ``max_steps``, gradient clipping at 1.0, batch 16, lr 2e-5 as in the
paper's analysis).

The paper's own protocol measures once after the 400 steps, on a new training batch, and repeats it with a
second batch (its footnote 7). We report that too (``probe``): the same quantities on ``probe_batches``
batches of training-pool rows never used for training, after the last step, in eval mode (no dropout).

Outputs: ``gradients.json`` (everything above) and ``gradients.png`` (one heatmap per analysed layer over
the classifiers that reach it, the shape of the paper's Figure 3; mean over steps).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from .backbones import resolve_backbone
from .config import RunConfig
from .data import make_splits
from .datasource import load_run_data
from .encoding import bucketed_batches, encode
from .errors import SweetError
from .io import atomic_save_figure, atomic_write_json
from .methods import parse_method
from .modeling import MultiExitModel, find_layer_list
from .rundir import effective_max_length, environment, load_tokenizer, make_collator
from .training import seed_everything

GRADIENTS_JSON = "gradients.json"
GRADIENTS_PNG = "gradients.png"


def ffn_output_weight(layer: nn.Module, intermediate_size: int | None = None) -> tuple[str, nn.Parameter]:
    """The last feed-forward weight matrix of a transformer layer, as (name within the layer, parameter).

    BERT, MPNet and DeBERTa-v2 layers have ``output.dense`` (intermediate -> hidden). Otherwise the last
    ``nn.Linear`` whose input width is ``intermediate_size`` is taken."""
    out = getattr(layer, "output", None)
    dense = getattr(out, "dense", None)
    if isinstance(dense, nn.Linear):
        return "output.dense.weight", dense.weight
    found = None
    for name, mod in layer.named_modules():
        if isinstance(mod, nn.Linear) and (intermediate_size is None or mod.in_features == intermediate_size):
            found = (f"{name}.weight", mod.weight)
    if found is None:
        raise SweetError(f"cannot find the feed-forward output matrix of {type(layer).__name__}")
    return found


def row_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over rows of the cosine similarity between ``a[r]`` and ``b[r]`` (2-D tensors of one shape).
    Rows where either vector is exactly zero are left out; NaN if no row is left."""
    a = a.detach().double().reshape(a.shape[0], -1)
    b = b.detach().double().reshape(b.shape[0], -1)
    na, nb = a.norm(dim=1), b.norm(dim=1)
    ok = (na > 0) & (nb > 0)
    if not bool(ok.any()):
        return math.nan
    cos = (a[ok] * b[ok]).sum(1) / (na[ok] * nb[ok])
    return float(cos.mean())


def analysed_weights(model) -> list[tuple[int, str, nn.Parameter]]:
    """(layer number L_j, parameter name, weight) for every layer preceding a classifier but the last."""
    if not parse_method(model.config.method).every_exit_reaches_every_layer:
        raise SweetError(f"the gradient analysis needs an early_exit model, or one whose every exit reaches every "
                         f"layer below it (got {model.config.method}): under sweet each layer is reached by one "
                         "classifier only, and multi_model shares no layer")
    bb = model.backbones[0]
    layers = find_layer_list(bb)
    inter = model.config.backbone_config.get("intermediate_size")
    names = {id(p): n for n, p in bb.named_parameters()}
    out = []
    for layer_no in model.exit_layers[:-1]:
        _, w = ffn_output_weight(layers[layer_no - 1], inter)
        out.append((int(layer_no), names[id(w)], w))
    return out


def per_head_gradients(exit_losses: Sequence[torch.Tensor], weights: Sequence[nn.Parameter],
                       retain_graph: bool = True) -> list[list[torch.Tensor | None]]:
    """``grads[i][j]``: gradient of exit i's loss w.r.t. analysed weight j (the FFN output matrix of layer
    L_j), or None where exit i does not reach it (j > i). One ``torch.autograd.grad`` call per exit."""
    grads: list[list[torch.Tensor | None]] = []
    n_w = len(weights)
    for i, loss in enumerate(exit_losses):
        reach = list(weights[: min(i + 1, n_w)])
        g = torch.autograd.grad(loss, reach, retain_graph=retain_graph) if reach else ()
        grads.append([t.detach().clone() for t in g] + [None] * (n_w - len(reach)))
    return grads


def similarities(grads: list[list[torch.Tensor | None]]) -> list[dict]:
    """Per analysed layer j: the classifiers reaching it (0-based i >= j), the pairwise row-averaged cosine
    matrix (diagonal 1) and each classifier's cosine with the sum of the others' gradients."""
    n_exits = len(grads)
    out = []
    for j in range(n_exits - 1):
        heads = [i for i in range(n_exits) if grads[i][j] is not None]
        m = np.full((len(heads), len(heads)), np.nan)
        for x, a in enumerate(heads):
            m[x, x] = 1.0
            for y in range(x + 1, len(heads)):
                m[x, y] = m[y, x] = row_cosine(grads[a][j], grads[heads[y]][j])
        total = sum(grads[i][j] for i in heads)
        others = [row_cosine(grads[i][j], total - grads[i][j]) if len(heads) > 1 else math.nan for i in heads]
        out.append({"heads": heads, "pairwise": m, "others_vs_own": np.asarray(others)})
    return out


def _summary(values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    arr = np.stack(values)
    return np.nanmean(arr, axis=0), (np.nanstd(arr, axis=0, ddof=1) if len(values) > 1 else np.zeros_like(arr[0]))


def _matrix(m: np.ndarray) -> list[list[float | None]]:
    return [[None if not np.isfinite(v) else round(float(v), 6) for v in row] for row in m]


def analyze_gradients(
    task: str = "mnli",
    output: str | Path = "gradients",
    backbone: str = "default",
    exit_layers: Sequence[int] | None = None,
    steps: int = 400,
    batch_size: int = 16,
    learning_rate: float = 2e-5,
    seed: int = 0,
    max_length: int = 256,
    pooling: str = "auto",
    probe_batches: int = 2,
    max_grad_norm: float | None = 1.0,
    data_dir: str | None = None,
    data_source: str = "local",
    progress: bool = True,
    command: str | None = None,
    own_data: dict | None = None,
) -> dict:
    """Fine-tune an Early-Exit model for ``steps`` steps and measure, at every step, how the classifiers'
    gradients on the last FFN matrix of each layer preceding an exit align (see the module docstring).
    Writes ``OUTPUT/gradients.json`` and ``OUTPUT/gradients.png``; returns the JSON's content. ``own_data``: the
    own-data fields of a :class:`~sweet.config.RunConfig` (``data``, ``text_columns``, ``label_column``, ...) to
    analyse your own data instead of (or under) the ``task`` preset.

    Long on purpose: the analysis is one training loop read top to bottom (data, model, steps, probes, write), like the trainer."""
    if steps < 1 or batch_size < 1 or probe_batches < 0:
        raise SweetError("steps and batch size must be positive and probe batches non-negative")
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise SweetError(f"learning rate must be a positive number, got {learning_rate}")
    config = RunConfig(task=task, method="early_exit", data_dir=data_dir, data_source=data_source, **(own_data or {}))
    out_dir = Path(output)
    if out_dir.exists() and not out_dir.is_dir():
        raise SweetError(f"output path {out_dir} exists and is not a directory")
    t0 = time.perf_counter()
    data = load_run_data(config)
    t_task = data.task
    for note in data.notes:
        print(f"note: {note}", file=sys.stderr)
    n_probe = probe_batches * batch_size
    splits = make_splits(data, steps * batch_size + n_probe, seed)
    sample = splits.train
    if len(sample) < n_probe + batch_size:
        raise SweetError(f"the training pool of {t_task.name} has too few rows for {probe_batches} probe batch(es) "
                         f"and one training batch of {batch_size}")
    probe, train_part = sample.subset(range(n_probe)), sample.subset(range(n_probe, len(sample)))

    seed_everything(seed)
    path = resolve_backbone(backbone)
    tokenizer = load_tokenizer(path)
    model = MultiExitModel.from_backbone(backbone, exit_layers=exit_layers, num_labels=t_task.num_labels,
                                         method="early_exit", pooling=pooling, label_names=t_task.label_names,
                                         task=t_task.name)
    collator = make_collator(tokenizer, model)
    max_len = effective_max_length(max_length, tokenizer, model)
    enc_train = encode(tokenizer, train_part, max_len, warn=False)
    enc_probe = encode(tokenizer, probe, max_len, warn=False) if n_probe else None
    analysed = analysed_weights(model)
    if not analysed:
        raise SweetError("the gradient analysis needs at least two exits")
    weights = [w for _, _, w in analysed]

    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, steps)
    per_step: list[list[dict]] = []
    losses = []
    model.train()
    bar = tqdm(total=steps, desc="analyze gradients", disable=not progress, unit="step")
    step, epoch = 0, 0
    while step < steps:
        for rows in bucketed_batches(enc_train.lengths, batch_size, seed, epoch):
            if step >= steps:
                break
            batch = collator(enc_train, rows)
            out = model(**batch)
            grads = per_head_gradients(out.exit_losses, weights, retain_graph=True)
            per_step.append(similarities(grads))
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            scheduler.step()
            losses.append([round(float(x.detach()), 5) for x in out.exit_losses])
            step += 1
            bar.update(1)
        epoch += 1
    bar.close()

    probes: list[list[dict]] = []
    if enc_probe is not None:
        model.eval()
        for b in range(probe_batches):
            rows = np.arange(b * batch_size, (b + 1) * batch_size)
            out = model(**collator(enc_probe, rows))
            probes.append(similarities(per_head_gradients(out.exit_losses, weights, retain_graph=True)))
        model.zero_grad(set_to_none=True)

    layers_out = []
    for j, (layer_no, pname, w) in enumerate(analysed):
        heads = per_step[0][j]["heads"]
        pw_mean, pw_std = _summary([s[j]["pairwise"] for s in per_step])
        ov_mean, ov_std = _summary([s[j]["others_vs_own"] for s in per_step])
        pairs = []
        for x in range(len(heads)):
            for y in range(x + 1, len(heads)):
                pairs.append({
                    "classifiers": [f"C-{heads[x] + 1}", f"C-{heads[y] + 1}"],
                    "mean": float(pw_mean[x, y]), "std": float(pw_std[x, y]),
                    "probe": [float(p[j]["pairwise"][x, y]) for p in probes],
                    "per_step": [round(float(s[j]["pairwise"][x, y]), 5) for s in per_step],
                })
        others = [{"classifier": f"C-{h + 1}", "mean": float(ov_mean[x]), "std": float(ov_std[x]),
                   "probe": [float(p[j]["others_vs_own"][x]) for p in probes],
                   "per_step": [round(float(s[j]["others_vs_own"][x]), 5) for s in per_step]}
                  for x, h in enumerate(heads)]
        layers_out.append({
            "layer": layer_no, "parameter": pname, "shape": list(w.shape),
            "classifiers": [f"C-{h + 1}" for h in heads],
            "pairwise_mean": _matrix(pw_mean), "pairwise_std": _matrix(pw_std),
            "probe_pairwise_mean": _matrix(np.nanmean(np.stack([p[j]["pairwise"] for p in probes]), 0)) if probes else None,
            "pairs": pairs, "others_vs_own": others,
        })
    seconds = time.perf_counter() - t0
    result = {
        "analysis": "conflicting gradients (paper Sec. 3.1 / Fig. 3)",
        "what": ("per analysed layer (each layer preceding a classifier, except the last): the row-wise cosine "
                 "similarity, averaged over the rows of the layer's last FFN weight matrix, between the gradients "
                 "that two classifiers' own losses send to it (pairs), and between a classifier's gradient and the "
                 "sum of the other classifiers' gradients (others_vs_own). mean/std: over the training steps "
                 "(train-mode forward of the training batch, before the update). probe: after the last step, on "
                 "fresh training-pool batches, eval mode (the paper's protocol)."),
        "command": command, "task": t_task.name, "backbone": backbone, "method": "early_exit",
        "exit_layers": model.exit_layers, "steps": steps, "batch_size": batch_size, "learning_rate": learning_rate,
        "schedule": "AdamW (0.9, 0.999), linear decay to 0 over the steps, no warm-up",
        "max_grad_norm": max_grad_norm, "seed": seed, "max_length": max_len, "pooling": model.config.pooling,
        "n_train_rows": len(train_part), "probe_batches": probe_batches, "n_probe_rows": len(probe),
        "layers": layers_out,
        "exit_losses_per_step": losses,
        "seconds": round(seconds, 2), "seconds_per_step": round(seconds / steps, 3),
        "environment": environment(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / GRADIENTS_JSON, result)
    plot_gradients(result, out_dir / GRADIENTS_PNG)
    return result


def plot_gradients(result: dict, path: Path) -> Path:
    """One heatmap per analysed layer (classifiers reaching it x classifiers; mean row-wise cosine over steps),
    annotated, on a common -1..1 colour scale: the shape of the paper's Figure 3."""
    matplotlib.use("Agg")
    layers = result["layers"]
    fig, axes = plt.subplots(1, len(layers), figsize=(3.2 * len(layers) + 0.8, 3.4), dpi=110, squeeze=False)
    im = None
    for ax, lay in zip(axes[0], layers):
        m = np.asarray([[np.nan if v is None else v for v in row] for row in lay["pairwise_mean"]], dtype=float)
        mask = np.triu(np.ones_like(m, dtype=bool), k=1)  # lower triangle + diagonal, as a correlation plot
        shown = np.where(mask, np.nan, m)
        im = ax.imshow(shown, cmap="RdBu_r", vmin=-1.0, vmax=1.0)
        names = lay["classifiers"]
        ax.set_xticks(range(len(names)), names, fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        for x in range(len(names)):
            for y in range(x + 1):
                v = m[x, y]
                if np.isfinite(v):
                    ax.text(y, x, f"{v:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if abs(v) > 0.6 else "black")
        ax.set_title(f"layer {lay['layer']} (before {names[0]})", fontsize=9)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    fig.suptitle(f"{result['task'].upper()}, {result['backbone']} early-exit, exits {result['exit_layers']}: "
                 f"mean row-wise cosine of per-classifier gradients over {result['steps']} steps", fontsize=9)
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8)
    return atomic_save_figure(fig, path)  # atomic, like every other result file
