"""Task metrics: accuracy, or Matthews correlation for CoLA (as in GLUE and the paper), in percent."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, matthews_corrcoef


def score(metric: str, labels: Sequence[int], predictions: Sequence[int]) -> float:
    y, p = np.asarray(labels), np.asarray(predictions)
    if y.shape != p.shape or y.size == 0:
        raise ValueError("labels and predictions must be non-empty and of equal length")
    if metric == "accuracy":
        return 100.0 * float(accuracy_score(y, p))
    if metric == "matthews":
        return 100.0 * float(matthews_corrcoef(y, p))
    raise ValueError(f"unknown metric '{metric}'")
