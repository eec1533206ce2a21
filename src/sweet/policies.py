"""Exit policies: when may a sample leave at an exit?

A policy looks at one exit at a time, in order, exactly as an early-exit model runs, and gives each
sample a score (higher = readier to leave). A sample leaves at the first exit where
``policy.should_exit(score, threshold)``; the last exit takes everyone left. Because the policy only
sees exits up to the current one (plus its own per-sample ``state``), the same object drives the
"compute every exit, then pick" evaluation path (:func:`decide`) and a layer-by-layer inference engine.

Implemented here, all selectable by name (:data:`POLICIES`, :func:`make_policy`):

``confidence``  (:class:`ConfidencePolicy`; Schwartz et al. 2020 / the paper) score = temperature-scaled max
                softmax probability; exit when score >= t. Grid: 11 points in [1/#labels, 1].
``entropy``     (:class:`EntropyPolicy`; DeeBERT, Xin et al. 2020) score = 1 - H(p) / log K, with p the
                temperature-scaled probabilities (K labels), so 1 = certain, 0 = uniform; exit when
                score >= t, i.e. when the normalised entropy is <= 1 - t. Grid: 11 points in [0, 1]; t = 0 sends
                everyone out at the first exit, t = 1 nobody out early.
``patience``    (:class:`PatiencePolicy`; PABEE, Zhou et al. 2020) exit when the predicted label has stayed the
                same over ``p`` consecutive exits after the first one it appeared at (PABEE's counter: +1 when an
                exit agrees with the previous exit, reset to 0 otherwise; exit when counter >= p). A threshold t
                in [0, 1] means patience p = round(t * (M - 1)) for M exits, so t = 0 (p = 0) sends everyone out at
                the first exit and t = 1 (p = M - 1) nobody out early. The grid is the M distinct patiences
                0..M-1, as thresholds p / (M - 1) (an 11-point grid would only repeat them). score = counter / (M-1).
``learned``     (:class:`LearnedExitPolicy`; learning-to-exit, BERxiT, Xin et al. 2021; paper Sec. 5 / App. E)
                score = sigmoid(w_i . h_i + b_i) on exit i's pooled representation h_i, a prediction of whether
                exit i is correct (trained by :mod:`sweet.learn_exit`); exit when score >= t. Grid: 11 points
                in [0, 1].

For every policy a threshold of 1 runs everyone to the last exit (a saturated score of exactly 1.0 does
not count as reaching it). Confidence, entropy and patience need no training beyond the model's own (the
temperatures are fitted at calibration), so all of them can be compared on one trained model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np
import torch

from .cost import threshold_grid
from .errors import SweetError
from .thresholds import DEFAULT_THRESHOLD, check_threshold  # noqa: F401 (public here too)


class ExitPolicy(ABC):
    name: str = "policy"
    needs_hidden: bool = False  # True: score() reads each exit's pooled representation
    temperatures: list[float] | None = None  # per-exit temperatures for probabilities() (None: 1.0)

    def probabilities(self, exit_index: int, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities at an exit, temperature-scaled when the policy has temperatures."""
        return _probabilities(self.temperatures, exit_index, logits)

    def threshold_grid(self, num_labels: int, n: int = 11) -> np.ndarray:

        return threshold_grid(num_labels, n)

    def init_state(self, batch_size: int) -> Any:
        """Per-sample state carried from one exit to the next (None if the policy needs none)."""
        return None

    def select_state(self, state: Any, rows: torch.Tensor) -> Any:
        """Keep the state of the given rows (used when finished rows leave a batch)."""
        return state

    @abstractmethod
    def score(self, exit_index: int, logits: torch.Tensor, hidden: torch.Tensor | None, state: Any) -> tuple[torch.Tensor, Any]:
        """Per-sample readiness to exit at ``exit_index`` given that exit's logits [B, K]."""

    def score_and_probabilities(self, exit_index: int, logits: torch.Tensor, hidden: torch.Tensor | None,
                                state: Any) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """(score, probabilities, state) at one exit: what :meth:`score` and :meth:`probabilities` return, in one
        call, so that a policy whose score is a function of the probabilities computes the softmax once (the
        engine's exit step)."""
        score, state = self.score(exit_index, logits, hidden, state)
        return score, self.probabilities(exit_index, logits), state

    def should_exit(self, score: torch.Tensor, threshold: float) -> torch.Tensor:
        """Leave when the score reaches the threshold; a threshold of 1 never exits early (a saturated
        score of exactly 1.0 does not count as reaching it)."""
        if threshold >= 1.0:
            return torch.zeros_like(score, dtype=torch.bool)
        return score >= threshold

    def may_exit(self, exit_index: int, threshold: float) -> bool:
        """Whether a row can leave at (non-final) exit ``exit_index`` at ``threshold``. False only where the answer
        does not depend on the scores: the base rule (a threshold of 1 never exits early) for a policy that keeps no
        state from exit to exit. The engine then skips that exit (its head and the policy): at threshold 1 it runs
        the layers and the last head only, the work of the full model."""
        return not (threshold >= 1.0 and type(self).should_exit is ExitPolicy.should_exit
                    and self.init_state(0) is None)

    def to_dict(self) -> dict:
        return {"name": self.name}


