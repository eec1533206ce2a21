"""One run, from data to report: sample, fine-tune, calibrate, evaluate, save.

A run directory holds everything a person or a later command needs::

    RUN_DIR/
      run_config.json   what was asked for (task, method, backbone, exits, seed, hyper-parameters, data)
      model/            sweet_config.json (incl. fitted temperatures), model.safetensors, tokenizer
      train_log.json    losses per exit over training, wall time, throughput
      splits.json       ids of the training sample and the calibration rows (provenance)
      metrics.json      per-exit scores, speed-accuracy curve, interpolated scores, AUC (written last:
                        its presence marks a finished run)
      checkpoint/       while training: the latest training checkpoint (sweet.checkpoint); removed once
                        metrics.json is written

Every input is checked before anything is written, so a bad option or file leaves no directory behind.
All JSON is written atomically (temporary file + rename).
"""

from __future__ import annotations

import platform
import shutil
import sys
import time
import warnings
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
    checkpoint_every: int = 200  # optimizer steps between training checkpoints (0: none); see sweet.checkpoint
    allow_partial_depth: bool = False
    data_dir: str | None = None
    data_source: str = "local"
    extra: dict = field(default_factory=dict)
    device: str = "auto"  # auto, cpu, cuda[:N], mps (sweet.precision)
    precision: str = "auto"  # training precision: auto, fp32, bf16, fp16 (auto: fp32 on CPU, bf16/fp16 on CUDA)

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


#: Options that may differ when a run is resumed (they do not change its result). The device may change too,
#: as long as the precision it resolves to is the same (checked against the training fingerprint).
RESUME_MAY_CHANGE = ("data_dir", "checkpoint_every", "device")


def check_run_config(config: RunConfig):
    """Every check that needs no data: a bad option fails here, before anything is read or written.
    Returns the :class:`~sweet.training.TrainConfig` of the run (with the resolved training precision)."""
    from .backbones import resolve_backbone
    from .data import get_task
    from .modeling import POOLINGS, check_method, validate_exit_layers
    from .training import TrainConfig

    get_task(config.task)
    config.method = check_method(config.method)  # canonical spelling: grad_scale -> grad_scale@0.5
    if config.pooling not in ("auto", *POOLINGS):
        raise SweetError(f"unknown pooling {config.pooling!r}; choose one of: auto, {', '.join(POOLINGS)}")
    if config.data_source not in ("local", "hub"):
        raise SweetError(f"unknown data source {config.data_source!r}; use 'local' or 'hub'")
    if config.exit_layers is not None and min(config.exit_layers, default=1) >= 1:
        # shape only (non-empty, increasing); the range is checked against the backbone's depth when it is loaded
        validate_exit_layers(config.exit_layers, max(config.exit_layers, default=1), allow_partial_depth=True)
    positive = {"train-sample size (--n-train)": config.n_train, "calibration size": config.calibration_size,
                "held-out evaluation size": config.heldout_eval_size, "evaluation batch size": config.eval_batch_size}
    for what, value in positive.items():
        if value <= 0:
            raise SweetError(f"{what} must be positive, got {value}")
    if config.max_length < 8:
        raise SweetError(f"max length must be at least 8 tokens, got {config.max_length} (--max-length)")
    if not isinstance(config.extra, dict) or not isinstance(config.extra.get("learn_exit", False), bool):
        raise SweetError(f"extra must be a mapping and extra['learn_exit'] true or false, got {config.extra!r}")
    if isinstance(config.checkpoint_every, bool) or not isinstance(config.checkpoint_every, int) or config.checkpoint_every < 0:
        raise SweetError(f"--checkpoint-every must be 0 (no checkpoints) or a positive number of steps, got {config.checkpoint_every}")
    from .precision import placement

    where = placement(config.device, config.precision, training=True)  # a device/precision it cannot run fails here
    train_cfg = TrainConfig(
        precision=where.precision,
        learning_rate=config.learning_rate,
        epochs=config.epochs,
        batch_size=config.batch_size,
        weight_decay=config.weight_decay,
        warmup_ratio=config.warmup_ratio,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
    )
    resolve_backbone(config.backbone)  # a local path that does not exist fails here
    return train_cfg


