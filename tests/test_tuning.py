"""sweet tune: thresholds chosen from a budget on the calibration split only (sweet.tuning), stored in threshold.json
and used by sweet.load / predict / serve; the model card (sweet.modelcard); sweet.load of a hub id."""

from __future__ import annotations

import copy
import io
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import sweet.cli.base as cli_base
from sweet.cli import main
from sweet.errors import SweetError
from sweet.io import atomic_write_json, read_json
from sweet.policies import ConfidencePolicy
from sweet.tuning import (
    Budget,
    Point,
    choose,
    segment_points,
    tune_from_curves,
    tune_from_logits,
)

from .conftest import one_torch_thread


ROOT = Path(__file__).resolve().parents[1]
ERRORS = ROOT / "docs" / "errors.md"
GRID_RUN = sorted((ROOT / "docs/results/paper/grid/runs/sst2/sweet").glob("lr*/seed0-*/metrics.json"))[0]


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv, sys.stdout, sys.stderr
    sys.argv, sys.stdout, sys.stderr = ["sweet", *args], out, err
    cli_base.STATE["debug"] = False
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv, sys.stdout, sys.stderr = saved
    return code, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------------------------------- choosing


def test_budget_is_checked_where_it_enters():
    assert Budget(max_drop=0.0).to_dict() == {"max_drop": 0.0}
    assert Budget(target_cost=1.0).to_dict() == {"target_cost": 1.0}
    for kwargs, match in [({}, "exactly one budget"), ({"max_drop": 1.0, "target_cost": 0.5}, "exactly one budget"),
                          ({"max_drop": -0.5}, ">= 0"), ({"max_drop": float("nan")}, ">= 0"),
                          ({"target_cost": 0.0}, r"\(0, 1\]"), ({"target_cost": 1.01}, r"\(0, 1\]")]:
        with pytest.raises(SweetError, match=match):
            Budget(**kwargs)


CURVE = [Point(0.5, 0.25, 70.0), Point(0.6, 0.40, 76.0), Point(0.7, 0.60, 79.0), Point(0.8, 0.80, 80.0),
         Point(0.9, 0.95, 80.0), Point(1.0, 1.0, 80.0)]


def test_choose_on_stored_points_and_between_them():
    drop = Budget(max_drop=2.0)  # target score 78: between 0.6 (76) and 0.7 (79), two thirds of the way
    p = choose(segment_points(CURVE, drop, 80.0), drop, 80.0)
    assert p.threshold == pytest.approx(0.6 + 0.1 * 2 / 3) and p.score == pytest.approx(78.0)
    assert p.cost_ratio == pytest.approx(0.40 + 0.20 * 2 / 3)
    assert choose(CURVE, drop, 80.0).threshold == 0.7  # points only: the cheapest stored point that keeps it
    assert choose(CURVE, Budget(max_drop=0.0), 80.0).threshold == 0.8  # the cheapest of the equal-score points
    cost = Budget(target_cost=0.5)  # the best score within cost 0.5: halfway between 0.6 and 0.7
    q = choose(segment_points(CURVE, cost, 80.0), cost, 80.0)
    assert q.threshold == pytest.approx(0.65) and q.cost_ratio == pytest.approx(0.5) and q.score == pytest.approx(77.5)


def test_a_budget_no_threshold_meets_names_the_closest():
    table = ERRORS.read_text(encoding="utf-8")
    with pytest.raises(SweetError) as info:
        choose([Point(0.5, 0.25, 70.0), Point(0.9, 0.9, 79.0)], Budget(max_drop=0.0), 80.0)
    assert " ".join(str(info.value).split()) in " ".join(table.split())
    with pytest.raises(SweetError, match="the cheapest is threshold 0.5000 at cost 0.250"):
        choose(CURVE, Budget(target_cost=0.2), 80.0)


