"""One run, from data to report: sample, fine-tune, calibrate, evaluate, save (the run directory's layout and
how to read it back are :mod:`sweet.rundir`).

Every input is checked before anything is written, so a bad option or file leaves no directory behind.
All JSON is written atomically (temporary file + rename).
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from .backbones import resolve_backbone
from .calibration import expected_calibration_error, fit_temperatures
from .checkpoint import (
    CHECKPOINT_DIR,
    Checkpointer,
    checkpoint_step,
    training_fingerprint,
)
from .config import RunConfig, training_config
from .data import Examples, TableExamples, Task, make_splits, to_task_ids
from .datasource import load_run_data, run_splits
from .encoding import encode, truncation_note
from .errors import SweetError
from .evaluation import Evaluation, collect_logits, collect_outputs, evaluate_logits
from .io import atomic_write_json, read_json
from .learn_exit import fit_exit_predictors
from .metrics import class_report
from .modelcard import write_model_card
from .modeling import MultiExitModel
from .policies import DEFAULT_THRESHOLD, ConfidencePolicy, decide, make_policy
from .precision import Placement, placement, prepare_for_inference, resolve_device
from .rundir import (
    METRICS_FILE,
    MODEL_DIR,
    RUN_CONFIG,
    SPLITS,
    TASK_KEY,
    TRAIN_LOG,
    check_output_dir,
    check_resume_config,
    effective_max_length,
    environment,
    load_run,
    load_tokenizer,
    make_collator,
    prepare_output_dir,
    refresh_model_card,
)
from .sources import (
    NO_EVAL_SPLIT,
    LabelledTable,
    SourceSpec,
    evaluation_split_name,
    load_source,
)
from .training import seed_everything, train

__all__ = ["RunConfig", "run", "train_run", "evaluate_run", "evaluation_split"]


def run(config: RunConfig, output_dir: str | Path, progress: bool = True, overwrite: bool = False,
        resume: bool = False, stop_file: str | Path | None = None) -> dict:
    """Train one model and evaluate it; returns the metrics (also written to ``output_dir``).

    Every input is checked before anything is written. With ``resume=True``, the unfinished run in
    ``output_dir`` (started with the same options) continues from its checkpoint; the result is the same as
    that of an uninterrupted run. ``stop_file``: while training, once this path exists, the run saves a
    checkpoint at its current step and raises :class:`~sweet.checkpoint.TrainingStopped` (resume it later).

    The function is long because it is the pipeline itself, in order: check, load, sample, build, encode,
    write the config, train, calibrate, evaluate, write the metrics. Each step is one named call."""
    t0 = time.perf_counter()
    train_cfg = training_config(config)
    placed = Placement(resolve_device(config.device), train_cfg.precision)
    out = Path(output_dir)
    check_output_dir(out, overwrite, resume)
    if resume:
        check_resume_config(out, config)
    data = load_run_data(config)
    task = data.task
    splits = make_splits(data, config.n_train, config.seed, config.calibration_size, config.heldout_eval_size)
    for note in data.notes:  # which columns were chosen, rows dropped, small classes
        print(f"note: {note}", file=sys.stderr)

    seed_everything(config.seed)
    tokenizer = load_tokenizer(resolve_backbone(config.backbone))
    model = MultiExitModel.from_backbone(
        config.backbone, exit_layers=config.exit_layers, num_labels=task.num_labels, method=config.method,
        pooling=config.pooling, allow_partial_depth=config.allow_partial_depth, label_names=task.label_names,
        task=task.name,
    )
    model.config.extra[TASK_KEY] = task.to_dict()  # so that the model answers without the data (own data)
    model.to(placed.device)
    collator = make_collator(tokenizer, model)
    max_length = effective_max_length(config.max_length, tokenizer, model)
    encoded = {name: encode(tokenizer, part, max_length, warn=False) for name, part in
               (("train sample", splits.train), ("calibration", splits.calibration), ("evaluation", splits.evaluation))}
    enc_train, enc_cal, enc_eval = encoded.values()
    checkpointer = Checkpointer(out / CHECKPOINT_DIR, every=config.checkpoint_every, stop_file=stop_file)
    if resume and checkpointer.exists():
        checkpointer.verify(training_fingerprint(model, enc_train, train_cfg))

    # Nothing has been written so far: every input above was checked first.
    prepare_output_dir(out, overwrite, resume)
    if not resume:
        atomic_write_json(out / RUN_CONFIG, {**config.to_dict(), "task": config.task and task.name, "max_length_used": max_length,
                                             "environment": environment(), "placement": placed.to_dict()})
    if not resume or not (out / SPLITS).is_file():
        atomic_write_json(out / SPLITS,
                          {**splits.info, "train_ids": splits.train.ids, "calibration_ids": splits.calibration.ids})
    _warn_if_capped(config, max_length)
    note = truncation_note(max_length, encoded)
    if note:
        warnings.warn(note, stacklevel=2)
    if resume:
        _say_where_training_resumes(out)
    t_train = time.perf_counter()
    train_log = train(model, enc_train, collator, train_cfg, progress=progress, checkpointer=checkpointer,
                      resume=resume)
    # training time spent by earlier attempts of a resumed run (train_log's seconds count them too)
    earlier_seconds = max(0.0, train_log["seconds"] - (time.perf_counter() - t_train))
    train_log["n_truncated"] = enc_train.n_truncated
    train_log["max_length"] = max_length
    atomic_write_json(out / TRAIN_LOG, train_log)

    # Calibrate on the held-out calibration split, never on the split we report.
    cal_logits = collect_logits(model, enc_cal, collator, config.eval_batch_size, progress, desc="calibration")
    temperatures = fit_temperatures(cal_logits, splits.calibration.labels)
    model.config.temperatures = temperatures
    learn_exit_log = None
    if config.learn_exit:  # learning-to-exit modules, fitted after fine-tuning with the model frozen (sweet.learn_exit)
        t_lte = time.perf_counter()
        learn_exit_log = fit_exit_predictors(model, enc_cal, collator, seed=config.seed,
                                             batch_size=config.eval_batch_size, progress=progress)
        learn_exit_log["seconds"] = round(time.perf_counter() - t_lte, 2)
    model.save_pretrained(out / MODEL_DIR, tokenizer=tokenizer)

    t_eval = time.perf_counter()
    eval_logits, eval_hidden = collect_outputs(model, enc_eval, collator, config.eval_batch_size, progress,
                                               hidden=config.learn_exit)

    def score_split(logits, labels, policy, split, hidden=None) -> Evaluation:
        return evaluate_logits(logits, labels, exit_layers=model.exit_layers, method=config.method, metric=task.metric,
                               num_labels=task.num_labels, policy=policy, hidden_per_exit=hidden, split=split)

    policy = ConfidencePolicy(temperatures)
    evaluation = score_split(eval_logits, splits.evaluation.labels, policy, splits.evaluation_name)
    # Model selection (e.g. the learning rate) must not look at the reported split: the same curve and
    # AUC on the held-out calibration split.
    selection = score_split(cal_logits, splits.calibration.labels, policy, "calibration")
    evaluation.calibration_error = _ece_pairs(eval_logits, splits.evaluation.labels, policy)
    # The other exit policies on the same logits (cheap: no extra forward pass). "learned" only with --learn-exit.
    classes = _class_reports(eval_logits, splits.evaluation.labels, policy, task.label_names)
    policy_curves = {
        name: score_split(eval_logits, splits.evaluation.labels, make_policy(name, model), splits.evaluation_name,
                          eval_hidden).curve.to_dict()
        for name in (("entropy", "patience", "learned") if config.learn_exit else ("entropy", "patience"))
    }
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
        "evaluation": evaluation.to_dict(),
        "selection": selection.to_dict(),
        "policies": policy_curves,
        "classes": classes,
        **({"data": _data_record(config, data, splits)} if config.own_data else {}),
        **({"learn_exit": learn_exit_log} if learn_exit_log is not None else {}),
        "timing": {
            "train_seconds": train_log["seconds"],
            "train_examples_per_second": train_log["examples_per_second"],
            "eval_seconds": round(time.perf_counter() - t_eval, 2),
            "total_seconds": round(time.perf_counter() - t0 + earlier_seconds, 2),
            **({"seconds_before_resume": round(earlier_seconds, 2)} if resume else {}),
        },
        "data_files": data.files,
        # training ran in train_log's precision; calibration and evaluation in fp32 on the same device
        "placement": {"train": placed.to_dict(), "evaluation": Placement(placed.device, "fp32").to_dict()},
    }
    atomic_write_json(out / METRICS_FILE, metrics)
    write_model_card(out / MODEL_DIR, model.config, metrics)  # now with the per-exit table, curve and threshold
    checkpointer.remove()  # the run is finished; the trained model is in model/
    return metrics


def train_run(*, output: str | Path, text_column: str | None = None, progress: bool = True, overwrite: bool = False,
              resume: bool = False, **fields) -> dict:
    """``sweet.train(data="tickets.csv", text_column="body", label_column="queue", method="sweet",
    output="runs/tickets")``: what ``sweet train`` runs, from Python. ``fields`` are :class:`RunConfig`'s (``task``
    or ``data``, ``method``, ...); ``text_column`` is a shorthand for ``text_columns=[NAME]``. Returns the metrics."""
    if text_column is not None:
        if fields.get("text_columns"):
            raise SweetError("give text_column (single texts) or text_columns (pairs), not both")
        fields["text_columns"] = [text_column]
    if fields.get("data") is not None:
        fields.setdefault("n_train", None)  # own data: every row left after the hold-outs
    return run(RunConfig(**fields), output, progress=progress, overwrite=overwrite, resume=resume)


def _warn_if_capped(config: RunConfig, used: int) -> None:
    """``max_length`` is capped at what the backbone accepts: say so when that changes what was asked.
    run_config.json keeps what was asked in ``max_length`` (it keys grid runs) and records what ran in
    ``max_length_used``."""
    if used != config.max_length:
        warnings.warn(f"--max-length {config.max_length} is more than this backbone accepts; using {used} tokens "
                      f"(run_config.json records it as max_length_used)", stacklevel=3)


def _say_where_training_resumes(out: Path) -> None:
    at = checkpoint_step(out)
    if at is None:
        warnings.warn(f"{out} has no checkpoint yet; training starts from the beginning", stacklevel=3)
    else:
        print(f"resuming {out} from its checkpoint at step {at[0]} of {at[1]}", file=sys.stderr)


def _class_reports(logits_per_exit, labels, policy, label_names) -> dict:
    """Per-class precision, recall, F1 and the confusion matrix at the last exit and at the default threshold."""
    _, at_threshold, _ = decide(policy, logits_per_exit, DEFAULT_THRESHOLD)
    last = np.asarray(logits_per_exit[-1]).argmax(-1)
    return {"last_exit": class_report(labels, last, label_names),
            "at_default_threshold": {"threshold": DEFAULT_THRESHOLD, "policy": "confidence",
                                     **class_report(labels, at_threshold, label_names)}}


def _data_record(config: RunConfig, data, splits) -> dict:
    """What an own-data run read: the source, the columns, the classes and how the splits were drawn."""
    return {"source": config.data, "eval_source": config.eval_data, "files": data.files,
            "text_columns": list(data.task.text_fields), "label_column": config.label_column,
            "label_names": list(data.task.label_names), "metric": data.task.metric,
            "evaluation_split": splits.evaluation_name, "stratified_holdout": data.stratify,
            "n_pool": splits.info["pool_size"], "notes": data.notes}


def _ece_pairs(logits_per_exit, labels, policy) -> list[dict]:
    out = []
    for i, lg in enumerate(logits_per_exit):
        raw = torch.softmax(torch.as_tensor(lg), -1).numpy()
        cal = policy.probabilities(i, torch.as_tensor(lg)).numpy()
        out.append({"exit": i, "before": expected_calibration_error(raw, labels), "after": expected_calibration_error(cal, labels)})
    return out


# ------------------------------------------------------------------------------------- re-evaluation


def evaluation_split(cfg: RunConfig, data_dir: str | None = None):
    """The run's evaluation split (the same rows as at training time) and its name."""
    splits = run_splits(cfg, data_dir)
    return splits.evaluation, splits.evaluation_name


