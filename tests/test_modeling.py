"""The model: SWEET's gradient isolation, EE == SWEET forward values, Multi-Model independence,
save/load, exit-layer validation."""

from __future__ import annotations

import pytest
import torch

from sweet import MultiExitModel, SweetError
from sweet.modeling import find_layer_list, validate_exit_layers

from .conftest import batch, tiny_model

EXITS = [1, 2, 4, 6]
KINDS = ["bert", "mpnet", "deberta"]


def _segments(model):
    """Name -> group: 'shared' (embeddings and encoder-level parameters every layer uses), 'layer{k}'
    (1-based), 'head{i}'."""
    groups = {}
    bb = model.backbones[0]
    layers = find_layer_list(bb)
    layer_params = {id(p): k + 1 for k, layer in enumerate(layers) for p in layer.parameters()}
    for name, p in bb.named_parameters():
        groups[name] = f"layer{layer_params[id(p)]}" if id(p) in layer_params else "shared"
    return groups


def _grad_norms(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    groups = _segments(model)
    norms: dict[str, float] = {}
    for name, p in model.backbones[0].named_parameters():
        g = 0.0 if p.grad is None else float(p.grad.abs().sum())
        norms[groups[name]] = norms.get(groups[name], 0.0) + g
    for i, head in enumerate(model.heads):
        norms[f"head{i}"] = sum(0.0 if p.grad is None else float(p.grad.abs().sum()) for p in head.parameters())
    return norms


@pytest.mark.parametrize("kind", KINDS)
def test_sweet_isolates_each_exit_to_its_own_segment(kind):
    model = tiny_model(kind, "sweet")
    ids, mask, labels = batch()
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    for i, layer in enumerate(EXITS):
        prev = EXITS[i - 1] if i else 0
        norms = _grad_norms(model, out.exit_losses[i])
        # Embeddings and encoder-level shared parameters (MPNet relative_attention_bias, DeBERTa
        # rel_embeddings + LayerNorm) belong to the first segment.
        if i == 0:
            assert norms["shared"] > 0
        else:
            assert norms["shared"] == 0, f"exit {i} reached the embeddings/shared params"
        for k in range(1, EXITS[-1] + 1):
            if prev < k <= layer:
                assert norms[f"layer{k}"] > 0, f"exit {i} did not reach layer {k}"
            else:
                assert norms[f"layer{k}"] == 0, f"exit {i} reached layer {k}"
        for j in range(len(EXITS)):
            assert (norms[f"head{j}"] > 0) == (j == i)


@pytest.mark.parametrize("kind", KINDS)
def test_early_exit_gradients_reach_every_layer_below(kind):
    model = tiny_model(kind, "early_exit")
    ids, mask, labels = batch()
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    for i, layer in enumerate(EXITS):
        norms = _grad_norms(model, out.exit_losses[i])
        assert norms["shared"] > 0
        for k in range(1, EXITS[-1] + 1):
            assert (norms[f"layer{k}"] > 0) == (k <= layer), (i, k)


@pytest.mark.parametrize("kind", KINDS)
def test_sweet_and_early_exit_forward_values_are_identical(kind):
    ee = tiny_model(kind, "early_exit")
    sw = tiny_model(kind, "sweet", seed=1)
    sw.load_state_dict(ee.state_dict())
    ids, mask, labels = batch()
    a = ee(input_ids=ids, attention_mask=mask, labels=labels)
    b = sw(input_ids=ids, attention_mask=mask, labels=labels)
    for x, y in zip(a.logits, b.logits):
        assert torch.equal(x, y)
    assert torch.equal(a.loss, b.loss)


@pytest.mark.parametrize("kind", KINDS)
def test_sweet_training_step_differs_from_early_exit(kind):
    ee = tiny_model(kind, "early_exit")
    sw = tiny_model(kind, "sweet")
    sw.load_state_dict(ee.state_dict())
    ids, mask, labels = batch()
    for m in (ee, sw):
        m(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    emb_ee = ee.backbones[0].embeddings.word_embeddings.weight.grad
    emb_sw = sw.backbones[0].embeddings.word_embeddings.weight.grad
    assert not torch.allclose(emb_ee, emb_sw)


@pytest.mark.parametrize("kind", KINDS)
def test_multi_model_exits_share_nothing_and_have_their_depth(kind):
    model = tiny_model(kind, "multi_model")
    assert len(model.backbones) == len(EXITS)
    seen: set[int] = set()
    for bb, head, depth in zip(model.backbones, model.heads, EXITS):
        assert len(find_layer_list(bb)) == depth
        assert bb.config.num_hidden_layers == depth
        ptrs = {p.data_ptr() for p in list(bb.parameters()) + list(head.parameters())}
        assert not ptrs & seen
        seen |= ptrs
    ids, mask, labels = batch()
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    for i in range(len(EXITS)):
        model.zero_grad(set_to_none=True)
        out.exit_losses[i].backward(retain_graph=True)
        for j, (bb, head) in enumerate(zip(model.backbones, model.heads)):
            total = sum(float(p.grad.abs().sum()) for p in [*bb.parameters(), *head.parameters()] if p.grad is not None)
            assert (total > 0) == (i == j)


@pytest.mark.parametrize("kind", KINDS)
def test_multi_model_parameter_groups_are_per_model(kind):
    model = tiny_model(kind, "multi_model")
    groups = model.parameter_groups()
    assert len(groups) == len(EXITS)
    assert sum(len(g) for g in groups) == len(list(model.parameters()))
    assert len(tiny_model(kind, "sweet").parameter_groups()) == 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["early_exit", "sweet", "multi_model"])
def test_save_and_load_round_trip_gives_identical_logits(tmp_path, kind, method):
    model = tiny_model(kind, method, temperatures=[1.0, 1.5, 2.0, 0.5]).eval()
    ids, mask, _ = batch()
    before = model(input_ids=ids, attention_mask=mask).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))
    loaded = MultiExitModel.from_pretrained(tmp_path)
    after = loaded(input_ids=ids, attention_mask=mask).logits
    for x, y in zip(before, after):
        assert torch.equal(x, y)
    assert loaded.config.temperatures == [1.0, 1.5, 2.0, 0.5]
    assert loaded.config.method == method


