"""Grid presets: the paper's protocol, a reduced grid for 2 CPU cores, and the paper's training-set size sweep, as
spec fields (:func:`~sweet.experiments.spec.spec_from_dict` checks them like any spec)."""

from __future__ import annotations

import json

from ..errors import SweetError

PRESETS: dict[str, dict] = {
    # The paper's protocol (Section 3): 7 tasks x 3 methods x 3 seeds x {1..5}e-5, 6K examples, 2 epochs.
    "paper": {
        "name": "paper",
        "tasks": ["sst2", "mrpc", "cola", "mnli", "qnli", "qqp", "rte"],
        "methods": ["early_exit", "sweet", "multi_model"],
        "seeds": [0, 1, 2],
        "learning_rates": [1e-5, 2e-5, 3e-5, 4e-5, 5e-5],
        "n_train": 6000,
        "epochs": 2,
    },
    # A reduced grid for 2 shared CPU cores, measured (docs/results/quick/): a single-sentence and a pair task,
    # all three methods, 3 seeds, 2 learning rates, 1,000 training examples, 1 epoch. Pair tasks cost ~3-4x
    # more per example than SST-2; with ~60 steps per run the paper's 1e-5..5e-5 barely moves MiniLM, hence
    # the higher rates.
    "quick": {
        "name": "quick",
        "tasks": ["sst2", "qqp"],
        "methods": ["early_exit", "sweet", "multi_model"],
        "seeds": [0, 1, 2],
        "learning_rates": [5e-5, 1e-4],
        "n_train": 1000,
        "epochs": 1,
    },
    # The paper's training-set size sweep (Appendix): EE / SWEET / MM on MNLI at 1K, 3K and 6K examples, 3 seeds,
    # the paper's 2 epochs; the learning rate is chosen per size. MNLI's local pool has 9,999 rows; the fixed
    # hold-outs (calibration: at most a tenth of the pool, 999 rows; evaluation: at most a fifth, 1,999) leave
    # 7,001 for training, so 6K is the largest round size. Learning rates: the paper's range (2e-5, 5e-5) and
    # 1e-4, which won every task of the 'quick' grid at 1K examples (few steps need a higher rate).
    # 3 sizes x 3 methods x 3 seeds x 3 rates = 81 runs, ~8.5 h on 2 idle cores (the --dry-run estimate).
    "sizes": {
        "name": "sizes",
        "tasks": ["mnli"],
        "methods": ["early_exit", "sweet", "multi_model"],
        "seeds": [0, 1, 2],
        "learning_rates": [2e-5, 5e-5, 1e-4],
        "n_train": [1000, 3000, 6000],
        "epochs": 2,
    },
}


def preset(name: str) -> dict:
    if name not in PRESETS:
        raise SweetError(f"unknown preset '{name}'; choose one of: {', '.join(PRESETS)}")
    return json.loads(json.dumps(PRESETS[name]))