def read_evaluation_data(cfg: RunConfig, task: Task, data: str, data_config: str | None = None,
                         eval_split: str | None = None) -> tuple[Examples, str]:
    """Labelled data to evaluate a run on instead of its own evaluation split: a file (all its rows), or the
    evaluation split of a folder, a ``save_to_disk`` folder or a hub id (``eval_split``, else validation, dev or a
    labelled test split), in any format :mod:`sweet.sources` reads, with the run's text and label columns (a
    preset run: the preset's columns and ``label``). Its labels must be the run's classes. Returns the examples
    and the split's name for the results (``file:PATH``, or ``SOURCE:SPLIT``)."""
    if Path(data).expanduser().is_file():
        if eval_split is not None:
            raise SweetError(f"--eval-split '{eval_split}' does not apply: {data} is a single file (all its rows are "
                             "evaluated)")
        split, name = "train", f"file:{data}"  # a single file is read whole, as its pool
    else:
        split = evaluation_split_name(data, data_config, eval_split)
        name = f"{data}:{split}"
    source = load_source(SourceSpec(data, data_config=data_config, train_split=split, eval_split=NO_EVAL_SPLIT,
                                    text_columns=task.text_fields,
                                    label_column=cfg.label_column if cfg.own_data else "label", scoring_only=True))
    table, names = source.pool, source.label_names
    if not cfg.own_data:
        mapped = to_task_ids(table, names, task, data)
    else:
        unknown = sorted(set(names) - set(task.label_names))
        if unknown:
            raise SweetError(f"{data}: label(s) {', '.join(map(repr, unknown))} are not classes of this run "
                             f"({', '.join(task.label_names)})")
        ids = np.asarray([task.label_names.index(n) for n in names], dtype=np.int64)
        mapped = LabelledTable(table.texts, ids[table.labels], table.rows)
    return TableExamples(mapped, name=name).subset(range(len(mapped))), name