def test_from_pretrained_refuses_pickle_and_names_missing_files(tmp_path):
    model = tiny_model("bert", "sweet")
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(SweetError, match="pickle files are never loaded"):
        MultiExitModel.from_pretrained(tmp_path)
    with pytest.raises(SweetError, match="sweet_config.json is missing"):
        MultiExitModel.from_pretrained(tmp_path / "nowhere" if False else tmp_path.parent)


def test_truncated_weights_file_is_a_clear_error(tmp_path):
    tiny_model("bert", "early_exit").save_pretrained(tmp_path)
    w = tmp_path / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(SweetError, match="not a readable safetensors file"):
        MultiExitModel.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "layers, message",
    [
        ([], "empty"),
        ([2, 1, 6], "strictly increasing"),
        ([1, 1, 6], "strictly increasing"),
        ([0, 2, 6], r"1\.\.6"),
        ([1, 2, 7], r"1\.\.6"),
        ([1, 2, 4], "add 6"),
    ],
)
def test_exit_layer_validation(layers, message):
    with pytest.raises(SweetError, match=message):
        validate_exit_layers(layers, 6)


@pytest.mark.parametrize("kind", KINDS)
def test_partial_depth_cuts_the_encoder(kind):
    model = tiny_model(kind, "early_exit", exit_layers=(1, 3), allow_partial_depth=True)
    assert len(find_layer_list(model.backbones[0])) == 3
    assert model.config.depth == 3


def test_method_is_required_and_checked(tiny_backbone_dir):
    with pytest.raises(TypeError):
        MultiExitModel.from_backbone(str(tiny_backbone_dir), exit_layers=[1, 4], num_labels=2)  # no method
    with pytest.raises(SweetError, match="unknown method"):
        MultiExitModel.from_backbone(str(tiny_backbone_dir), exit_layers=[1, 4], num_labels=2, method="sweeet")


def test_from_backbone_loads_a_local_checkpoint_and_drops_the_shared_pooler(tiny_backbone_dir):
    model = MultiExitModel.from_backbone(str(tiny_backbone_dir), exit_layers=[1, 2, 4], num_labels=2, method="sweet")
    assert model.backbones[0].pooler is None
    assert not any("pooler" in n for n, _ in model.named_parameters() if n.startswith("backbones"))
    ids = torch.randint(5, 20, (2, 7))
    out = model(input_ids=ids)  # attention_mask and token_type_ids are optional
    assert [tuple(x.shape) for x in out.logits] == [(2, 2)] * 3


@pytest.mark.parametrize("kind", KINDS)
def test_padding_does_not_change_logits(kind):
    model = tiny_model(kind, "early_exit").eval()
    ids = torch.randint(5, 64, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(1, 6, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long)], 1)
    a = model(input_ids=ids).logits
    b = model(input_ids=padded, attention_mask=mask).logits
    for x, y in zip(a, b):
        assert torch.allclose(x, y, atol=1e-5)


def test_mpnet_ignores_token_type_ids():
    model = tiny_model("mpnet", "sweet").eval()
    ids, mask, _ = batch()
    a = model(input_ids=ids, attention_mask=mask).logits
    b = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).logits
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_exit_head_on_a_low_precision_encoder_pools_as_on_its_float32_cast(pooling, low):
    """An encoder cast to bf16/fp16 feeds the float32 head: it pools without a float32 copy of [B, T, d], and the
    pooled vector, logits included, equal bit for bit what the head gives on the hidden state cast to float32."""
    from sweet.modeling.parts import ExitHead

    torch.manual_seed(0)
    head = ExitHead(48, 3, 0.1, pooling, 0.02).eval()
    for b, t in [(1, 1), (5, 7), (64, 53), (3, 130)]:
        hidden = (torch.randn(b, t, 48) * 4).to(low)
        mask = (torch.arange(t)[None, :] < torch.randint(1, t + 1, (b, 1))).long()
        for m in (mask, None):
            logits, pooled = head(hidden, m)
            want_logits, want_pooled = head(hidden.float(), m)
            assert pooled.dtype == torch.float32
            assert torch.equal(pooled, want_pooled) and torch.equal(logits, want_logits)
