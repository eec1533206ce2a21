"""Figures: the speed-accuracy curves of a grid's methods (mean and 95% CI band over seeds) and the size sweep's
gap-to-Early-Exit plot; every method keeps one colour across figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import atomic_save_figure
from ..methods import SELECTED_ALPHA, method_label
from .tables import gap_label

METHOD_COLORS = {SELECTED_ALPHA: "black", "early_exit": "tab:blue", "sweet": "tab:red", "multi_model": "tab:green",
                 "grad_scale": "tab:purple", "grad_scale_first": "tab:cyan", "pcgrad": "tab:orange",
                 "sweet_then_ee": "tab:brown", "ee_then_sweet": "tab:pink", "distill": "tab:olive"}


def method_color(method: str) -> str | None:
    """One colour per method family, or for the full name (``grad_scale@selected``); None: matplotlib's cycle,
    e.g. for a second grad_scale alpha."""
    return METHOD_COLORS.get(method, METHOD_COLORS.get(method.partition("@")[0]))


def plot_curves(by_method: dict, methods: list[str], title: str, ylabel: str, path: Path,
                bounds: tuple[float, float] = (-100.0, 100.0)) -> Path:
    """All methods on one plot: the mean curve over seeds and its 95% CI band (clipped to the metric's range)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=100)
    used: set = set()
    for m in methods:
        if m not in by_method:
            continue
        c = by_method[m]["curve"]
        x = np.asarray(c["cost"])
        mean = np.asarray([np.nan if v is None else v for v in c["mean"]], dtype=float)
        label = f"{method_label(m)} (n={c['n']})"
        color = method_color(m)
        color = None if color in used else color  # e.g. a second grad_scale alpha: the next colour of the cycle
        (line,) = ax.plot(x, mean, color=color, label=label, linewidth=1.8)
        color = line.get_color()
        used.add(color)
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    layers = list(dict.fromkeys(p["exit_layer"] for p in points))
    methods = list(dict.fromkeys(p["method"] for p in points))
    sizes = sorted({p["n_train"] for p in points})
    colors = {m: method_color(m) or f"C{i}" for i, m in enumerate(methods)}
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

