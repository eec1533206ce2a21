"""The run directory: its layout, and how to read one back.

A run directory holds everything a person or a later command needs::

    RUN_DIR/
      run_config.json   what was asked for (task, method, backbone, exits, seed, hyper-parameters, data), the
                        environment (versions, threads) and the placement (device, precision) it ran with
      model/            sweet_config.json (incl. fitted temperatures), model.safetensors, tokenizer
      train_log.json    losses per exit over training, wall time, throughput
      splits.json       ids of the training sample and the calibration rows (provenance)
      metrics.json      per-exit scores, speed-accuracy curve, interpolated scores, AUC (written last:
                        its presence marks a finished run)
      threshold.json    only after 'sweet tune': the default threshold chosen from a budget on the calibration
                        split (sweet.tuning); predict and serve use it when no threshold is given
      checkpoint/       while training: the latest training checkpoint (sweet.checkpoint); removed once
                        metrics.json is written

This module knows the file names, checks an output directory before a run writes to it, and loads a finished
run's config, model and tokenizer (with the collator and the token limit the model needs). The pipeline that
writes a run is :mod:`sweet.runs`.
"""

from __future__ import annotations

import platform
import shutil
from pathlib import Path

import numpy
import torch
import transformers
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
from transformers import AutoTokenizer
from transformers.utils import logging as hf_logging

from .backbones import looks_like_path
from .checkpoint import CHECKPOINT_DIR, checkpoint_step
from .config import RESUME_MAY_CHANGE, RunConfig
from .data import Task, get_task
from .encoding import Collator
from .errors import SweetError
from .io import read_json
from .modelcard import write_model_card
from .modeling import CONFIG_NAME, MultiExitConfig, MultiExitModel
from .thresholds import THRESHOLD_FILE, read_threshold
from .version import __version__

RUN_CONFIG = "run_config.json"
METRICS_FILE = "metrics.json"
MODEL_DIR = "model"
TRAIN_LOG = "train_log.json"
SPLITS = "splits.json"
#: the run's default threshold, chosen from a budget by ``sweet tune`` (:mod:`sweet.tuning`); a copy in model/

#: keys of run_config.json that record what the options resolved to on the machine that ran it, not what was
#: asked: the environment (versions, threads), the placement (device, precision) and the token limit used
PROVENANCE_KEYS = ("environment", "placement", "max_length_used")

#: key of a model's sweet_config.json ``extra`` that records its task (name, text fields, label names, metric)
TASK_KEY = "task"


def environment() -> dict:
    """Versions and threads of the process that runs: recorded with every run and benchmark."""
    return {
        "sweet": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
    }


# ------------------------------------------------------------------------------------- writing a run


def check_output_dir(path: Path, overwrite: bool, resume: bool = False) -> None:
    """Refuse an output path that cannot take this run. Touches nothing."""
    if resume and overwrite:
        raise SweetError("--resume continues a run and --overwrite starts it over; pass only one of them")
    if path.exists() and not path.is_dir():
        raise SweetError(f"output path {path} exists and is not a directory")
    is_run, finished = (path / RUN_CONFIG).is_file(), (path / METRICS_FILE).is_file()
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
    """A run is resumed with the options it was started with (up to :data:`~sweet.config.RESUME_MAY_CHANGE`)."""
    saved = load_run_config(path)
    saved.task, now = get_task(saved.task).name, RunConfig(**{**config.to_dict(), "task": get_task(config.task).name})
    diffs = [f"{k}={getattr(saved, k)!r} (now {getattr(now, k)!r})" for k in RunConfig.__dataclass_fields__
             if k not in RESUME_MAY_CHANGE and getattr(saved, k) != getattr(now, k)]
    if diffs:
        raise SweetError(f"cannot resume {path}: it was started with {', '.join(diffs)}; pass the same options, "
                         "or --overwrite to start over")


def prepare_output_dir(path: Path, overwrite: bool, resume: bool = False) -> None:
    check_output_dir(path, overwrite, resume)
    path.mkdir(parents=True, exist_ok=True)
    # a threshold tuned for an earlier model must not outlive it
    for stale in (path / METRICS_FILE, path / THRESHOLD_FILE, path / MODEL_DIR / THRESHOLD_FILE):
        if stale.exists():
            stale.unlink()
    if not resume:  # a checkpoint of an earlier attempt must not be mixed into this one
        shutil.rmtree(path / CHECKPOINT_DIR, ignore_errors=True)


