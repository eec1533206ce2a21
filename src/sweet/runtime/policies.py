"""The exit policies of :mod:`sweet.policies`, in NumPy, for the ONNX Runtime engine (no torch).

Same scores and the same decisions as the torch classes: ``confidence`` (temperature-scaled max softmax
probability), ``entropy`` (1 - normalised entropy of those probabilities), ``patience`` (PABEE's counter; threshold
t means patience round(t * (exits - 1))) and ``learned`` (sigmoid of the exported exit predictor on the exit's
pooled representation). A threshold of 1 runs everyone to the last exit. Probabilities are computed in float32
from float32 logits, as the torch engine does.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import SweetError
from .manifest import Manifest

POLICIES = ("confidence", "entropy", "patience", "learned")


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    x = logits.astype(np.float32) / np.float32(temperature)
    x = np.exp(x - x.max(-1, keepdims=True))
    return x / x.sum(-1, keepdims=True)


class NumpyPolicy:
    """Base: per-row scores from one exit's logits (and pooled representation); state carried between exits."""

    name = "policy"

    def __init__(self, temperatures: Sequence[float] | None, num_exits: int):
        self.temperatures = None if temperatures is None else [float(t) for t in temperatures]
        self.num_exits = int(num_exits)

    def probabilities(self, exit_index: int, logits: np.ndarray) -> np.ndarray:
        t = 1.0 if self.temperatures is None else self.temperatures[exit_index]
        return softmax(logits, t)

    def init_state(self, n: int) -> Any:
        return None

    def select_state(self, state: Any, rows: np.ndarray) -> Any:
        return None

    def assign_state(self, state: Any, rows: np.ndarray, sub: Any) -> Any:
        return state

    def score(self, exit_index: int, logits: np.ndarray, pooled: np.ndarray | None, state: Any) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    def should_exit(self, score: np.ndarray, threshold: float) -> np.ndarray:
        if threshold >= 1.0:
            return np.zeros(score.shape, dtype=bool)
        return score >= np.float32(threshold)


class Confidence(NumpyPolicy):
    name = "confidence"

    def score(self, exit_index, logits, pooled, state):
        return self.probabilities(exit_index, logits).max(-1), state


class Entropy(NumpyPolicy):
    name = "entropy"

    def score(self, exit_index, logits, pooled, state):
        p = self.probabilities(exit_index, logits)
        h = -(p * np.log(np.maximum(p, np.float32(1e-30)))).sum(-1)
        return np.clip(np.float32(1.0) - h / np.float32(np.log(p.shape[-1])), 0.0, 1.0).astype(np.float32), state


class Patience(NumpyPolicy):
    name = "patience"

    @property
    def _span(self) -> int:
        return max(self.num_exits - 1, 1)

    def init_state(self, n):
        return np.full(n, -1, np.int64), np.zeros(n, np.int64)

    def select_state(self, state, rows):
        return state[0][rows], state[1][rows]

    def assign_state(self, state, rows, sub):
        state[0][rows], state[1][rows] = sub
        return state

    def score(self, exit_index, logits, pooled, state):
        prev, count = state
        pred = logits.argmax(-1)
        count = np.where((pred == prev) & (prev >= 0), count + 1, 0)
        return (count / np.float32(self._span)).astype(np.float32), (pred, count)

    def should_exit(self, score, threshold):
        return np.round(score * self._span).astype(np.int64) >= int(round(float(threshold) * self._span))


class Learned(NumpyPolicy):
    name = "learned"
    needs_pooled = True

    def __init__(self, temperatures, num_exits, weights, biases):
        super().__init__(temperatures, num_exits)
        self.weights = [np.asarray(w, np.float32).reshape(-1) for w in weights]
        self.biases = [np.float32(b) for b in biases]

    def score(self, exit_index, logits, pooled, state):
        z = pooled.astype(np.float32) @ self.weights[exit_index] + self.biases[exit_index]
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32), state


def make_numpy_policy(name: str, manifest: Manifest) -> NumpyPolicy:
    """The named policy for an exported model (its temperatures, exits and, for ``learned``, exit predictors)."""
    temps, n = manifest.temperatures, manifest.num_exits
    if name == "confidence":
        return Confidence(temps, n)
    if name == "entropy":
        return Entropy(temps, n)
    if name == "patience":
        return Patience(temps, n)
    if name == "learned":
        preds = manifest.exit_predictors
        if not preds:
            raise SweetError("this model has no learning-to-exit predictors: train it with 'sweet train ... "
                             "--learn-exit' (or sweet.learn_exit.fit_exit_predictors), or choose another --policy")
        return Learned(temps, n, preds["weights"], preds["biases"])
    raise SweetError(f"unknown exit policy {name!r}; choose one of: {', '.join(POLICIES)}")
