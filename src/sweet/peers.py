"""Peers for the benchmarks: the same trained model run by ONNX Runtime (``sweet bench``), and the Hugging Face
``Trainer`` fine-tuning the same backbone (``benchmarks/train_vs_trainer.py``).

ONNX Runtime
------------
What a user who only wants a cheaper classifier would do instead of adaptive inference: export the *full* model
(the encoder to its last layer plus the last exit's head, no exit checks) to ONNX, and run it with ONNX Runtime,
in fp32 or dynamically quantized to int8 (``onnxruntime.quantization.quantize_dynamic``: int8 weights,
activations quantized per batch). The export uses torch's TorchScript-based exporter (opset 17, dynamic batch and
sequence axes), which needs only the ``onnx`` package; it is traced on a batch with a padded row, so the
attention mask is kept in the graph, and checked against torch on a batch of another shape. The optional extra
``sweet[onnx]`` installs ``onnx`` and ``onnxruntime``; without them the benchmark skips these rows with a note.

Hugging Face Trainer
--------------------
:func:`hf_trainer_finetune` fine-tunes ``AutoModelForSequenceClassification`` (the backbone with one
classification head) with ``transformers.Trainer`` and its defaults (optimizer, schedule, clipping), with
length-grouped batches (``group_by_length``, as our trainer buckets by length), on the same pre-tokenised
training sample as ours. :func:`ours_finetune` runs sweet's trainer on that sample. Both return the
training wall time and the accuracy on the evaluation split. The Trainer needs ``accelerate`` (extra
``sweet[onnx]`` does not; install ``accelerate`` for the training benchmark).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .backbones import resolve_backbone
from .data import load_task, make_splits
from .encoding import Collator, encode, sorted_batches
from .errors import SweetError, install_hint
from .evaluation import collect_logits
from .metrics import score
from .modeling import MultiExitModel
from .precision import placement
from .rundir import environment, load_tokenizer, make_collator
from .training import TrainConfig, seed_everything, train

ONNX_OPSET = 17
ONNX_INSTALL_HINT = f"{install_hint('onnx')} (onnx and onnxruntime)"


# ------------------------------------------------------------------------------------------ ONNX Runtime


def onnx_missing() -> str | None:
    """None when ONNX Runtime peers can run; else the one-line reason (a missing package)."""
    missing = []
    for name in ("onnx", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        return f"{' and '.join(missing)} not installed: {ONNX_INSTALL_HINT}"
    return None


def onnxruntime_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


class FullModel(nn.Module):
    """A multi-exit model run to its last layer, no exit checks: the encoder (Multi-Model: the last, full-depth
    member) plus the last head. Returns the last head's logits. What ``sweet bench`` calls the full model."""

    def __init__(self, model, use_token_type_ids: bool):
        super().__init__()
        self.backbone = model.backbones[-1]
        self.head = model.heads[-1]
        self.use_token_type_ids = bool(use_token_type_ids) and "token_type_ids" in model._inputs

    @property
    def input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", *(["token_type_ids"] if self.use_token_type_ids else [])]

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.use_token_type_ids and token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return self.head(self.backbone(**kwargs).last_hidden_state, attention_mask)[0]


def _example_batch(input_names: Sequence[str], n: int, width: int, vocab: int, seed: int) -> dict[str, torch.Tensor]:
    """Random ids with a padded first row (so the exported graph keeps the attention mask)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, max(6, vocab), (n, width), generator=g)
    mask = torch.ones_like(ids)
    mask[0, width // 2 :] = 0
    ids[0, width // 2 :] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in input_names:
        tt = torch.zeros_like(ids)
        tt[1:, width // 2 :] = 1
        batch["token_type_ids"] = tt
    return batch


def export_onnx(model, path: str | Path, use_token_type_ids: bool, opset: int = ONNX_OPSET,
                check_atol: float | None = 1e-3) -> Path:
    """Export the full model (:class:`FullModel`) of an fp32 multi-exit model to ``path`` (ONNX, dynamic batch and
    sequence axes), and check the exported graph against torch on a batch of another shape (ONNX Runtime logits
    within ``check_atol``; None: no check)."""
    reason = onnx_missing()
    if reason:
        raise SweetError(f"cannot export to ONNX: {reason}")
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise SweetError("export an fp32 model to ONNX (load it with precision fp32); quantize the ONNX graph instead")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    full = FullModel(model, use_token_type_ids).eval().cpu()
    names = full.input_names
    vocab = int(getattr(full.backbone.config, "vocab_size", 100))
    example = _example_batch(names, 3, 12, vocab, seed=0)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes["logits"] = {0: "batch"}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on constant Python values (checked below) and deprecation
        torch.onnx.export(full, tuple(example[n] for n in names), str(path), input_names=names,
                          output_names=["logits"], dynamic_axes=axes, opset_version=opset, dynamo=False,
                          do_constant_folding=True)
    if check_atol is not None:
        probe = _example_batch(names, 5, 17, vocab, seed=1)
        with torch.no_grad():
            want = full(**probe).numpy()
        got = OnnxClassifier(path, threads=1).logits({k: v.numpy() for k, v in probe.items()})
        err = float(np.abs(got - want).max())
        if not err <= check_atol:
            raise SweetError(f"the ONNX export of this model disagrees with torch (max |logit difference| {err:.3g}); "
                             "this encoder does not export cleanly")
    return path


def quantize_onnx_int8(src: str | Path, dst: str | Path, per_channel: bool = False,
                       keep_fp32: Sequence[str] = ()) -> Path:
    """Dynamic int8 quantization of an ONNX graph (``onnxruntime.quantization.quantize_dynamic``: signed int8
    weights, per tensor unless ``per_channel``); ``keep_fp32``: node names left in fp32. The full-model peer and
    ``sweet export --int8`` both quantize here."""
    reason = onnx_missing()
    if reason:
        raise SweetError(f"cannot quantize with ONNX Runtime: {reason}")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process (shape inference) goes to the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                             nodes_to_exclude=list(keep_fp32))
    finally:
        root.setLevel(level)
    return Path(dst)


def onnx_providers(device: torch.device) -> list[str] | None:
    """ONNX Runtime execution providers for ``device``; None when this onnxruntime cannot run there."""
    import onnxruntime as ort

    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    return None


class OnnxClassifier:
    """An ONNX Runtime session over an exported full model, with a fixed thread count (``intra_op_num_threads``,
    one inter-op thread, sequential execution, all graph optimizations)."""

    def __init__(self, path: str | Path, threads: int, providers: Sequence | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=opts,
                                            providers=list(providers or ["CPUExecutionProvider"]))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.threads = int(threads)

    def logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(["logits"], {n: batch[n] for n in self.input_names})[0]


# ------------------------------------------------------------------------------------ training benchmark


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
