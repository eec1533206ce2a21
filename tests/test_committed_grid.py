"""The committed paper grid (docs/results/paper/grid) keeps its run keys and split digests: planning its 112 first
runs (7 tasks x 4 methods; learning rates {5e-5, 1e-4} on seed 0, seeds 1-2 at the chosen rate), and its 168 runs
with the rates issue #25 added, with today's code finds every one of them finished, so a refactor or a new config
field that changed a key would fail here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sweet.data import load_task, make_splits
from sweet.experiments.plan import plan
from sweet.experiments.spec import spec_from_dict
from sweet.experiments.store import splits_digest

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "docs" / "results" / "paper" / "grid"
GLUE = Path(os.environ.get("SWEET_GLUE_DIR") or ROOT.parent / "shared" / "glue")

pytestmark = pytest.mark.skipif(not (GLUE / "SST-2").is_dir(), reason="needs the project's GLUE data (../shared/glue)")


def test_the_committed_paper_grid_plans_112_finished_runs_and_nothing_to_run():
    stored = json.loads((GRID / "grid.json").read_text(encoding="utf-8"))["spec"]
    # the 112 runs of the first launches; later launches extend the learning rates (their runs are planned apart)
    spec = spec_from_dict({**stored, "learning_rates": [5e-05, 0.0001], "data_dir": None})
    runs, waiting, _, _ = plan(spec, GRID, str(GLUE))
    assert waiting == []
    assert len(runs) == 112
    missing = [r.rel_dir for r in runs if not (GRID / r.rel_dir / "metrics.json").is_file()]
    assert missing == []


def test_the_committed_paper_grid_with_its_extended_rates_plans_168_finished_runs():
    """The grid as stored (issue #25's rates {5e-5, 1e-4, 2e-4, 3e-4} on seed 0, seeds 1-2 at the rate each task
    and method chose): 168 runs, none waiting for a choice, every one finished."""
    stored = json.loads((GRID / "grid.json").read_text(encoding="utf-8"))["spec"]
    assert stored["learning_rates"] == [5e-05, 0.0001, 0.0002, 0.0003]
    runs, waiting, _, _ = plan(spec_from_dict({**stored, "data_dir": None}), GRID, str(GLUE))
    assert waiting == [] and len(runs) == 168
    assert [r.rel_dir for r in runs if not (GRID / r.rel_dir / "metrics.json").is_file()] == []


def test_the_committed_runs_split_digests_are_what_the_data_gives_today():
    """Committed runs' split digests equal the digest of the rows the data gives today (the same sample)."""
    checked = 0
    for task, method, lr in (("sst2", "sweet", "lr5e-05"), ("mnli", "early_exit", "lr0.0001")):
        data = load_task(task, str(GLUE))
        for run_dir in sorted((GRID / "runs" / task / method / lr).glob("seed*-*")):
            cfg = json.loads((run_dir / "run_config.json").read_text(encoding="utf-8"))
            stored = json.loads((run_dir / "splits_digest.json").read_text(encoding="utf-8"))
            splits = make_splits(data, cfg["n_train"], cfg["seed"], cfg["calibration_size"], cfg["heldout_eval_size"])
            digest = splits_digest(splits.train.ids, splits.calibration.ids, stored["data_sha256"])
            assert digest == stored["sha256"], run_dir
            checked += 1
    assert checked >= 4
