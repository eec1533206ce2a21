"""The conflicting-gradient analysis (sweet.analysis, `sweet analyze gradients`): the row-wise cosine, the
per-head gradients, a model where the answer is known, and the command end to end on a tiny backbone."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sweet import SweetError
from sweet.analysis import analysed_weights, ffn_output_weight, per_head_gradients, row_cosine, similarities
from sweet.modeling import find_layer_list

from .conftest import batch, tiny_model

KINDS = ["bert", "mpnet", "deberta"]


def test_row_cosine_known_values():
    g = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    assert row_cosine(g, g) == pytest.approx(1.0)
    assert row_cosine(g, -g) == pytest.approx(-1.0)
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[0.0, 3.0], [5.0, 0.0]])
    assert row_cosine(a, b) == pytest.approx(0.0)
    # row-wise, not the cosine of the flattened matrices: rescaling single rows changes nothing
    scaled = g * torch.tensor([1.0, 10.0, 0.1, 5.0, 0.2, 3.0]).unsqueeze(1)
    flat = float(torch.nn.functional.cosine_similarity(g.flatten(), scaled.flatten(), dim=0))
    assert row_cosine(g, scaled) == pytest.approx(1.0) and flat < 0.99
    # mean over rows: one identical row and one opposite row average to 0
    assert row_cosine(torch.tensor([[1.0, 2.0], [3.0, 1.0]]), torch.tensor([[1.0, 2.0], [-3.0, -1.0]])) == pytest.approx(0.0)
    # rows that are exactly zero are left out of the mean; all-zero -> NaN
    assert row_cosine(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([[2.0, 0.0], [1.0, 1.0]])) == pytest.approx(1.0)
    assert math.isnan(row_cosine(torch.zeros(2, 2), torch.ones(2, 2)))


@pytest.mark.parametrize("kind", KINDS)
def test_the_last_ffn_matrix_is_found_for_every_encoder(kind):
    model = tiny_model(kind, "early_exit")
    layers = find_layer_list(model.backbones[0])
    name, w = ffn_output_weight(layers[0], 32)
    assert name == "output.dense.weight" and tuple(w.shape) == (16, 32)  # [hidden, intermediate]
    found = analysed_weights(model)
    assert [layer for layer, _, _ in found] == [1, 2, 4]  # layers before exits 1-3; not the last layer (6)
    assert [n for _, n, _ in found] == [f"encoder.layer.{k}.output.dense.weight" for k in (0, 1, 3)]


@pytest.mark.parametrize("kind", KINDS)
def test_per_head_gradients_equal_separate_backward_passes(kind):
    model = tiny_model(kind, "early_exit")
    ids, mask, labels = batch()
    weights = [w for _, _, w in analysed_weights(model)]
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    grads = per_head_gradients(out.exit_losses, weights)
    for i in range(4):
        model.zero_grad(set_to_none=True)
        out.exit_losses[i].backward(retain_graph=True)
        for j, w in enumerate(weights):
            if j <= i:  # exit i reaches layers L_1..L_i
                assert torch.allclose(grads[i][j], w.grad, atol=1e-7), (i, j)
                assert grads[i][j].abs().sum() > 0
            else:
                assert grads[i][j] is None and (w.grad is None or not w.grad.any()), (i, j)
    model.zero_grad(set_to_none=True)
    out.loss.backward()  # the training gradient is the sum of the heads' gradients
    for j, w in enumerate(weights):
        assert torch.allclose(sum(grads[i][j] for i in range(j, 4)), w.grad, atol=1e-6)


def _identity_after_first_layer(model, n_layers):
    """Make BERT layers 2..n identity maps (zero attention-output and FFN-output weights; the LayerNorms then
    see an already normalised input) and give every head the weights of head 1: every classifier then computes
    the same function of layer 1's output, so their gradients on layer 1 (and 2) are identical."""
    layers = find_layer_list(model.backbones[0])
    with torch.no_grad():
        for layer in layers[1:n_layers]:
            for lin in (layer.attention.output.dense, layer.output.dense):
                lin.weight.zero_()
                lin.bias.zero_()
        for head in model.heads[1:]:
            head.load_state_dict(model.heads[0].state_dict())


def test_identical_heads_on_identity_layers_have_similarity_one():
    model = tiny_model("bert", "early_exit", exit_layers=(1, 2, 3), pooling="mean")
    ids, mask, labels = batch(n=8)
    weights = [w for _, _, w in analysed_weights(model)]
    control = similarities(per_head_gradients(model(input_ids=ids, attention_mask=mask, labels=labels).exit_losses, weights))
    assert control[0]["pairwise"][0, 1] < 0.99  # a random model is far from 1: the check below can fail
    _identity_after_first_layer(model, 3)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert torch.allclose(out.logits[0], out.logits[2], atol=1e-5)
    sims = similarities(per_head_gradients(out.exit_losses, weights))
    assert sims[0]["heads"] == [0, 1, 2] and sims[1]["heads"] == [1, 2]
    for s in sims:
        assert np.allclose(s["pairwise"], 1.0, atol=1e-4)
        assert np.allclose(s["others_vs_own"], 1.0, atol=1e-4)


def test_a_sweet_model_is_refused():
    with pytest.raises(SweetError, match="needs an early_exit model"):
        analysed_weights(tiny_model("bert", "sweet"))


@pytest.mark.slow
def test_analyze_gradients_command_writes_json_and_png(tmp_path, tiny_backbone_dir, tiny_glue_dir):
    from .test_cli import sweet

    out = tmp_path / "grad"
    r = sweet("analyze", "gradients", "--task", "mnli", "--steps", "5", "--batch-size", "8", "--probe-batches", "1",
              "--backbone", str(tiny_backbone_dir), "--exit-layers", "1,2,4", "--lr", "1e-3",
              "--data-dir", str(tiny_glue_dir), "--output", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "layer 1: pairs C-1/C-2:" in r.stdout and "own vs others' sum" in r.stdout
    assert (out / "gradients.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = json.loads((out / "gradients.json").read_text())
    assert res["steps"] == 5 and res["exit_layers"] == [1, 2, 4] and res["method"] == "early_exit"
    assert res["command"].startswith("sweet analyze gradients")
    assert [lay["layer"] for lay in res["layers"]] == [1, 2]
    first, second = res["layers"]
    assert first["classifiers"] == ["C-1", "C-2", "C-3"] and second["classifiers"] == ["C-2", "C-3"]
    assert [p["classifiers"] for p in first["pairs"]] == [["C-1", "C-2"], ["C-1", "C-3"], ["C-2", "C-3"]]
    m = np.asarray(first["pairwise_mean"], dtype=float)
    assert np.allclose(np.diag(m), 1.0) and np.allclose(m, m.T)
    for lay in res["layers"]:
        for p in lay["pairs"]:
            assert len(p["per_step"]) == 5 and len(p["probe"]) == 1
            assert p["mean"] == pytest.approx(np.mean(p["per_step"]), abs=1e-4)
            assert all(-1.0 <= v <= 1.0 for v in p["per_step"])
        assert len(lay["others_vs_own"]) == len(lay["classifiers"])
    # two classifiers: "the others' sum" is the other classifier, so both numbers equal the pair's
    assert [o["mean"] for o in second["others_vs_own"]] == pytest.approx([second["pairs"][0]["mean"]] * 2, abs=1e-6)
    assert len(res["exit_losses_per_step"]) == 5 and res["n_probe_rows"] == 8
