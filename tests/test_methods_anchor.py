"""``ee_anchor@F`` (sweet.methods): Early-Exit for the first F of the steps (bit for bit), then SWEET's isolation
plus a KL term tying exits 2..M to a frozen anchor taken at the switch; the anchor is never trained nor saved
with the model, and a run resumed across the switch ends bit for bit as an uninterrupted one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from sweet import MultiExitConfig, MultiExitModel, SweetError
from sweet.checkpoint import Checkpointer
from sweet.encoding import Collator, Encoded
from sweet.gradients import anchor_kl
from sweet.methods import ANCHOR_TEMPERATURE, ANCHOR_WEIGHT, check_method, method_label, parse_method
from sweet.training import TrainConfig, make_optimizer, train

from .conftest import batch, tiny_config, tiny_model
from .test_methods import _assert_grads_equal, _grads, _same_weights
from .test_modeling import EXITS, _grad_norms
from .test_reliability import Crash, assert_same_result, config, crash_at_step, dropout_backbone  # noqa: F401

KINDS = ["bert", "mpnet", "deberta"]
ERRORS_MD = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


def _encoded(n: int = 40) -> Encoded:
    return Encoded(input_ids=[[2, 5 + i % 7, 6 + i % 5, 7 + i % 3, 3][: 3 + i % 3] for i in range(n)], token_type_ids=None,
                   labels=[i % 2 for i in range(n)], n_truncated=0)


def _dropout_model(method: str, seed: int = 0) -> MultiExitModel:
    """A tiny 3-layer BERT with dropout (so the RNG state matters), exits after layers 1, 2 and 3."""
    torch.manual_seed(seed)
    cfg = MultiExitConfig(method=method, exit_layers=[1, 2, 3], num_labels=2, backbone="tiny-bert",
                          backbone_config=tiny_config("bert", layers=3, dropout=0.1).to_dict())
    return MultiExitModel(cfg)


def _step(model, ids, mask, labels, lr: float = 1e-2) -> None:
    """One plain SGD step on the student, so it moves away from its anchor."""
    model.zero_grad(set_to_none=True)
    model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= lr * p.grad


def _switched(kind: str, method: str = "ee_anchor@0.5", moved: bool = True):
    """A model past its switch (progress 0.5) holding its anchor; ``moved``: one SGD step taken since."""
    model = tiny_model(kind, method)
    model.set_progress(0.5)
    model.freeze_anchor()
    if moved:
        _step(model, *batch(seed=3))
    return model


# ----------------------------------------------------------------------------------------------- names


def test_name_parameter_label_and_structure():
    assert check_method("ee_anchor") == "ee_anchor@0.5" and check_method("ee_anchor@0.250") == "ee_anchor@0.25"
    m = parse_method("ee_anchor@0.25")
    assert method_label(m.canonical) == "EE→anchor@0.25"
    assert m.anchor_from == 0.25 and parse_method("ee_then_sweet@0.25").anchor_from is None
    assert [m.anchored(p) for p in (0.0, 0.24, 0.25, 0.9)] == [False, False, True, True]
    assert m.shares_backbone and m.num_backbones(4) == 1 and m.exit_costs([1, 2, 4, 6]) == [1.0, 2.0, 4.0, 6.0]
    assert not m.every_exit_reaches_every_layer
    assert m.boundary_scales(0.2, 3) == (1.0, 1.0, 1.0) and m.boundary_scales(0.25, 3) == (0.0, 0.0, 0.0)
    # the anchor's forward pass on the last 1 - F of the steps: measured at F = 0.5, scaled for other F
    assert parse_method("ee_anchor").train_time_factor == 1.15 and m.train_time_factor == pytest.approx(1.225)
    assert (ANCHOR_WEIGHT, ANCHOR_TEMPERATURE) == (1.0, 1.0)


@pytest.mark.parametrize("bad, message", [
    ("ee_anchor@0", "method 'ee_anchor@0': the switch point F is a fraction of training in (0, 1), got 0"),
    ("ee_anchor@1", "method 'ee_anchor@1': the switch point F is a fraction of training in (0, 1), got 1"),
    ("ee_anchor@-0.5", "the switch point F is a fraction of training in (0, 1), got -0.5"),
    ("ee_anchor@half", "method 'ee_anchor@half': the parameter after '@' must be a number, got 'half'"),
    ("ee_anchor@", "the parameter after '@' must be a number, got ''"),
    ("ee_anchor@inf", "method 'ee_anchor@inf': the parameter must be finite"),
])
def test_bad_parameters_are_clear_errors(bad, message):
    with pytest.raises(SweetError, match=re.escape(message)):
        parse_method(bad)


def test_the_cli_errors_are_documented():
    """The two parse errors a user meets on the command line are rows of docs/errors.md's table, word for word
    (tests/test_reliability.py runs them through the CLI)."""
    table = ERRORS_MD.read_text(encoding="utf-8")
    for bad in ("ee_anchor@1", "ee_anchor@half"):
        with pytest.raises(SweetError) as info:
            parse_method(bad)
        assert f"`{info.value}`" in table, str(info.value)
    assert "ee_anchor@F" in table  # in the unknown-method message's list


# ------------------------------------------------------------------------------------- before the switch


@pytest.mark.parametrize("kind", KINDS)
def test_before_the_switch_the_gradients_are_early_exits(kind):
    ids, mask, labels = batch()
    ref = tiny_model(kind, "early_exit")
    g_ee = _grads(ref, ids, mask, labels)
    model = _same_weights("ee_anchor@0.5", ref, kind)
    for progress in (0.0, 0.3, 0.49):
        model.set_progress(progress)
        assert model.anchor is None
        _assert_grads_equal(_grads(model, ids, mask, labels), g_ee)


def test_a_run_that_never_reaches_the_switch_is_early_exit_bit_for_bit():
    """10 steps, F = 0.95: no step starts at progress >= 0.95, so the anchor is never taken; with dropout on,
    the weights and the log equal Early-Exit's (no random number is drawn differently)."""
    config = TrainConfig(epochs=1, batch_size=4, seed=5, learning_rate=1e-3, log_every=2)
    ee, anchor = _dropout_model("early_exit"), _dropout_model("ee_anchor@0.95")
    log_ee = train(ee, _encoded(), Collator(0, False), config, progress=False)
    log_anchor = train(anchor, _encoded(), Collator(0, False), config, progress=False)
    for a, b in zip(ee.parameters(), anchor.parameters(), strict=True):
        assert torch.equal(a, b)
    assert [e["exit_losses"] for e in log_ee["log"]] == [e["exit_losses"] for e in log_anchor["log"]]
    assert [e["anchor_kl"] for e in log_anchor["log"]] == [0.0] * 5


