"""Explicit segment functions (sweet.modeling.segments): the same exit representations and logits as the model's own
forward, for BERT, MPNet and DeBERTa-v2, with padding."""

from __future__ import annotations

import pytest
import torch

from sweet.errors import SweetError
from sweet.modeling import FirstSegmentModule, SegmentModule, SegmentRunner

from .conftest import padded_batch, tiny_config, tiny_model


KINDS = ["bert", "mpnet", "deberta", "deberta-conv"]


def _model(kind, method, exit_layers=(1, 2, 4, 6)):
    """The tiny models of conftest, plus a DeBERTa-v2 with its convolution after layer 1 (as DeBERTa-v2-xlarge)."""
    if kind != "deberta-conv":
        return tiny_model(kind, method, exit_layers=exit_layers).eval()
    from sweet import MultiExitConfig, MultiExitModel

    torch.manual_seed(0)
    hf = tiny_config("deberta", layers=max(exit_layers)).to_dict()
    hf.update(conv_kernel_size=3, conv_act="gelu")
    cfg = MultiExitConfig(method=method, exit_layers=list(exit_layers), num_labels=3, backbone="tiny-deberta-conv",
                          backbone_config=hf)
    model = MultiExitModel(cfg).eval()
    assert model.backbones[0].encoder.conv is not None
    return model


def _exit_representations(model, ids, mask):
    """What the model's forward hands each exit head (the evaluation path)."""
    captured = []
    with torch.no_grad(), model._exit_hooks(captured):
        last = model.backbones[0](**model._backbone_kwargs(ids, mask, None)).last_hidden_state
    return [*captured, last]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["early_exit", "sweet"])
