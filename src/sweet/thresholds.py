"""Exit thresholds: the default a trained model answers with, and the one check every threshold passes where it
enters (torch-free, shared by :mod:`sweet.policies` and the ONNX runtime, :mod:`sweet.runtime`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .errors import SweetError
from .io import read_json

#: the threshold a trained model answers with unless told otherwise (predict, serve, the default-threshold report)
DEFAULT_THRESHOLD = 0.9


def check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not np.isfinite(t) or not 0.0 <= t <= 1.0:
        raise SweetError(f"threshold must be a number in [0, 1], got {threshold}")
    return t


#: where ``sweet tune`` stores a run's default threshold (in the run directory, with a copy in its ``model/``)
THRESHOLD_FILE = "threshold.json"
#: the exit policies a stored threshold may name (``sweet.policies.POLICIES``; checked equal by a test)
POLICY_NAMES = ("confidence", "entropy", "patience", "learned")


def read_threshold(path: str | Path) -> dict | None:
    """The stored threshold of a run directory or a model folder (``threshold.json`` there, else in its
    ``model/``), checked; None when there is none. Torch-free: the ONNX runtime's loader reads it too."""
    p = Path(path)
    for candidate in (p / THRESHOLD_FILE, p / "model" / THRESHOLD_FILE):
        if candidate.is_file():
            try:
                record = read_json(candidate)
                value = float(record["threshold"])
                policy = str(record["policy"])
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
                raise SweetError(f"{candidate}: not a threshold file written by 'sweet tune' ({exc}); run 'sweet tune' "
                                 "again or delete it") from None
            if not (math.isfinite(value) and 0.0 <= value <= 1.0) or policy not in POLICY_NAMES:
                raise SweetError(f"{candidate}: threshold {value} / policy {policy!r} out of range; run 'sweet tune' "
                                 "again or delete it")
            return {**record, "threshold": value, "file": str(candidate)}
    return None
