"""Training: it learns, it is deterministic, and Multi-Model models are clipped independently."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from sweet import MultiExitModel, SweetError
from sweet.encoding import Collator, encode
from sweet.data import load_task, make_splits
from sweet.evaluation import collect_logits, per_exit_scores
from sweet.training import TrainConfig, seed_everything, train


def _setup(tiny_backbone_dir, tiny_glue_dir, method, seed=0):
    tok = AutoTokenizer.from_pretrained(str(tiny_backbone_dir))
    splits = make_splits(load_task("sst2", tiny_glue_dir), 400, seed=seed)
    seed_everything(seed)
    model = MultiExitModel.from_backbone(str(tiny_backbone_dir), exit_layers=[1, 2, 4], num_labels=2, method=method)
    collator = Collator(tok.pad_token_id, True)
    return model, encode(tok, splits.train, 32), encode(tok, splits.evaluation, 32), collator


@pytest.mark.parametrize("method", ["early_exit", "sweet", "multi_model"])
def test_every_exit_learns_a_learnable_task(tiny_backbone_dir, tiny_glue_dir, method):
    model, enc_train, enc_eval, collator = _setup(tiny_backbone_dir, tiny_glue_dir, method)
    log = train(model, enc_train, collator, TrainConfig(learning_rate=3e-3, epochs=3, batch_size=16), progress=False)
    first, last = log["log"][0]["exit_losses"], log["log"][-1]["exit_losses"]
    assert all(b < a for a, b in zip(first, last))
    scores = per_exit_scores(collect_logits(model, enc_eval, collator, progress=False), enc_eval.labels, "accuracy")
    assert min(scores) > 80.0, scores


def test_same_seed_gives_bit_identical_weights(tiny_backbone_dir, tiny_glue_dir):
    states = []
    for _ in range(2):
        model, enc_train, _, collator = _setup(tiny_backbone_dir, tiny_glue_dir, "sweet", seed=5)
        train(model, enc_train, collator, TrainConfig(learning_rate=1e-3, epochs=1, seed=5), progress=False)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    model, enc_train, _, collator = _setup(tiny_backbone_dir, tiny_glue_dir, "sweet", seed=6)
    train(model, enc_train, collator, TrainConfig(learning_rate=1e-3, epochs=1, seed=6), progress=False)
    assert not all(torch.equal(states[0][k], model.state_dict()[k]) for k in states[0])


def test_multi_model_members_are_trained_as_if_alone(tiny_backbone_dir, tiny_glue_dir):
    """With clipping per model, member 0 of a Multi-Model ends up exactly as a 1-layer model trained
    alone with the same seed would, although its siblings have much larger gradients."""
    mm, enc_train, _, collator = _setup(tiny_backbone_dir, tiny_glue_dir, "multi_model")
    alone, _, _, _ = _setup(tiny_backbone_dir, tiny_glue_dir, "multi_model")
    alone_first = MultiExitModel(alone.config.__class__(**{**alone.config.to_dict(), "exit_layers": [1, 4],
                                                            "allow_partial_depth": False}))
    # Build "alone" as the first member only: copy its initial weights, train it with the same batches.
    alone_first.backbones[0].load_state_dict(mm.backbones[0].state_dict())
    alone_first.heads[0].load_state_dict(mm.heads[0].state_dict())
    cfg = TrainConfig(learning_rate=1e-3, epochs=1, max_grad_norm=0.01)
    torch.manual_seed(0)
    train(mm, enc_train, collator, cfg, progress=False)
    train(alone_first, enc_train, collator, cfg, progress=False)
    for (k, a), b in zip(mm.backbones[0].state_dict().items(), alone_first.backbones[0].state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"learning_rate": 0.0}, "learning rate must be a positive"),
        ({"learning_rate": -1e-5}, "learning rate must be a positive"),
        ({"learning_rate": float("nan")}, "learning rate must be a positive"),
        ({"epochs": 0}, "epochs must be positive"),
        ({"batch_size": 0}, "batch size must be positive"),
    ],
)
def test_bad_hyper_parameters_are_refused(kwargs, message):
    with pytest.raises(SweetError, match=message):
        TrainConfig(**kwargs)