# ------------------------------------------------------------------------------------- tokenizer and batches


def hide_hf_progress_bars() -> None:
    """Turn off transformers' own progress bars ("Loading weights", "Writing model shards"): for --no-progress and
    for grid runs, whose output is a log."""
    hf_logging.disable_progress_bar()


def load_tokenizer(path: str):
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise SweetError(f"cannot load a tokenizer from '{path}': {exc}") from exc


def token_limit(tokenizer, model) -> int | None:
    """The most tokens per example the backbone accepts: its position embeddings (less the padding offset of
    RoBERTa-style models) and the tokenizer's declared maximum; None when neither declares one."""
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
    return min(limits) if limits else None


def effective_max_length(requested: int, tokenizer, model) -> int:
    """``requested`` tokens per example, capped at what the backbone accepts (:func:`token_limit`)."""
    limit = token_limit(tokenizer, model)
    return requested if limit is None else min(requested, limit)


def make_collator(tokenizer, model) -> Collator:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Collator(pad, use_token_type_ids="token_type_ids" in model._inputs)


# ------------------------------------------------------------------------------------- reading a run


def fetch_model(path: str | Path) -> Path:
    """A local run or model directory as given, or a Hugging Face hub id (``org/name``) that is not a local path,
    downloaded with ``huggingface_hub.snapshot_download`` (into its cache; later calls reuse it)."""
    p = Path(path)
    name = str(path)
    if p.exists() or looks_like_path(name):
        return p
    try:
        return Path(snapshot_download(repo_id=name, library_name="sweet"))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SweetError(f"{name} is not a local directory and could not be downloaded from the Hugging Face hub "
                         f"({reason}); check the id and the network (offline: pass a local run or model directory)"
                         ) from exc


def model_dir_of(path: str | Path) -> Path:
    """Accept a run directory (with model/) or a model directory."""
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


def read_run_config_file(run_dir: str | Path) -> dict:
    """``run_config.json`` as written (with its ``environment`` and ``placement`` provenance)."""
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise SweetError(f"{run_dir} is not a sweet run directory ({RUN_CONFIG} is missing)")
    try:
        raw = read_json(path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SweetError(f"{path}: not valid JSON ({exc}); the file is damaged") from exc
    if not isinstance(raw, dict):
        raise SweetError(f"{path}: expected a JSON object")
    return raw


def load_run_config(run_dir: str | Path) -> RunConfig:
    path = Path(run_dir) / RUN_CONFIG
    raw = read_run_config_file(run_dir)
    for key in PROVENANCE_KEYS:
        raw.pop(key, None)
    try:
        return RunConfig.from_dict(raw)
    except SweetError as exc:
        raise SweetError(f"{path}: {exc}; it was edited by hand or written by another version of sweet") from exc
    except TypeError as exc:  # a required key is missing
        raise SweetError(f"{path}: {exc}") from exc


def load_model(run_dir: str | Path, task: str | None = None, *, suggest_task: bool = False
               ) -> tuple[MultiExitModel, object, Task]:
    """A trained model, its tokenizer and its task from a run directory (or its ``model/`` directory), checked
    to agree on the number of labels. ``task`` defaults to the one the model records; ``suggest_task`` names
    that one in the error (for callers whose user chose the task)."""
    mdir = model_dir_of(run_dir)
    model = MultiExitModel.from_pretrained(mdir)
    tokenizer = load_tokenizer(str(mdir))
    recorded = model.config.extra.get(TASK_KEY)
    if task is None and recorded is not None:  # own data (or a preset with another metric): the model says it all
        return model, tokenizer, Task.from_dict(recorded)
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


def refresh_model_card(run_dir: str | Path) -> Path | None:
    """Rewrite the model card (``model/README.md`` and its curve) from the run's files as they are now: its
    ``metrics.json``, model config and stored threshold (``threshold.json``). Whatever changes them
    (``sweet tune``, ``sweet evaluate --overwrite``) calls this, so the card never describes older numbers. None when
    the run has no model directory."""
    run_dir = Path(run_dir)
    model_dir = run_dir / MODEL_DIR
    if not (model_dir / CONFIG_NAME).is_file():
        return None
    metrics = read_json(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).is_file() else None
    config = MultiExitConfig.from_dict(read_json(model_dir / CONFIG_NAME))
    return write_model_card(model_dir, config, metrics, read_threshold(run_dir))