def test_training_takes_the_anchor_once_at_the_switch(monkeypatch):
    """F = 0.4 over 10 steps: SWEET's boundary scale from step 4 (0-based) on, the anchor taken before that
    step's forward pass, exactly once, and dropped when training ends."""
    seen, frozen = [], []
    model = tiny_model("bert", "ee_anchor@0.4", exit_layers=(1, 2), num_labels=2)
    original_progress, original_freeze = type(model).set_progress, type(model).freeze_anchor

    def spy_progress(self, progress):
        original_progress(self, progress)
        seen.append((self.gradient_scale, self.anchor is not None))

    def spy_freeze(self, state=None):
        frozen.append(len(seen))
        return original_freeze(self, state)

    monkeypatch.setattr(type(model), "set_progress", spy_progress)
    monkeypatch.setattr(type(model), "freeze_anchor", spy_freeze)
    train(model, _encoded(), Collator(0, False), TrainConfig(epochs=1, batch_size=4, seed=0), progress=False)
    assert seen[:-1] == [(1.0, False)] * 4 + [(0.0, False)] + [(0.0, True)] * 5
    assert frozen == [5]  # right after the 5th set_progress, i.e. before step 4's forward
    assert model.anchor is None and model.gradient_scale == 0.0


# -------------------------------------------------------------------------------------- after the switch


@pytest.mark.parametrize("kind", KINDS)
def test_after_the_switch_each_exit_trains_its_own_segment(kind):
    """Exit 1's loss reaches the embeddings and the layers up to exit 1; exit i >= 2's CE + KL (and its KL
    alone) reaches its own segment and head only, never the layers below the previous exit: SWEET's isolation
    (as tests/test_modeling.py checks it for SWEET)."""
    model = _switched(kind)
    ids, mask, labels = batch()
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    with torch.no_grad():
        anchored = model.anchor(input_ids=ids, attention_mask=mask).logits
    kls = [anchor_kl(z, a) for z, a in zip(out.logits, anchored)]
    assert all(float(kl.detach()) > 0 for kl in kls[1:])
    assert torch.allclose(out.loss, sum(out.exit_losses) + sum(kls[1:]), rtol=1e-6)
    assert torch.allclose(out.anchor_loss, sum(kls[1:]), rtol=1e-6)
    for i, layer in enumerate(EXITS):
        prev = EXITS[i - 1] if i else 0
        for loss in ([out.exit_losses[0]] if i == 0 else [out.exit_losses[i] + kls[i], kls[i]]):
            norms = _grad_norms(model, loss)
            assert (norms["shared"] > 0) is (i == 0), i
            for k in range(1, EXITS[-1] + 1):
                assert (norms[f"layer{k}"] > 0) is (prev < k <= layer), (i, k)
            for j in range(len(EXITS)):
                assert (norms[f"head{j}"] > 0) is (j == i), (i, j)


