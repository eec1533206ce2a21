"""Early-exit inference on ONNX Runtime from a folder written by ``sweet export RUN_DIR --format onnx``.

Needs onnxruntime, tokenizers and numpy only: nothing here imports torch or transformers, so a service image can
leave them out. The engine keeps the torch engine's design (:mod:`sweet.inference`): a queue per segment, full
batches at every depth, rows re-padded to the longest in each batch, the same exit decisions.

- :mod:`~sweet.runtime.manifest`: the folder's ``manifest.json`` (:class:`Manifest`)
- :mod:`~sweet.runtime.tokenize`: tokenisation with ``tokenizers`` (:class:`RuntimeTokenizer`)
- :mod:`~sweet.runtime.policies`: the exit policies in NumPy
- :mod:`~sweet.runtime.engine`: :class:`OnnxEngine` over one ONNX Runtime session per exit graph
- :mod:`~sweet.runtime.predictor`: :class:`OnnxPredictor`, the same surface as :class:`sweet.predictor.Predictor`
"""

from .engine import OnnxEngine, OnnxGraphs, onnxruntime_missing
from .manifest import MANIFEST, ONNX_PRECISIONS, RUNTIMES, Manifest
from .predictor import OnnxPredictor
from .result import BatchResult
from .tokenize import RuntimeTokenizer, TokenRows

__all__ = ["MANIFEST", "ONNX_PRECISIONS", "RUNTIMES", "BatchResult", "Manifest", "OnnxEngine", "OnnxGraphs",
           "OnnxPredictor", "RuntimeTokenizer", "TokenRows", "onnxruntime_missing"]
