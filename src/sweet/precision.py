"""Where a model runs and in which number format: ``--device`` and ``--precision``, one place for both.

Devices: ``auto`` (CUDA if present, else CPU), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.

Precisions:

``fp32``
    Plain float32 everywhere. Any autocast context the caller opened is switched off inside sweet, so the
    precision a run records is the precision it used.
``bf16`` / ``fp16``
    Training: float32 master weights and optimizer state, the forward and backward under ``torch.autocast``
    (entered per step, with its weight-cast cache off; see *the autocast trap* below). fp16 also uses a
    gradient scaler. Inference: the encoder's weights are cast to the format (the exit heads stay float32 and
    logits are compared in float32, so the exit decisions use full-precision probabilities).
``int8``
    Inference only, on CPU: dynamic quantization of the encoder's ``nn.Linear`` layers (int8 weights, activations
    quantized per batch), by the rule of :func:`int8_plan` (see *the int8 rule* below); the exit heads stay float32.
``auto``
    Inference: on CUDA bf16 where the GPU supports it, else fp16; on CPU bf16 where the processor has native bf16
    matrix instructions (asked of torch/oneDNN, not read from /proc), else fp32. Training: on CUDA the same as
    inference; on CPU **fp32** (see :data:`CPU_TRAINING_AUTO` for why).

A precision the device cannot run is a one-line :class:`~sweet.errors.SweetError`. bf16 on a CPU without native
support runs (emulated) but slowly; sweet warns once.

The autocast trap
-----------------
``torch.autocast`` caches the low-precision copy of every weight it casts until the *outermost* autocast context
exits. Wrapping a whole training run in one context therefore runs every forward with the weights of the first
step: the optimizer updates the float32 weights, the forward never sees them, and the model cannot learn (a run
wrapped this way stayed at the majority class). sweet enters autocast around each forward pass with
``cache_enabled=False``, so a caller's outer context cannot freeze the weights either (tested).

The int8 rule
-------------
torch's plain dynamic quantization (one scale per weight matrix, every ``nn.Linear``) lost up to 1.5 points of
accuracy at the late exits of a MiniLM SST-2 model against fp32 (up to 2.5 in issue #24). Two changes keep every
exit within 0.4 points of fp32 on that model and on a QNLI one (docs/results/fast-path/int8.md):

* **per-channel weights**: one scale per output row of each weight matrix
  (``torch.ao.quantization.per_channel_dynamic_qconfig``), which costs no speed;
* **the FFN down-projections stay float32**: in every layer, the Linear that maps the feed-forward block's wide
  hidden activations back to the model width (found by shape: input wider than output, e.g. BERT's
  ``layer.N.output.dense``). Its input, the GELU output, has a few very large values that set the per-batch
  activation scale and leave the rest with few int8 levels; it was the most sensitive kind of layer measured.

The rule is :func:`int8_plan`; :func:`quantize_int8` applies it.
"""

from __future__ import annotations

import contextlib
import copy
import platform
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .choices import (  # noqa: F401 (the names, public here too)
    DEVICE_HELP,
    PRECISION_HELP,
    PRECISIONS,
    TRAIN_PRECISION_HELP,
    TRAINING_PRECISIONS,
)
from .errors import SweetError

#: Precision ``auto`` picks for training on CPU. fp32: bf16 training on CPU has not (yet) passed the accuracy-parity
#: check of docs/results/fast-path (paired per-seed differences within +-0.5 points), so it is opt-in (--precision bf16).
CPU_TRAINING_AUTO = "fp32"

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> cuda if available, else cpu. Any other value must name a device this machine has."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = (spec or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise SweetError(f"unknown device {spec!r}; use {DEVICE_HELP}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SweetError(f"device {spec!r} asked for, but torch sees no CUDA GPU on this machine "
                             f"(torch {torch.__version__}); use --device cpu or auto")
        n = torch.cuda.device_count()
        if device.index is not None and device.index >= n:
            raise SweetError(f"device {spec!r} does not exist: this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1})")
        return device
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise SweetError(f"device {spec!r} asked for, but MPS (Apple GPU) is not available here; use cpu or auto")
        return device
    raise SweetError(f"unsupported device {spec!r}; use {DEVICE_HELP}")


#: the CPU features that decide which inference precision is fast (bf16/int8 matrix units, int8 dot products)
CPU_FEATURES = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")


