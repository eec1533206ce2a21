"""Integration on the real packaged backbone (all-MiniLM-L6-v2, 6 layers): seconds, not minutes."""

from __future__ import annotations

import pytest
import torch

from sweet import MultiExitModel
from sweet.backbones import resolve_backbone, resolve_pooling
from sweet.io import read_json
from sweet.runs import RunConfig, run

pytestmark = pytest.mark.slow


def test_default_backbone_is_packaged_and_declares_mean_pooling():
    path = resolve_backbone("default")
    assert path.endswith("model")
    assert resolve_pooling("auto", path) == "mean"


def test_sweet_isolation_on_the_real_backbone():
    from transformers import AutoTokenizer

    model = MultiExitModel.from_backbone("default", exit_layers=[1, 2, 4, 6], num_labels=2, method="sweet")
    tok = AutoTokenizer.from_pretrained(resolve_backbone("default"))
    enc = tok(["a gripping, beautiful film", "dull and lifeless"], padding=True, return_tensors="pt")
    out = model(**enc, labels=torch.tensor([1, 0]))
    model.zero_grad()
    out.exit_losses[1].backward()  # exit after layer 2: reaches layer 2 only
    layers = model.backbones[0].encoder.layer
    assert model.backbones[0].embeddings.word_embeddings.weight.grad is None
    assert layers[0].output.dense.weight.grad is None
    assert layers[1].output.dense.weight.grad.abs().sum() > 0
    assert layers[2].output.dense.weight.grad is None


def test_run_end_to_end_on_a_small_sst2_sample(tmp_path, tiny_glue_dir):
    cfg = RunConfig(task="sst2", method="early_exit", n_train=64, epochs=1, data_dir=str(tiny_glue_dir),
                    calibration_size=40)
    metrics = run(cfg, tmp_path / "run", progress=False)
    assert [p["exit_layer"] for p in metrics["evaluation"]["per_exit"]] == [1, 2, 4, 6]
    assert metrics["evaluation"]["curve"][0]["cost_ratio"] == pytest.approx(1 / 6)
    cfg_saved = read_json(tmp_path / "run" / "model" / "sweet_config.json")
    assert cfg_saved["pooling"] == "mean" and cfg_saved["backbone"] == "default"
    loaded = MultiExitModel.from_pretrained(tmp_path / "run" / "model")
    assert loaded.config.temperatures == metrics["calibration"]["temperatures"]
