"""What an early-exit engine answers for a set of rows (NumPy only; shared by the torch and the ONNX engines)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class BatchResult:
    exit_index: np.ndarray  # [B] index of the exit each row left at
    label: np.ndarray  # [B] predicted label id
    score: np.ndarray  # [B] the policy's score at that exit (the confidence, for ConfidencePolicy)
    probabilities: np.ndarray  # [B, K] class probabilities at that exit (temperature-scaled if the policy has T)

    def __len__(self) -> int:
        return len(self.label)

    @classmethod
    def empty(cls, n: int, num_labels: int) -> "BatchResult":
        return cls(np.full(n, -1, np.int64), np.zeros(n, np.int64), np.zeros(n, np.float32),
                   np.zeros((n, num_labels), np.float32))

    def answers(self, label_names: Sequence[str], exit_layers: Sequence[int], policy: str) -> list[dict]:
        """One answer per row, as ``predict`` and ``serve`` give it: the label, its id, the layer the row left at
        and the max probability there (``confidence``); with a policy other than confidence also its ``score``."""
        conf = self.probabilities.max(1)
        out = [{"label": label_names[int(p)], "label_id": int(p), "exit_layer": exit_layers[int(c)],
                "confidence": float(q)} for c, p, q in zip(self.exit_index, self.label, conf)]
        if policy != "confidence":
            for row, s in zip(out, self.score):
                row["score"] = float(s)
        return out