def test_tuning_a_stored_curve_reads_only_the_calibration_curve():
    metrics = read_json(GRID_RUN)
    base = tune_from_curves(metrics, Budget(max_drop=1.0))
    assert base.how == "curve" and base.calibration["split"] == "calibration"
    assert base.calibration["drop"] <= 1.0 + 1e-9
    changed = copy.deepcopy(metrics)  # another evaluation split: other scores, other costs, other last exit
    for p in changed["evaluation"]["curve"]:
        p["score"] = 100.0 - p["score"]
        p["cost_ratio"] = min(1.0, p["cost_ratio"] * 1.1)
    changed["evaluation"]["per_exit"][-1]["score"] = 3.0
    other = tune_from_curves(changed, Budget(max_drop=1.0))
    assert other.threshold == base.threshold and other.calibration == base.calibration
    assert other.evaluation != base.evaluation
    moved = copy.deepcopy(metrics)  # the calibration curve does decide it
    for p in moved["selection"]["curve"]:
        p["score"] = moved["selection"]["per_exit"][-1]["score"] if p["threshold"] >= 0.75 else 0.0
    assert tune_from_curves(moved, Budget(max_drop=1.0)).threshold != base.threshold


def _logits(rng, n, noise):
    labels = rng.integers(0, 2, n)
    out = []
    for strength in (0.5, 1.0, 2.0):
        lg = rng.normal(0, noise, (n, 2)).astype(np.float32)
        lg[np.arange(n), labels] += strength
        out.append(lg)
    return out, labels


def test_tuning_on_logits_ignores_the_evaluation_labels():
    rng = np.random.default_rng(0)
    cal, cal_y = _logits(rng, 400, 1.0)
    ev, ev_y = _logits(rng, 300, 1.0)
    kw = dict(policy=ConfidencePolicy([1.0, 1.0, 1.0]), exit_layers=[1, 2, 4], method="early_exit", metric="accuracy",
              num_labels=2, budget=Budget(max_drop=1.0), eval_split="validation", n_grid=201)
    a = tune_from_logits(cal, cal_y, ev, ev_y, **kw)
    b = tune_from_logits(cal, cal_y, ev, 1 - ev_y, **kw)  # every evaluation label flipped
    assert a.threshold == b.threshold and a.calibration == b.calibration
    assert a.evaluation["score"] != b.evaluation["score"]
    c = tune_from_logits(cal, 1 - cal_y, ev, ev_y, **kw)
    assert c.calibration != a.calibration  # the calibration labels are what it reads
    assert a.how == "logits" and a.calibration["drop"] <= 1.0 + 1e-9


# ------------------------------------------------------------------------------------------- a trained run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_backbone_dir, tiny_glue_dir):
    from sweet.runs import RunConfig, run

    out = tmp_path_factory.mktemp("tune") / "run"
    with one_torch_thread():
        run(RunConfig(task="sst2", method="early_exit", backbone=str(tiny_backbone_dir), exit_layers=[1, 2, 4],
                      n_train=200, epochs=2, learning_rate=3e-3, data_dir=str(tiny_glue_dir)), out, progress=False)
    return out


