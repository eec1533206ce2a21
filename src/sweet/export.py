"""``sweet export RUN_DIR --format onnx --output DIR [--int8]``: a trained run as one ONNX graph per segment, with a
manifest, so that the ONNX Runtime engine (:mod:`sweet.runtime`) runs it with early exits and without torch.

* Early-Exit, SWEET and the other shared-backbone methods: segment 1 takes the token ids (and token type ids where
  the model takes them) and the attention mask, and gives the hidden state at exit 1 and exit 1's logits;
  segment k takes the hidden state that left segment k - 1 and the mask, and gives the hidden state at exit k and
  exit k's logits (:class:`sweet.modeling.segments.FirstSegmentModule` / ``SegmentModule``, each followed by its
  exit head). Multi-Model: one graph per member model (ids and mask in, logits out).
* Every graph also gives the head's pooled representation (``pooled``), which the ``learned`` policy reads.
* Dynamic batch and sequence axes; torch's TorchScript-based exporter, opset 17 (as :mod:`sweet.peers`). Each graph
  is checked against torch on a batch of another shape than the one it was traced on.
* ``--int8``: every graph also quantized by ONNX Runtime's dynamic quantizer (int8 weights, activations quantized
  per batch), per output channel by default (:data:`INT8_DEFAULTS`); nodes can be kept in fp32 by name.
* The folder is self-contained: ``manifest.json`` (:class:`sweet.runtime.manifest.Manifest`: exit layers,
  temperatures, labels, task, policy, default threshold, precisions, max length) and the tokenizer files.

The folder is written next to its destination under a temporary name and renamed into place when complete.
:func:`cached_export` keeps one export per run directory (``RUN_DIR/onnx/``), refreshed when the weights change:
``sweet.load(run_dir, runtime="onnxruntime")`` and ``--runtime onnxruntime`` use it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .errors import SweetError
from .io import atomic_write_json, sha256_file
from .modeling import WEIGHTS_NAME, MultiExitModel
from .modeling.segments import FirstSegmentModule, SegmentModule, SegmentRunner
from .peers import ONNX_OPSET, onnx_missing, quantize_onnx_int8
from .rundir import (
    RUN_CONFIG,
    effective_max_length,
    load_model,
    load_run_config,
    model_dir_of,
)
from .runtime.engine import session_options
from .runtime.manifest import MANIFEST, TOKENIZER_JSON, Manifest, graph_name
from .thresholds import DEFAULT_THRESHOLD
from .version import __version__

FORMATS = ("onnx",)
#: where cached_export keeps a run's export
CACHE_DIR = "onnx"
#: how --int8 quantizes (onnxruntime.quantization.quantize_dynamic's arguments)
INT8_DEFAULTS = {"weight_type": "QInt8", "per_channel": True}


class _ExitGraph(nn.Module):
    """What one exported graph computes: a segment (or a member model), then its exit head.
    Outputs (logits, pooled[, hidden_out])."""

    def __init__(self, body: nn.Module, head: nn.Module, kind: str):
        super().__init__()
        self.body, self.head, self.kind = body, head, kind  # kind: first, segment, last_segment, member

    def forward(self, *inputs):
        mask = inputs[1]
        if self.kind == "member":
            hidden = self.body(**dict(zip(("input_ids", "attention_mask", "token_type_ids"), inputs)))
            hidden = hidden.last_hidden_state
        else:
            hidden = self.body(*inputs)[0]
        logits, pooled = self.head(hidden, mask)
        return (logits, pooled) if self.kind in ("member", "last_segment") else (logits, pooled, hidden)


def _graphs(model: MultiExitModel, use_tt: bool) -> list[tuple[_ExitGraph, list[str], list[str]]]:
    """(module, input names, output names) per exit."""
    first_inputs = ["input_ids", "attention_mask", *(["token_type_ids"] if use_tt else [])]
    out = []
    if not model.method_spec.shares_backbone:
        for bb, head in zip(model.backbones, model.heads):
            out.append((_ExitGraph(bb, head, "member"), first_inputs, ["logits", "pooled"]))
        return out
    runner = SegmentRunner(model)
    last = model.num_exits - 1
    for s, head in enumerate(model.heads):
        body = FirstSegmentModule(runner) if s == 0 else SegmentModule(runner, s)
        kind = "last_segment" if s == last else ("first" if s == 0 else "segment")
        outputs = ["logits", "pooled", *([] if s == last else ["hidden_out"])]
        out.append((_ExitGraph(body, head, kind), first_inputs if s == 0 else ["hidden", "attention_mask"], outputs))
    return out


def _example(names: Sequence[str], n: int, width: int, vocab: int, hidden_size: int, seed: int) -> dict:
    """Random inputs with padded rows (so the exported graphs keep the attention mask)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, max(6, vocab), (n, width), generator=g)
    mask = torch.ones_like(ids)
    for r in range(0, n, 2):
        mask[r, width // 2 + r % 3 :] = 0
    ids = ids * mask
    batch = {"input_ids": ids, "attention_mask": mask,
             "hidden": torch.randn(n, width, hidden_size, generator=g) * mask.unsqueeze(-1)}
    if "token_type_ids" in names:
        tt = torch.zeros_like(ids)
        tt[:, width // 3 :] = 1
        batch["token_type_ids"] = tt * mask
    return {k: batch[k] for k in names}


def _export_graph(module: nn.Module, path: Path, inputs: list[str], outputs: list[str], example: dict,
                  opset: int) -> None:
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
    axes.update({name: {0: "batch"} for name in outputs if name != "hidden_out"})
    if "hidden_out" in outputs:
        axes["hidden_out"] = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on constant Python values (checked afterwards)
        torch.onnx.export(module, tuple(example[n] for n in inputs), str(path), input_names=inputs,
                          output_names=outputs, dynamic_axes=axes, opset_version=opset, dynamo=False,
                          do_constant_folding=True)


def _check_graph(module: nn.Module, path: Path, inputs: list[str], outputs: list[str], probe: dict,
                 atol: float) -> float:
    """Max |difference| between torch and ONNX Runtime on ``probe`` (logits, and hidden states on real positions).
    The exporter drops inputs a graph does not use (DeBERTa-v2 without token types: ``token_type_ids``)."""
    import onnxruntime as ort  # optional extra (checked by the caller)

    with torch.no_grad():
        want = [t.numpy() for t in module(*(probe[n] for n in inputs))]
    sess = ort.InferenceSession(str(path), sess_options=session_options(1), providers=["CPUExecutionProvider"])
    got = sess.run(outputs, {i.name: probe[i.name].numpy() for i in sess.get_inputs()})
    mask = probe["attention_mask"].numpy().astype(bool)
    err = 0.0
    for name, w, g in zip(outputs, want, got):
        if name == "hidden_out":
            w, g = w[mask], g[mask]  # padded positions carry no meaning
        scale = max(1.0, float(np.abs(w).max()))
        err = max(err, float(np.abs(g - w).max()) / scale)
    if not err <= atol:
        raise SweetError(f"the ONNX export of {path.name} disagrees with torch (max relative difference {err:.3g}); "
                         "this encoder does not export cleanly")
    return err


def graph_inputs(path: Path) -> list[str]:
    import onnx  # optional extra (checked by the caller)

    return [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]


def _write_tokenizer(tokenizer, folder: Path) -> list[str]:
    before = set(os.listdir(folder))
    tokenizer.save_pretrained(str(folder))
    if not (folder / TOKENIZER_JSON).is_file():
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise SweetError("this model's tokenizer has no fast (tokenizers) version, so the ONNX runtime cannot "
                             "tokenize for it; use --runtime torch")
        backend.save(str(folder / TOKENIZER_JSON))
    return sorted(set(os.listdir(folder)) - before)


def check_export_target(output: Path, overwrite: bool) -> None:
    if output.exists() and not overwrite:
        raise SweetError(f"{output} already exists; pass --overwrite to replace it, or choose another --output")
    if output.exists() and not output.is_dir():
        raise SweetError(f"{output} is a file; --output names a folder")


def export_run(run_dir: str | Path, output: str | Path, *, fmt: str = "onnx", int8: bool = False,
               overwrite: bool = False, per_channel: bool = INT8_DEFAULTS["per_channel"],
               keep_fp32: Sequence[str] = (), opset: int = ONNX_OPSET, check_atol: float = 1e-3) -> dict:
    """Export a trained run (or its model directory) to ``output``; returns the manifest as a dict, with the
    export's timings and the folder's size. See the module docstring."""
    if fmt not in FORMATS:
        raise SweetError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    output = Path(output)
    check_export_target(output, overwrite)
    reason = onnx_missing()
    if reason:
        raise SweetError(f"cannot export to ONNX: {reason}")
    start = time.perf_counter()
    model, tokenizer, task = load_model(run_dir)
    model = model.float().cpu().eval()
    max_length = load_run_config(run_dir).max_length if (Path(run_dir) / RUN_CONFIG).is_file() else 256
    max_length = effective_max_length(max_length, tokenizer, model)
    use_tt = "token_type_ids" in model._inputs
    cfg = model.config
    hidden_size = int(cfg.backbone_config["hidden_size"])
    vocab = int(cfg.backbone_config.get("vocab_size", 100))

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    try:
        precisions: dict[str, list[str]] = {"fp32": []}
        errors = []
        (tmp / "fp32").mkdir()
        for i, (module, inputs, outputs) in enumerate(_graphs(model, use_tt)):
            module.eval()
            rel = f"fp32/{graph_name(i)}"
            _export_graph(module, tmp / rel, inputs, outputs, _example(inputs, 3, 12, vocab, hidden_size, 0), opset)
            probe = _example(inputs, 5, 17, vocab, hidden_size, 1)
            errors.append(_check_graph(module, tmp / rel, inputs, outputs, probe, check_atol))
            precisions["fp32"].append(rel)
        export_seconds = time.perf_counter() - start
        int8_info = None
        if int8:
            (tmp / "int8").mkdir()
            precisions["int8"] = []
            for i, rel in enumerate(precisions["fp32"]):
                dst = f"int8/{graph_name(i)}"
                quantize_onnx_int8(tmp / rel, tmp / dst, per_channel=per_channel, keep_fp32=keep_fp32)
                precisions["int8"].append(dst)
            int8_info = {"quantizer": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
                         "per_channel": bool(per_channel), "kept_fp32": list(keep_fp32)}
        tokenizer_files = _write_tokenizer(tokenizer, tmp)
        preds = getattr(model, "exit_predictors", None)
        manifest = Manifest(
            method=cfg.method, backbone=cfg.backbone, segmented=bool(model.method_spec.shares_backbone),
            exit_layers=list(cfg.exit_layers), num_labels=int(cfg.num_labels),
            label_names=list(cfg.label_names or [str(i) for i in range(cfg.num_labels)]), task=task.to_dict(),
            temperatures=None if cfg.temperatures is None else [float(t) for t in cfg.temperatures],
            policy="confidence", threshold=DEFAULT_THRESHOLD, max_length=int(max_length), hidden_size=hidden_size,
            inputs=graph_inputs(tmp / precisions["fp32"][0]),
            pad_token_id=int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0),
            precisions=precisions, tokenizer_files=tokenizer_files,
            exit_predictors=None if preds is None else {
                "weights": [p.weight.detach().float().reshape(-1).tolist() for p in preds],
                "biases": [float(p.bias.detach().reshape(-1)[0]) for p in preds]},
            int8=int8_info, source=str(run_dir), sweet_version=__version__,
            source_sha256=sha256_file(model_dir_of(run_dir) / WEIGHTS_NAME),
        )
        atomic_write_json(tmp / MANIFEST, manifest.to_dict())
        if output.exists():  # --overwrite: the old folder goes only once the new one is complete
            old = output.with_name(f".{output.name}.old-{os.getpid()}")
            os.replace(output, old)
            os.replace(tmp, output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in output.rglob("*") if p.is_file())
    return {**manifest.to_dict(), "output": str(output), "bytes": size, "seconds": time.perf_counter() - start,
            "export_seconds": export_seconds, "max_check_difference": max(errors)}


def cached_export(run_dir: str | Path, int8: bool = False) -> Path:
    """The run's export in ``RUN_DIR/onnx/`` (a model directory: ``MODEL_DIR/onnx/``), written on first use and
    again when the weights changed or int8 graphs are asked for and missing."""
    folder = Path(run_dir) / CACHE_DIR
    if (folder / MANIFEST).is_file():
        try:
            m = Manifest.read(folder)
        except SweetError:
            m = None
        fresh = m is not None and m.source_sha256 == sha256_file(model_dir_of(run_dir) / WEIGHTS_NAME)
        if fresh and (not int8 or "int8" in m.precisions):
            return folder
    export_run(run_dir, folder, int8=int8, overwrite=True)
    return folder
