"""The Hugging Face ``Trainer`` peer of ``benchmarks/train_vs_trainer.py``.

:func:`hf_trainer_finetune` fine-tunes ``AutoModelForSequenceClassification`` (the backbone with one classification
head) with ``transformers.Trainer`` and its defaults (optimizer, schedule, clipping), with length-grouped batches
(``group_by_length``, as our trainer buckets by length), on the same pre-tokenised training sample as ours.
:func:`ours_finetune` runs sweet's trainer on that sample. Both return the training wall time and the accuracy on
the evaluation split. The Trainer needs ``accelerate`` (install it for the training benchmark)."""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..backbones import resolve_backbone
from ..data import load_task, make_splits
from ..encoding import Collator, encode, sorted_batches
from ..errors import SweetError
from ..evaluation import collect_logits
from ..metrics import score
from ..modeling import MultiExitModel
from ..precision import placement
from ..rundir import environment, load_tokenizer, make_collator
from ..training import TrainConfig, seed_everything, train


@contextlib.contextmanager
def _threads(n: int | None):
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def trainer_missing() -> str | None:
    """None when the Hugging Face Trainer can run; else the one-line reason."""
    try:
        import accelerate  # noqa: F401
    except ImportError:
        return "the Hugging Face Trainer needs accelerate: pip install 'accelerate>=1.1'"
    return None


def training_sample(task: str, n_train: int, seed: int, data_dir: str | None, tokenizer, max_length: int = 256):
    """(task, encoded training sample, encoded evaluation split, evaluation split name): the sample sweet's runs
    draw for (task, n_train, seed) (:func:`sweet.data.make_splits`), tokenised once for both trainers."""

    data = load_task(task, data_dir)
    splits = make_splits(data, n_train, seed)
    enc_train = encode(tokenizer, splits.train, max_length, warn=False)
    enc_eval = encode(tokenizer, splits.evaluation, max_length, warn=False)
    return data.task, enc_train, enc_eval, splits.evaluation_name


@torch.inference_mode()
def _score_logits(predict_batch, encoded, collator, batch_size: int, metric: str) -> float:

    preds = np.zeros(len(encoded), dtype=np.int64)
    for rows in sorted_batches(encoded.lengths, batch_size):
        batch = collator(encoded, rows)
        batch.pop("labels", None)
        preds[rows] = predict_batch(batch).argmax(-1).cpu().numpy()
    return score(metric, encoded.labels, preds)


def ours_finetune(backbone: str, task, enc_train, enc_eval, *, method: str = "sweet", precision: str = "fp32",
                  learning_rate: float = 5e-5, epochs: int = 1, batch_size: int = 16, seed: int = 0,
                  threads: int | None = None, progress: bool = False) -> dict:
    """sweet's trainer on the sample: a multi-exit model of ``backbone`` (its default exits), ``method``,
    ``precision`` (``auto``, ``fp32``, ``bf16``; resolved for training on the CPU as ``sweet train`` does).
    Returns the training wall time (model building and evaluation not included) and each exit's score on the
    evaluation split (the last one is what the Trainer's single head is compared with)."""

    placed = placement("cpu", precision, training=True)
    with _threads(threads):
        seed_everything(seed)
        model = MultiExitModel.from_backbone(backbone, num_labels=task.num_labels, method=method,
                                             label_names=task.label_names, task=task.name)
        collator = make_collator(load_tokenizer(resolve_backbone(backbone)), model)
        cfg = TrainConfig(learning_rate=learning_rate, epochs=epochs, batch_size=batch_size, seed=seed,
                          precision=placed.precision)
        t0 = time.perf_counter()
        log = train(model, enc_train, collator, cfg, progress=progress)
        seconds = time.perf_counter() - t0

        logits = collect_logits(model, enc_eval, collator, 64, progress=False)
        per_exit = [score(task.metric, enc_eval.labels, lg.argmax(-1)) for lg in logits]
    return {"trainer": "sweet", "method": method, "precision": placed.precision, "seconds": seconds,
            "train_log_seconds": log["seconds"], "steps": log["steps"], "exit_layers": list(model.exit_layers),
            "exit_scores": per_exit, "last_exit_score": per_exit[-1], "threads": log["threads"]}


class _EncodedDataset(torch.utils.data.Dataset):
    """Rows of an :class:`~sweet.encoding.Encoded` set as the dicts the Trainer's data collator pads."""

    def __init__(self, encoded, use_token_type_ids: bool):
        self.encoded = encoded
        self.use_tt = use_token_type_ids and encoded.token_type_ids is not None

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, i: int) -> dict:
        row = {"input_ids": self.encoded.input_ids[i], "attention_mask": [1] * len(self.encoded.input_ids[i]),
               "labels": int(self.encoded.labels[i])}
        if self.use_tt:
            row["token_type_ids"] = self.encoded.token_type_ids[i]
        return row