def evaluation_examples(cfg: RunConfig, task: Task, data_dir: str | None = None, data: str | None = None,
                        data_config: str | None = None, eval_split: str | None = None) -> tuple[Examples, str]:
    """What ``evaluate`` and ``bench`` score: ``data`` (:func:`read_evaluation_data`) when given, else the run's
    own evaluation split (:func:`evaluation_split`, its data found again under ``data_dir`` for a preset)."""
    if data is None:
        if data_config is not None or eval_split is not None:
            raise SweetError("--data-config and --eval-split choose the split of --data; give --data SOURCE with them")
        return evaluation_split(cfg, data_dir)
    return read_evaluation_data(cfg, task, data, data_config, eval_split)


def run_evaluation_precision(run_dir: str | Path) -> str:
    """The precision a run's own results were computed in (``placement.evaluation`` of its metrics.json; fp32
    for runs from before it was recorded): the default of a re-evaluation, so that its numbers compare."""
    path = Path(run_dir) / METRICS_FILE
    if path.is_file():
        recorded = (read_json(path).get("placement") or {}).get("evaluation") or {}
        if recorded.get("precision"):
            return str(recorded["precision"])
    return "fp32"


def evaluation_file_name(eval_file: str | None, policy: str, precision: str) -> str:
    """Where ``sweet evaluate`` writes when it does not replace the run's results:
    ``metrics-eval-PRECISION.json`` for the run's own evaluation split, ``metrics-STEM-PRECISION.json`` for
    ``--file STEM.tsv``, with ``-POLICY`` before the precision for a policy other than confidence."""
    what = Path(eval_file).stem if eval_file else "eval"
    suffix = "" if policy == "confidence" else f"-{policy}"
    return f"metrics-{what}{suffix}-{precision}.json"


