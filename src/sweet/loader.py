"""``sweet.load``: a trained model ready to answer, on the runtime asked for.

>>> clf = sweet.load("runs/sst2")                                   # torch (sweet.predictor.Predictor)
>>> clf = sweet.load("runs/sst2", runtime="onnxruntime")            # exported on first use into runs/sst2/onnx/
>>> clf = sweet.load("exported/sst2", runtime="onnxruntime")        # a folder written by 'sweet export'

An exported folder loads without torch: this module imports the torch predictor and the exporter only when they
are needed, so ``sweet.load(folder, runtime="onnxruntime")`` runs where torch is not installed.
"""

from __future__ import annotations

from pathlib import Path

from .errors import SweetError
from .runtime.engine import onnxruntime_missing
from .runtime.manifest import MANIFEST, RUNTIMES
from .runtime.predictor import OnnxPredictor
from .thresholds import read_threshold

#: what --precision means on the ONNX runtime (auto: fp32, the exported graphs; bf16/fp16 have no ONNX graphs)
ONNX_PRECISION = {"auto": "fp32", "fp32": "fp32", "int8": "int8"}


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise SweetError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    return runtime


def is_exported(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def load(path: str | Path, *, runtime: str = "torch", device: str = "auto", precision: str = "auto",
         task: str | None = None, threshold: float | None = None, policy: str = "confidence",
         batch_size: int = 64, threads: int | None = None):
    """A predictor for a run directory (or its ``model/``) or, with ``runtime="onnxruntime"``, also for a folder
    written by ``sweet export``. ``runtime="onnxruntime"`` runs on the CPU in fp32 (``precision`` auto or fp32) or
    int8; a run directory is exported on first use into ``RUN_DIR/onnx/`` (:func:`sweet.export.cached_export`).
    ``threads``: ONNX Runtime's intra-op threads (the torch runtime takes torch's setting). ``threshold`` None: the
    threshold ``sweet tune`` stored for ``policy`` (threshold.json), else the export's manifest / 0.9."""
    check_runtime(runtime)
    if runtime == "torch":
        if is_exported(path):
            raise SweetError(f"{path} is an exported ONNX folder; load it with runtime='onnxruntime' "
                             "(--runtime onnxruntime)")
        from .predictor import Predictor  # heavy (torch): only for this runtime

        return Predictor.load(path, device=device, precision=precision, task=task,
                              threshold=threshold, policy=policy,
                              batch_size=batch_size)
    reason = onnxruntime_missing()
    if reason:
        raise SweetError(reason)
    if device not in ("auto", "cpu"):
        raise SweetError(f"the ONNX runtime runs on the CPU; use --device cpu or auto, not {device!r}")
    if precision not in ONNX_PRECISION:
        raise SweetError(f"the ONNX runtime runs fp32 or int8, not {precision!r}; choose --precision fp32 or int8 "
                         "(or --runtime torch)")
    prec = ONNX_PRECISION[precision]
    folder = Path(path)
    if threshold is None:
        stored = read_threshold(folder)
        if stored is not None and stored["policy"] == policy:
            threshold = stored["threshold"]
    if not is_exported(folder):
        from .export import cached_export  # heavy (torch): only to export a run directory

        folder = cached_export(folder, int8=prec == "int8")
    predictor = OnnxPredictor(folder, precision=prec, threshold=threshold, policy=policy, batch_size=batch_size,
                              threads=threads, source=str(path))
    if task is not None and task != predictor.task.name:
        raise SweetError(f"the model was trained on {predictor.task.name}, not {task}; pass --task "
                         f"{predictor.task.name} or leave it out")
    return predictor
