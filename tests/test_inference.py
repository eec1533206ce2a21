"""The batched early-exit engine: same decisions as the evaluation path, real compaction, early stop;
and the wall-clock benchmark's accounting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sweet.inference import EarlyExitEngine
from sweet.modeling import SegmentRunner, find_layer_list
from sweet.policies import ConfidencePolicy, ExitPolicy, decide

from .conftest import padded_batch, tiny_model

KINDS = ["bert", "mpnet", "deberta"]
METHODS = ["early_exit", "sweet", "multi_model"]


def _model(kind, method, seed=0):
    m = tiny_model(kind, method, num_labels=2, seed=seed).eval()
    for h in m.heads:  # spread the confidences so that every threshold sends rows to several exits
        torch.nn.init.normal_(h.classifier.weight, std=2.0)
    return m


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", METHODS)
def test_engine_decisions_equal_the_evaluation_path(kind, method):
    model = _model(kind, method)
    ids, mask = padded_batch()
    policy = ConfidencePolicy([1.0, 1.3, 0.7, 1.0])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    spread = set()
    for t in np.linspace(0.5, 1.0, 11):
        chosen, preds, conf = decide(policy, logits, float(t))
        res = EarlyExitEngine(model, policy, float(t)).predict_batch(ids, mask)
        assert np.array_equal(chosen, res.exit_index), t
        assert np.array_equal(preds, res.label), t
        assert np.allclose(conf, res.score, atol=1e-5)
        assert np.allclose(res.probabilities.sum(1), 1.0, atol=1e-5)
        spread |= set(chosen.tolist())
    assert spread == {0, 1, 2, 3}  # the test exercised every exit


@pytest.mark.parametrize("kind", KINDS)
def test_the_fallback_through_the_backbone_forward_decides_the_same(kind, monkeypatch):
    """Encoders SegmentRunner does not know run through the backbone's own forward (layer list swapped, hooks);
    forced here on the known ones, the decisions are the same."""
    model = _model(kind, "sweet")
    ids, mask = padded_batch()
    policy = ConfidencePolicy([1.0, 1.3, 0.7, 1.0])
    fast = EarlyExitEngine(model, policy, 0.8)
    monkeypatch.setattr(SegmentRunner, "supports", staticmethod(lambda m: False))
    slow = EarlyExitEngine(model, policy, 0.8)
    assert fast.runner is not None and slow.runner is None
    a, b = fast.predict_batch(ids, mask), slow.predict_batch(ids, mask)
    assert len(set(a.exit_index.tolist())) > 1
    assert np.array_equal(a.exit_index, b.exit_index) and np.array_equal(a.label, b.label)
    assert np.allclose(a.probabilities, b.probabilities, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_later_layers_only_see_the_rows_that_remain(kind):
    model = _model(kind, "sweet")
    ids, mask = padded_batch()
    seen = {}
    layers = find_layer_list(model.backbones[0])

    def record(j):  # rows each layer actually computed (its output)
        return lambda m, a, out: seen.__setitem__(j, (out if torch.is_tensor(out) else out[0]).shape[0])

    hooks = [layer.register_forward_hook(record(j)) for j, layer in enumerate(layers)]
    res = EarlyExitEngine(model, ConfidencePolicy(), 0.8).predict_batch(ids, mask)
    for h in hooks:
        h.remove()
    counts = np.bincount(res.exit_index, minlength=4)
    assert seen[0] == 32  # layer 1 runs for everyone
    assert seen[1] == 32 - counts[0]  # layer 2: rows that did not leave at exit 1
    assert seen[2] == seen[3] == 32 - counts[:2].sum()
    assert seen[4] == seen[5] == 32 - counts[:3].sum()


@pytest.mark.parametrize("kind", KINDS)
def test_forward_stops_when_every_row_has_left(kind):
    model = _model(kind, "early_exit")
    ids, mask = padded_batch()
    calls = []
    layers = find_layer_list(model.backbones[0])
    h = layers[1].register_forward_hook(lambda *a: calls.append(1))  # fires only if layer 2 computed
    res = EarlyExitEngine(model, ConfidencePolicy(), 0.5).predict_batch(ids, mask)  # 1/#labels: all leave at exit 1
    h.remove()
    assert (res.exit_index == 0).all() and calls == []


@pytest.mark.parametrize("kind", KINDS)
def test_multi_model_cascade_runs_later_models_on_fewer_rows(kind):
    model = _model(kind, "multi_model")
    ids, mask = padded_batch()
    rows = []
    hooks = [bb.register_forward_pre_hook(lambda m, a, k: rows.append(k["input_ids"].shape[0]), with_kwargs=True)
             for bb in model.backbones]
    res = EarlyExitEngine(model, ConfidencePolicy(), 0.8).predict_batch(ids, mask)
    for h in hooks:
        h.remove()
    counts = np.bincount(res.exit_index, minlength=4)
    expected = [32 - counts[:i].sum() for i in range(4)]
    assert rows == [r for r in expected if r > 0]


class AgreementPolicy(ExitPolicy):
    """Patience-style toy policy with per-row state: exit once two consecutive exits agree."""

    name = "agreement"

    def init_state(self, batch_size):
        return torch.full((batch_size,), -1)

    def select_state(self, state, rows):
        return state[rows]

    def score(self, exit_index, logits, hidden, state):
        pred = logits.argmax(-1)
        return (pred == state).float(), pred

    def should_exit(self, score, threshold):
        return score >= 1.0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["sweet", "multi_model"])
def test_stateful_policies_keep_their_state_aligned_through_compaction(kind, method):
    model = _model(kind, method)
    ids, mask = padded_batch()
    policy = AgreementPolicy()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    chosen, preds, _ = decide(policy, logits, 0.5)
    res = EarlyExitEngine(model, policy, 0.5).predict_batch(ids, mask)
    assert len(set(chosen.tolist())) > 1
    assert np.array_equal(chosen, res.exit_index) and np.array_equal(preds, res.label)


@pytest.mark.parametrize("method", ["sweet", "multi_model"])
def test_threshold_one_skips_the_exits_no_row_can_take(method):
    """At threshold 1 no row leaves early under confidence/entropy/learned, so the engine runs the last head only
    (the full model's work), with the same answers; a stateful policy (patience, a custom one) keeps every head."""
    from sweet.policies import EntropyPolicy, LearnedExitPolicy, PatiencePolicy

    model = _model("bert", method)
    ids, mask = padded_batch()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, return_hidden=True)
    logits = out.logits
    hidden = int(model.config.backbone_config["hidden_size"])
    learned = LearnedExitPolicy([torch.ones(hidden)] * 4, [torch.zeros(1)] * 4)
    for policy, heads_run in ((ConfidencePolicy([1.0, 1.3, 0.7, 1.0]), [3]), (EntropyPolicy(), [3]),
                              (learned, [3]), (PatiencePolicy(4), [0, 1, 2, 3]), (AgreementPolicy(), [0, 1, 2, 3])):
        calls = []
        hooks = [h.register_forward_hook(lambda m, a, o, i=i: calls.append(i)) for i, h in enumerate(model.heads)]
        try:
            res = EarlyExitEngine(model, policy, 1.0).predict_batch(ids, mask)
        finally:
            for h in hooks:
                h.remove()
        assert sorted(set(calls)) == heads_run, policy.name
        chosen, preds, conf = decide(policy, logits, 1.0, out.hidden)
        assert np.array_equal(chosen, res.exit_index) and np.array_equal(preds, res.label)
        assert np.allclose(conf, res.score, atol=1e-5)
        # below 1 every exit runs again
        assert policy.may_exit(0, 0.99) and not (policy.name in ("confidence", "entropy", "learned")
                                                 and policy.may_exit(0, 1.0))