def evaluate_run(
    run_dir: str | Path,
    data_dir: str | None = None,
    eval_data: str | None = None,
    write: bool = True,
    progress: bool = True,
    policy: str = "confidence",
    device: str = "auto",
    precision: str | None = None,
    overwrite: bool = False,
    data_config: str | None = None,
    eval_split: str | None = None,
) -> dict:
    """Re-evaluate a trained run (its own evaluation split, or other labelled data: ``eval_data``, a file or the
    evaluation split of a folder or hub dataset, :func:`read_evaluation_data`) with an exit policy
    (:data:`sweet.policies.POLICIES`) on ``device`` in ``precision`` (:mod:`sweet.precision`; default: the
    precision the run's results were computed in, :func:`run_evaluation_precision`).

    The result is written to its own file in the run directory (:func:`evaluation_file_name`; the returned
    dict's ``written`` names it). With ``overwrite=True`` on the run's own split it replaces the run's results
    in metrics.json instead: ``evaluation`` for the confidence policy, ``policies.NAME`` for another, and
    ``placement.evaluation`` with the placement used."""
    if overwrite and eval_data:
        raise SweetError("--overwrite replaces the run's own results in metrics.json; it does not apply to --data/--file")
    placed = placement(device, precision or run_evaluation_precision(run_dir))
    cfg, model, tokenizer, task = load_run(run_dir)
    exit_policy = make_policy(policy, model)
    model = prepare_for_inference(model, placed)
    examples, split_name = evaluation_examples(cfg, task, data_dir, eval_data, data_config, eval_split)
    collator = make_collator(tokenizer, model)
    enc = encode(tokenizer, examples, effective_max_length(cfg.max_length, tokenizer, model))
    logits, hidden = collect_outputs(model, enc, collator, cfg.eval_batch_size, progress,
                                     hidden=exit_policy.needs_hidden)
    evaluation = evaluate_logits(
        logits, examples.labels, exit_layers=model.exit_layers, method=model.config.method, metric=task.metric,
        num_labels=task.num_labels, policy=exit_policy, hidden_per_exit=hidden, split=split_name,
        placement=placed.to_dict(),
    )
    result = {"task": task.name, "method": model.config.method, "backbone": cfg.backbone,
              "exit_layers": model.exit_layers, "seed": cfg.seed, "evaluation": evaluation.to_dict()}
    if write:
        result["written"] = str(_write_evaluation(Path(run_dir), result, eval_data, policy, placed, overwrite))
    return result


def _write_evaluation(run_dir: Path, result: dict, eval_file: str | None, policy: str, placed: Placement,
                      overwrite: bool) -> Path:
    evaluation = Evaluation.of_run(result)
    if not overwrite or not (run_dir / METRICS_FILE).is_file():
        path = run_dir / evaluation_file_name(eval_file, policy, placed.precision)
        atomic_write_json(path, result)
        return path
    previous = read_json(run_dir / METRICS_FILE)
    if policy == "confidence":
        previous["evaluation"] = evaluation.to_dict()
        previous.setdefault("placement", {})["evaluation"] = placed.to_dict()
    else:
        previous.setdefault("policies", {})[policy] = evaluation.curve.to_dict()
    atomic_write_json(run_dir / METRICS_FILE, previous)
    refresh_model_card(run_dir)  # the card's table and curve are the run's results: keep them the same
    return run_dir / METRICS_FILE