def cpu_kind(cpuinfo: str | None = None) -> dict:
    """What kind of CPU this is, for every benchmark record: its model name, which of :data:`CPU_FEATURES` it
    has (from ``/proc/cpuinfo``, or the text given; empty where that file does not exist) and whether torch
    computes bf16 natively on it (:func:`native_bf16`, the one that decides ``--precision auto``)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as fh:
                cpuinfo = fh.read()
        except OSError:
            cpuinfo = ""
    model, flags = platform.processor() or platform.machine(), set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return {"model": model, "features": [f for f in CPU_FEATURES if f in flags],
            "native_bf16": native_bf16(torch.device("cpu"))}


def describe_cpu(kind: dict) -> str:
    """One line for a table header: ``AMD EPYC (avx2; native bf16: no)``."""
    features = ", ".join(kind.get("features") or []) or "features unknown"
    return f"{kind.get('model', '?')} ({features}; native bf16: {'yes' if kind.get('native_bf16') else 'no'})"


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 matrix products natively (CPU: oneDNN's own check, true with AVX512-BF16
    or AMX; CUDA: compute capability 8.0+)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a torch build without oneDNN
            return False
    return False


def resolve_precision(spec: str | None, device: torch.device, *, training: bool = False) -> str:
    """The concrete precision (fp32, bf16, fp16 or int8) for ``spec`` on ``device``; a clear error if the device
    cannot run it."""
    text = (spec or "auto").strip().lower()
    allowed = TRAINING_PRECISIONS if training else PRECISIONS
    if text not in allowed:
        extra = " (int8 is for inference only; train in fp32 or bf16 and quantize when predicting)" if text == "int8" else ""
        raise SweetError(f"unknown precision {spec!r}{extra}; choose one of: {', '.join(allowed)}")
    if text == "auto":
        if device.type == "cuda":
            return "bf16" if native_bf16(device) else "fp16"
        if device.type == "cpu":
            if training:
                return CPU_TRAINING_AUTO
            return "bf16" if native_bf16(device) else "fp32"
        return "fp32"
    if text == "int8" and device.type != "cpu":
        raise SweetError(f"int8 (dynamic quantization) runs on the CPU only, not on {device}; use bf16 or fp16 there")
    if text == "fp16" and device.type == "cpu":
        raise SweetError("fp16 is not supported on the CPU (no fp16 matrix units; autocast would run it slowly and "
                         "without a gradient scaler); use bf16 or fp32 on CPU, fp16 on a GPU")
    if text == "bf16" and device.type == "cuda" and not native_bf16(device):
        raise SweetError(f"this GPU ({torch.cuda.get_device_name(device)}) has no bf16 support; use fp16 or fp32")
    if text == "bf16" and device.type == "cpu" and not native_bf16(device):
        warnings.warn("this CPU has no native bf16 matrix instructions (no AVX512-BF16/AMX): bf16 runs emulated and "
                      "is slower than fp32 here", stacklevel=2)
    return text


@dataclass(frozen=True)
class Placement:
    """A resolved (device, precision) pair, as recorded in run_config.json, metrics.json and bench JSON."""

    device: torch.device
    precision: str

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast / cast dtype (None for fp32 and int8)."""
        return DTYPES.get(self.precision) if self.precision in ("bf16", "fp16") else None

    def autocast(self):
        """The autocast context for one forward pass (training or evaluation): on for bf16/fp16, explicitly *off*
        otherwise (so an outer autocast of the caller cannot change what fp32 computes). The weight-cast cache is
        off: see the module docstring."""
        if self.device.type not in ("cpu", "cuda", "mps"):
            return contextlib.nullcontext()
        dtype = self.dtype
        return torch.autocast(self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None,
                              cache_enabled=False)

    def no_autocast(self):
        """Autocast explicitly off (inference: a prepared model's weights already are in its precision, and its
        heads must stay float32 whatever context the caller opened)."""
        if self.device.type not in ("cpu", "cuda", "mps"):
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, enabled=False)

    def to_dict(self) -> dict:
        info = {"device": str(self.device), "precision": self.precision, "native_bf16": native_bf16(self.device)}
        if self.device.type == "cuda":
            info["device_name"] = torch.cuda.get_device_name(self.device)
        return info


def placement(device: str | torch.device | None = "auto", precision: str | None = "auto", *,
              training: bool = False) -> Placement:
    """Resolve ``--device`` and ``--precision`` together."""
    dev = resolve_device(device)
    return Placement(dev, resolve_precision(precision, dev, training=training))


def prepare_for_inference(model: nn.Module, placed: Placement, *, copy_model: bool = False) -> nn.Module:
    """Put a :class:`~sweet.modeling.MultiExitModel` on ``where.device`` in ``where.precision`` for inference
    (eval mode). fp32: as is. bf16/fp16: the encoder's weights cast (heads and exit predictors stay float32).
    int8: the encoder's Linear layers dynamically quantized (:func:`quantize_int8`). ``copy_model=True`` leaves the given model untouched."""
    if copy_model:
        model = copy.deepcopy(model)
    model.eval()
    model.to(placed.device)
    if placed.precision in ("bf16", "fp16"):
        for bb in model.backbones:
            bb.to(dtype=DTYPES[placed.precision])
    elif placed.precision == "int8":
        for i, bb in enumerate(model.backbones):
            model.backbones[i] = quantize_int8(bb)
    model.placement = placed
    return model


INT8 = "int8"
FP32 = "fp32"


def is_ffn_down_projection(layer: nn.Linear) -> bool:
    """Whether a Linear maps a wider input down to a narrower output: in a transformer encoder, the second matrix
    of each feed-forward block (BERT's ``output.dense``, intermediate size -> hidden size)."""
    return layer.in_features > layer.out_features


def int8_plan(backbone: nn.Module) -> dict[str, str]:
    """The int8 rule for one encoder (see the module docstring): every ``nn.Linear`` by name, ``"int8"``
    (dynamically quantized, per-channel weights) or ``"fp32"`` (kept: the FFN down-projections)."""
    return {name: FP32 if is_ffn_down_projection(m) else INT8
            for name, m in backbone.named_modules() if isinstance(m, nn.Linear)}


def quantize_int8(backbone: nn.Module) -> nn.Module:
    """``backbone`` with the Linear layers :func:`int8_plan` marks int8 dynamically quantized (int8 weights with one
    scale per output channel, activations quantized per batch); the others unchanged. Modifies ``backbone``."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    spec = {name: per_channel_dynamic_qconfig for name, kind in int8_plan(backbone).items() if kind == INT8}
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore")
        return quantize_dynamic(backbone, spec, dtype=torch.qint8, inplace=True)


def model_placement(model: nn.Module) -> Placement:
    """The placement a model was prepared with (fp32 on its parameters' device if it was not prepared)."""
    placed = getattr(model, "placement", None)
    if placed is not None:
        return placed
    param = next(model.parameters(), None)
    return Placement(param.device if param is not None else torch.device("cpu"), "fp32")


def to_device(batch: dict, device: torch.device) -> dict:
    """Move every tensor of a batch to ``device`` (a no-op on the CPU)."""
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
