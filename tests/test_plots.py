"""Figures: a distinct colour for every method of a grid, and one run's curve.png (``sweet demo`` end to end on
the packaged backbone and a tiny SST-2)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import sweet.experiments.plots as plots
from sweet.errors import SweetError
from sweet.experiments import METHOD_COLORS, RUN_CURVE, method_colors, plot_curves, write_run_curve
from sweet.io import read_json
from sweet.methods import SELECTED_ALPHA

PNG = b"\x89PNG\r\n\x1a\n"
#: every method family, two and three parameters of some, and the report's selected-alpha row
ALL_METHODS = ["early_exit", "sweet", "multi_model", "grad_scale@0.25", "grad_scale@0.5", "grad_scale@0.75",
               "grad_scale_first@0.1", "grad_scale_first@0.5", "pcgrad", "sweet_then_ee@0.5", "ee_then_sweet@0.5",
               "distill@0.5", "distill@1", SELECTED_ALPHA]


def _hex(color) -> str:
    from matplotlib.colors import to_hex

    return to_hex(color)


@pytest.fixture
def captured(monkeypatch):
    """The figures the plots module saves (still open for inspection: the real save closes them)."""
    figures = []

    def save(fig, path):
        figures.append(fig)
        return path

    monkeypatch.setattr(plots, "atomic_save_figure", save)
    return figures


def test_every_method_of_a_grid_gets_its_own_colour():
    colours = method_colors(ALL_METHODS)
    assert list(colours) == ALL_METHODS
    rendered = [_hex(c) for c in colours.values()]
    assert len(set(rendered)) == len(ALL_METHODS), colours
    # the families keep their colours; a second member of a family gets a spare one, not the family's (or EE's)
    assert colours["early_exit"] == "tab:blue" and colours["sweet"] == "tab:red"
    assert colours["grad_scale@0.25"] == "tab:purple" and colours["grad_scale@0.5"] not in METHOD_COLORS.values()
    assert colours[SELECTED_ALPHA] == "black"
    # every method family has its own colour, the beyond-the-paper methods included
    from sweet.methods import METHOD_NAMES
    assert set(METHOD_NAMES) <= set(METHOD_COLORS)
    # more methods than named colours: still distinct
    many = [f"grad_scale@{a / 100:g}" for a in range(1, 40)]
    assert len({_hex(c) for c in method_colors(["early_exit", *many]).values()}) == 40


def test_the_curves_of_a_grid_are_drawn_in_distinct_colours(tmp_path, captured):
    # the grid of docs/results/methods/sst2-6k: EE and grad_scale@0.5 were both blue
    methods = ["early_exit", "sweet", "grad_scale@0.25", "grad_scale@0.5"]
    curve = {"cost": [0.25, 0.5, 1.0], "mean": [60.0, 70.0, 80.0], "low": [58.0, 68.0, 78.0], "high": [62.0, 72.0, 82.0],
             "n": 3}
    plot_curves({m: {"curve": curve} for m in methods}, methods, "t", "accuracy (%)", tmp_path / "c.png")
    (ax,) = captured[0].axes
    lines = {line.get_label(): _hex(line.get_color()) for line in ax.lines if not line.get_label().startswith("_")}
    assert len(lines) == 4 and len(set(lines.values())) == 4, lines
    bands = {_hex(band.get_facecolor()[0][:3]) for band in ax.collections}
    assert bands == set(lines.values())  # each CI band in its curve's colour


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, tiny_glue_dir):
    """``sweet demo`` on a tiny SST-2 (the packaged backbone, 64 examples, 1 epoch)."""
    out = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "sweet.cli", "demo", "--data-dir", str(tiny_glue_dir), "--n-train", "64",
                        "--epochs", "1", "--output", str(out), "--no-progress"], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    return out / "sst2-sweet", r.stdout


@pytest.mark.slow
def test_demo_writes_the_runs_curve_png(demo_run):
    run_dir, stdout = demo_run
    data = (run_dir / RUN_CURVE).read_bytes()
    assert data[:8] == PNG and 5_000 < len(data) < 300_000
    assert f"speed-accuracy curve: {run_dir / RUN_CURVE}" in stdout


@pytest.mark.slow
def test_the_run_curve_is_the_runs_evaluation_curve(demo_run, tmp_path, captured):
    import shutil

    run_dir, _ = demo_run
    metrics = read_json(run_dir / "metrics.json")
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("model", RUN_CURVE))
    assert write_run_curve(copy) == copy / RUN_CURVE  # metrics read from the run directory
    (ax,) = captured[0].axes
    (line,) = [x for x in ax.lines if not x.get_label().startswith("_")]
    points = sorted((p["cost_ratio"], p["score"]) for p in metrics["evaluation"]["curve"])
    xy = line.get_xydata()
    assert xy[:, 0].tolist() == pytest.approx([c for c, _ in points])
    assert xy[:, 1].tolist() == pytest.approx([s for _, s in points])
    assert _hex(line.get_color()) == _hex("tab:red")  # SWEET's colour
    assert "SST-2, SWEET, seed 0 (validation split, 120 examples)" in ax.get_title()
    assert ax.get_ylabel() == "accuracy (%)"


def test_a_run_without_metrics_has_no_curve(tmp_path):
    (tmp_path / "run_config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(SweetError, match="has no metrics.json: it is not a finished run"):
        write_run_curve(tmp_path)
    assert not (tmp_path / RUN_CURVE).exists()
