"""The model card: ``README.md`` in a model folder, with Hugging Face model-card front matter.

:meth:`sweet.modeling.MultiExitModel.save_pretrained` writes it from the model's config alone (base model, task,
labels, exits, how to load). Once the run's metrics exist (:func:`sweet.runs.run` right after metrics.json, and
``sweet tune`` after it chose a threshold) it is written again with the per-exit table, the speed-accuracy curve
(``curve.png`` beside it, drawn here) and the default threshold with its expected score and cost.

The front matter is built with ``huggingface_hub.ModelCardData``: ``base_model`` (the hub id of the backbone, where
it has one), ``datasets`` (GLUE for the presets), ``metrics``, ``pipeline_tag: text-classification``,
``library_name: sweet``, ``tags``, and ``labels`` (the class names, in id order).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from .cost import interpolate
from .io import atomic_write_text
from .policies import DEFAULT_THRESHOLD

CARD_NAME = "README.md"
CURVE_IMAGE = "curve.png"

#: hub ids of the packaged backbones (sweet.backbones.PACKAGED_BACKBONES' aliases)
BACKBONE_HUB_IDS = {"default": "sentence-transformers/all-MiniLM-L6-v2", "minilm": "sentence-transformers/all-MiniLM-L6-v2",
                    "all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
                    "mpnet": "sentence-transformers/all-mpnet-base-v2",
                    "all-mpnet-base-v2": "sentence-transformers/all-mpnet-base-v2"}
#: the GLUE presets' names in sweet.data and the hub
GLUE_TASKS = ("sst2", "mrpc", "cola", "mnli", "qnli", "qqp", "rte")
#: sweet's metric names -> the Hugging Face metric ids
HF_METRICS = {"accuracy": "accuracy", "matthews": "matthews_correlation", "mcc": "matthews_correlation",
              "f1": "f1", "f1_macro": "f1"}
METHOD_NAMES = {"early_exit": "Early-Exit", "sweet": "SWEET", "multi_model": "Multi-Model"}


def base_model_id(backbone: str) -> str | None:
    """The backbone's hub id: the packaged ones' ids, a name shaped like ``org/name`` or ``name``; None for a local
    path."""
    key = backbone.strip().lower()
    if key in BACKBONE_HUB_IDS:
        return BACKBONE_HUB_IDS[key]
    if backbone.startswith(("/", ".", "~", "\\")) or backbone.count("/") > 1 or Path(backbone).expanduser().exists():
        return None
    return backbone


def card_data(config, metrics: dict | None = None) -> ModelCardData:
    """The front matter of a model's card."""
    task = (config.extra or {}).get("task") or {}
    task_name = task.get("name") or config.task
    labels = list(config.label_names or task.get("label_names") or [str(i) for i in range(config.num_labels)])
    metric = (metrics or {}).get("evaluation", {}).get("metric") or task.get("metric") or "accuracy"
    is_glue = task_name in GLUE_TASKS
    tags = ["sweet", "early-exit", "adaptive-inference", config.method.split("@")[0].replace("_", "-")]
    if task_name:
        tags.append(str(task_name))
    return ModelCardData(
        base_model=base_model_id(config.backbone), datasets=["nyu-mll/glue"] if is_glue else None,
        metrics=[HF_METRICS.get(metric, metric)], pipeline_tag="text-classification", library_name="sweet",
        tags=tags, language=["en"] if is_glue else None, labels=labels, exit_layers=list(config.exit_layers),
        sweet_method=config.method, **({"task": str(task_name)} if task_name else {}))


def _default_threshold(metrics: dict | None, threshold: dict | None) -> dict:
    """The threshold a loaded model uses by default, and what it is expected to give."""
    if threshold is not None:
        return {"value": threshold["threshold"], "policy": threshold["policy"], "tuned": threshold}
    out: dict[str, Any] = {"value": DEFAULT_THRESHOLD, "policy": "confidence", "tuned": None}
    if metrics and "evaluation" in metrics:
        pts = sorted(metrics["evaluation"]["curve"], key=lambda p: p["threshold"])
        ts = [p["threshold"] for p in pts]
        if ts[0] <= DEFAULT_THRESHOLD <= ts[-1]:
            out["score"] = interpolate(ts, [p["score"] for p in pts], [DEFAULT_THRESHOLD])[0]
            out["cost_ratio"] = interpolate(ts, [p["cost_ratio"] for p in pts], [DEFAULT_THRESHOLD])[0]
    return out