def _probabilities(temperatures, exit_index: int, logits: torch.Tensor) -> torch.Tensor:
    t = 1.0 if temperatures is None else temperatures[exit_index]
    return torch.softmax(logits.float() / t, dim=-1)


def _check_temperatures(temperatures):
    temps = None if temperatures is None else [float(t) for t in temperatures]
    if temps is not None and any(not t > 0 for t in temps):
        raise SweetError(f"temperatures must be positive, got {temps}")
    return temps


class ConfidencePolicy(ExitPolicy):
    """Exit when the temperature-scaled max softmax probability reaches the threshold.

    Threshold ``1/#labels`` sends everyone out at the first exit; threshold ``1`` runs everyone to the
    last exit (a saturated float probability of exactly 1.0 does not count as reaching it)."""

    name = "confidence"

    def __init__(self, temperatures: Sequence[float] | None = None):
        self.temperatures = _check_temperatures(temperatures)

    def score(self, exit_index, logits, hidden, state):
        return self.probabilities(exit_index, logits).max(dim=-1).values, state

    def score_and_probabilities(self, exit_index, logits, hidden, state):
        p = self.probabilities(exit_index, logits)
        return p.max(dim=-1).values, p, state

    def to_dict(self) -> dict:
        return {"name": self.name, "temperatures": self.temperatures}


class EntropyPolicy(ExitPolicy):
    """DeeBERT's entropy criterion, normalised: score = 1 - H(p)/log K (1 = one-hot, 0 = uniform), with p the
    temperature-scaled probabilities. Exit when the normalised entropy is <= 1 - threshold."""

    name = "entropy"

    def __init__(self, temperatures: Sequence[float] | None = None):
        self.temperatures = _check_temperatures(temperatures)

    def threshold_grid(self, num_labels: int, n: int = 11) -> np.ndarray:
        return np.linspace(0.0, 1.0, n)

    def score(self, exit_index, logits, hidden, state):
        return self._score(self.probabilities(exit_index, logits)), state

    def score_and_probabilities(self, exit_index, logits, hidden, state):
        p = self.probabilities(exit_index, logits)
        return self._score(p), p, state

    @staticmethod
    def _score(p: torch.Tensor) -> torch.Tensor:
        h = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)
        return (1.0 - h / float(np.log(p.shape[-1]))).clamp(0.0, 1.0)

    def to_dict(self) -> dict:
        return {"name": self.name, "temperatures": self.temperatures}


class PatiencePolicy(ExitPolicy):
    """PABEE's patience criterion: exit once the prediction has been stable for ``p`` consecutive exits
    (threshold t -> p = round(t * (num_exits - 1)); see the module docstring). The per-row state is
    (previous prediction, counter), so the engine compacts it with the rows."""

    name = "patience"

    def __init__(self, num_exits: int, temperatures: Sequence[float] | None = None):
        if int(num_exits) < 1:
            raise SweetError(f"the patience policy needs at least one exit, got {num_exits}")
        self.num_exits = int(num_exits)
        self.temperatures = _check_temperatures(temperatures)

    @property
    def _span(self) -> int:
        return max(self.num_exits - 1, 1)

    def patience(self, threshold: float) -> int:
        return int(round(float(threshold) * self._span))

    def threshold_grid(self, num_labels: int, n: int = 11) -> np.ndarray:
        return np.arange(self.num_exits) / self._span if self.num_exits > 1 else np.zeros(1)

    def init_state(self, batch_size):
        return torch.full((batch_size,), -1, dtype=torch.long), torch.zeros(batch_size, dtype=torch.long)

    def select_state(self, state, rows):
        return state[0][rows], state[1][rows]

    def score(self, exit_index, logits, hidden, state):
        prev, count = state
        pred = logits.argmax(-1)
        count = torch.where((pred == prev) & (prev >= 0), count + 1, torch.zeros_like(count))
        return count.float() / self._span, (pred, count)

    def should_exit(self, score, threshold):
        return torch.round(score * self._span).long() >= self.patience(threshold)

    def to_dict(self) -> dict:
        return {"name": self.name, "num_exits": self.num_exits, "temperatures": self.temperatures}


