"""One run, from data to report: sample, fine-tune, calibrate, evaluate, save.

A run directory holds everything a person or a later command needs::

    RUN_DIR/
      run_config.json   what was asked for (task, method, backbone, exits, seed, hyper-parameters, data)
      model/            sweet_config.json (incl. fitted temperatures), model.safetensors, tokenizer
      train_log.json    losses per exit over training, wall time, throughput
      splits.json       ids of the training sample and the calibration rows (provenance)
      metrics.json      per-exit scores, speed-accuracy curve, interpolated scores, AUC (written last:
                        its presence marks a finished run)
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from .errors import SweetError
from .io import atomic_write_json, read_json

RUN_CONFIG = "run_config.json"
METRICS = "metrics.json"
MODEL_DIR = "model"


@dataclass
class RunConfig:
    task: str
    method: str
    backbone: str = "default"
    exit_layers: list[int] | None = None  # None: the backbone's default ladder ([1, 2, 4, 6] for 6 layers)
    n_train: int = 6000
    seed: int = 0
    learning_rate: float = 5e-5
    epochs: int = 2
    batch_size: int = 16
    max_length: int = 256
    pooling: str = "auto"  # cls, mean, or auto (the backbone's pretraining pooling, else cls)
    max_grad_norm: float | None = 1.0
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    calibration_size: int = 1000
    heldout_eval_size: int = 2000
    eval_batch_size: int = 64
    allow_partial_depth: bool = False
    data_dir: str | None = None
    data_source: str = "local"
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise SweetError(f"run config has unknown key(s): {', '.join(unknown)}")
        return cls(**d)


def environment() -> dict:
    import numpy
    import torch
    import transformers

    from . import __version__

    return {
        "sweet": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
    }


def prepare_output_dir(path: Path, overwrite: bool) -> None:
    if path.exists() and not path.is_dir():
        raise SweetError(f"output path {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        if (path / METRICS).is_file() and not overwrite:
            raise SweetError(f"{path} already holds a finished run; pass --overwrite or choose another --output")
        if not (path / RUN_CONFIG).is_file() and not overwrite:
            raise SweetError(f"{path} is not empty and is not a sweet run directory; choose another --output")
    path.mkdir(parents=True, exist_ok=True)
    stale = path / METRICS
    if stale.exists():
        stale.unlink()


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise SweetError(f"cannot load a tokenizer from '{path}': {exc}") from exc


def make_collator(tokenizer, model):
    from .batching import Collator

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Collator(pad, use_token_type_ids="token_type_ids" in model._inputs)


def run(config: RunConfig, output_dir: str | Path, progress: bool = True, overwrite: bool = False) -> dict:
    """Train one model and evaluate it; returns the metrics (also written to ``output_dir``)."""
    from .backbones import resolve_backbone
    from .batching import encode
    from .calibration import fit_temperatures
    from .data import load_task, make_splits
    from .evaluation import collect_logits, evaluate_logits
    from .modeling import MultiExitModel, check_method
    from .policies import ConfidencePolicy
    from .training import TrainConfig, seed_everything, train

    t0 = time.perf_counter()
    check_method(config.method)
    train_cfg = TrainConfig(
        learning_rate=config.learning_rate,
        epochs=config.epochs,
        batch_size=config.batch_size,
        weight_decay=config.weight_decay,
        warmup_ratio=config.warmup_ratio,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
    )
    data = load_task(config.task, config.data_dir, source=config.data_source)
    task = data.task
    splits = make_splits(data, config.n_train, config.seed, config.calibration_size, config.heldout_eval_size)
    out = Path(output_dir)
    prepare_output_dir(out, overwrite)
    atomic_write_json(out / RUN_CONFIG, {**config.to_dict(), "task": task.name, "environment": environment()})
    atomic_write_json(
        out / "splits.json",
        {**splits.info, "train_ids": splits.train.ids, "calibration_ids": splits.calibration.ids},
    )

    seed_everything(config.seed)
    backbone_path = resolve_backbone(config.backbone)
    tokenizer = load_tokenizer(backbone_path)
    model = MultiExitModel.from_backbone(
        config.backbone,
        exit_layers=config.exit_layers,
        num_labels=task.num_labels,
        method=config.method,
        pooling=config.pooling,
        allow_partial_depth=config.allow_partial_depth,
        label_names=task.label_names,
        task=task.name,
    )
    collator = make_collator(tokenizer, model)
    enc_train = encode(tokenizer, splits.train, config.max_length)
    train_log = train(model, enc_train, collator, train_cfg, progress=progress)
    train_log["n_truncated"] = enc_train.n_truncated
    atomic_write_json(out / "train_log.json", train_log)

    # Calibrate on the held-out calibration split, never on the split we report.
    enc_cal = encode(tokenizer, splits.calibration, config.max_length)
    cal_logits = collect_logits(model, enc_cal, collator, config.eval_batch_size, progress, desc="calibration")
    temperatures = fit_temperatures(cal_logits, splits.calibration.labels)
    model.config.temperatures = temperatures
    model.save_pretrained(out / MODEL_DIR, tokenizer=tokenizer)

    t_eval = time.perf_counter()
    enc_eval = encode(tokenizer, splits.evaluation, config.max_length)
    eval_logits = collect_logits(model, enc_eval, collator, config.eval_batch_size, progress, desc="evaluate")
    policy = ConfidencePolicy(temperatures)
    evaluation = evaluate_logits(
        eval_logits,
        splits.evaluation.labels,
        exit_layers=model.exit_layers,
        method=config.method,
        metric=task.metric,
        num_labels=task.num_labels,
        policy=policy,
    )
    evaluation["split"] = splits.evaluation_name
    # Model selection (e.g. the learning rate) must not look at the reported split: the same curve and
    # AUC on the held-out calibration split.
    selection = evaluate_logits(
        cal_logits,
        splits.calibration.labels,
        exit_layers=model.exit_layers,
        method=config.method,
        metric=task.metric,
        num_labels=task.num_labels,
        policy=policy,
    )
    selection["split"] = "calibration"
    evaluation["ece_before_after_calibration"] = _ece_pairs(eval_logits, splits.evaluation.labels, policy)
    metrics = {
        "task": task.name,
        "method": config.method,
        "backbone": config.backbone,
        "exit_layers": model.exit_layers,
        "seed": config.seed,
        "learning_rate": config.learning_rate,
        "n_train": splits.info["n_train"],
        "calibration": {"split": "calibration (held out from the training pool)", "n_examples": len(splits.calibration),
                        "temperatures": temperatures},
        "evaluation": evaluation,
        "selection": selection,
        "timing": {
            "train_seconds": train_log["seconds"],
            "train_examples_per_second": train_log["examples_per_second"],
            "eval_seconds": round(time.perf_counter() - t_eval, 2),
            "total_seconds": round(time.perf_counter() - t0, 2),
        },
        "data_files": data.files,
    }
    atomic_write_json(out / METRICS, metrics)
    return metrics


def _ece_pairs(logits_per_exit, labels, policy) -> list[dict]:
    import numpy as np
    import torch

    from .calibration import expected_calibration_error

    out = []
    for i, lg in enumerate(logits_per_exit):
        raw = torch.softmax(torch.as_tensor(lg), -1).numpy()
        cal = policy.probabilities(i, torch.as_tensor(lg)).numpy()
        out.append({"exit": i, "before": expected_calibration_error(raw, labels), "after": expected_calibration_error(cal, labels)})
    return out


# ------------------------------------------------------------------------------------- run directories


def model_dir_of(path: str | Path) -> Path:
    """Accept a run directory (with model/) or a model directory."""
    from .modeling import CONFIG_NAME

    p = Path(path)
    if not p.exists():
        raise SweetError(f"{p} does not exist")
    if (p / MODEL_DIR / CONFIG_NAME).is_file():
        return p / MODEL_DIR
    if (p / CONFIG_NAME).is_file():
        return p
    raise SweetError(f"{p} is not a sweet run directory (no {MODEL_DIR}/{CONFIG_NAME}) nor a model directory")


def load_run_config(run_dir: str | Path) -> RunConfig:
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise SweetError(f"{run_dir} is not a sweet run directory ({RUN_CONFIG} is missing)")
    raw = read_json(path)
    raw.pop("environment", None)
    return RunConfig.from_dict(raw)


def evaluate_run(
    run_dir: str | Path,
    data_dir: str | None = None,
    eval_file: str | None = None,
    write: bool = True,
    progress: bool = True,
) -> dict:
    """Re-evaluate a trained run (its own evaluation split, or a labelled TSV file of the same task)."""
    from .batching import encode
    from .data import get_task, load_task, make_splits, read_tsv
    from .evaluation import collect_logits, evaluate_logits
    from .modeling import MultiExitModel
    from .policies import ConfidencePolicy

    cfg = load_run_config(run_dir)
    mdir = model_dir_of(run_dir)
    model = MultiExitModel.from_pretrained(mdir)
    tokenizer = load_tokenizer(str(mdir))
    task = get_task(cfg.task)
    if model.config.num_labels != task.num_labels:
        raise SweetError(f"the model has {model.config.num_labels} labels but task {task.name} has {task.num_labels}")
    if eval_file:
        examples = read_tsv(Path(eval_file), task)
        split_name = f"file:{eval_file}"
    else:
        data = load_task(task, data_dir or cfg.data_dir, source=cfg.data_source)
        splits = make_splits(data, cfg.n_train, cfg.seed, cfg.calibration_size, cfg.heldout_eval_size)
        examples, split_name = splits.evaluation, splits.evaluation_name
    collator = make_collator(tokenizer, model)
    enc = encode(tokenizer, examples, cfg.max_length)
    logits = collect_logits(model, enc, collator, cfg.eval_batch_size, progress, desc="evaluate")
    policy = ConfidencePolicy(model.config.temperatures)
    evaluation = evaluate_logits(
        logits, examples.labels, exit_layers=model.exit_layers, method=model.config.method,
        metric=task.metric, num_labels=task.num_labels, policy=policy,
    )
    evaluation["split"] = split_name
    result = {"task": task.name, "method": model.config.method, "backbone": cfg.backbone,
              "exit_layers": model.exit_layers, "seed": cfg.seed, "evaluation": evaluation}
    if write:
        name = "metrics.json" if not eval_file else f"metrics-{Path(eval_file).stem}.json"
        if name == METRICS and (Path(run_dir) / METRICS).is_file():
            previous = read_json(Path(run_dir) / METRICS)
            previous["evaluation"] = evaluation
            result = previous
        atomic_write_json(Path(run_dir) / name, result)
    return result


def predict_texts(model_or_run_dir: str | Path, lines: Sequence[str], threshold: float, task: str | None = None,
                  batch_size: int = 64) -> list[dict]:
    """Predict unlabelled texts with the confidence policy at ``threshold``."""
    from .batching import encode
    from .data import get_task, read_unlabelled
    from .evaluation import collect_logits
    from .modeling import MultiExitModel
    from .policies import ConfidencePolicy, check_threshold, decide

    threshold = check_threshold(threshold)
    mdir = model_dir_of(model_or_run_dir)
    model = MultiExitModel.from_pretrained(mdir)
    tokenizer = load_tokenizer(str(mdir))
    task_name = task or model.config.task
    if task_name is None:
        raise SweetError("the model does not record its task; pass --task")
    t = get_task(task_name)
    examples = read_unlabelled(lines, t)
    run_cfg = Path(model_or_run_dir) / RUN_CONFIG
    max_length = load_run_config(model_or_run_dir).max_length if run_cfg.is_file() else 256
    collator = make_collator(tokenizer, model)
    enc = encode(tokenizer, examples, max_length)
    logits = collect_logits(model, enc, collator, batch_size, progress=False)
    policy = ConfidencePolicy(model.config.temperatures)
    chosen, preds, conf = decide(policy, logits, threshold)
    names = model.config.label_names or [str(i) for i in range(model.config.num_labels)]
    return [
        {"label": names[int(p)], "label_id": int(p), "exit_layer": model.exit_layers[int(c)], "confidence": float(s)}
        for c, p, s in zip(chosen, preds, conf)
    ]
