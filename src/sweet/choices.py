"""The names a user picks from, for things whose implementation needs heavy libraries: inference and training
precisions, devices, runtimes, metrics (and how a metric's name reads).

They live here, free of torch and scikit-learn, so that the command line can parse and document them without
importing what implements them: ``sweet --help`` answers at once, and an image without torch runs
``sweet predict`` / ``sweet serve`` with ``--runtime onnxruntime`` (tested in a process where importing torch
fails). :mod:`sweet.precision` and :mod:`sweet.metrics`, which implement them, re-export them.
"""

from __future__ import annotations

from .errors import SweetError

DEVICE_HELP = "auto (CUDA if present, else CPU), cpu, cuda, cuda:N or mps."
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
TRAINING_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PRECISION_HELP = ("auto, fp32, bf16, fp16 or int8 (inference only, CPU: dynamic quantization of the encoder's "
                  "Linear layers, per-channel weights, the FFN down-projections kept fp32). auto: bf16 on GPUs and "
                  "CPUs with native bf16 support, fp32 on other CPUs.")
TRAIN_PRECISION_HELP = ("auto, fp32, bf16 or fp16 (autocast with float32 master weights; fp16 needs a GPU and uses "
                        "a gradient scaler). auto: bf16 (or fp16) on CUDA, fp32 on CPU.")

#: the inference runtimes (``--runtime``; ``sweet.load(..., runtime=)``)
RUNTIMES = ("torch", "onnxruntime")

#: ``--metric`` choices; ``mcc`` is stored as ``matthews`` (the name the GLUE presets already use)
METRIC_CHOICES = ("accuracy", "f1_macro", "f1", "mcc")
METRIC_NAMES = {"accuracy": "accuracy", "f1_macro": "macro F1", "f1": "F1", "matthews": "Matthews corr."}


def canonical_metric(name: str) -> str:
    """``mcc`` -> ``matthews``; refuse a name that is not a metric."""
    name = "matthews" if name == "mcc" else name
    if name not in METRIC_NAMES:
        raise SweetError(f"unknown metric {name!r}; choose one of: {', '.join(METRIC_CHOICES)}")
    return name


def metric_label(metric: str) -> str:
    """How a person reads the metric's name (``f1:2`` -> ``F1``)."""
    return METRIC_NAMES.get(metric.split(":")[0], metric)