def card_text(config, metrics: dict | None = None, threshold: dict | None = None, curve_image: str | None = None) -> str:
    """The card: front matter, then the body (the per-exit table, the curve and the default threshold where the
    metrics are known)."""
    task = (config.extra or {}).get("task") or {}
    task_name = task.get("name") or config.task or "text classification"
    labels = list(config.label_names or task.get("label_names") or [str(i) for i in range(config.num_labels)])
    method = METHOD_NAMES.get(config.method, config.method)
    base = base_model_id(config.backbone)
    lines = [f"# {task_name}: an early-exit classifier ({method})", "",
             f"Fine-tuned with sweet ({method}; *Finding the SWEET Spot*, Rotem et al. 2023) from "
             f"{f'[`{base}`](https://huggingface.co/{base})' if base else f'`{config.backbone}`'}, with a classifier "
             f"head (an *exit*) after layers {', '.join(map(str, config.exit_layers))}. At inference an example leaves "
             "at the first exit whose calibrated confidence reaches the threshold, so easy inputs cost less compute.",
             "", f"- **labels** (in id order): {', '.join(f'`{n}`' for n in labels)}",
             f"- **text fields**: {', '.join(task.get('text_fields') or ['text'])}",
             f"- **temperatures** (one per exit, fitted on the calibration split): "
             f"{', '.join(f'{t:.3f}' for t in config.temperatures) if config.temperatures else 'not fitted yet'}"]
    if metrics and "evaluation" in metrics:
        ev = metrics["evaluation"]
        lines += ["", f"## Scores per exit ({ev.get('split', 'evaluation')} split, {ev['n_examples']} examples, "
                      f"{ev['metric']})", "", "Each exit on every example:", "", "| exit layer | score |", "|---|---|"]
        lines += [f"| {p['exit_layer']} | {p['score']:.2f} |" for p in ev["per_exit"]]
        lines += ["", "## Speed-accuracy curve", ""]
        if curve_image:
            lines += [f"![speed-accuracy curve]({curve_image})", ""]
        lines += ["Cost ratio: the mean layers run per example over the full model's (1.0 = the full model for every "
                  "example).", "", "| threshold | cost ratio | score | examples leaving at each exit |", "|---|---|---|---|"]
        lines += [f"| {p['threshold']:.3f} | {p['cost_ratio']:.3f} | {p['score']:.2f} | {p['exit_counts']} |"
                  for p in ev["curve"]]
    lines += ["", "## Default threshold", ""]
    d = _default_threshold(metrics, threshold)
    if d["tuned"] is not None:
        t = d["tuned"]
        budget = ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in t["budget"].items())
        c, e = t["calibration"], t["evaluation"]
        lines += [f"**{d['value']:.4f}** ({d['policy']} policy), chosen by `sweet tune` for the budget *{budget}* on "
                  f"the calibration split ({t['how']}: {t.get('how_detail', '')}).", "",
                  "| split | examples | last exit | score at the threshold | drop | cost ratio |", "|---|---|---|---|---|---|",
                  f"| calibration (predicted) | {c['n_examples']} | {c['last_exit_score']:.2f} | {c['score']:.2f} | "
                  f"{c['drop']:.2f} | {c['cost_ratio']:.3f} |",
                  f"| {e['split']} | {e['n_examples']} | {e['last_exit_score']:.2f} | {e['score']:.2f} | "
                  f"{e['drop']:.2f} | {e['cost_ratio']:.3f} |"]
    else:
        expect = (f" Read off the curve above: score {d['score']:.2f} at cost ratio {d['cost_ratio']:.3f}."
                  if d.get("score") is not None else "")
        lines += [f"**{d['value']}** (confidence policy), sweet's default; not tuned to a budget.{expect} Choose one "
                  "from a budget with `sweet tune RUN_DIR --max-drop 1.0` (points below the last exit) or "
                  "`--target-cost 0.5`."]
    lines += ["", "## How to use", "", "```python", "import sweet", "",
              'clf = sweet.load("PATH_OR_HUB_ID")  # this folder, or its hub id (downloaded with huggingface_hub)',
              f"clf.predict({_example(task)})  # threshold: the default above; or threshold=0.8",
              "```", "", "From the command line: `sweet predict PATH --input texts.txt`; as a service: `sweet serve PATH`."]
    return "---\n" + card_data(config, metrics).to_yaml() + "\n---\n\n" + "\n".join(lines) + "\n"


def _example(task: dict) -> str:
    fields = task.get("text_fields") or ["text"]
    return '["a gripping, funny film"]' if len(fields) == 1 else '[("a man is eating", "someone eats")]'


def draw_curve(metrics: dict, path: Path, threshold: float | None = None) -> Path:
    """The evaluation split's speed-accuracy curve as a PNG (atomic), the default threshold marked."""
    # matplotlib only when a card with a curve is written: importing it would add about a second to every import of
    # sweet.modeling (whose save_pretrained writes cards)
    from matplotlib.figure import Figure

    ev = metrics["evaluation"]
    pts = sorted(ev["curve"], key=lambda p: (p["cost_ratio"], p["threshold"]))
    fig = Figure(figsize=(5, 3.6), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([p["cost_ratio"] for p in pts], [p["score"] for p in pts], marker="o", label="curve (threshold grid)")
    if threshold is not None:
        by_t = sorted(ev["curve"], key=lambda p: p["threshold"])
        ts = [p["threshold"] for p in by_t]
        if ts[0] <= threshold <= ts[-1]:
            c = interpolate(ts, [p["cost_ratio"] for p in by_t], [threshold])[0]
            s = interpolate(ts, [p["score"] for p in by_t], [threshold])[0]
            ax.plot([c], [s], marker="*", markersize=14, linestyle="none", color="tab:red",
                    label=f"default threshold {threshold:.3f}")
    ax.set_xlabel("cost ratio (1 = full model)")
    ax.set_ylabel(ev["metric"])
    ax.set_title(f"{metrics.get('task', '')} {METHOD_NAMES.get(metrics.get('method', ''), metrics.get('method', ''))}, "
                 f"{ev.get('split', 'evaluation')} split", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_model_card(model_dir: str | Path, config, metrics: dict | None = None, threshold: dict | None = None) -> Path:
    """Write (or refresh) ``model_dir/README.md``, and ``curve.png`` beside it when the metrics are known."""
    model_dir = Path(model_dir)
    image = None
    if metrics and "evaluation" in metrics:
        value = threshold["threshold"] if threshold is not None else _default_threshold(metrics, None)["value"]
        draw_curve(metrics, model_dir / CURVE_IMAGE, value)
        image = CURVE_IMAGE
    text = card_text(config, metrics, threshold, image)
    ModelCard(text)  # parses the front matter: a card the hub would refuse fails here, not on upload
    return atomic_write_text(model_dir / CARD_NAME, text)
