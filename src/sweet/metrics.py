"""Task metrics, in percent, computed with scikit-learn: accuracy, macro F1, binary F1 of a positive class, or
Matthews correlation (CoLA's metric in GLUE and the paper; ``--metric mcc``). Plus the per-class precision, recall
and F1 and the confusion matrix that a user with many classes looks at first.

A metric is named by a string: ``accuracy``, ``f1_macro``, ``matthews``, or ``f1:ID`` (binary F1 with label id ID
as the positive class; ``f1`` alone means id 1).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    precision_recall_fscore_support,
)

from .choices import METRIC_CHOICES, METRIC_NAMES, canonical_metric, metric_label  # noqa: F401 (public here too)


def score(metric: str, labels: Sequence[int], predictions: Sequence[int]) -> float:
    y, p = np.asarray(labels), np.asarray(predictions)
    if y.shape != p.shape or y.size == 0:
        raise ValueError("labels and predictions must be non-empty and of equal length")
    kind, _, positive = metric.partition(":")
    if kind == "accuracy":
        return 100.0 * float(accuracy_score(y, p))
    if kind == "matthews":
        return 100.0 * float(matthews_corrcoef(y, p))
    if kind == "f1_macro":
        return 100.0 * float(f1_score(y, p, average="macro", zero_division=0))
    if kind == "f1":
        return 100.0 * float(f1_score(y, p, average="binary", pos_label=int(positive or 1), zero_division=0))
    raise ValueError(f"unknown metric '{metric}'")


def class_report(labels: Sequence[int], predictions: Sequence[int], label_names: Sequence[str]) -> dict:
    """Per-class precision, recall, F1 and support (percent) and the confusion matrix (rows: true labels,
    columns: predicted labels, in label-id order)."""
    ids = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, labels=ids, zero_division=0)
    return {
        "per_class": [{"label": str(name), "precision": round(100 * float(pr), 4), "recall": round(100 * float(rc), 4),
                       "f1": round(100 * float(f), 4), "support": int(n)}
                      for name, pr, rc, f, n in zip(label_names, precision, recall, f1, support)],
        "confusion_matrix": confusion_matrix(labels, predictions, labels=ids).tolist(),
    }
