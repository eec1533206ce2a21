"""Typed evaluation results (sweet.evaluation): a fresh evaluation has exactly the keys metrics.json has always had,
every committed metrics.json reads back and writes out byte for byte, and the committed paper report re-renders
to the same report.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from sweet.errors import SweetError
from sweet.evaluation import Curve, Evaluation, evaluate_logits, format_report
from sweet.experiments import write_report
from sweet.experiments.gridload import SIBLINGS
from sweet.policies import ConfidencePolicy
from sweet.runs import _ece_pairs

ROOT = Path(__file__).resolve().parents[1]
GRID = Path("docs") / "results" / "paper" / "grid"  # relative to ROOT, as the committed report was made
GLUE = Path(os.environ.get("SWEET_GLUE_DIR") or ROOT.parent / "shared" / "glue")
STORED = Path(__file__).parent / "data" / "evaluation_sst2_sweet_seed0.json"  # sst2/sweet/lr5e-05/seed0's


def _keys(x):
    """The key structure of a JSON value: dict keys in order, recursively; the union over a list's items."""
    if isinstance(x, dict):
        return [(k, _keys(v)) for k, v in x.items()]
    if isinstance(x, list):
        shapes = []
        for item in x:
            s = _keys(item)
            if s not in shapes:
                shapes.append(s)
        return shapes
    return None


def _fresh(split: str = "validation") -> Evaluation:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    logits = [rng.normal(size=(200, 2)).astype(np.float32) + 2.0 * np.eye(2, dtype=np.float32)[labels] * k
              for k in (0.5, 1.0, 1.5, 2.0)]
    policy = ConfidencePolicy([1.1, 1.0, 0.9, 1.2])
    ev = evaluate_logits(logits, labels, exit_layers=[1, 2, 4, 6], method="sweet", metric="accuracy", num_labels=2,
                         policy=policy, split=split)
    ev.calibration_error = _ece_pairs(logits, labels, policy)  # as sweet.runs.run adds it
    return ev


def test_a_fresh_evaluation_has_the_stored_keys_in_the_stored_order():
    stored = json.loads(STORED.read_text(encoding="utf-8"))
    assert _keys(_fresh().to_dict()) == _keys(stored)
    assert list(_fresh().curve.to_dict()) == ["policy", "curve", "interpolated", "auc", "auc_range", "split"]


def test_round_trip():
    ev = _fresh()
    assert Evaluation.from_dict(ev.to_dict()) == ev
    assert Evaluation.from_dict(json.loads(json.dumps(ev.to_dict()))) == ev
    stored = json.loads(STORED.read_text(encoding="utf-8"))
    assert json.dumps(Evaluation.from_dict(stored).to_dict()) == json.dumps(stored)
    assert Curve.from_dict(ev.curve.to_dict()) == ev.curve
    # a re-evaluation records where it ran, after the split (metrics.json of `sweet evaluate`)
    placed = Evaluation.from_dict({**ev.to_dict(), "placement": {"device": "cpu", "precision": "fp32"}})
    assert list(placed.to_dict())[-3:] == ["split", "placement", "ece_before_after_calibration"]


def test_every_committed_metrics_json_reads_back_byte_for_byte():
    files = sorted((ROOT / GRID / "runs").rglob("metrics.json"))
    assert len(files) >= 112
    for path in files:
        m = json.loads(path.read_text(encoding="utf-8"))
        for block in ("evaluation", "selection"):
            assert json.dumps(Evaluation.from_dict(m[block]).to_dict()) == json.dumps(m[block]), (path, block)
        for name, block in m["policies"].items():
            assert json.dumps(Curve.from_dict(block).to_dict()) == json.dumps(block), (path, name)
        assert Evaluation.of_run(m).curve.auc == m["evaluation"]["auc"]


def test_a_malformed_evaluation_is_a_clear_error():
    with pytest.raises(SweetError, match="not an evaluation written by sweet"):
        Evaluation.from_dict({"split": "validation", "auc": 50.0})


def test_format_report_reads_the_typed_evaluation():
    text = format_report({"task": "sst2", "method": "sweet", "evaluation": _fresh().to_dict()})
    assert text.startswith("sst2 | sweet | validation (200 examples) | metric: accuracy")
    assert "area under curve" in text


@pytest.mark.skipif(not (GLUE / "SST-2").is_dir(), reason="the report's floors read the evaluation splits' class counts "
                    "from the project's GLUE data (../shared/glue)")
def test_the_committed_paper_report_re_renders_to_the_same_report_json(tmp_path, monkeypatch):
    """`sweet report docs/results/paper/grid --output DIR` gives the committed report.json, but for what says where
    and how it was made: the path from the report to the runs, the command line and the report's environment."""
    monkeypatch.chdir(ROOT)
    committed = json.loads((ROOT / GRID.parent / "report.json").read_text(encoding="utf-8"))
    # a report committed while its grid, or a sibling grid it reads (ablation, base, beyond), is unfinished was
    # written with `sweet report --partial`; re-render it the same way
    partial = "--partial" in committed["provenance"]["report_command"].split()
    write_report(GRID, tmp_path, partial=partial)
    fresh = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    for report in (fresh, committed):
        report["grid"].pop("runs_from_report")
        for section in SIBLINGS:  # the sibling grids' runs, as seen from the output folder
            if isinstance(report.get(section), dict):
                report[section].pop("runs_from_report", None)
        for where in ("report_command", "report_environment"):
            report["provenance"].pop(where)
    assert fresh == committed