@pytest.mark.parametrize("kind", KINDS)
def test_after_the_switch_the_first_segment_gets_sweets_gradient_and_the_rest_more(kind):
    """Same weights, same batch: on the embeddings, layer 1 and head 1 the gradient is SWEET's bit for bit (the
    first exit alone trains them); in every deeper segment the KL term adds to it."""
    model = _switched(kind)
    sweet = _same_weights("sweet", model, kind)
    ids, mask, labels = batch()
    g_anchor, g_sweet = _grads(model, ids, mask, labels), _grads(sweet, ids, mask, labels)
    first = [n for n in g_anchor if n.startswith("heads.0.") or ".layer.0." in n or "embeddings" in n
             or (n.startswith("backbones.0.") and ".layer." not in n)]
    assert first and all(torch.equal(g_anchor[n], g_sweet[n]) for n in first if g_anchor[n] is not None)
    assert [n for n in first if (g_anchor[n] is None) != (g_sweet[n] is None)] == []
    for name in ("heads.3.classifier.weight", "backbones.0.encoder.layer.5.output.dense.weight",
                 "backbones.0.encoder.layer.1.output.dense.weight"):
        assert not torch.equal(g_anchor[name], g_sweet[name]), name


@pytest.mark.parametrize("kind", KINDS)
def test_the_kl_term_is_zero_at_the_switch_and_positive_after_a_step(kind):
    """Without dropout the student in training mode computes what its anchor computes: the term is exactly 0
    at the switch, and positive once the student has taken a step."""
    model = _switched(kind, moved=False)
    model.train()
    ids, mask, labels = batch()
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert out.anchor_loss.item() == 0.0 and torch.equal(out.loss, torch.stack(out.exit_losses).sum())
    _step(model, ids, mask, labels)
    after = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert after.anchor_loss.item() > 0.0
    assert model(input_ids=ids, attention_mask=mask).anchor_loss is None  # no labels: no loss at all


def test_the_kl_term_in_the_training_log():
    """log_every=1, F = 0.5 over 10 steps, no dropout: 0 for the 5 steps before the switch, exactly 0 at the
    switch (the student is its anchor), positive on every step after it."""
    log = train(tiny_model("bert", "ee_anchor@0.5", exit_layers=(1, 2, 4), num_labels=2), _encoded(), Collator(0, False),
                TrainConfig(epochs=1, batch_size=4, seed=0, learning_rate=1e-3, log_every=1), progress=False)
    kl = [e["anchor_kl"] for e in log["log"]]
    assert kl[:6] == [0.0] * 6 and all(x > 0 for x in kl[6:]) and len(kl) == 10


def test_kl_is_the_documented_formula():
    g = torch.Generator().manual_seed(0)
    z, a = torch.randn(5, 3, generator=g, requires_grad=True), torch.randn(5, 3, generator=g)
    p = F.softmax(a, -1)
    expected = (p * (p.log() - F.log_softmax(z, -1))).sum(-1).mean()
    assert torch.allclose(anchor_kl(z, a), expected, rtol=1e-6)
    anchor_kl(z, a).backward()
    assert torch.allclose(z.grad, (F.softmax(z, -1) - p) / 5, rtol=1e-5, atol=1e-7)  # d KL / d z = (q - p) / batch


# ------------------------------------------------------------------------------------------- the anchor


def test_the_anchor_is_frozen_unoptimized_and_never_saved(tmp_path):
    model = _switched("bert", moved=False)
    anchor = model.anchor
    before = {k: v.clone() for k, v in anchor.state_dict().items()}
    assert not anchor.training and all(not p.requires_grad for p in anchor.parameters())
    in_model = {id(p) for p in model.parameters()}
    assert not in_model & {id(p) for p in anchor.parameters()}
    optimizer = make_optimizer(model, TrainConfig(), torch.device("cpu"))
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert in_optimizer == in_model and not in_optimizer & {id(p) for p in anchor.parameters()}
    assert all(not k.startswith("anchor") and "_anchor" not in k for k in model.state_dict())
    model.train()  # the anchor stays in eval mode (no dropout), whatever the student's mode
    assert not anchor.training
    ids, mask, labels = batch()
    for _ in range(3):
        optimizer.zero_grad(set_to_none=True)
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        assert all(p.grad is None for p in anchor.parameters())
        optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in anchor.state_dict().items())
    assert not torch.equal(before["heads.3.classifier.weight"], model.state_dict()["heads.3.classifier.weight"])

    model.save_pretrained(tmp_path / "m")
    saved = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert saved.keys() == model.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    loaded = MultiExitModel.from_pretrained(tmp_path / "m")
    assert loaded.config.method == "ee_anchor@0.5" and loaded.anchor is None


