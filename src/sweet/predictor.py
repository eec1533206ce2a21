"""One predictor object behind ``sweet predict``, ``sweet serve`` and ``sweet bench``.

>>> import sweet
>>> clf = sweet.load("runs/demo/sst2-sweet", device="auto", precision="auto")
>>> clf.predict(["a gripping, funny film", "tedious"], threshold=0.9)
[{'label': 'positive', 'label_id': 1, 'exit_layer': 1, 'confidence': 0.97}, ...]

Pair tasks take pairs: ``clf.predict([("premise", "hypothesis"), ...])``. Each answer holds the label, the layer
the example left at and the calibrated max probability there (``confidence``); with a policy other than
``confidence`` also that policy's ``score``.

A predictor runs one engine call at a time (the engine's fallback for encoders other than BERT, MPNet and
DeBERTa-v2 swaps the encoder's layer list while it runs a segment):
share it between threads behind a lock, as :mod:`sweet.serving` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .data import Examples, examples_from_inputs, read_unlabelled
from .encoding import Encoded, encode
from .errors import SweetError
from .inference import EarlyExitEngine
from .policies import DEFAULT_THRESHOLD, check_threshold, make_policy
from .precision import model_placement, placement, prepare_for_inference
from .rundir import (
    RUN_CONFIG,
    effective_max_length,
    fetch_model,
    load_model,
    load_run_config,
    make_collator,
)
from .thresholds import read_threshold
from .tuning import Budget, TuneResult, tune_run


class Predictor:
    """A trained multi-exit model ready to answer: tokenizer, exit policies, device and precision."""

    runtime = "torch"

    def __init__(self, model, tokenizer, task, *, max_length: int = 256, threshold: float = DEFAULT_THRESHOLD,
                 policy: str = "confidence", batch_size: int = 64, source: str | None = None,
                 threshold_origin: dict | None = None):
        if batch_size < 1:
            raise SweetError(f"batch size must be positive, got {batch_size}")
        self.model, self.tokenizer, self.task = model, tokenizer, task
        self.placement = model_placement(model)
        self.max_length = effective_max_length(max_length, tokenizer, model)
        self.collator = make_collator(tokenizer, model)
        self.threshold = check_threshold(threshold)
        #: how the default threshold was chosen (shown by info(), so /info): given, sweet's default, or sweet tune
        self.threshold_origin = threshold_origin or {"how": "given"}
        self.batch_size = int(batch_size)
        self.source = source
        self._policies: dict[str, Any] = {}
        self.policy = policy
        self.get_policy(policy)  # fail now on a policy this model cannot use
        self.label_names = list(model.config.label_names or [str(i) for i in range(model.config.num_labels)])

    # ------------------------------------------------------------------------------------------ loading

    @classmethod
    def load(cls, run_dir: str | Path, *, device: str = "auto", precision: str = "auto", task: str | None = None,
             threshold: float | None = None, policy: str = "confidence", batch_size: int = 64) -> "Predictor":
        """Load a run directory (or its ``model/`` directory, or a Hugging Face hub id: :func:`~sweet.rundir.fetch_model`)
        onto ``device`` in ``precision`` (:mod:`sweet.precision`). Without ``threshold``: the run's tuned threshold
        for ``policy`` (``threshold.json``, written by ``sweet tune``) where there is one, else 0.9."""
        placed = placement(device, precision)  # a bad device/precision fails before the model is read
        threshold = None if threshold is None else check_threshold(threshold)
        path = fetch_model(run_dir)
        model, tokenizer, t = load_model(path, task, suggest_task=True)
        max_length = load_run_config(path).max_length if (path / RUN_CONFIG).is_file() else 256
        threshold, origin = _default_threshold(path, threshold, policy)
        model = prepare_for_inference(model, placed)
        return cls(model, tokenizer, t, max_length=max_length, threshold=threshold, policy=policy,
                   batch_size=batch_size, source=str(path), threshold_origin=origin)

    # ------------------------------------------------------------------------------------------ tuning

    def tune(self, max_drop: float | None = None, target_cost: float | None = None, *, data_dir: str | None = None,
             from_curve: bool = False, progress: bool = False) -> TuneResult:
        """``sweet tune`` from Python: choose this run's threshold for the predictor's policy from a budget on the
        calibration split (:mod:`sweet.tuning`), store it (``threshold.json``) and use it from now on."""
        budget = Budget(max_drop=max_drop, target_cost=target_cost)
        if self.source is None:
            raise SweetError("this predictor was not loaded from a run directory; tuning needs the run's calibration "
                             "split: sweet.load(RUN_DIR).tune(...)")
        result = tune_run(self.source, budget, self.policy, from_curve=from_curve, data_dir=data_dir,
                          progress=progress)
        self.threshold, self.threshold_origin = result.threshold, _origin(result.to_dict())
        return result

    # ------------------------------------------------------------------------------------------ answering

    @property
    def exit_layers(self) -> list[int]:
        return self.model.exit_layers

    @property
    def method(self) -> str:
        return self.model.config.method

    def get_policy(self, name: str):
        if name not in self._policies:
            self._policies[name] = make_policy(name, self.model)
        return self._policies[name]

    def examples(self, inputs: Sequence) -> Any:
        """Check and convert inputs: strings for single-text tasks, (text, text) pairs for pair tasks."""
        return examples_from_inputs(inputs, self.task)

    def encode(self, examples: Examples) -> Encoded:
        """Tokenise examples (truncated to the model's max length)."""
        return encode(self.tokenizer, examples, self.max_length, warn=False)

    def predict_lines(self, lines: Sequence[str]) -> list[dict]:
        """``sweet predict`` input: one example per line, pairs as two tab-separated texts."""
        return self.predict_encoded(encode(self.tokenizer, read_unlabelled(lines, self.task), self.max_length))

    def predict(self, inputs: Sequence, threshold: float | None = None, policy: str | None = None,
                batch_size: int | None = None) -> list[dict]:
        """Answer every input, in input order. ``threshold`` and ``policy`` are checked here, where they enter."""
        threshold = None if threshold is None else check_threshold(threshold)
        return self.predict_encoded(encode(self.tokenizer, self.examples(inputs), self.max_length, warn=False),
                                    threshold, policy, batch_size)

    def predict_encoded(self, encoded, threshold: float | None = None, policy: str | None = None,
                        batch_size: int | None = None, sort_by_length: bool = True) -> list[dict]:
        """Answer encoded inputs. The threshold is trusted: it was checked where it entered (:meth:`predict`, the
        server's request model, the predictor's own default)."""
        threshold = self.threshold if threshold is None else threshold
        name = policy or self.policy
        engine = EarlyExitEngine(self.model, self.get_policy(name), threshold)
        result = engine.predict(encoded, self.collator, batch_size or self.batch_size, sort_by_length=sort_by_length)
        return self.rows(result, name)

    def rows(self, result, policy: str) -> list[dict]:
        """Answers from an engine result (:class:`~sweet.inference.BatchResult`)."""
        return result.answers(self.label_names, self.model.exit_layers, policy)

    def info(self) -> dict:
        cfg = self.model.config
        return {"task": self.task.name, "labels": self.label_names, "method": cfg.method, "backbone": cfg.backbone,
                "exit_layers": list(cfg.exit_layers), "policy": self.policy, "threshold": self.threshold,
                "threshold_origin": self.threshold_origin,
                "max_length": self.max_length, "batch_size": self.batch_size,
                "text_fields": list(self.task.text_fields), "runtime": self.runtime, **self.placement.to_dict()}


def _describe(item) -> str:
    text = repr(item)
    return text if len(text) <= 60 else text[:57] + "..."


def _origin(record: dict) -> dict:
    """What info() shows of a tuned threshold: the budget, the split it was chosen on and what that predicted."""
    return {"how": "sweet tune", "budget": record["budget"], "chosen_on": record.get("chosen_on", "calibration"),
            "from": record.get("how"), "calibration": record.get("calibration"), "evaluation": record.get("evaluation"),
            **({"file": record["file"]} if "file" in record else {})}


def _default_threshold(path: Path, given: float | None, policy: str) -> tuple[float, dict]:
    """The threshold a loaded predictor answers with, and how it was chosen."""
    if given is not None:
        return given, {"how": "given"}
    stored = read_threshold(path)
    if stored is not None and stored["policy"] == policy:
        return stored["threshold"], _origin(stored)
    note = (f"sweet's default (the tuned threshold in {stored['file']} is for the {stored['policy']} policy)"
            if stored is not None else "sweet's default (not tuned: see 'sweet tune')")
    return DEFAULT_THRESHOLD, {"how": "default", "note": note}


def predict_texts(model_or_run_dir: str | Path, lines: Sequence[str], threshold: float | None, task: str | None = None,
                  batch_size: int = 64, policy: str = "confidence", device: str = "auto",
                  precision: str = "auto") -> list[dict]:
    """Predict unlabelled lines (pair tasks: two tab-separated texts) with an exit policy (default: confidence) at
    ``threshold`` (None: the run's tuned one, else 0.9). Each row gets the label, the exit layer and the calibrated max probability at that exit
    (``confidence``); with another policy also that policy's score there (``score``)."""
    predictor = Predictor.load(model_or_run_dir, device=device, precision=precision, task=task, threshold=threshold,
                               policy=policy, batch_size=batch_size)
    return predictor.predict_lines(lines)
