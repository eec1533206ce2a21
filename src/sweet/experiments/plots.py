"""Figures: the speed-accuracy curves of a grid's methods (mean and 95% CI band over seeds), the size sweep's
gap-to-Early-Exit plot, and one run's curve (``curve.png`` in a run directory, written by ``sweet demo``).

Every method of a figure has its own colour (:func:`method_colors`); a method family keeps its colour across
figures and reports where it can.
"""

from __future__ import annotations

import colorsys
import itertools
from pathlib import Path
from typing import Iterator, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullLocator

from ..errors import SweetError
from ..evaluation import Evaluation
from ..io import atomic_save_figure, read_json
from ..methods import SELECTED_ALPHA, method_label
from ..rundir import METRICS_FILE
from .tables import TASK_LABELS, gap_label, metric_label

RUN_CURVE = "curve.png"  # one run's speed-accuracy curve, in its run directory

METHOD_COLORS = {SELECTED_ALPHA: "black", "early_exit": "tab:blue", "sweet": "tab:red", "multi_model": "tab:green",
                 "grad_scale": "tab:purple", "grad_scale_first": "tab:cyan", "pcgrad": "tab:orange",
                 "sweet_then_ee": "tab:brown", "ee_then_sweet": "tab:pink", "distill": "tab:olive",
                 "own": "darkgoldenrod", "ee_anchor": "crimson"}


#: colours for the methods whose own colour is taken (a second grad_scale alpha, ...): none of the families' (nor
#: grey, the colour of the cost-1 line)
SPARE_COLORS = ("gold", "navy", "lime", "teal", "magenta", "sienna", "slateblue", "darkred", "darkkhaki",
                "deepskyblue")


def method_color(method: str) -> str | None:
    """The colour of a method's family, or of the full name (``grad_scale@selected``); None for a method without
    one. Two methods of one family share it: a figure's colours come from :func:`method_colors`."""
    return METHOD_COLORS.get(method, METHOD_COLORS.get(method.partition("@")[0]))


def _spare_colors() -> Iterator[str]:
    """:data:`SPARE_COLORS`, then as many more as needed (hues spread by the golden ratio)."""
    yield from SPARE_COLORS
    for i in itertools.count():
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.7 if i % 2 else 0.9)
        yield f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def method_colors(methods: Sequence[str]) -> dict[str, str]:
    """A distinct colour for every method, in order: its own (:func:`method_color`) while no earlier method has
    it, else the next spare colour (so ``grad_scale@0.25`` and ``grad_scale@0.5`` do not share purple, and no
    method borrows Early-Exit's blue)."""
    out: dict[str, str] = {}
    for m in dict.fromkeys(methods):
        color = method_color(m)
        if color is None or color in out.values():
            color = next(c for c in _spare_colors() if c not in out.values())
        out[m] = color
    return out


def plot_curves(by_method: dict, methods: list[str], title: str, ylabel: str, path: Path,
                bounds: tuple[float, float] = (-100.0, 100.0)) -> Path:
    """All methods on one plot: the mean curve over seeds and its 95% CI band (clipped to the metric's range)."""
    matplotlib.use("Agg")
    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=100)
    colors = method_colors(methods)
    for m in methods:
        if m not in by_method:
            continue
        c = by_method[m]["curve"]
        x = np.asarray(c["cost"])
        mean = np.asarray([np.nan if v is None else v for v in c["mean"]], dtype=float)
        label = f"{method_label(m)} (n={c['n']})"
        color = colors[m]
        ax.plot(x, mean, color=color, label=label, linewidth=1.8)
        if all(v is not None for v in c["low"]):
            low = np.clip(np.asarray(c["low"], dtype=float), *bounds)
            high = np.clip(np.asarray(c["high"], dtype=float), *bounds)
            ax.fill_between(x, low, high, color=color, alpha=0.18, linewidth=0)
    ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("cost ratio (1 = the full model for every example)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return atomic_save_figure(fig, path)  # atomic, like every other result file


def plot_gaps(points: list[dict], title: str, path: Path) -> Path:
    """A size sweep: one panel per exit, the gap to Early-Exit (percentage points) against the training size
    (log scale), one line per method with its 95% CI over seeds (error bars; none with one seed)."""
    matplotlib.use("Agg")
    layers = list(dict.fromkeys(p["exit_layer"] for p in points))
    methods = list(dict.fromkeys(p["method"] for p in points))
    sizes = sorted({p["n_train"] for p in points})
    colors = method_colors(methods)
    fig, axes = plt.subplots(1, len(layers), figsize=(max(4.5, 2.7 * len(layers)), 3.6), dpi=100, sharey=True,
                             squeeze=False)
    for ax, layer in zip(axes[0], layers):
        for j, m in enumerate(methods):
            pts = sorted((p for p in points if p["method"] == m and p["exit_layer"] == layer), key=lambda p: p["n_train"])
            if not pts:
                continue
            shift = 10 ** ((j - (len(methods) - 1) / 2) * 0.012)  # side by side, so the error bars do not overlap
            x = np.asarray([p["n_train"] for p in pts], dtype=float) * shift
            y = np.asarray([p["mean"] for p in pts], dtype=float)
            err = [0.0 if p["ci"] is None else p["ci"] for p in pts]
            ax.errorbar(x, y, yerr=err if any(err) else None, color=colors[m], marker="o", markersize=4, capsize=3,
                        linewidth=1.6, label=gap_label(m, pts[0]["baseline"]))
        ax.axhline(0.0, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([f"{n:,}" for n in sizes], fontsize=8)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_title(f"exit L{layer}", fontsize=9)
        ax.set_xlabel("training examples")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("gap to EE (percentage points)")
    axes[0][0].legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return atomic_save_figure(fig, path)  # atomic, like every other result file



def write_run_curve(run_dir: str | Path, metrics: dict | None = None) -> Path:
    """One run's speed-accuracy curve (``metrics.json`` -> ``evaluation``: score against cost ratio over the
    threshold grid) as ``RUN_DIR/curve.png``. ``metrics``: the run's metrics, if at hand (else read)."""
    run_dir = Path(run_dir)
    if metrics is None:
        if not (run_dir / METRICS_FILE).is_file():
            raise SweetError(f"{run_dir} has no {METRICS_FILE}: it is not a finished run, so it has no curve to draw")
        metrics = read_json(run_dir / METRICS_FILE)
    ev, method = Evaluation.of_run(metrics), metrics["method"]
    points = sorted(ev.curve.points, key=lambda p: (p.cost_ratio, p.threshold))
    curve = {"cost": [p.cost_ratio for p in points], "mean": [p.score for p in points],
             "low": [None] * len(points), "high": [None] * len(points), "n": 1}
    title = (f"{TASK_LABELS.get(metrics['task'], metrics['task'])}, {method_label(method)}, seed {metrics['seed']} "
             f"({ev.curve.split} split, {ev.n_examples} examples)")
    return plot_curves({method: {"curve": curve}}, [method], title, metric_label(ev.metric), run_dir / RUN_CURVE,
                       bounds=(0.0, 100.0) if ev.metric == "accuracy" else (-100.0, 100.0))
