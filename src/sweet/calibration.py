"""Temperature scaling (Guo et al., 2017), one scalar per exit.

Each exit's temperature ``T`` minimises the negative log-likelihood of ``softmax(logits / T)`` on the
calibration split, which is held out from training and is never the split scores are reported on.
Scaling is monotonic, so it changes confidences (and therefore exit decisions), never a head's prediction.

The temperature is searched in [0.05, 20]. A fit that ends at a bound warns (:class:`TemperatureAtBoundWarning`):
at 20 the exit's logits barely predict the calibration labels and its confidence is flattened towards uniform, so
thresholds above its largest confidence send every row past it (seen on RTE with 300 examples x 1 epoch); at 0.05
the exit separates the calibration split perfectly (or its logits are near zero) and its confidence is pushed
towards one-hot, so thresholds up to its smallest confidence send every row out at it.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

T_BOUNDS = (0.05, 20.0)
LOG_T_BOUNDS = (np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1]))
#: a fitted log-temperature this close to a bound counts as "at the bound" (the search stops within 1e-5 of it)
_AT_BOUND_TOL = 1e-3


class TemperatureAtBoundWarning(UserWarning):
    """A fitted temperature ended at the search bound: the exit cannot be calibrated on this data."""


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    logp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: Sequence[int], exit_name: str = "exit", last: bool = False) -> float:
    """The temperature minimising the NLL on (logits, labels), in [0.05, 20]. At a bound it warns
    (:class:`TemperatureAtBoundWarning`), naming ``exit_name``; ``last``: the model's last exit, where every row
    that reaches it leaves, whatever the threshold."""
    labels = np.asarray(labels, dtype=np.int64)
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError("need a [N, K] logits array and N labels, N > 0")
    res = minimize_scalar(lambda lt: nll(logits, labels, float(np.exp(lt))), bounds=LOG_T_BOUNDS, method="bounded",
                          options={"xatol": 1e-5})
    t = float(np.exp(res.x))
    if res.x >= LOG_T_BOUNDS[1] - _AT_BOUND_TOL or res.x <= LOG_T_BOUNDS[0] + _AT_BOUND_TOL:
        warnings.warn(at_bound_message(logits, t, exit_name, last), TemperatureAtBoundWarning, stacklevel=2)
    return t


def at_bound_message(logits: np.ndarray, temperature: float, exit_name: str = "exit", last: bool = False) -> str:
    """What a temperature at a bound means for the exit decisions, with the confidences on the fitted data."""
    conf = softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1).max(1)
    k = logits.shape[1]
    if temperature >= math.sqrt(T_BOUNDS[0] * T_BOUNDS[1]):
        top = math.ceil(float(conf.max()) * 1000) / 1000  # rounded up: every threshold above it is above all of them
        effect = ("it is the last exit, so the rows that reach it still leave there, with a confidence that says "
                  "little" if last else f"every confidence threshold above {top:.3f} sends every row past this exit")
        return (f"{exit_name}: temperature fitted at its upper bound {T_BOUNDS[1]:g} (logits scaled down "
                f"{T_BOUNDS[1]:g}x): its logits barely predict the calibration labels, so its calibrated confidence "
                f"is near uniform (at most {top:.3f} on the calibration split; 1/{k} = {1 / k:.3f}) and {effect}. "
                "The run is probably too small to train this exit (more examples or epochs help)")
    low = math.floor(float(conf.min()) * 1000) / 1000  # rounded down: every threshold up to it is below all of them
    effect = ("it is the last exit, so every row that reaches it leaves there anyway" if last
              else f"every confidence threshold up to {low:.3f} sends every row out at this exit")
    return (f"{exit_name}: temperature fitted at its lower bound {T_BOUNDS[0]:g} (logits scaled up "
            f"{1 / T_BOUNDS[0]:g}x): this exit separates the calibration split (almost) perfectly or its logits are "
            f"near zero, so its calibrated confidence is pushed towards one-hot (at least {low:.3f} on the calibration "
            f"split) and {effect}. A larger calibration split helps")


def fit_temperatures(logits_per_exit: Sequence[np.ndarray], labels: Sequence[int],
                     exit_layers: Sequence[int] | None = None) -> list[float]:
    """One temperature per exit. ``exit_layers`` (the layer after which each exit sits) only names the exits in
    the warnings of :func:`fit_temperature`."""
    names = [f"exit {i + 1} of {len(logits_per_exit)}" + (f" (layer {exit_layers[i]})" if exit_layers else "")
             for i in range(len(logits_per_exit))]
    n = len(logits_per_exit)
    return [fit_temperature(lg, labels, name, last=i == n - 1) for i, (lg, name) in enumerate(zip(logits_per_exit, names))]


def expected_calibration_error(probs: np.ndarray, labels: Sequence[int], n_bins: int = 15) -> float:
    """ECE of the max-probability confidence, in [0, 1]."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)
