"""The entropy (DeeBERT), patience (PABEE) and learned (learning-to-exit) policies: their decisions, threshold
grids, the engine making the same decisions as the evaluation path, learning-to-exit fitting and storage,
and the --policy option through runs, evaluation, prediction and the benchmark."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sweet import MultiExitModel, SweetError
from sweet.inference import EarlyExitEngine
from sweet.policies import (POLICIES, ConfidencePolicy, EntropyPolicy, LearnedExitPolicy, PatiencePolicy, decide,
                            make_policy)

from .conftest import padded_batch, tiny_model

KINDS = ["bert", "mpnet", "deberta"]
METHODS = ["early_exit", "sweet", "multi_model"]


# ------------------------------------------------------------------------------------------- entropy


def test_entropy_score_is_one_minus_normalised_entropy():
    logits = torch.tensor([[0.0, 0.0, 0.0], [50.0, 0.0, 0.0], [1.0, 0.0, -1.0]])
    score, _ = EntropyPolicy().score(0, logits, None, None)
    p = torch.softmax(logits[2], 0)
    expected = 1 - float(-(p * p.log()).sum()) / math.log(3)
    assert score.tolist() == pytest.approx([0.0, 1.0, expected], abs=1e-6)
    hot, _ = EntropyPolicy([4.0]).score(0, logits, None, None)  # a temperature > 1 flattens: lower score
    assert hot[2] < score[2]


def test_entropy_grid_runs_from_all_first_to_all_last():
    rng = np.random.default_rng(0)
    logits = [rng.normal(scale=s, size=(100, 3)).astype(np.float32) for s in (0.5, 1.0, 3.0, 6.0)]
    pol = EntropyPolicy()
    grid = pol.threshold_grid(3)
    assert grid.tolist() == pytest.approx(np.linspace(0, 1, 11).tolist())
    mean_exit = [decide(pol, logits, t)[0].mean() for t in grid]
    assert mean_exit[0] == 0 and mean_exit[-1] == 3  # t=0: everyone at exit 1; t=1: nobody early
    assert all(b >= a for a, b in zip(mean_exit, mean_exit[1:])) and len(set(mean_exit)) > 3
    chosen, _, score = decide(pol, logits, 0.5)  # leaves where normalised entropy <= 0.5
    first = 1 - pol.score(0, torch.as_tensor(logits[0]), None, None)[0].numpy()
    assert np.array_equal(chosen == 0, first <= 0.5)


# ------------------------------------------------------------------------------------------ patience


def _logits_from_preds(preds):
    """[N, E] predicted labels -> E logits tensors [N, 2]."""
    preds = torch.as_tensor(preds)
    return [torch.nn.functional.one_hot(preds[:, i], 2).float() * 3.0 for i in range(preds.shape[1])]


def test_patience_counts_consecutive_agreeing_exits():
    logits = _logits_from_preds([[0, 0, 0, 0], [0, 1, 1, 1], [0, 1, 0, 1], [1, 1, 0, 0]])
    pol = PatiencePolicy(4)
    assert pol.threshold_grid(2).tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert [pol.patience(t) for t in np.linspace(0, 1, 11)] == [0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3]
    by_patience = {p: decide(pol, logits, p / 3)[0].tolist() for p in range(4)}
    assert by_patience[0] == [0, 0, 0, 0]  # patience 0: everyone leaves at the first exit
    assert by_patience[1] == [1, 2, 3, 1]  # leave once two consecutive exits agree (the counter resets)
    assert by_patience[2] == [2, 3, 3, 3]
    assert by_patience[3] == [3, 3, 3, 3]  # M-1: nobody leaves early
    chosen, preds, score = decide(pol, logits, 1 / 3)
    assert preds.tolist() == [0, 1, 1, 1] and score.tolist() == pytest.approx([1 / 3, 1 / 3, 0.0, 1 / 3])


def test_patience_needs_an_exit():
    with pytest.raises(SweetError, match="at least one exit"):
        PatiencePolicy(0)


# ------------------------------------------------------------------------------------------- learned


def test_learned_policy_scores_with_its_linear_modules():
    w = [torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, -1.0]]), torch.zeros(1, 2)]
    b = [torch.tensor([0.0]), torch.tensor([1.0]), torch.zeros(1)]
    pol = LearnedExitPolicy(w, b)
    hidden = [torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), torch.tensor([[0.0, -2.0], [0.0, 3.0]]), torch.zeros(2, 2)]
    logits = [torch.zeros(2, 2)] * 3
    s0 = pol.score(0, logits[0], hidden[0], None)[0]
    assert s0.tolist() == pytest.approx([1 / (1 + math.exp(-2)), 1 / (1 + math.exp(2))])
    chosen, _, score = decide(pol, logits, 0.8, hidden)
    assert chosen.tolist() == [0, 2]  # row 2: sigmoid(-2) at exit 1, sigmoid(-2) at exit 2 -> last exit
    assert decide(pol, logits, 0.0, hidden)[0].tolist() == [0, 0]
    assert decide(pol, logits, 1.0, [h * 100 for h in hidden])[0].tolist() == [2, 2]  # saturated 1.0 is not enough
    with pytest.raises(SweetError, match="needs each exit's pooled representation"):
        decide(pol, logits, 0.5)


def test_make_policy_names_and_errors():
    model = tiny_model("bert", "sweet", num_labels=2, temperatures=[1.0, 2.0, 1.0, 1.0])
    assert POLICIES == ("confidence", "entropy", "patience", "learned")
    assert isinstance(make_policy("confidence", model), ConfidencePolicy)
    assert make_policy("entropy", model).temperatures == [1.0, 2.0, 1.0, 1.0]
    assert make_policy("patience", model).num_exits == 4
    with pytest.raises(SweetError, match="no learning-to-exit predictors"):
        make_policy("learned", model)
    with pytest.raises(SweetError, match="unknown exit policy 'bogus'"):
        make_policy("bogus", model)
    model.add_exit_predictors()
    assert isinstance(make_policy("learned", model), LearnedExitPolicy)


# ----------------------------------------------------------------------- engine == evaluation path


def _model(kind, method, seed=0):
    m = tiny_model(kind, method, num_labels=2, seed=seed).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for h in m.heads:  # spread the scores so that the grid sends rows to several exits
            h.classifier.weight.normal_(0.0, 2.0, generator=g)
        g = torch.Generator().manual_seed(5)
        for p in m.add_exit_predictors():
            p.weight.normal_(0.0, 3.0, generator=g)
    return m


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", ["entropy", "patience", "learned"])
def test_engine_decisions_equal_the_evaluation_path(kind, method, name):
    model = _model(kind, method)
    model.config.temperatures = [1.0, 1.3, 0.7, 1.0]
    policy = make_policy(name, model)
    ids, mask = padded_batch()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, return_hidden=True)
    spread = set()
    for t in policy.threshold_grid(2):
        chosen, preds, score = decide(policy, out.logits, float(t), out.hidden)
        res = EarlyExitEngine(model, policy, float(t)).predict_batch(ids, mask)
        assert np.array_equal(chosen, res.exit_index), t
        assert np.array_equal(preds, res.label), t
        assert np.allclose(score, res.score, atol=1e-5)
        spread |= set(chosen.tolist())
    assert spread == {0, 1, 2, 3}  # every exit was exercised


# ---------------------------------------------------------------------------- learning to exit


def test_fit_predictor_beats_the_constant_prediction():
    from sweet.learn_exit import fit_predictor
    from sweet.modeling import ExitPredictor

    rng = np.random.default_rng(0)
    x = np.tanh(rng.normal(size=(400, 8))).astype(np.float32)
    y = ((x[:, 0] + 0.1 * rng.normal(size=400)) > 0.2).astype(np.float32)  # correctness depends on feature 0
    pred = ExitPredictor(8)
    info = fit_predictor(pred, x, y, seed=0)
    base = float(y.mean() * (1 - y.mean()))  # MSE of the best constant
    assert info["mse_before"] == pytest.approx(0.25)  # zero init: sigmoid(0) = 0.5
    assert info["mse_after"] < 0.6 * base
    assert abs(pred.weight[0, 0].item()) > 3 * pred.weight[0, 1:].abs().max().item()


def test_fit_exit_predictors_changes_nothing_else_and_survives_save_load(tmp_path, tiny_backbone_dir):
    from transformers import AutoTokenizer

    from sweet.encoding import Collator, encode
    from sweet.data import Examples
    from sweet.learn_exit import fit_exit_predictors

    tok = AutoTokenizer.from_pretrained(str(tiny_backbone_dir))
    torch.manual_seed(0)
    model = MultiExitModel.from_backbone(str(tiny_backbone_dir), exit_layers=[1, 2, 4], num_labels=2, method="sweet")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    texts = [(" ".join(rng.choice(["good", "bad", "film", "the", "plot"], 5)),) for _ in range(96)]
    enc = encode(tok, Examples(texts, [int("good" in t[0]) for t in texts]), 32)
    rng_state = torch.get_rng_state()
    log = fit_exit_predictors(model, enc, Collator(tok.pad_token_id, True), progress=False)
    assert torch.equal(torch.get_rng_state(), rng_state)  # no random numbers drawn from the global stream
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # encoder and heads untouched
    assert sorted(set(after) - set(before)) == [f"exit_predictors.{i}.{p}" for i in range(3) for p in ("bias", "weight")]
    assert [e["exit_layer"] for e in log["per_exit"]] == [1, 2, 4]
    assert all(e["mse_after"] < e["mse_before"] for e in log["per_exit"])
    model.save_pretrained(tmp_path / "m")
    loaded = MultiExitModel.from_pretrained(tmp_path / "m")
    assert loaded.config.exit_predictors
    for a, b in zip(model.exit_predictors, loaded.exit_predictors):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_models_saved_before_learning_to_exit_still_load(tmp_path):
    model = tiny_model("deberta", "early_exit")
    model.save_pretrained(tmp_path / "old")
    cfg_path = tmp_path / "old" / "sweet_config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["exit_predictors"]  # written by a version without the field
    cfg_path.write_text(json.dumps(cfg))
    loaded = MultiExitModel.from_pretrained(tmp_path / "old")
    assert not loaded.config.exit_predictors and getattr(loaded, "exit_predictors", None) is None


# ------------------------------------------------------------------------ runs, CLI, benchmark


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory, tiny_backbone_dir, tiny_glue_dir):
    from sweet.runs import RunConfig, run

    out = tmp_path_factory.mktemp("runs") / "sst2-lte"
    metrics = run(RunConfig(task="sst2", method="sweet", backbone=str(tiny_backbone_dir), exit_layers=[1, 2, 4],
                            n_train=200, epochs=2, learning_rate=3e-3, data_dir=str(tiny_glue_dir),
                            extra={"learn_exit": True}), out, progress=False)
    return out, metrics


def test_train_with_learn_exit_writes_every_policy_curve(learned_run):
    out, metrics = learned_run
    assert set(metrics["policies"]) == {"entropy", "patience", "learned"}
    assert len(metrics["policies"]["learned"]["curve"]) == 11 and len(metrics["policies"]["patience"]["curve"]) == 3
    for name, pc in metrics["policies"].items():
        assert pc["policy"]["name"] == name and pc["split"] == "validation"
        assert pc["curve"][0]["exit_counts"][0] == 120 and pc["curve"][-1]["exit_counts"][-1] == 120
    assert [e["exit_layer"] for e in metrics["learn_exit"]["per_exit"]] == [1, 2, 4]
    assert json.loads((out / "model" / "sweet_config.json").read_text())["exit_predictors"] is True


def test_learning_to_exit_is_fitted_on_the_calibration_split(learned_run):
    """Not on the training sample (where the classifiers are over-confident), nor on the reported split: the
    targets are each exit's correctness on the calibration split, the same rows as the selection curve's."""
    _, metrics = learned_run
    lte = metrics["learn_exit"]
    assert lte["trained_on"].startswith("calibration split")
    n_cal = metrics["calibration"]["n_examples"]
    assert n_cal not in (metrics["n_train"], metrics["evaluation"]["n_examples"])  # the three splits tell apart
    assert [e["n"] for e in lte["per_exit"]] == [n_cal] * 3
    assert metrics["selection"]["split"] == "calibration"
    assert [100 * e["correct_rate"] for e in lte["per_exit"]] == pytest.approx(
        [p["score"] for p in metrics["selection"]["per_exit"]])


def test_evaluate_with_each_policy_matches_train_and_keeps_the_confidence_evaluation(learned_run):
    from sweet.io import read_json
    from sweet.runs import evaluate_run

    out, metrics = learned_run
    for name in ("entropy", "patience", "learned"):
        res = evaluate_run(out, progress=False, policy=name)
        assert res["evaluation"]["policy"]["name"] == name
        assert [p["cost_ratio"] for p in res["evaluation"]["curve"]] == pytest.approx(
            [p["cost_ratio"] for p in metrics["policies"][name]["curve"]])
        assert [p["score"] for p in res["evaluation"]["curve"]] == pytest.approx(
            [p["score"] for p in metrics["policies"][name]["curve"]])
    saved = read_json(out / "metrics.json")
    assert saved["evaluation"]["policy"]["name"] == "confidence"
    assert saved["evaluation"]["curve"] == metrics["evaluation"]["curve"]


@pytest.mark.slow
def test_cli_policy_option(learned_run):
    from .test_cli import sweet

    out, _ = learned_run
    r = sweet("predict", str(out), "--policy", "learned", "--threshold", "0.5", "--format", "jsonl",
              input_text="good film\nthe plot was bad\n")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 2 and set(rows[0]) == {"label", "label_id", "exit_layer", "confidence", "score"}
    r = sweet("evaluate", str(out), "--policy", "bogus", "--no-progress")
    assert r.returncode == 2 and "unknown exit policy 'bogus'" in r.stderr


def test_bench_with_another_policy_serves_the_evaluated_curve(learned_run):
    from sweet.bench import benchmark

    out, metrics = learned_run
    report = benchmark(out, batch_sizes=[16], repeats=1, warmup=1, progress=False, policy="learned",
                       precisions="fp32", peers=False)
    assert report["policy"] == "learned"
    served = [p["cost_ratio"] for p in report["points"] if not p["baseline"]]
    assert served == pytest.approx([p["cost_ratio"] for p in metrics["policies"]["learned"]["curve"]])


def test_policy_errors_are_listed_in_the_error_table_verbatim():
    """The library-level exit-policy errors (docs/errors.md, 'Exit policies from Python')."""
    from pathlib import Path

    from sweet.policies import check_threshold

    table = (Path(__file__).parents[1] / "docs" / "errors.md").read_text(encoding="utf-8")
    cases = [
        lambda: check_threshold(1.5),
        lambda: ConfidencePolicy([1.0, 0.0]),
        lambda: PatiencePolicy(0),
        lambda: LearnedExitPolicy([torch.zeros(1, 2), torch.zeros(1, 2)], [torch.zeros(1)]),
        lambda: LearnedExitPolicy([torch.zeros(1, 2)], [torch.zeros(1)]).score(0, torch.zeros(1, 2), None, None),
    ]
    for case in cases:
        with pytest.raises(SweetError) as info:
            case()
        assert f"`{info.value}`" in table, str(info.value)