class LearnedExitPolicy(ExitPolicy):
    """Learning-to-exit: score = sigmoid(w_i . h_i + b_i) on exit i's pooled representation (the model's
    :class:`~sweet.modeling.ExitPredictor` i); exit when score >= threshold. Needs ``hidden``."""

    name = "learned"
    needs_hidden = True

    def __init__(self, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                 temperatures: Sequence[float] | None = None):
        self.weights = [torch.as_tensor(w).detach().float().reshape(1, -1).clone() for w in weights]
        self.biases = [torch.as_tensor(b).detach().float().reshape(1).clone() for b in biases]
        if len(self.weights) != len(self.biases):
            raise SweetError("one weight and one bias per exit are required")
        self.temperatures = _check_temperatures(temperatures)

    @classmethod
    def from_model(cls, model) -> "LearnedExitPolicy":
        preds = getattr(model, "exit_predictors", None)
        if preds is None:
            raise SweetError("this model has no learning-to-exit predictors: train it with 'sweet train ... "
                             "--learn-exit' (or sweet.learn_exit.fit_exit_predictors), or choose another --policy")
        return cls([p.weight for p in preds], [p.bias for p in preds], model.config.temperatures)

    def threshold_grid(self, num_labels: int, n: int = 11) -> np.ndarray:
        return np.linspace(0.0, 1.0, n)

    def score(self, exit_index, logits, hidden, state):
        if hidden is None:
            raise SweetError("the learned exit policy needs each exit's pooled representation (hidden)")
        h = torch.as_tensor(np.asarray(hidden) if not torch.is_tensor(hidden) else hidden).float()
        w, b = self.weights[exit_index], self.biases[exit_index]
        return torch.sigmoid(torch.nn.functional.linear(h, w, b)).squeeze(-1), state

    def to_dict(self) -> dict:
        return {"name": self.name}


#: Policy names accepted by :func:`make_policy` (and --policy on the command line).
POLICIES = ("confidence", "entropy", "patience", "learned")


def make_policy(name: str, model) -> ExitPolicy:
    """The named policy for a trained :class:`~sweet.modeling.MultiExitModel` (its fitted temperatures,
    number of exits and, for ``learned``, its exit predictors)."""
    temps = model.config.temperatures
    if name == "confidence":
        return ConfidencePolicy(temps)
    if name == "entropy":
        return EntropyPolicy(temps)
    if name == "patience":
        return PatiencePolicy(model.num_exits, temps)
    if name == "learned":
        return LearnedExitPolicy.from_model(model)
    raise SweetError(f"unknown exit policy {name!r}; choose one of: {', '.join(POLICIES)}")


def decide(
    policy: ExitPolicy,
    logits_per_exit: Sequence[torch.Tensor | np.ndarray],
    threshold: float,
    hidden_per_exit: Sequence[torch.Tensor] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply a policy to precomputed logits of every exit.

    Returns (exit index per sample, predicted label per sample, policy score at the chosen exit)."""
    logits = [torch.as_tensor(np.asarray(lg) if not torch.is_tensor(lg) else lg) for lg in logits_per_exit]
    n = logits[0].shape[0]
    state = policy.init_state(n)
    chosen = torch.full((n,), len(logits) - 1, dtype=torch.long)
    conf = torch.zeros(n)
    done = torch.zeros(n, dtype=torch.bool)
    for i, lg in enumerate(logits):
        h = None if hidden_per_exit is None else torch.as_tensor(hidden_per_exit[i])
        s, state = policy.score(i, lg, h, state)
        leave = ~done & (policy.should_exit(s, threshold) if i < len(logits) - 1 else torch.ones_like(done))
        chosen[leave] = i
        conf[leave] = s[leave].float()
        done |= leave
    stacked = torch.stack([lg.argmax(-1) for lg in logits])  # [E, N]
    preds = stacked.gather(0, chosen.unsqueeze(0)).squeeze(0)
    return chosen.numpy(), preds.numpy(), conf.numpy()