def check_output_dir(path: Path, overwrite: bool, resume: bool = False) -> None:
    """Refuse an output path that cannot take this run. Touches nothing."""
    from .checkpoint import checkpoint_step

    if resume and overwrite:
        raise SweetError("--resume continues a run and --overwrite starts it over; pass only one of them")
    if path.exists() and not path.is_dir():
        raise SweetError(f"output path {path} exists and is not a directory")
    is_run, finished = (path / RUN_CONFIG).is_file(), (path / METRICS).is_file()
    if resume:
        if not is_run:
            raise SweetError(f"nothing to resume: {path} is not a sweet run directory ({RUN_CONFIG} is missing); "
                             "run without --resume")
        if finished:
            raise SweetError(f"{path} holds a finished run, there is nothing to resume; pass --overwrite to train it again")
        return
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        if finished:
            raise SweetError(f"{path} already holds a finished run; pass --overwrite or choose another --output")
        if not is_run:
            raise SweetError(f"{path} is not empty and is not a sweet run directory; choose another --output")
        at = checkpoint_step(path)
        if at is not None:
            raise SweetError(f"{path} holds an unfinished run (checkpoint at step {at[0]} of {at[1]}); pass --resume "
                             "to continue it, or --overwrite to start over")


def check_resume_config(path: Path, config: RunConfig) -> None:
    """A run is resumed with the options it was started with (up to :data:`RESUME_MAY_CHANGE`)."""
    from .data import get_task

    saved = load_run_config(path)
    saved.task, now = get_task(saved.task).name, RunConfig(**{**config.to_dict(), "task": get_task(config.task).name})
    diffs = [f"{k}={getattr(saved, k)!r} (now {getattr(now, k)!r})" for k in RunConfig.__dataclass_fields__
             if k not in RESUME_MAY_CHANGE and getattr(saved, k) != getattr(now, k)]
    if diffs:
        raise SweetError(f"cannot resume {path}: it was started with {', '.join(diffs)}; pass the same options, "
                         "or --overwrite to start over")


def prepare_output_dir(path: Path, overwrite: bool, resume: bool = False) -> None:
    from .checkpoint import CHECKPOINT_DIR

    check_output_dir(path, overwrite, resume)
    path.mkdir(parents=True, exist_ok=True)
    stale = path / METRICS
    if stale.exists():
        stale.unlink()
    if not resume:  # a checkpoint of an earlier attempt must not be mixed into this one
        shutil.rmtree(path / CHECKPOINT_DIR, ignore_errors=True)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise SweetError(f"cannot load a tokenizer from '{path}': {exc}") from exc


def effective_max_length(requested: int, tokenizer, model) -> int:
    """``requested`` tokens per example, capped at what the backbone accepts: its position embeddings
    (less the padding offset of RoBERTa-style models) and the tokenizer's declared maximum."""
    limits = []
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and declared < 1_000_000:  # tokenizers without a limit declare ~1e30
        limits.append(declared)
    cfg = model.backbones[0].config
    positions = getattr(cfg, "max_position_embeddings", None)
    if positions and getattr(cfg, "position_biased_input", True) is not False:  # DeBERTa-v2: relative only
        if cfg.model_type in ("roberta", "xlm-roberta", "camembert", "mpnet"):
            positions -= (cfg.pad_token_id or 0) + 1
        limits.append(int(positions))
    return min([requested, *limits])


def make_collator(tokenizer, model):
    from .batching import Collator

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Collator(pad, use_token_type_ids="token_type_ids" in model._inputs)


