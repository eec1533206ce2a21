"""The ONNX Runtime peer of ``sweet bench``: the *full* trained model (the encoder to its last layer plus the last
exit's head, no exit checks) exported to ONNX and run by ONNX Runtime, in fp32 or dynamically quantized to int8
(``onnxruntime.quantization.quantize_dynamic``: int8 weights, activations quantized per batch).

The export uses torch's TorchScript-based exporter (opset 17, dynamic batch and sequence axes), which needs only the
``onnx`` package; it is traced on a batch with a padded row, so the attention mask is kept in the graph, and checked
against torch on a batch of another shape. The optional extra ``sweet[onnx]`` installs ``onnx`` and
``onnxruntime``; without them the benchmark skips these rows with a note."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import SweetError, install_hint

ONNX_OPSET = 17
ONNX_INSTALL_HINT = f"{install_hint('onnx')} (onnx and onnxruntime)"


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