def test_predict_returns_rows_in_input_order(tiny_backbone_dir):
    from transformers import AutoTokenizer

    from sweet import MultiExitModel
    from sweet.encoding import Collator, encode
    from sweet.data import Examples

    tok = AutoTokenizer.from_pretrained(str(tiny_backbone_dir))
    model = MultiExitModel.from_backbone(str(tiny_backbone_dir), exit_layers=[1, 2, 4], num_labels=2, method="sweet").eval()
    texts = [("good " * (i % 7 + 1) + "film",) for i in range(23)]
    enc = encode(tok, Examples(texts, None), 32)
    col = Collator(tok.pad_token_id, True)
    engine = EarlyExitEngine(model, ConfidencePolicy(), 0.6)
    a = engine.predict(enc, col, batch_size=5, sort_by_length=True)
    b = engine.predict(enc, col, batch_size=5, sort_by_length=False)
    one = [engine.predict_batch(**col(enc, [i])) for i in range(23)]
    assert np.array_equal(a.exit_index, b.exit_index) and np.array_equal(a.label, b.label)
    assert a.exit_index.tolist() == [int(r.exit_index[0]) for r in one]


@pytest.mark.slow
def test_bench_accounting_matches_the_evaluation_curve(tmp_path, tiny_backbone_dir, tiny_glue_dir):
    from sweet.bench import benchmark, format_bench
    from sweet.runs import RunConfig, run

    metrics = run(RunConfig(task="sst2", method="sweet", backbone=str(tiny_backbone_dir), exit_layers=[1, 2, 4],
                            n_train=64, epochs=1, learning_rate=1e-3, data_dir=str(tiny_glue_dir)),
                  tmp_path / "run", progress=False)
    report = benchmark(tmp_path / "run", batch_sizes=[1, 16], repeats=1, warmup=1, progress=False,
                       precisions="fp32", peers=False)
    assert report["n_examples"] == 120 and report["threads"] >= 1
    for bs in (1, 16):
        pts = [p for p in report["points"] if p["batch_size"] == bs]
        assert pts[0]["baseline"] and len(pts) == 12
        served = [p["cost_ratio"] for p in pts[1:]]
        assert served == pytest.approx([p["cost_ratio"] for p in metrics["evaluation"]["curve"]])
        for p in pts[1:]:
            assert p["ideal_speedup"] == pytest.approx(1 / p["cost_ratio"])
            assert p["ratio"] == pytest.approx(p["measured_speedup"] / p["ideal_speedup"])
            assert sum(p["exit_counts"]) == 120 and p["examples_per_second"] > 0
    assert "speedup" in format_bench(report)
