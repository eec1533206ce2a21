"""A predictor over an exported folder on ONNX Runtime, with the same answers and surface as
:class:`sweet.predictor.Predictor` (``predict``, ``predict_encoded``, ``info``, ...), and no torch.

>>> from sweet.runtime import OnnxPredictor
>>> clf = OnnxPredictor.load("exported/sst2")                       # a folder written by 'sweet export'
>>> clf.predict(["a gripping, funny film"], threshold=0.9)
[{'label': 'positive', 'label_id': 1, 'exit_layer': 1, 'confidence': 0.97}]

Like the torch predictor it runs one engine call at a time; share it between threads behind a lock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..data import Examples, Task, examples_from_inputs, read_unlabelled
from ..errors import SweetError
from ..thresholds import check_threshold
from .engine import OnnxEngine, OnnxGraphs
from .manifest import TOKENIZER_JSON, Manifest
from .policies import NumpyPolicy, make_numpy_policy
from .result import BatchResult
from .tokenize import RuntimeTokenizer

RUNTIME = "onnxruntime"


class OnnxPredictor:
    """An exported model ready to answer on ONNX Runtime: graphs at one precision, tokenizer, exit policies."""

    runtime = RUNTIME

    def __init__(self, folder: str | Path, *, precision: str = "fp32", threshold: float | None = None,
                 policy: str | None = None, batch_size: int = 64, threads: int | None = None,
                 source: str | None = None):
        if batch_size < 1:
            raise SweetError(f"batch size must be positive, got {batch_size}")
        self.folder = Path(folder)
        self.manifest = Manifest.read(self.folder)
        m = self.manifest
        self.graphs = OnnxGraphs(self.folder, m, precision, threads)
        self.precision = precision
        self.task = Task.from_dict(m.task)
        self.label_names = list(m.label_names)
        self.max_length = int(m.max_length)
        self.tokenizer = RuntimeTokenizer(self.folder / TOKENIZER_JSON, self.max_length, m.uses_token_type_ids)
        self.threshold = check_threshold(m.threshold if threshold is None else threshold)
        self.batch_size = int(batch_size)
        self.source = source or str(self.folder)
        self._policies: dict[str, NumpyPolicy] = {}
        self.policy = policy or m.policy
        self.get_policy(self.policy)  # fail now on a policy this model cannot use

    @classmethod
    def load(cls, folder: str | Path, **kwargs) -> "OnnxPredictor":
        return cls(folder, **kwargs)

    # ------------------------------------------------------------------------------------------ the model

    @property
    def exit_layers(self) -> list[int]:
        return list(self.manifest.exit_layers)

    @property
    def method(self) -> str:
        return self.manifest.method

    def get_policy(self, name: str) -> NumpyPolicy:
        if name not in self._policies:
            self._policies[name] = make_numpy_policy(name, self.manifest)
        return self._policies[name]

    # ------------------------------------------------------------------------------------------ answering

    def examples(self, inputs: Sequence) -> Examples:
        return examples_from_inputs(inputs, self.task)

    def encode(self, examples: Examples):
        """Tokenise examples with the folder's tokenizer (the same ids as the Hugging Face tokenizer)."""
        return self.tokenizer.encode(examples.texts)

    def predict(self, inputs: Sequence, threshold: float | None = None, policy: str | None = None,
                batch_size: int | None = None) -> list[dict]:
        threshold = None if threshold is None else check_threshold(threshold)
        return self.predict_encoded(self.encode(self.examples(inputs)), threshold, policy, batch_size)

    def predict_lines(self, lines: Sequence[str]) -> list[dict]:
        """``sweet predict`` input: one example per line, pairs as two tab-separated texts."""
        return self.predict_encoded(self.encode(read_unlabelled(lines, self.task)))

    def predict_encoded(self, encoded, threshold: float | None = None, policy: str | None = None,
                        batch_size: int | None = None, sort_by_length: bool = True) -> list[dict]:
        """Answer tokenised rows (:class:`~sweet.runtime.tokenize.TokenRows`, or :class:`sweet.encoding.Encoded`).
        The threshold is trusted (checked where it entered)."""
        name = policy or self.policy
        return self.rows(self.run(encoded, threshold, name, batch_size, sort_by_length), name)

    def run(self, encoded, threshold: float | None = None, policy: str | None = None, batch_size: int | None = None,
            sort_by_length: bool = True) -> BatchResult:
        """The engine's raw result (exit index, label, score, probabilities per row)."""
        engine = OnnxEngine(self.graphs, self.manifest, self.get_policy(policy or self.policy),
                            self.threshold if threshold is None else threshold)
        return engine.predict(encoded, batch_size or self.batch_size, sort_by_length=sort_by_length)

    def rows(self, result: BatchResult, policy: str) -> list[dict]:
        return result.answers(self.label_names, self.manifest.exit_layers, policy)

    def info(self) -> dict:
        m = self.manifest
        return {"task": self.task.name, "labels": self.label_names, "method": m.method, "backbone": m.backbone,
                "exit_layers": list(m.exit_layers), "policy": self.policy, "threshold": self.threshold,
                "max_length": self.max_length, "batch_size": self.batch_size,
                "text_fields": list(self.task.text_fields), "runtime": RUNTIME, "device": "cpu",
                "precision": self.precision, "threads": self.graphs.threads}