def test_segments_equal_the_model_exit_representations(kind, method):
    model = _model(kind, method, exit_layers=(1, 3, 4, 6))
    ids, mask = padded_batch(n=8, width=12)
    expected = _exit_representations(model, ids, mask)
    runner = SegmentRunner(model)
    assert runner.segments == [(0, 1), (1, 3), (3, 4), (4, 6)]
    with torch.no_grad():
        hidden = runner.embed(ids, mask)
        for s, want in enumerate(expected):
            hidden = runner.run(s, hidden, mask)
            real = mask.bool()  # padded positions are not compared: they are masked out of everything downstream
            torch.testing.assert_close(hidden[real], want[real], rtol=1e-5, atol=1e-5)
        logits = model(input_ids=ids, attention_mask=mask).logits
    # the exit heads read the same thing, so they give the same logits
    with torch.no_grad():
        hidden = runner.embed(ids, mask)
        for s in range(len(runner.segments)):
            hidden = runner.run(s, hidden, mask)
            torch.testing.assert_close(model.heads[s](hidden, mask)[0], logits[s], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_segment_modules_equal_the_model_logits(kind):
    model = _model(kind, "early_exit")
    ids, mask = padded_batch(n=6, width=10, seed=3)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        expected = _exit_representations(model, ids, mask)
        runner = SegmentRunner(model)
        hidden, lg = FirstSegmentModule(runner)(ids, mask)
        torch.testing.assert_close(lg, logits[0], rtol=1e-5, atol=1e-5)
        for s in range(1, model.num_exits):
            hidden, lg = SegmentModule(runner, s)(hidden, mask)
            torch.testing.assert_close(lg, logits[s], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(hidden[mask.bool()], expected[s][mask.bool()], rtol=1e-5, atol=1e-5)


def test_segment_modules_register_what_they_use():
    model = _model("deberta-conv", "early_exit")
    runner = SegmentRunner(model)
    first, second = FirstSegmentModule(runner), SegmentModule(runner, 1)
    assert "conv" in first.shared and "conv" not in second.shared  # DeBERTa-v2's conv follows layer 1 only
    assert "rel_embeddings" in first.shared and "rel_embeddings" in second.shared
    assert len(second.layers) == 1 and second.head is model.heads[1]
    mpnet = SegmentRunner(tiny_model("mpnet", "early_exit"))
    assert "relative_attention_bias" in SegmentModule(mpnet, 2).shared


def test_segments_with_token_type_ids_equal_the_model():
    model = tiny_model("bert", "early_exit").eval()
    ids, mask = padded_batch(n=6, width=10, seed=4)
    tt = torch.zeros_like(ids)
    tt[:, 5:] = 1
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, token_type_ids=tt).logits
        _, lg = FirstSegmentModule(SegmentRunner(model))(ids, mask, tt)
    torch.testing.assert_close(lg, logits[0], rtol=1e-5, atol=1e-5)


def test_unsupported_models_are_refused_with_a_clear_error():
    mm = tiny_model("bert", "multi_model")
    assert not SegmentRunner.supports(mm)
    with pytest.raises(SweetError, match="one model per exit"):
        SegmentRunner(mm)
    model = tiny_model("bert", "early_exit")
    assert SegmentRunner.supports(model)
    model.backbones[0].config.model_type = "some-encoder"  # what an encoder family we do not know looks like
    assert not SegmentRunner.supports(model)
    with pytest.raises(SweetError, match="supports bert, mpnet, deberta-v2 encoders, not some-encoder"):
        SegmentRunner(model)
    with pytest.raises(SweetError, match="segment 0"):
        SegmentModule(SegmentRunner(tiny_model("bert", "sweet")), 0)


def test_segment_errors_are_listed_in_the_error_table_verbatim():
    from pathlib import Path

    table = (Path(__file__).parents[1] / "docs" / "errors.md").read_text(encoding="utf-8")
    unknown = tiny_model("bert", "early_exit")
    unknown.backbones[0].config.model_type = "some-encoder"
    cases = [lambda: SegmentRunner(tiny_model("bert", "multi_model")), lambda: SegmentRunner(unknown),
             lambda: SegmentModule(SegmentRunner(tiny_model("bert", "sweet")), 0)]
    for case in cases:
        with pytest.raises(SweetError) as info:
            case()
        assert f"`{info.value}`" in table, str(info.value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bert_sdpa_mask_view_gives_the_layers_the_same_outputs_as_the_models_mask(dtype):
    """BERT under SDPA: the [B, 1, 1, T] padding-mask view (None without padding) that SegmentRunner builds gives every
    layer exactly the outputs of the [B, 1, T, T] mask transformers' create_bidirectional_mask builds; tracing (the
    ONNX export) still gets the model's own mask."""
    from transformers.masking_utils import create_bidirectional_mask

    model = _model("bert", "early_exit")
    model.backbones[0].to(dtype)
    runner = SegmentRunner(model)
    config = runner.backbone.config
    assert config._attn_implementation == "sdpa"
    ids, mask = padded_batch()
    assert not bool(mask.all())
    with torch.no_grad():
        hidden = runner.embed(ids, mask)
        view = runner._bert_mask(hidden, mask)
        full = create_bidirectional_mask(config=config, inputs_embeds=hidden, attention_mask=mask)
        assert view.shape == (ids.shape[0], 1, 1, ids.shape[1]) and full.shape[-2:] == (ids.shape[1], ids.shape[1])
        a = b = hidden
        for layer in runner.layers:
            a, b = layer(a, view), layer(b, full)
            a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
            assert torch.equal(a, b)
        ones = torch.ones_like(mask)
        assert runner._bert_mask(hidden, ones) is None
        assert create_bidirectional_mask(config=config, inputs_embeds=hidden, attention_mask=ones) is None
        traced = []
        torch.jit.trace(lambda h, m: traced.append(runner._bert_mask(h, m)) or h, (hidden, mask), check_trace=False)
        assert traced[0].shape[-2:] == (ids.shape[1], ids.shape[1])  # the model's own [B, 1, T, T] mask