def _group_by_length(training_arguments) -> dict:
    """The TrainingArguments keyword that makes the Trainer draw length-grouped batches: ``train_sampling_strategy``
    in newer transformers 5.x releases, ``group_by_length`` before it."""
    names = {f.name for f in dataclasses.fields(training_arguments)}
    if "train_sampling_strategy" in names:
        return {"train_sampling_strategy": "group_by_length"}
    return {"group_by_length": True}


def hf_trainer_finetune(backbone: str, task, enc_train, enc_eval, *, bf16: bool = False, learning_rate: float = 5e-5,
                        epochs: int = 1, batch_size: int = 16, seed: int = 0, threads: int | None = None,
                        output_dir: str | Path | None = None, max_steps: int = -1) -> dict:
    """``transformers.Trainer`` fine-tuning ``AutoModelForSequenceClassification`` of ``backbone`` (one head) on
    the sample, with the Trainer's defaults except what the comparison fixes: learning rate, epochs, batch size,
    seed, no checkpoints, no logging integrations, CPU, and batches grouped by length (the Trainer's
    ``group_by_length`` sampler, as sweet's trainer buckets by length: random batches pad more and would make the
    Trainer look slower than it is); ``bf16=True`` turns on its bf16 autocast. Returns the training wall time
    (``trainer.train()``) and the score on the evaluation split."""

    reason = trainer_missing()
    if reason:
        raise SweetError(reason)
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )
    from transformers.trainer_callback import PrinterCallback
    from transformers.utils import logging as hf_logging


    path = resolve_backbone(backbone)
    tokenizer = AutoTokenizer.from_pretrained(path)
    verbosity = hf_logging.get_verbosity()
    with _threads(threads), tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_logging.set_verbosity_error()  # its load report (the new head is untrained, as it should be)
        set_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=task.num_labels)
        use_tt = "token_type_ids" in __import__("inspect").signature(model.forward).parameters
        args = TrainingArguments(
            output_dir=str(output_dir or tmp), learning_rate=learning_rate, num_train_epochs=epochs,
            per_device_train_batch_size=batch_size, seed=seed, bf16=bf16, use_cpu=True, save_strategy="no",
            report_to=[], disable_tqdm=True, max_steps=max_steps, **_group_by_length(TrainingArguments),
        )
        trainer = Trainer(model=model, args=args, train_dataset=_EncodedDataset(enc_train, use_tt),
                          data_collator=DataCollatorWithPadding(tokenizer))
        trainer.remove_callback(PrinterCallback)  # it prints the final metrics dict to stdout
        sampler = type(trainer._get_train_sampler()).__name__  # recorded: LengthGroupedSampler, not RandomSampler
        t0 = time.perf_counter()
        try:
            result = trainer.train()
        finally:
            hf_logging.set_verbosity(verbosity)
        seconds = time.perf_counter() - t0
        model.eval()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        collator = Collator(pad, use_tt)
        acc = _score_logits(lambda b: model(**b).logits.float(), enc_eval, collator, 64, task.metric)
    return {"trainer": "hf", "bf16": bool(bf16), "seconds": seconds,
            "train_runtime": float(result.metrics.get("train_runtime", seconds)), "steps": int(result.global_step),
            "optim": str(getattr(args.optim, "value", args.optim)), "max_grad_norm": args.max_grad_norm,
            "lr_scheduler": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
            "train_sampler": sampler, "score": acc, "threads": torch.get_num_threads() if threads is None else int(threads)}


