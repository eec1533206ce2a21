"""Exit policies: when may a sample leave at an exit?

A policy looks at one exit at a time, in order, exactly as an early-exit model runs, and gives each
sample a score (higher = readier to leave). A sample leaves at the first exit where
``policy.should_exit(score, threshold)``; the last exit takes everyone left. Because the policy only
sees exits up to the current one (plus its own per-sample ``state``), the same object drives the
"compute every exit, then pick" evaluation path (:func:`decide`) and a layer-by-layer inference engine.

Implemented here: :class:`ConfidencePolicy` (max softmax probability with a per-exit temperature,
Schwartz et al. 2020 / the paper). Learned, entropy and patience policies subclass :class:`ExitPolicy`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np
import torch

from .errors import SweetError


def check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not np.isfinite(t) or not 0.0 <= t <= 1.0:
        raise SweetError(f"threshold must be a number in [0, 1], got {threshold}")
    return t


class ExitPolicy(ABC):
    name: str = "policy"

    def threshold_grid(self, num_labels: int, n: int = 11) -> np.ndarray:
        from .cost import threshold_grid

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

    def should_exit(self, score: torch.Tensor, threshold: float) -> torch.Tensor:
        return score >= threshold

    def to_dict(self) -> dict:
        return {"name": self.name}


class ConfidencePolicy(ExitPolicy):
    """Exit when the temperature-scaled max softmax probability reaches the threshold.

    Threshold ``1/#labels`` sends everyone out at the first exit; threshold ``1`` runs everyone to the
    last exit (a saturated float probability of exactly 1.0 does not count as reaching it)."""

    name = "confidence"

    def __init__(self, temperatures: Sequence[float] | None = None):
        self.temperatures = None if temperatures is None else [float(t) for t in temperatures]
        if self.temperatures is not None and any(not t > 0 for t in self.temperatures):
            raise SweetError(f"temperatures must be positive, got {self.temperatures}")

    def probabilities(self, exit_index: int, logits: torch.Tensor) -> torch.Tensor:
        t = 1.0 if self.temperatures is None else self.temperatures[exit_index]
        return torch.softmax(logits.float() / t, dim=-1)

    def score(self, exit_index, logits, hidden, state):
        return self.probabilities(exit_index, logits).max(dim=-1).values, state

    def should_exit(self, score, threshold):
        if threshold >= 1.0:
            return torch.zeros_like(score, dtype=torch.bool)
        return score >= threshold

    def to_dict(self) -> dict:
        return {"name": self.name, "temperatures": self.temperatures}


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
        h = None if hidden_per_exit is None else hidden_per_exit[i]
        s, state = policy.score(i, lg, h, state)
        leave = ~done & (policy.should_exit(s, threshold) if i < len(logits) - 1 else torch.ones_like(done))
        chosen[leave] = i
        conf[leave] = s[leave].float()
        done |= leave
    stacked = torch.stack([lg.argmax(-1) for lg in logits])  # [E, N]
    preds = stacked.gather(0, chosen.unsqueeze(0)).squeeze(0)
    return chosen.numpy(), preds.numpy(), conf.numpy()
