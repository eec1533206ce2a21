"""Partial ownership, ``own@RHO`` (sweet.modeling.ownership): the owned heads and FFN units of segment i are trained
by exit i alone, everything else as Early-Exit; RHO = 0 is Early-Exit; forward values are Early-Exit's."""

from __future__ import annotations

import re

import pytest
import torch

from sweet import MultiExitConfig, MultiExitModel, SweetError
from sweet.encoding import Collator, Encoded
from sweet.methods import check_method, method_label, parse_method
from sweet.modeling import find_layer_list
from sweet.modeling.ownership import Ownership, owned_count
from sweet.training import TrainConfig, train

from .conftest import batch, tiny_config, tiny_model

KINDS = ["bert", "mpnet", "deberta"]
EXITS = [1, 2, 4, 6]

# Per encoder family, written out here from the models' module names (not read from sweet.modeling.ownership):
# the per-head projections (owned: the owned heads' rows), the attention output projection (owned: those heads'
# input columns), the FFN input (owned: the owned units' rows) and output projection (owned: their columns).
HEAD_ROWS = {"bert": ("attention.self.query", "attention.self.key", "attention.self.value"),
             "mpnet": ("attention.attn.q", "attention.attn.k", "attention.attn.v"),
             "deberta": ("attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj",
                         "attention.self.pos_key_proj", "attention.self.pos_query_proj")}
ATTENTION_OUT = {"bert": "attention.output.dense", "mpnet": "attention.attn.o", "deberta": "attention.output.dense"}


def _owned_slices(model, kind, rho):
    """(layer k 1-based, parameter name in the layer, owned index, non-owned index) for every weight and bias with an
    owned part; heads are the first round(rho * n), units the first round(rho * m) (the documented choice)."""
    layer = find_layer_list(model.backbones[0])[0]
    cfg = model.backbones[0].config
    n_heads, m = cfg.num_attention_heads, cfg.intermediate_size
    head_size = cfg.hidden_size // n_heads
    c_att = int(rho * n_heads + 0.5) * head_size
    c_ffn = int(rho * m + 0.5)
    out = []
    names = dict(layer.named_parameters())
    for k in range(1, len(find_layer_list(model.backbones[0])) + 1):
        for mod in HEAD_ROWS[kind]:
            if f"{mod}.weight" not in names:
                continue
            out.append((k, f"{mod}.weight", (slice(0, c_att),), (slice(c_att, None),)))
            if f"{mod}.bias" in names:
                out.append((k, f"{mod}.bias", (slice(0, c_att),), None))  # key bias: zero gradient by symmetry
        out.append((k, f"{ATTENTION_OUT[kind]}.weight", (slice(None), slice(0, c_att)), (slice(None), slice(c_att, None))))
        out.append((k, "intermediate.dense.weight", (slice(0, c_ffn),), (slice(c_ffn, None),)))
        out.append((k, "intermediate.dense.bias", (slice(0, c_ffn),), (slice(c_ffn, None),)))
        out.append((k, "output.dense.weight", (slice(None), slice(0, c_ffn)), (slice(None), slice(c_ffn, None))))
    return out


def _segment_of(k: int) -> int:
    return next(i for i, end in enumerate(EXITS) if k <= end)