def run(config: RunConfig, output_dir: str | Path, progress: bool = True, overwrite: bool = False,
        resume: bool = False) -> dict:
    """Train one model and evaluate it; returns the metrics (also written to ``output_dir``).

    Every input is checked before anything is written. With ``resume=True``, the unfinished run in
    ``output_dir`` (started with the same options) continues from its checkpoint; the result is the same as
    that of an uninterrupted run."""
    from .backbones import resolve_backbone
    from .batching import encode, truncation_note
    from .calibration import fit_temperatures
    from .checkpoint import CHECKPOINT_DIR, Checkpointer, checkpoint_step, training_fingerprint
    from .data import load_task, make_splits
    from .evaluation import collect_logits, evaluate_logits
    from .modeling import MultiExitModel
    from .policies import ConfidencePolicy, make_policy
    from .precision import Placement, resolve_device
    from .training import seed_everything, train

    t0 = time.perf_counter()
    train_cfg = check_run_config(config)
    where = Placement(resolve_device(config.device), train_cfg.precision)
    out = Path(output_dir)
    check_output_dir(out, overwrite, resume)
    if resume:
        check_resume_config(out, config)
    data = load_task(config.task, config.data_dir, source=config.data_source)
    task = data.task
    splits = make_splits(data, config.n_train, config.seed, config.calibration_size, config.heldout_eval_size)

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
    model.to(where.device)
    collator = make_collator(tokenizer, model)
    max_length = effective_max_length(config.max_length, tokenizer, model)
    encoded = {name: encode(tokenizer, part, max_length, warn=False) for name, part in
               (("train sample", splits.train), ("calibration", splits.calibration), ("evaluation", splits.evaluation))}
    enc_train, enc_cal, enc_eval = encoded.values()
    checkpointer = Checkpointer(out / CHECKPOINT_DIR, every=config.checkpoint_every)
    if resume and checkpointer.exists():
        checkpointer.verify(training_fingerprint(model, enc_train, train_cfg))

    # Nothing has been written so far: every input above was checked first.
    prepare_output_dir(out, overwrite, resume)
    if not resume:
        atomic_write_json(out / RUN_CONFIG, {**config.to_dict(), "task": task.name, "environment": environment(),
                                             "placement": where.to_dict()})
    if not resume or not (out / "splits.json").is_file():
        atomic_write_json(
            out / "splits.json",
            {**splits.info, "train_ids": splits.train.ids, "calibration_ids": splits.calibration.ids},
        )
    note = truncation_note(max_length, encoded)
    if note:
        warnings.warn(note, stacklevel=2)
    if resume:
        at = checkpoint_step(out)
        if at is None:
            warnings.warn(f"{out} has no checkpoint yet; training starts from the beginning", stacklevel=2)
        else:
            print(f"resuming {out} from its checkpoint at step {at[0]} of {at[1]}", file=sys.stderr)
    train_log = train(model, enc_train, collator, train_cfg, progress=progress, checkpointer=checkpointer,
                      resume=resume)
    train_log["n_truncated"] = enc_train.n_truncated
    train_log["max_length"] = max_length
    atomic_write_json(out / "train_log.json", train_log)

    # Calibrate on the held-out calibration split, never on the split we report.
    cal_logits = collect_logits(model, enc_cal, collator, config.eval_batch_size, progress, desc="calibration")
    temperatures = fit_temperatures(cal_logits, splits.calibration.labels)
    model.config.temperatures = temperatures
    learn_exit = bool(config.extra.get("learn_exit", False))
    learn_exit_log = None
    if learn_exit:  # learning-to-exit modules, fitted after fine-tuning with the model frozen (sweet.learn_exit)
        from .learn_exit import fit_exit_predictors

        t_lte = time.perf_counter()
        learn_exit_log = fit_exit_predictors(model, enc_cal, collator, seed=config.seed,
                                             batch_size=config.eval_batch_size, progress=progress)
        learn_exit_log["seconds"] = round(time.perf_counter() - t_lte, 2)
    model.save_pretrained(out / MODEL_DIR, tokenizer=tokenizer)

    t_eval = time.perf_counter()
    eval_hidden = None
    if learn_exit:
        eval_logits, eval_hidden = collect_logits(model, enc_eval, collator, config.eval_batch_size, progress,
                                                  desc="evaluate", with_hidden=True)
    else:
        eval_logits = collect_logits(model, enc_eval, collator, config.eval_batch_size, progress, desc="evaluate")
    def score_split(logits, labels, policy, hidden=None) -> dict:
        return evaluate_logits(logits, labels, exit_layers=model.exit_layers, method=config.method,
                               metric=task.metric, num_labels=task.num_labels, policy=policy, hidden_per_exit=hidden)

    policy = ConfidencePolicy(temperatures)
    evaluation = score_split(eval_logits, splits.evaluation.labels, policy)
    evaluation["split"] = splits.evaluation_name
    # Model selection (e.g. the learning rate) must not look at the reported split: the same curve and
    # AUC on the held-out calibration split.
    selection = score_split(cal_logits, splits.calibration.labels, policy)
    selection["split"] = "calibration"
    evaluation["ece_before_after_calibration"] = _ece_pairs(eval_logits, splits.evaluation.labels, policy)
    # The other exit policies on the same logits (cheap: no extra forward pass). "learned" only with --learn-exit.
    policy_curves = {}
    for name in ("entropy", "patience", "learned") if learn_exit else ("entropy", "patience"):
        pe = score_split(eval_logits, splits.evaluation.labels, make_policy(name, model), eval_hidden)
        policy_curves[name] = {k: pe[k] for k in ("policy", "curve", "interpolated", "auc", "auc_range")}
        policy_curves[name]["split"] = splits.evaluation_name
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
        "policies": policy_curves,
        **({"learn_exit": learn_exit_log} if learn_exit_log is not None else {}),
        "timing": {
            "train_seconds": train_log["seconds"],
            "train_examples_per_second": train_log["examples_per_second"],
            "eval_seconds": round(time.perf_counter() - t_eval, 2),
            "total_seconds": round(time.perf_counter() - t0, 2),
        },
        "data_files": data.files,
        # training ran in train_log's precision; calibration and evaluation in fp32 on the same device
        "placement": {"train": where.to_dict(), "evaluation": Placement(where.device, "fp32").to_dict()},
    }
    atomic_write_json(out / METRICS, metrics)
    checkpointer.remove()  # the run is finished; the trained model is in model/
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
    if (p / RUN_CONFIG).is_file():
        raise SweetError(f"{p} is an unfinished run (it has no {MODEL_DIR}/ yet); finish it with "
                         f"'sweet train ... --resume --output {p}'")
    raise SweetError(f"{p} is not a sweet run directory (no {MODEL_DIR}/{CONFIG_NAME}) nor a model directory")


