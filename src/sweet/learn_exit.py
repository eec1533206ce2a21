"""Learning to exit (BERxiT, Xin et al. 2021; the paper's Section 5 and Appendix E).

Each exit *i* gets a module ``u_i = sigmoid(w_i . h_i + b_i)`` on its pooled representation ``h_i`` (the
output of the exit's pooler, the input of its classifier), trained with the mean squared error against
``1[exit i's prediction is correct]``. At inference a sample leaves at the first exit with ``u_i >= t``
(:class:`~sweet.policies.LearnedExitPolicy`).

When it is trained (our choice): **after fine-tuning and calibration, on the held-out calibration split,
with the encoder and the classifier heads frozen** (the model in eval mode: no dropout). This is BERxiT's own
two-stage recipe (its ``*-lte`` training strategy optimises only the exit-predictor loss after the classifiers
are trained), with one module per exit instead of BERxiT's single shared one, as the issue asks. Why this rather
than joint training with a detached representation:

- the encoder and heads are exactly those of the confidence-policy model (same weights, bit for bit: no
  extra parameters in the gradient-clipping norm, no extra random numbers drawn), so every policy is compared
  on one model;
- the targets are the correctness of the *final* classifiers, not of classifiers still changing during
  training;
- it costs one forward pass over the calibration split (no gradients through the encoder) and can be added to
  an already trained model.

Why the calibration split and not the training sample: on the examples they were trained on, the classifiers
are right more often than on new data (they are over-confident there), so predictors fitted on the training
sample learn a too-high rate of correct exits. The calibration split is held out from training, like the
temperatures it also fits; the split the scores are reported on is never used.

The optimiser (Adam, lr 1e-2, batch 32, 10 epochs or 2,000 steps over the cached representations, whichever
is more, zero initialisation, seeded shuffling) is ours; BERxiT trains its module with the fine-tuning optimiser. Fitting is deterministic
on CPU for a given seed.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .encoding import Collator, Encoded
from .errors import SweetError
from .evaluation import collect_logits

LR = 1e-2
EPOCHS = 10
MIN_STEPS = 2000  # small training samples get more epochs: a linear probe needs a few thousand Adam steps
BATCH_SIZE = 32


def fit_predictor(predictor: torch.nn.Module, hidden: np.ndarray, correct: np.ndarray, seed: int = 0,
                  lr: float = LR, epochs: int = EPOCHS, batch_size: int = BATCH_SIZE, min_steps: int = MIN_STEPS) -> dict:
    """Fit one :class:`~sweet.modeling.ExitPredictor` by MSE(sigmoid(w.h + b), correct) with Adam, for
    ``epochs`` epochs or ``min_steps`` steps, whichever is more. Returns the training MSE before and after, and
    the rate of correct predictions (the target's mean)."""
    x = torch.as_tensor(hidden, dtype=torch.float32)
    y = torch.as_tensor(correct, dtype=torch.float32)
    n = len(y)
    if n == 0:
        raise SweetError("learning to exit needs at least one training example")
    epochs = max(int(epochs), math.ceil(min_steps / math.ceil(n / batch_size)))
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(predictor.parameters(), lr=lr)
    with torch.no_grad():
        before = float(F.mse_loss(predictor(x), y))
    predictor.train()
    with torch.enable_grad():
        for _ in range(epochs):
            for rows in torch.randperm(n, generator=gen).split(batch_size):
                loss = F.mse_loss(predictor(x[rows]), y[rows])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    predictor.eval()
    with torch.no_grad():
        after = float(F.mse_loss(predictor(x), y))
    return {"mse_before": before, "mse_after": after, "correct_rate": float(y.mean()), "n": int(n), "epochs": epochs}


def fit_exit_predictors(model, encoded: Encoded, collator: Collator, seed: int = 0, batch_size: int = 64,
                        progress: bool = True, split: str = "calibration split", **kwargs) -> dict:
    """Add learning-to-exit modules to ``model`` (if it has none) and fit them on ``encoded`` (labelled; the
    held-out calibration split in a run, see the module docstring), with everything else frozen. Returns a log:
    per exit, the fitting MSE before/after and the correct rate; ``split`` names what ``encoded`` is."""

    if encoded.labels is None:
        raise SweetError("learning to exit needs labelled data to fit on")
    logits, hidden = collect_logits(model, encoded, collator, batch_size, progress, desc="learn-to-exit",
                                    with_hidden=True)
    labels = np.asarray(encoded.labels)
    predictors = model.add_exit_predictors()
    per_exit = []
    for i, (lg, h) in enumerate(zip(logits, hidden)):
        correct = (lg.argmax(1) == labels).astype(np.float32)
        info = fit_predictor(predictors[i], h, correct, seed=seed + i, **kwargs)
        per_exit.append({"exit": i, "exit_layer": int(model.exit_layers[i]), **info})
    return {"trained_on": f"{split} (encoder and heads frozen, eval mode)", "lr": kwargs.get("lr", LR),
            "epochs": kwargs.get("epochs", EPOCHS), "min_steps": kwargs.get("min_steps", MIN_STEPS),
            "batch_size": kwargs.get("batch_size", BATCH_SIZE),
            "per_exit": per_exit}