def _grads(model, loss) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return {n: (torch.zeros_like(p) if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()}


def _layer_param(k: int, name: str) -> str:
    return f"backbones.0.{'encoder.layer'}.{k - 1}.{name}"


# ------------------------------------------------------------------------------------------------ names


@pytest.mark.parametrize("given_name, canonical", [("own", "own@0.5"), ("own@0.25", "own@0.25"), ("own@1.0", "own@1"),
                                                   ("own@0", "own@0")])
def test_own_names_are_canonicalised(given_name, canonical):
    assert check_method(given_name) == canonical


@pytest.mark.parametrize("bad, message", [
    ("own@1.5", "method 'own@1.5': RHO is the owned fraction of heads and FFN units, in [0, 1] (0 = early_exit), got 1.5"),
    ("own@-0.25", "RHO is the owned fraction of heads and FFN units, in [0, 1] (0 = early_exit), got -0.25"),
    ("own@half", "method 'own@half': the parameter after '@' must be a number, got 'half'"),
    ("own@inf", "method 'own@inf': the parameter must be finite"),
])
def test_bad_rho_is_a_clear_error(bad, message):
    with pytest.raises(SweetError, match=re.escape(message)):
        parse_method(bad)


def test_errors_are_listed_in_the_error_table_verbatim():
    from pathlib import Path

    table = (Path(__file__).parents[1] / "docs" / "errors.md").read_text(encoding="utf-8")
    with pytest.raises(SweetError) as info:
        parse_method("own@1.5")
    assert f"`{info.value}`" in table, str(info.value)
    with pytest.raises(SweetError) as info:
        _roberta_model("own@0.5")
    assert f"`{info.value}`" in table, str(info.value)


def test_own_structure_label_and_cost():
    m = parse_method("own@0.25")
    assert m.shares_backbone and m.owned_fraction == 0.25 and m.alpha is None
    assert m.boundary_scales(0.5, 3) == (1.0, 1.0, 1.0)  # no boundary gating: the isolation is per unit
    assert not m.every_exit_reaches_every_layer and parse_method("own@0").every_exit_reaches_every_layer
    assert m.train_time_factor > 1.0 and method_label("own@0.25") == "Own ρ=0.25"
    assert parse_method("early_exit").owned_fraction == 0.0


def test_owned_counts_round_half_up():
    assert [owned_count(r, 12) for r in (0, 0.25, 0.5, 0.75, 1)] == [0, 3, 6, 9, 12]
    assert [owned_count(r, 2) for r in (0.2, 0.25, 0.5, 0.75)] == [0, 1, 1, 2]


# -------------------------------------------------------------------------------------------- isolation


@pytest.mark.parametrize("kind", KINDS)
def test_owned_units_are_trained_by_their_own_exit_only(kind):
    """Per exit's loss: the owned parameters of segment s get gradient from exit s and from no other exit; the
    non-owned weights of a layer get gradient from every exit at or above it (as Early-Exit); the embeddings from
    every exit; each head from its own exit."""
    model = tiny_model(kind, "own@0.5")
    assert model.ownership == Ownership(rho=0.5, heads=1, head_size=8, units=16)
    ids, mask, labels = batch()
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    slices = _owned_slices(model, kind, 0.5)
    assert len(slices) > 6 * 6
    for i, exit_layer in enumerate(EXITS):
        grads = _grads(model, out.exit_losses[i])
        emb = "backbones.0.embeddings.word_embeddings.weight"
        assert float(grads[emb].abs().sum()) > 0, f"exit {i} did not reach the embeddings"
        for k, name, owned, rest in slices:
            g = grads[_layer_param(k, name)]
            reached = float(g[owned].abs().sum())
            if _segment_of(k) == i:
                assert reached > 0, f"exit {i} did not train its own units: layer {k} {name}"
            else:
                assert reached == 0.0, f"exit {i} reached units owned by exit {_segment_of(k)}: layer {k} {name}"
            if rest is not None:
                assert (float(g[rest].abs().sum()) > 0) == (k <= exit_layer), (i, k, name)
        for j in range(len(EXITS)):
            assert (float(sum(g.abs().sum() for n, g in grads.items() if n.startswith(f"heads.{j}."))) > 0) == (j == i)


@pytest.mark.parametrize("kind", KINDS)
def test_rho_one_leaves_deeper_exits_the_residual_stream_only(kind):
    """RHO = 1 (every head and unit owned): a deeper exit's gradient reaches no projection weight of a lower
    segment, but does reach its LayerNorms, the projections' biases and the embeddings (close to SWEET, not SWEET)."""
    model = tiny_model(kind, "own@1")
    ids, mask, labels = batch()
    grads = _grads(model, model(input_ids=ids, attention_mask=mask, labels=labels).exit_losses[-1])
    for k in range(1, EXITS[-2] + 1):
        for name in (*HEAD_ROWS[kind], ATTENTION_OUT[kind], "intermediate.dense", "output.dense"):
            key = _layer_param(k, f"{name}.weight")
            if key in grads:
                assert float(grads[key].abs().sum()) == 0.0, key
        norms = [n for n in grads if n.startswith(_layer_param(k, "")) and "LayerNorm" in n]
        assert norms and all(float(grads[n].abs().sum()) > 0 for n in norms)
        assert float(grads[_layer_param(k, "output.dense.bias")].abs().sum()) > 0
    assert float(grads["backbones.0.embeddings.word_embeddings.weight"].abs().sum()) > 0


@pytest.mark.parametrize("kind", KINDS)
def test_rho_zero_is_early_exit_bit_for_bit(kind):
    ee = tiny_model(kind, "early_exit")
    own = tiny_model(kind, "own@0", seed=1)
    own.load_state_dict(ee.state_dict())
    assert own.ownership is None
    ids, mask, labels = batch()
    for m in (ee, own):
        m.zero_grad(set_to_none=True)
        m(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    for (n, a), (_, b) in zip(ee.named_parameters(), own.named_parameters()):
        assert (a.grad is None and b.grad is None) or torch.equal(a.grad, b.grad), n


@pytest.mark.parametrize("kind", KINDS)
def test_first_exit_trains_as_in_early_exit_and_the_sum_differs(kind):
    """Exit 1 sees nothing detached (no exit below it): its gradient is Early-Exit's exit-1 gradient. On segment 1's
    owned units, the summed loss's gradient is exit 1's alone, so it differs from Early-Exit's summed gradient."""
    ee = tiny_model(kind, "early_exit")
    own = tiny_model(kind, "own@0.5")
    own.load_state_dict(ee.state_dict())
    ids, mask, labels = batch()
    g_ee = _grads(ee, ee(input_ids=ids, attention_mask=mask, labels=labels).exit_losses[0])
    out = own(input_ids=ids, attention_mask=mask, labels=labels)
    g_own = _grads(own, out.exit_losses[0])
    for n in g_ee:
        assert torch.allclose(g_ee[n], g_own[n], rtol=1e-5, atol=1e-7), n
    g_sum = _grads(own, out.loss)
    w = _layer_param(1, "output.dense.weight")
    assert torch.allclose(g_sum[w][:, :16], g_own[w][:, :16], rtol=1e-5, atol=1e-7)  # owned: exit 1's gradient only
    g_ee_sum = _grads(ee, ee(input_ids=ids, attention_mask=mask, labels=labels).loss)
    assert not torch.allclose(g_ee_sum[w][:, :16], g_sum[w][:, :16])


# ----------------------------------------------------------------------------------------- forward values


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rho", [0.25, 0.5, 1.0])
def test_forward_values_are_early_exits(kind, rho):
    """Eval mode, with and without autograd recording (the two-stream path and Early-Exit's own)."""
    ee = tiny_model(kind, "early_exit").eval()
    own = tiny_model(kind, f"own@{rho}", seed=1).eval()
    own.load_state_dict(ee.state_dict())
    ids, mask, labels = batch()
    ref = ee(input_ids=ids, attention_mask=mask, labels=labels)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            got = own(input_ids=ids, attention_mask=mask, labels=labels)
        assert all(torch.equal(a, b) for a, b in zip(ref.logits, got.logits)), grad
        assert torch.equal(ref.loss, got.loss)


def _dropout_model(kind: str, method: str, seed: int = 0) -> MultiExitModel:
    torch.manual_seed(seed)
    return MultiExitModel(MultiExitConfig(method=method, exit_layers=EXITS, num_labels=3, backbone=f"tiny-{kind}",
                                          backbone_config=tiny_config(kind, layers=6, dropout=0.3).to_dict()))


@pytest.mark.parametrize("kind", KINDS)
def test_training_mode_dropout_masks_are_early_exits(kind):
    """With dropout, the live branch and the trunk draw the same masks: every exit's training logits equal one
    Early-Exit pass's for the same generator state, and the generator is left where Early-Exit leaves it."""
    ee = _dropout_model(kind, "early_exit").train()
    own = _dropout_model(kind, "own@0.5", seed=1).train()
    own.load_state_dict(ee.state_dict())
    ids, mask, labels = batch()
    torch.manual_seed(7)
    ref = ee(input_ids=ids, attention_mask=mask, labels=labels)
    after_ref = torch.get_rng_state()
    torch.manual_seed(7)
    got = own(input_ids=ids, attention_mask=mask, labels=labels)
    assert all(torch.equal(a, b) for a, b in zip(ref.logits, got.logits))
    assert torch.equal(after_ref, torch.get_rng_state())
    torch.manual_seed(8)
    other = own(input_ids=ids, attention_mask=mask, labels=labels)
    assert not torch.equal(other.logits[-1], got.logits[-1])  # the dropout is really on


def test_bf16_autocast_keeps_the_isolation():
    model = tiny_model("bert", "own@0.5")
    ids, mask, labels = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
    grads = _grads(model, out.exit_losses[-1])
    assert float(grads[_layer_param(1, "output.dense.weight")][:, :16].abs().sum()) == 0.0
    assert float(grads[_layer_param(1, "output.dense.weight")][:, 16:].abs().sum()) > 0


# -------------------------------------------------------------------------------- persistence, encoders


def test_save_and_load_keep_the_ownership(tmp_path):
    model = tiny_model("mpnet", "own@0.25")
    model.save_pretrained(tmp_path / "m")
    loaded = MultiExitModel.from_pretrained(tmp_path / "m").train()
    assert loaded.config.method == "own@0.25" and loaded.ownership == model.ownership
    assert loaded.ownership == Ownership(rho=0.25, heads=1, head_size=8, units=8)
    ids, mask, labels = batch()
    grads = _grads(loaded, loaded(input_ids=ids, attention_mask=mask, labels=labels).exit_losses[1])
    assert float(grads[_layer_param(1, "intermediate.dense.weight")][:8].abs().sum()) == 0.0  # exit 0's units
    assert float(grads[_layer_param(2, "intermediate.dense.weight")][:8].abs().sum()) > 0  # its own
    with torch.no_grad():
        for a, b in zip(model.eval()(input_ids=ids, attention_mask=mask).logits,
                        loaded.eval()(input_ids=ids, attention_mask=mask).logits):
            assert torch.equal(a, b)


def _roberta_model(method: str) -> MultiExitModel:
    from transformers import RobertaConfig

    cfg = RobertaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64).to_dict()
    return MultiExitModel(MultiExitConfig(method=method, exit_layers=[1, 2], num_labels=2, backbone="tiny-roberta",
                                          backbone_config=cfg))


def test_unsupported_encoder_is_refused_for_rho_above_zero():
    make = _roberta_model
    with pytest.raises(SweetError, match=re.escape("own@RHO needs a BERT, MPNet or DeBERTa-v2 encoder (it trains "
                                                   "segment by segment), not roberta; train this backbone with "
                                                   "another method, e.g. early_exit")):
        make("own@0.5")
    assert make("own@0").ownership is None


# ------------------------------------------------------------------------------------------------ training


def test_training_is_deterministic_for_a_seed():
    enc = Encoded(input_ids=[[2, 5 + i % 7, 6 + i % 3, 7 + i % 5, 3] for i in range(32)], token_type_ids=None,
                  labels=[i % 2 for i in range(32)], n_truncated=0)
    runs = []
    for seed in (3, 3, 4):
        model = _dropout_model("bert", "own@0.5")
        train(model, enc, Collator(0, False), TrainConfig(epochs=1, batch_size=8, seed=seed, learning_rate=1e-3),
              progress=False)
        runs.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1]))
    assert not all(torch.equal(a, b) for a, b in zip(runs[0], runs[2]))


def test_a_run_trains_saves_and_evaluates_like_early_exit(tmp_path, tiny_backbone_dir, tiny_glue_dir):
    """End to end (sweet.runs.run): an own@RHO run writes an Early-Exit-shaped model that reloads with its method
    and ownership and is evaluated by the engine like any shared-backbone model."""
    import warnings

    from sweet.calibration import TemperatureAtBoundWarning
    from sweet.config import RunConfig
    from sweet.runs import run

    config = RunConfig(task="sst2", method="own@0.5", backbone=str(tiny_backbone_dir), exit_layers=[1, 2, 4],
                       n_train=96, epochs=1, learning_rate=3e-3, calibration_size=40, data_dir=str(tiny_glue_dir),
                       max_length=64, checkpoint_every=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TemperatureAtBoundWarning)
        metrics = run(config, tmp_path / "run", progress=False)
    assert metrics and (tmp_path / "run" / "model" / "sweet_config.json").is_file()
    loaded = MultiExitModel.from_pretrained(tmp_path / "run" / "model")
    assert loaded.config.method == "own@0.5" and loaded.ownership == Ownership(rho=0.5, heads=1, head_size=8, units=16)