def load_run_config(run_dir: str | Path) -> RunConfig:
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise SweetError(f"{run_dir} is not a sweet run directory ({RUN_CONFIG} is missing)")
    try:
        raw = read_json(path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SweetError(f"{path}: not valid JSON ({exc}); the file is damaged") from exc
    if not isinstance(raw, dict):
        raise SweetError(f"{path}: expected a JSON object")
    raw.pop("environment", None)
    raw.pop("placement", None)  # what the options resolved to on the machine that ran it (provenance)
    try:
        return RunConfig.from_dict(raw)
    except SweetError as exc:
        raise SweetError(f"{path}: {exc}; it was edited by hand or written by another version of sweet") from exc
    except TypeError as exc:  # a required key is missing
        raise SweetError(f"{path}: {exc}") from exc


def load_model(run_dir: str | Path, task: str | None = None, *, suggest_task: bool = False):
    """A trained model, its tokenizer and its task from a run directory (or its ``model/`` directory), checked
    to agree on the number of labels. ``task`` defaults to the one the model records; ``suggest_task`` names
    that one in the error (for callers whose user chose the task)."""
    from .data import get_task
    from .modeling import MultiExitModel

    mdir = model_dir_of(run_dir)
    model = MultiExitModel.from_pretrained(mdir)
    tokenizer = load_tokenizer(str(mdir))
    name = task or model.config.task
    if name is None:
        raise SweetError("the model does not record its task; pass the task (--task)")
    t = get_task(name)
    if model.config.num_labels != t.num_labels:
        raise SweetError(f"the model has {model.config.num_labels} labels but task {t.name} has {t.num_labels}"
                         + (f"; pass the task it was trained on ({model.config.task})" if suggest_task else ""))
    return model, tokenizer, t


def load_run(run_dir: str | Path):
    """A trained run's (config, model, tokenizer, task), the task being the one its run config names."""
    cfg = load_run_config(run_dir)
    return (cfg, *load_model(run_dir, cfg.task))


def evaluation_split(cfg: RunConfig, task, data_dir: str | None = None):
    """The run's evaluation split (the same rows as at training time) and its name."""
    from .data import load_task, make_splits

    data = load_task(task, data_dir or cfg.data_dir, source=cfg.data_source)
    splits = make_splits(data, cfg.n_train, cfg.seed, cfg.calibration_size, cfg.heldout_eval_size)
    return splits.evaluation, splits.evaluation_name


def evaluate_run(
    run_dir: str | Path,
    data_dir: str | None = None,
    eval_file: str | None = None,
    write: bool = True,
    progress: bool = True,
    policy: str = "confidence",
    device: str = "auto",
    precision: str = "auto",
) -> dict:
    """Re-evaluate a trained run (its own evaluation split, or a labelled TSV file of the same task) with an
    exit policy (:data:`sweet.policies.POLICIES`) on ``device`` in ``precision`` (:mod:`sweet.precision`). The
    confidence evaluation replaces ``evaluation`` in metrics.json; another policy's curve is written under
    ``policies.NAME`` (the confidence one is kept)."""
    from .batching import encode
    from .data import read_tsv
    from .evaluation import collect_logits, evaluate_logits
    from .policies import make_policy

    from .precision import placement, prepare_for_inference

    where = placement(device, precision)
    cfg, model, tokenizer, task = load_run(run_dir)
    exit_policy = make_policy(policy, model)
    model = prepare_for_inference(model, where)
    if eval_file:
        examples = read_tsv(Path(eval_file), task)
        split_name = f"file:{eval_file}"
    else:
        examples, split_name = evaluation_split(cfg, task, data_dir)
    collator = make_collator(tokenizer, model)
    enc = encode(tokenizer, examples, effective_max_length(cfg.max_length, tokenizer, model))
    hidden = None
    if exit_policy.needs_hidden:
        logits, hidden = collect_logits(model, enc, collator, cfg.eval_batch_size, progress, desc="evaluate",
                                        with_hidden=True)
    else:
        logits = collect_logits(model, enc, collator, cfg.eval_batch_size, progress, desc="evaluate")
    evaluation = evaluate_logits(
        logits, examples.labels, exit_layers=model.exit_layers, method=model.config.method,
        metric=task.metric, num_labels=task.num_labels, policy=exit_policy, hidden_per_exit=hidden,
    )
    evaluation["split"] = split_name
    evaluation["placement"] = where.to_dict()
    result = {"task": task.name, "method": model.config.method, "backbone": cfg.backbone,
              "exit_layers": model.exit_layers, "seed": cfg.seed, "evaluation": evaluation}
    if write:
        suffix = "" if policy == "confidence" else f"-{policy}"
        name = "metrics.json" if not eval_file else f"metrics-{Path(eval_file).stem}{suffix}.json"
        if name == METRICS and (Path(run_dir) / METRICS).is_file():
            previous = read_json(Path(run_dir) / METRICS)
            if policy == "confidence":
                previous["evaluation"] = evaluation
            else:
                previous.setdefault("policies", {})[policy] = {
                    k: evaluation[k] for k in ("policy", "curve", "interpolated", "auc", "auc_range", "split")}
            atomic_write_json(Path(run_dir) / name, previous)
        else:
            atomic_write_json(Path(run_dir) / name, result)
    return result


def predict_texts(model_or_run_dir: str | Path, lines: Sequence[str], threshold: float, task: str | None = None,
                  batch_size: int = 64, policy: str = "confidence", device: str = "auto",
                  precision: str = "auto") -> list[dict]:
    """Predict unlabelled lines (pair tasks: two tab-separated texts) with an exit policy (default: confidence) at
    ``threshold``, through :class:`sweet.predictor.Predictor`. Each row gets the label, the exit layer and the
    calibrated max probability at that exit (``confidence``); with another policy also that policy's score
    there (``score``)."""
    from .batching import encode
    from .data import read_unlabelled
    from .policies import check_threshold
    from .predictor import Predictor

    threshold = check_threshold(threshold)
    predictor = Predictor.load(model_or_run_dir, device=device, precision=precision, task=task, threshold=threshold,
                               policy=policy, batch_size=batch_size)
    examples = read_unlabelled(lines, predictor.task)
    enc = encode(predictor.tokenizer, examples, predictor.max_length)
    return predictor.predict_encoded(enc)