def train_benchmark(task: str = "sst2", n_train: int = 3000, *, epochs: int = 1, learning_rate: float = 5e-5,
                    batch_size: int = 16, seed: int = 0, method: str = "sweet", backbone: str = "default",
                    ours_precisions: Sequence[str] = ("fp32", "auto"), trainer_bf16: Sequence[bool] = (False, True),
                    repeats: int = 1, data_dir: str | None = None, threads: int | None = None,
                    progress: bool = False, trainer_max_steps: int = -1) -> dict:
    """Our trainer (at each of ``ours_precisions``) against the Hugging Face Trainer (fp32, and bf16 where
    ``trainer_bf16`` has True) on the same training sample and evaluation split. A precision that resolves to one
    already measured (``auto`` is fp32 for training on a CPU) is recorded as that one, not run twice. With
    ``repeats`` > 1 the configurations run interleaved (A B C A B C ...) and times are medians; ratios are medians
    of the per-repeat ratios against the Trainer in fp32."""

    if repeats < 1:
        raise SweetError(f"repeats must be positive, got {repeats}")
    if trainer_bf16 and trainer_missing():
        raise SweetError(trainer_missing())
    tokenizer = load_tokenizer(resolve_backbone(backbone))
    t, enc_train, enc_eval, split = training_sample(task, n_train, seed, data_dir, tokenizer)
    resolved = {p: placement("cpu", p, training=True).precision for p in ours_precisions}
    configs: list[tuple[str, dict]] = []
    for p in dict.fromkeys(resolved.values()):
        configs.append((f"sweet {method} {p}", {"kind": "ours", "precision": p}))
    for bf16 in dict.fromkeys(trainer_bf16):
        configs.append((f"HF Trainer {'bf16' if bf16 else 'fp32'}", {"kind": "hf", "bf16": bool(bf16)}))
    common = dict(learning_rate=learning_rate, epochs=epochs, batch_size=batch_size, seed=seed, threads=threads)
    results: dict[str, list[dict]] = {name: [] for name, _ in configs}
    for _ in range(repeats):
        for name, c in configs:
            if c["kind"] == "ours":
                r = ours_finetune(backbone, t, enc_train, enc_eval, method=method, precision=c["precision"],
                                  progress=progress, **common)
            else:
                r = hf_trainer_finetune(backbone, t, enc_train, enc_eval, bf16=c["bf16"], max_steps=trainer_max_steps,
                                        **common)
            results[name].append(r)
    reference = "HF Trainer fp32" if "HF Trainer fp32" in results else None
    rows = []
    for name, c in configs:
        runs = results[name]
        secs = [r["seconds"] for r in runs]
        score_ = runs[0]["last_exit_score"] if c["kind"] == "ours" else runs[0]["score"]
        row = {"name": name, **c, "seconds": float(np.median(secs)), "seconds_per_repeat": secs, "score": score_,
               "steps": runs[0]["steps"], "examples_per_second": len(enc_train) * epochs / float(np.median(secs))}
        if c["kind"] == "ours":
            row["exit_layers"], row["exit_scores"] = runs[0]["exit_layers"], runs[0]["exit_scores"]
        else:
            row["optim"], row["lr_scheduler"], row["max_grad_norm"] = runs[0]["optim"], runs[0]["lr_scheduler"], \
                runs[0]["max_grad_norm"]
            row["train_sampler"] = runs[0]["train_sampler"]
        if reference:
            ref = [r["seconds"] for r in results[reference]]
            row["time_ratio_vs_trainer_fp32"] = float(np.median([a / b for a, b in zip(secs, ref)]))
            row["score_delta_vs_trainer_fp32"] = score_ - results[reference][0]["score"]
        rows.append(row)
    return {
        "task": t.name, "metric": t.metric, "n_train": len(enc_train), "epochs": epochs, "learning_rate": learning_rate,
        "batch_size": batch_size, "seed": seed, "method": method, "backbone": backbone,
        "evaluation_split": split, "n_evaluation": len(enc_eval), "repeats": repeats,
        "ours_precisions_asked": {p: resolved[p] for p in ours_precisions},
        "threads": threads or torch.get_num_threads(), "environment": environment(),
        "protocol": "same tokenised training sample (sweet.data.make_splits) and evaluation split; wall time of the "
                    "training call only (model building and evaluation excluded); sweet: its trainer (length-bucketed "
                    "batches); HF Trainer: AutoModelForSequenceClassification (one head), Trainer defaults with "
                    "length-grouped batches (group_by_length) padded by DataCollatorWithPadding); score = sweet's last exit vs the Trainer's head",
        "rows": rows,
    }


def format_train_benchmark(report: dict) -> str:
    """A Markdown table of :func:`train_benchmark`."""
    lines = [f"{report['task']} | {report['n_train']} examples x {report['epochs']} epoch(s) | lr "
             f"{report['learning_rate']:g} | batch {report['batch_size']} | seed {report['seed']} | threads "
             f"{report['threads']} | {report['evaluation_split']} ({report['n_evaluation']} examples, "
             f"{report['metric']})", ""]
    lines.append("| configuration | train seconds | ex/s | time / Trainer fp32 | score | Δ vs Trainer fp32 |")
    lines.append("|---|---:|---:|---:|---:|---:|")
    for r in report["rows"]:
        ratio = r.get("time_ratio_vs_trainer_fp32")
        delta = r.get("score_delta_vs_trainer_fp32")
        lines.append(f"| {r['name']} | {r['seconds']:.1f} | {r['examples_per_second']:.1f} | "
                     f"{'-' if ratio is None else f'{ratio:.2f}'} | {r['score']:.2f} | "
                     f"{'-' if delta is None else f'{delta:+.2f}'} |")
    asked = ", ".join(f"{k} -> {v}" for k, v in report["ours_precisions_asked"].items())
    lines += ["", f"sweet precisions asked -> used: {asked} (one that resolves to an already measured one is not rerun)"]
    for r in report["rows"]:
        if r["kind"] == "ours":
            per_exit = ", ".join(f"L{l}: {s:.2f}" for l, s in zip(r["exit_layers"], r["exit_scores"]))
            lines.append(f"{r['name']}: per-exit scores {per_exit}")
        else:
            lines.append(f"{r['name']}: optimizer {r['optim']}, schedule {r['lr_scheduler']}, max grad norm "
                         f"{r['max_grad_norm']}, sampler {r['train_sampler']}")
    return "\n".join(lines)