def test_only_ee_anchor_takes_an_anchor():
    with pytest.raises(SweetError, match="method ee_then_sweet@0.5 trains without an anchor"):
        tiny_model("bert", "ee_then_sweet@0.5").freeze_anchor()


# ----------------------------------------------------------------------------- determinism and resume


CONFIG = TrainConfig(epochs=2, batch_size=8, seed=3, learning_rate=1e-3, log_every=2)  # 2 x 5 = 10 steps


def _comparable(log: dict) -> dict:
    return {k: v for k, v in log.items() if k not in ("seconds", "examples_per_second", "resumed_at_steps")}


def test_the_same_seed_gives_the_same_weights_and_log():
    runs = []
    for _ in range(2):
        model = _dropout_model("ee_anchor@0.5")
        log = train(model, _encoded(), Collator(0, False), CONFIG, progress=False)
        runs.append((model.state_dict(), _comparable(log)))
    (wa, la), (wb, lb) = runs
    assert la == lb and any(e["anchor_kl"] > 0 for e in la["log"])
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("every, crash, saved_with_anchor", [
    (3, 9, True),    # last checkpoint at step 6, after the switch (step 5): the anchor comes from it
    (4, 7, False),   # last checkpoint at step 4, before the switch: the resumed run takes the anchor itself
])
def test_a_run_resumed_across_the_switch_ends_bit_for_bit_as_an_uninterrupted_one(tmp_path, monkeypatch, every,
                                                                                    crash, saved_with_anchor):
    reference = _dropout_model("ee_anchor@0.5")
    ref_log = train(reference, _encoded(), Collator(0, False), CONFIG, progress=False)

    ckpt = Checkpointer(tmp_path / "ckpt", every=every)
    with monkeypatch.context() as mp:
        crash_at_step(mp, crash)
        with pytest.raises(Crash):
            train(_dropout_model("ee_anchor@0.5"), _encoded(), Collator(0, False), CONFIG, progress=False,
                  checkpointer=ckpt)
    weights = load_file(str(next((tmp_path / "ckpt").glob("*.safetensors"))))
    assert any(k.startswith("anchor/") for k in weights) is saved_with_anchor
    if saved_with_anchor:  # the anchor in the checkpoint is not the student
        assert not torch.equal(weights["anchor/heads.2.classifier.weight"], weights["model/heads.2.classifier.weight"])

    resumed = _dropout_model("ee_anchor@0.5", seed=99)  # other initial weights: everything comes from the checkpoint
    log = train(resumed, _encoded(), Collator(0, False), CONFIG, progress=False, checkpointer=ckpt, resume=True)
    assert log["resumed_at_steps"] == [(crash - 1) // every * every]
    assert _comparable(log) == _comparable(ref_log)
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), resumed.state_dict().values(), strict=True))
    assert resumed.anchor is None


def test_a_run_directory_killed_after_the_switch_resumes_to_the_uninterrupted_result(tmp_path, dropout_backbone,
                                                                                    tiny_glue_dir, monkeypatch):
    """`sweet train` end to end (sweet.runs.run): 26 steps, the switch at step 13, a crash at step 17, resumed from
    the checkpoint at step 15 (which holds the anchor): same weights, metrics and log as an uninterrupted run; the
    saved model is the student alone, and the log shows the KL term after the switch."""
    from sweet.io import read_json
    from sweet.runs import run

    reference, out = tmp_path / "reference", tmp_path / "crashed"
    run(config(dropout_backbone, tiny_glue_dir, method="ee_anchor@0.5", checkpoint_every=0), reference, progress=False)
    with monkeypatch.context() as mp:
        crash_at_step(mp, 17)
        with pytest.raises(Crash):
            run(config(dropout_backbone, tiny_glue_dir, method="ee_anchor@0.5"), out, progress=False)
    assert any(k.startswith("anchor/") for k in load_file(str(next((out / "checkpoint").glob("step-*.safetensors")))))
    run(config(dropout_backbone, tiny_glue_dir, method="ee_anchor@0.5"), out, progress=False, resume=True)
    assert_same_result(reference, out)
    saved = load_file(str(out / "model" / "model.safetensors"))
    assert saved.keys() == MultiExitModel.from_pretrained(out / "model").state_dict().keys()
    assert not any("anchor" in k for k in saved)
    log = read_json(out / "train_log.json")["log"]  # entries at steps 25 and 26, both after the switch
    assert [e["step"] for e in log] == [25, 26] and all(e["anchor_kl"] > 0.0 for e in log)
