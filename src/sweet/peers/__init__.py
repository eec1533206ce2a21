"""Peers for the benchmarks: what sweet is measured against.

* :mod:`~sweet.peers.onnx_full`: the same trained model, full depth, run by ONNX Runtime in fp32 or int8
  (``sweet bench``'s peer rows, needs the extra ``sweet[onnx]``);
* :mod:`~sweet.peers.trainer`: the Hugging Face ``Trainer`` fine-tuning the same backbone on the same sample as
  sweet's trainer (``benchmarks/train_vs_trainer.py``, needs ``accelerate``).
"""

from .onnx_full import (
    ONNX_INSTALL_HINT,
    ONNX_OPSET,
    FullModel,
    OnnxClassifier,
    export_onnx,
    onnx_missing,
    onnx_providers,
    onnxruntime_version,
    quantize_onnx_int8,
)
from .trainer import (
    format_train_benchmark,
    hf_trainer_finetune,
    ours_finetune,
    train_benchmark,
    trainer_missing,
    training_sample,
)

__all__ = [
    "ONNX_INSTALL_HINT", "ONNX_OPSET", "FullModel", "OnnxClassifier", "export_onnx", "onnx_missing", "onnx_providers",
    "onnxruntime_version", "quantize_onnx_int8", "format_train_benchmark", "hf_trainer_finetune", "ours_finetune",
    "train_benchmark", "trainer_missing", "training_sample",
]