def _front_matter(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_the_model_card_has_front_matter_labels_table_and_curve(tiny_run):
    card = tiny_run / "model" / "README.md"
    meta = _front_matter(card)
    assert meta["labels"] == ["negative", "positive"]
    assert meta["pipeline_tag"] == "text-classification" and meta["library_name"] == "sweet"
    assert meta["datasets"] == ["nyu-mll/glue"] and meta["metrics"] == ["accuracy"] and meta["task"] == "sst2"
    assert "base_model" not in meta  # a local backbone directory has no hub id
    assert "sweet" in meta["tags"] and meta["exit_layers"] == [1, 2, 4]
    body = card.read_text(encoding="utf-8")
    assert "| exit layer | score |" in body and "![speed-accuracy curve](curve.png)" in body
    assert (tiny_run / "model" / "curve.png").stat().st_size > 1000
    assert "sweet.load(" in body and "**0.9** (confidence policy), sweet's default" in body


def test_evaluate_overwrite_refreshes_the_model_card(tiny_run, tiny_glue_dir, tmp_path):
    """`sweet evaluate --overwrite` replaces the run's results, and the card (table, curve, threshold) with them: the
    card is what the run's files say now, not what training wrote."""
    from sweet.modelcard import CURVE_IMAGE, card_text
    from sweet.modeling import MultiExitConfig
    from sweet.runs import evaluate_run
    from sweet.thresholds import read_threshold

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    card = run_dir / "model" / "README.md"
    card.write_text("stale\n", encoding="utf-8")
    with one_torch_thread():
        evaluate_run(run_dir, data_dir=str(tiny_glue_dir), progress=False, precision="int8", overwrite=True)
    config = MultiExitConfig.from_dict(read_json(run_dir / "model" / "sweet_config.json"))
    want = card_text(config, read_json(run_dir / "metrics.json"), read_threshold(run_dir), CURVE_IMAGE)
    assert card.read_text(encoding="utf-8") == want
    assert read_json(run_dir / "metrics.json")["evaluation"]["placement"]["precision"] == "int8"


def test_the_card_names_the_base_model_of_packaged_and_hub_backbones():
    from sweet.modelcard import base_model_id

    assert base_model_id("default") == "sentence-transformers/all-MiniLM-L6-v2"
    assert base_model_id("mpnet") == "sentence-transformers/all-mpnet-base-v2"
    assert base_model_id("bert-base-uncased") == "bert-base-uncased"
    assert base_model_id("/some/local/dir") is None


def test_tune_stores_the_threshold_that_load_and_predict_use(tiny_run, tiny_glue_dir):
    import sweet
    from sweet.predictor import predict_texts
    from sweet.tuning import tune_run

    run_dir = tiny_run
    assert sweet.load(run_dir).threshold_origin["how"] == "default"
    result = tune_run(run_dir, Budget(target_cost=0.6), data_dir=str(tiny_glue_dir))
    assert result.how == "logits" and result.calibration["cost_ratio"] <= 0.6 + 1e-9
    stored = read_json(run_dir / "threshold.json")
    assert stored["threshold"] == result.threshold and stored["policy"] == "confidence"
    assert stored["budget"] == {"target_cost": 0.6} and stored["chosen_on"] == "calibration"
    assert read_json(run_dir / "model" / "threshold.json") == stored
    assert "target cost 0.6" in (run_dir / "model" / "README.md").read_text(encoding="utf-8")
    assert "threshold" not in read_json(run_dir / "run_config.json")

    clf = sweet.load(run_dir)
    assert clf.threshold == result.threshold
    info = clf.info()
    assert info["threshold"] == result.threshold and info["threshold_origin"]["how"] == "sweet tune"
    assert info["threshold_origin"]["budget"] == {"target_cost": 0.6}
    assert sweet.load(run_dir / "model").threshold == result.threshold  # the model folder carries it
    assert sweet.load(run_dir, threshold=0.95).threshold == 0.95
    other = sweet.load(run_dir, policy="entropy")  # tuned for confidence: another policy keeps the default
    assert other.threshold == 0.9 and "for the confidence policy" in other.threshold_origin["note"]

    lines = ["the movie was good", "a dull plot", "the actor is fine", "terrible film", "quite lovely story"]
    tuned = predict_texts(run_dir, lines, None)
    assert tuned == predict_texts(run_dir, lines, result.threshold)
    assert [r["exit_layer"] for r in tuned] != [r["exit_layer"] for r in predict_texts(run_dir, lines, 1.0)]
    texts = run_dir.parent / "in.txt"
    texts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, err = cli("predict", str(run_dir), "--input", str(texts), "--format", "jsonl", "--no-progress")
    assert code == 0, err
    explicit = cli("predict", str(run_dir), "--input", str(texts), "--format", "jsonl", "--no-progress",
                   "--threshold", str(result.threshold))[1]
    assert out == explicit


def test_tuning_a_run_does_not_look_at_the_evaluation_labels(tiny_run, tiny_glue_dir, tmp_path):
    from sweet.tuning import tune_run

    flipped = tmp_path / "glue"
    shutil.copytree(tiny_glue_dir, flipped)
    dev = flipped / "SST-2" / "dev.tsv"
    rows = dev.read_text(encoding="utf-8").splitlines()
    dev.write_text("\n".join([rows[0]] + [r[:-1] + str(1 - int(r[-1])) for r in rows[1:]]) + "\n", encoding="utf-8")
    a = tune_run(tiny_run, Budget(max_drop=1.0), data_dir=str(tiny_glue_dir), write=False)
    b = tune_run(tiny_run, Budget(max_drop=1.0), data_dir=str(flipped), write=False)
    assert a.threshold == b.threshold and a.calibration == b.calibration
    assert a.evaluation["last_exit_score"] == pytest.approx(100.0 - b.evaluation["last_exit_score"])


def test_predictor_tune_and_the_cli(tiny_run, tiny_glue_dir):
    import sweet

    clf = sweet.load(tiny_run)
    result = clf.tune(max_drop=1.0, data_dir=str(tiny_glue_dir))
    assert clf.threshold == result.threshold and clf.info()["threshold_origin"]["budget"] == {"max_drop": 1.0}
    code, out, err = cli("tune", str(tiny_run), "--max-drop", "1.0", "--data-dir", str(tiny_glue_dir), "--no-progress")
    assert code == 0, err
    assert "calibration (predicted)" in out and "validation (measured)" in out
    assert read_json(tiny_run / "threshold.json")["threshold"] == result.threshold  # same seed, same numbers
    code, out, err = cli("tune", str(tiny_run), "--target-cost", "0.5", "--from-curve", "--json")
    assert code == 0, err
    assert '"how": "curve"' in out


def test_a_damaged_threshold_file_is_one_line(tiny_run, tmp_path):
    import sweet

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    (run_dir / "threshold.json").write_text('{"policy": "confidence"}', encoding="utf-8")
    with pytest.raises(SweetError, match="not a threshold file written by 'sweet tune'"):
        sweet.load(run_dir)


# ------------------------------------------------------------------------------------------- the hub


def test_load_reads_a_hub_id_through_snapshot_download(tiny_run, monkeypatch):
    import sweet
    from sweet import rundir

    calls = []
    monkeypatch.setattr(rundir, "snapshot_download", lambda repo_id, **kw: calls.append(repo_id) or str(tiny_run / "model"))
    clf = sweet.load("someone/sst2-sweet")
    assert calls == ["someone/sst2-sweet"] and clf.source == str(tiny_run / "model")
    assert clf.predict(["a good film"])[0]["label"] in ("negative", "positive")


def test_load_hub_id_offline_is_one_line(monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    import sweet
    from sweet import rundir

    def offline(repo_id, **kw):
        raise LocalEntryNotFoundError("cannot reach the hub and the model is not in the cache\nmore detail")

    monkeypatch.setattr(rundir, "snapshot_download", offline)
    with pytest.raises(SweetError) as info:
        sweet.load("someone/sst2-sweet")
    message = str(info.value)
    assert "\n" not in message and message.startswith("someone/sst2-sweet is not a local directory and could not be "
                                                      "downloaded from the Hugging Face hub (cannot reach the hub")


# ------------------------------------------------------------------------------------------- bad input


def _error_table() -> dict[str, str]:
    text = ERRORS.read_text(encoding="utf-8")
    section = text.split("## `sweet tune`: budgets and stored thresholds", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`tune-"):
            out[cells[0].strip("`")] = cells[2].strip("`")
    return out


def _fake_run(root: Path, *, metrics: dict | None) -> Path:
    root.mkdir(parents=True)
    atomic_write_json(root / "run_config.json", {"task": "sst2"})
    if metrics is not None:
        atomic_write_json(root / "metrics.json", metrics)
    return root


def _curve_metrics() -> dict:
    def block(split):
        curve = [{"threshold": t, "cost_ratio": 0.25 + 0.75 * i / 10, "ideal_speedup": 1 / (0.25 + 0.75 * i / 10),
                  "score": 50.0 + 3 * i, "exit_counts": [10 - i, 0, i]}
                 for i, t in enumerate(np.linspace(0.5, 1.0, 11))]
        return {"n_examples": 10, "metric": "accuracy", "policy": {"name": "confidence"}, "split": split,
                "per_exit": [{"exit_layer": 1, "score": 50.0}, {"exit_layer": 2, "score": 60.0},
                             {"exit_layer": 4, "score": 80.0}],
                "curve": curve, "interpolated": [], "auc": 65.0, "auc_range": [0.25, 1.0]}
    return {"task": "sst2", "method": "early_exit", "evaluation": block("validation"), "selection": block("calibration")}


CASES = {
    "tune-no-budget": lambda d: [str(d["curve"])],
    "tune-two-budgets": lambda d: [str(d["curve"]), "--max-drop", "1", "--target-cost", "0.5"],
    "tune-negative-drop": lambda d: [str(d["curve"]), "--max-drop", "-1"],
    "tune-cost-above-one": lambda d: [str(d["curve"]), "--target-cost", "1.5"],
    "tune-cost-zero": lambda d: [str(d["curve"]), "--target-cost", "0"],
    "tune-not-a-run": lambda d: [str(d["dir"]), "--max-drop", "1"],
    "tune-nothing-to-tune": lambda d: [str(d["bare"]), "--max-drop", "1"],
    "tune-no-calibration-curve": lambda d: [str(d["old"]), "--max-drop", "1"],
    "tune-policy-without-model": lambda d: [str(d["curve"]), "--max-drop", "1", "--policy", "entropy"],
    "tune-cost-unreachable": lambda d: [str(d["curve"]), "--target-cost", "0.1"],
}


def test_tune_errors_are_one_line_and_documented(tmp_path):
    table = _error_table()
    assert set(table) == set(CASES)
    old = _curve_metrics()
    del old["selection"]
    dirs = {"curve": _fake_run(tmp_path / "curve", metrics=_curve_metrics()), "bare": _fake_run(tmp_path / "bare", metrics=None),
            "old": _fake_run(tmp_path / "old", metrics=old), "dir": tmp_path / "plain"}
    dirs["dir"].mkdir()
    for case, args in CASES.items():
        code, out, err = cli("tune", *args(dirs))
        assert code == 2, (case, out, err)
        line = err.strip()
        assert line.startswith("error: ") and "\n" not in line, (case, err)
        expected = table[case].replace("RUN", str(dirs["bare"])).replace("DIR", str(dirs["dir"]))
        assert line[len("error: "):] == expected, case
        assert not (dirs["curve"] / "threshold.json").exists()


def test_serve_answers_with_the_tuned_threshold_and_info_says_how(tiny_run, tiny_glue_dir):
    import asyncio

    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    import sweet
    from sweet.serving.app import create_app
    from sweet.tuning import tune_run

    result = tune_run(tiny_run, Budget(target_cost=0.6), data_dir=str(tiny_glue_dir))
    app = create_app(tiny_run, api_key="", warmup=False)
    texts = ["the movie was good", "a dull plot"]

    async def go():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://sweet.test", timeout=60) as c:
                return (await c.get("/info")).json(), (await c.post("/predict", json={"texts": texts})).json()

    info, answer = asyncio.run(go())
    assert info["threshold"] == result.threshold and info["threshold_origin"]["how"] == "sweet tune"
    assert info["threshold_origin"]["budget"] == {"target_cost": 0.6}
    expected = sweet.load(tiny_run, threshold=result.threshold).predict(texts)
    assert [a["exit_layer"] for a in answer["predictions"]] == [e["exit_layer"] for e in expected]


def test_retraining_a_run_deletes_its_tuned_threshold(tmp_path):
    from sweet.rundir import prepare_output_dir

    run_dir = tmp_path / "run"
    (run_dir / "model").mkdir(parents=True)
    for name in ("run_config.json", "metrics.json", "threshold.json", "model/threshold.json"):
        (run_dir / name).write_text("{}", encoding="utf-8")
    prepare_output_dir(run_dir, overwrite=True)
    assert not (run_dir / "threshold.json").exists() and not (run_dir / "model" / "threshold.json").exists()


def test_the_torch_free_threshold_reader_knows_every_policy():
    from sweet.policies import POLICIES
    from sweet.thresholds import POLICY_NAMES

    assert tuple(POLICY_NAMES) == tuple(POLICIES)
