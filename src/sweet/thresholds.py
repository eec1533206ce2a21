"""Exit thresholds: the default a trained model answers with, and the one check every threshold passes where it
enters (torch-free, shared by :mod:`sweet.policies` and the ONNX runtime, :mod:`sweet.runtime`)."""

from __future__ import annotations

import numpy as np

from .errors import SweetError

#: the threshold a trained model answers with unless told otherwise (predict, serve, the default-threshold report)
DEFAULT_THRESHOLD = 0.9


def check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not np.isfinite(t) or not 0.0 <= t <= 1.0:
        raise SweetError(f"threshold must be a number in [0, 1], got {threshold}")
    return t
