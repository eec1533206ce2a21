"""Devices and precisions: option parsing and errors, bf16/int8 close to fp32, SWEET's isolation under autocast,
bf16 training learns, is bit-identical on rerun and resumes exactly, the autocast trap, the engine's decisions at
each precision, CUDA where present."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from sweet import SweetError
from sweet.encoding import Collator, Encoded
from sweet.evaluation import collect_logits
from sweet.inference import EarlyExitEngine
from sweet.modeling import find_layer_list
from sweet.policies import ConfidencePolicy, decide
from sweet.precision import (Placement, int8_plan, native_bf16, placement, prepare_for_inference, resolve_device,
                             resolve_precision)
from sweet.training import TrainConfig, train

from .conftest import padded_batch, tiny_model
from .test_reliability import Crash, assert_same_result, config, crash_at_step, dropout_backbone  # noqa: F401
from .test_training import _setup

CPU = torch.device("cpu")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


# ----------------------------------------------------------------------------------------- options and errors


def test_auto_device_and_precision_follow_the_hardware():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("CPU") == CPU
    assert resolve_precision("auto", CPU) == ("bf16" if native_bf16(CPU) else "fp32")
    assert resolve_precision("auto", CPU, training=True) == "fp32"  # bf16 CPU training is opt-in (parity)
    assert resolve_precision("int8", CPU) == "int8"
    assert placement("cpu", "fp32").to_dict()["precision"] == "fp32"


@pytest.mark.parametrize("device, precision, training, message", [
    ("tpu", "fp32", False, "unknown device 'tpu'"),
    ("cpu", "fp8", False, "unknown precision 'fp8'"),
    ("cpu", "int8", True, "int8 is for inference only"),
    ("cpu", "fp16", False, "fp16 is not supported on the CPU"),
    ("cpu", "fp16", True, "fp16 is not supported on the CPU"),
])
def test_bad_device_or_precision_is_a_one_line_error(device, precision, training, message):
    with pytest.raises(SweetError, match=message) as info:
        placement(device, precision, training=training)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_refused(device):
    with pytest.raises(SweetError, match="no CUDA GPU"):
        resolve_device(device)


def test_bf16_without_native_support_warns_but_runs():
    if native_bf16(CPU):
        assert resolve_precision("bf16", CPU) == "bf16"
    else:
        with pytest.warns(UserWarning, match="no native bf16"):
            assert resolve_precision("bf16", CPU) == "bf16"


@pytest.mark.slow
def test_cli_refuses_a_precision_before_doing_anything(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "sweet.cli", "train", "--task", "sst2", "--method", "sweet", "--output",
                        str(out), "--precision", "int8"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: unknown precision 'int8' (int8 is for inference only")
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


# ----------------------------------------------------------------------------------------- inference precisions


@pytest.mark.parametrize("kind", ["bert", "mpnet", "deberta"])
@pytest.mark.parametrize("precision, atol", [("bf16", 0.08), ("int8", 0.08)])
def test_low_precision_logits_are_close_to_fp32(kind, precision, atol):
    model = tiny_model(kind, "early_exit", num_labels=2).eval()
    ids, mask = padded_batch()
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits
    low = prepare_for_inference(model, Placement(CPU, precision), copy_model=True)
    assert next(low.heads.parameters()).dtype == torch.float32  # heads stay float32
    if precision == "bf16":
        assert next(low.backbones[0].parameters()).dtype == torch.bfloat16
    else:
        assert any("quantized" in type(m).__module__ for m in low.backbones[0].modules())
    with torch.no_grad():
        got = low(input_ids=ids, attention_mask=mask).logits
    for a, b in zip(ref, got):
        assert b.dtype == torch.float32
        assert torch.allclose(a, b, atol=atol), (a - b).abs().max()
        assert not torch.equal(a, b)  # it really computed in another precision


@pytest.mark.parametrize("kind", ["bert", "mpnet", "deberta"])
def test_int8_rule_per_channel_weights_and_fp32_ffn_down_projections(kind):
    """The int8 rule (sweet.precision.int8_plan): every Linear of the encoder is dynamically quantized with one
    weight scale per output channel, except each layer's FFN down-projection (``layer.N.output.dense`` in these
    three families), which stays a float32 nn.Linear with its weights untouched; the heads stay float32."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    model = tiny_model(kind, "early_exit", num_labels=2).eval()
    plan = int8_plan(model.backbones[0])
    n_layers = len(find_layer_list(model.backbones[0]))
    kept = sorted(name for name, how in plan.items() if how == "fp32")
    assert kept == sorted(f"encoder.layer.{i}.output.dense" for i in range(n_layers))
    assert sum(how == "int8" for how in plan.values()) >= 5 * n_layers  # q, k, v, attention output, FFN up
    low = prepare_for_inference(model, Placement(CPU, "int8"), copy_model=True)
    modules = dict(low.backbones[0].named_modules())
    for name, how in plan.items():
        if how == "int8":
            assert isinstance(modules[name], DynamicLinear), name
            weight = modules[name].weight()
            assert weight.qscheme() == torch.per_channel_affine and weight.dtype == torch.qint8, name
            assert weight.q_per_channel_scales().numel() == weight.shape[0]
        else:
            assert type(modules[name]) is torch.nn.Linear, name
            original = dict(model.backbones[0].named_modules())[name]
            assert torch.equal(modules[name].weight, original.weight)
    assert all(type(m) is torch.nn.Linear for m in low.heads.modules() if isinstance(m, torch.nn.Linear))


def _with_ffn_outliers(model, factor=50.0):
    """Give every layer one feed-forward channel with very large activations, as trained BERT-style encoders have
    (the down-projection scaled to compensate, so fp32 computes about the same function)."""
    with torch.no_grad():
        for layer in find_layer_list(model.backbones[0]):
            up, down = layer.intermediate.dense, layer.output.dense
            up.weight[0] *= factor
            up.bias[0] = (up.bias[0] + 5.0) * factor
            down.weight[:, 0] /= factor
    for h in model.heads:
        torch.nn.init.normal_(h.classifier.weight, std=2.0)
    return model


@pytest.mark.parametrize("kind", ["bert", "mpnet", "deberta"])
def test_int8_rule_is_robust_to_ffn_activation_outliers(kind):
    """With an outlier channel in the feed-forward activations, quantizing every Linear per tensor (torch's plain
    dynamic quantization, sweet's rule before) moves the logits by several hundredths and flips decisions; the
    rule keeps every exit's logits within 1e-2 of fp32 and every decision equal."""
    from torch.ao.quantization import quantize_dynamic

    model = _with_ffn_outliers(tiny_model(kind, "early_exit", num_labels=2, seed=1).eval())
    ids, mask = padded_batch(64, 14, seed=4)
    plain = prepare_for_inference(model, Placement(CPU, "fp32"), copy_model=True)
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore")
        plain.backbones[0] = quantize_dynamic(plain.backbones[0], {torch.nn.Linear}, dtype=torch.qint8)
    low = prepare_for_inference(model, Placement(CPU, "int8"), copy_model=True)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits
        old = plain(input_ids=ids, attention_mask=mask).logits
        new = low(input_ids=ids, attention_mask=mask).logits
    for r, o, n in zip(ref, old, new):
        assert (n - r).abs().max() < 1e-2 and torch.equal(n.argmax(1), r.argmax(1))
        assert (o - r).abs().max() > 1e-2  # the outliers do hurt per-tensor quantization of every Linear
        assert (n - r).abs().max() < (o - r).abs().max() / 5


def _encoded(n=150, width=14, seed=3):
    ids, mask = padded_batch(n, width, seed)
    rows = [ids[r, : int(mask[r].sum())].tolist() for r in range(n)]
    return Encoded(rows, None, None, 0), Collator(0, False)


@pytest.mark.parametrize("kind", ["bert", "mpnet", "deberta"])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
@pytest.mark.parametrize("method", ["sweet", "multi_model"])
def test_engine_decisions_equal_the_evaluation_path_at_each_precision(kind, precision, method):
    """The engine re-batches the rows that reach each segment (other partners, other padding); its decisions
    must still be those of the evaluation path (all exits for every row) at the same precision."""
    model = tiny_model(kind, method, num_labels=2, seed=1).eval()
    for h in model.heads:
        torch.nn.init.normal_(h.classifier.weight, std=2.0)
    model = prepare_for_inference(model, Placement(CPU, precision))
    encoded, collator = _encoded()
    logits = collect_logits(model, encoded, collator, batch_size=16, progress=False)
    policy = ConfidencePolicy([1.0, 1.2, 0.8, 1.0])
    seen = set()
    for t in np.linspace(0.5, 1.0, 11)[1:]:
        chosen, preds, conf = decide(policy, logits, float(t))
        for sort in (True, False):
            res = EarlyExitEngine(model, policy, float(t)).predict(encoded, collator, batch_size=16, sort_by_length=sort,
                                                            window_batches=4)
            if precision == "int8":
                # dynamic quantization scales activations per batch, so a row's numbers depend a little on its
                # batch partners, which the engine changes: near-threshold rows may decide differently
                same = chosen == res.exit_index
                assert same.mean() >= 0.95 and (preds == res.label).mean() >= 0.95, (t, sort)
                assert np.allclose(conf[same], res.score[same], atol=0.03)
                continue
            assert np.array_equal(chosen, res.exit_index), (t, sort)
            assert np.array_equal(preds, res.label), (t, sort)
            # bf16 rounds differently in other batch shapes: the same decisions, scores equal to bf16 accuracy
            assert np.allclose(conf, res.score, atol=1e-5 if precision == "fp32" else 1e-2)
        seen |= set(chosen.tolist())
    assert seen == {0, 1, 2, 3}


@pytest.mark.parametrize("kind", ["bert", "deberta"])
def test_engine_keeps_batches_full_at_every_depth(kind):
    """Segment batches are refilled from the queue: a later layer runs ceil(rows that reached it / batch size)
    times, each batch full but the last one."""
    model = tiny_model(kind, "early_exit", num_labels=2).eval()
    for h in model.heads:
        torch.nn.init.normal_(h.classifier.weight, std=2.0)
    encoded, collator = _encoded(n=150)
    sizes = {j: [] for j in range(6)}
    layers = find_layer_list(model.backbones[0])
    hooks = [layer.register_forward_hook(lambda m, a, o, j=j: sizes[j].append((o if torch.is_tensor(o) else o[0]).shape[0]))
             for j, layer in enumerate(layers)]
    res = EarlyExitEngine(model, ConfidencePolicy(), 0.8).predict(encoded, collator, batch_size=16, window_batches=100)
    for h in hooks:
        h.remove()
    counts = np.bincount(res.exit_index, minlength=4)
    reached = {0: 150, 1: 150 - counts[0], 2: 150 - counts[:2].sum(), 4: 150 - counts[:3].sum()}
    assert 0 < reached[4] < reached[1] < 150
    for layer, n in reached.items():
        assert sum(sizes[layer]) == n
        assert sizes[layer][:-1] == [16] * (len(sizes[layer]) - 1)  # all full but the last


# ----------------------------------------------------------------------------------------- training precisions


def _grads_of_first_layer_from_exit(model, ids, mask, labels, exit_index, precision):
    model.zero_grad(set_to_none=True)
    with Placement(CPU, precision).autocast():
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
    out.exit_losses[exit_index].backward()
    layer0 = find_layer_list(model.backbones[0])[0]
    return [p.grad for p in layer0.parameters()], [p.grad for p in model.backbones[0].embeddings.parameters()]


@pytest.mark.parametrize("kind", ["bert", "mpnet", "deberta"])
def test_sweet_isolation_is_exact_under_autocast(kind):
    from .conftest import batch

    model = tiny_model(kind, "sweet", exit_layers=(1, 2, 4, 6), num_labels=3)
    ids, mask, labels = batch()
    for e in (1, 2, 3):  # later exits send nothing to layer 1 or the embeddings
        layer, emb = _grads_of_first_layer_from_exit(model, ids, mask, labels, e, "bf16")
        assert all(g is None or torch.count_nonzero(g) == 0 for g in layer + emb), e
    layer, emb = _grads_of_first_layer_from_exit(model, ids, mask, labels, 0, "bf16")
    assert any(g is not None and torch.count_nonzero(g) > 0 for g in layer)
    ee = tiny_model(kind, "early_exit", exit_layers=(1, 2, 4, 6), num_labels=3)
    layer, _ = _grads_of_first_layer_from_exit(ee, ids, mask, labels, 3, "bf16")
    assert any(g is not None and torch.count_nonzero(g) > 0 for g in layer)  # the check can fail


def test_bf16_training_learns_and_is_bit_identical_on_rerun(tiny_backbone_dir, tiny_glue_dir):
    from sweet.evaluation import per_exit_scores

    states = []
    for _ in range(2):
        model, enc_train, enc_eval, collator = _setup(tiny_backbone_dir, tiny_glue_dir, "sweet", seed=3)
        log = train(model, enc_train, collator, TrainConfig(learning_rate=3e-3, epochs=3, seed=3, precision="bf16"),
                    progress=False)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    assert log["precision"] == "bf16"
    assert all(v.dtype == torch.float32 for v in states[0].values() if v.is_floating_point())  # fp32 master weights
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    scores = per_exit_scores(collect_logits(model, enc_eval, collator, progress=False), enc_eval.labels, "accuracy")
    assert min(scores) > 80.0, scores
    fp32, enc_train, _, collator = _setup(tiny_backbone_dir, tiny_glue_dir, "sweet", seed=3)
    train(fp32, enc_train, collator, TrainConfig(learning_rate=3e-3, epochs=3, seed=3), progress=False)
    assert not all(torch.equal(states[0][k], fp32.state_dict()[k]) for k in states[0])  # bf16 really was used


def test_the_autocast_trap_cannot_freeze_training(tiny_backbone_dir, tiny_glue_dir):
    """torch's autocast caches its casts of the weights until the outermost context exits. One context around
    a whole training loop therefore runs every Linear layer with the first step's weights (shown here in plain
    torch); sweet's trainer enters its own context per step with the cache off, so it learns either way."""
    model, enc_train, enc_eval, collator = _setup(tiny_backbone_dir, tiny_glue_dir, "early_exit")
    batch = collator(enc_train, np.arange(16))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    probe = torch.randn(4, model.heads[-1].classifier.in_features)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the trap, in plain torch
        before = model.heads[-1].classifier(probe).detach().clone()
        model(**batch).loss.backward()
        opt.step()
        stale = model.heads[-1].classifier(probe).detach()
    assert torch.equal(before, stale)  # the Linear weights changed, the forward did not see it
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fresh = model.heads[-1].classifier(probe).detach()
    assert not torch.equal(before, fresh)

    from sweet.evaluation import per_exit_scores

    states = []
    for outer in (torch.autocast("cpu", dtype=torch.bfloat16), torch.autocast("cpu", enabled=False)):
        model, enc_train, enc_eval, collator = _setup(tiny_backbone_dir, tiny_glue_dir, "sweet", seed=3)
        with outer:  # a user wrapping sweet's trainer the same way (or not)
            train(model, enc_train, collator, TrainConfig(learning_rate=3e-3, epochs=3, seed=3, precision="bf16"),
                  progress=False)
        states.append(model.state_dict())
        scores = per_exit_scores(collect_logits(model, enc_eval, collator, progress=False), enc_eval.labels, "accuracy")
        assert min(scores) > 80.0, scores
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])  # the outer context changed nothing


def test_fp32_training_ignores_an_outer_autocast(tiny_backbone_dir, tiny_glue_dir):
    states = []
    for wrap in (False, True):
        model, enc_train, _, collator = _setup(tiny_backbone_dir, tiny_glue_dir, "sweet", seed=2)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if wrap else torch.autocast("cpu", enabled=False)
        with ctx:
            train(model, enc_train, collator, TrainConfig(learning_rate=1e-3, epochs=1, seed=2), progress=False)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_bf16_run_resumes_to_the_uninterrupted_result(tmp_path, dropout_backbone, tiny_glue_dir, monkeypatch):
    from sweet.io import read_json
    from sweet.runs import run

    reference, out = tmp_path / "reference", tmp_path / "crashed"
    run(config(dropout_backbone, tiny_glue_dir, precision="bf16", device="cpu", checkpoint_every=0), reference,
        progress=False)
    with monkeypatch.context() as mp:
        crash_at_step(mp, 17)
        with pytest.raises(Crash):
            run(config(dropout_backbone, tiny_glue_dir, precision="bf16", device="cpu"), out, progress=False)
    run(config(dropout_backbone, tiny_glue_dir, precision="bf16", device="cpu"), out, progress=False, resume=True)
    assert_same_result(reference, out)
    assert read_json(out / "run_config.json")["placement"]["precision"] == "bf16"
    assert read_json(out / "metrics.json")["placement"]["train"]["precision"] == "bf16"
    assert read_json(out / "train_log.json")["precision"] == "bf16"


# ----------------------------------------------------------------------------------------- CUDA (where present)


@cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_training_and_engine(tiny_backbone_dir, tiny_glue_dir, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    model, enc_train, enc_eval, collator = _setup(tiny_backbone_dir, tiny_glue_dir, "sweet")
    model.to("cuda")
    log = train(model, enc_train, collator, TrainConfig(learning_rate=3e-3, epochs=2, precision=precision),
                progress=False)
    assert log["device"].startswith("cuda") and log["precision"] == precision
    model = prepare_for_inference(model, Placement(torch.device("cuda"), precision))
    logits = collect_logits(model, enc_eval, collator, progress=False)
    policy = ConfidencePolicy()
    chosen, preds, _ = decide(policy, logits, 0.8)
    res = EarlyExitEngine(model, policy, 0.8).predict(enc_eval, collator, batch_size=16)
    assert np.array_equal(chosen, res.exit_index) and np.array_equal(preds, res.label)


AVX2_CPUINFO = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma
processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma
"""
AMX_CPUINFO = """model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8 avx_vnni
"""


def test_cpu_kind_reads_model_and_the_features_that_decide_precision():
    from sweet.precision import cpu_kind, describe_cpu

    avx2 = cpu_kind(AVX2_CPUINFO)
    assert avx2["model"] == "AMD EPYC 7B13" and avx2["features"] == ["avx2"]
    amx = cpu_kind(AMX_CPUINFO)
    assert amx["features"] == ["amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2"]
    # native bf16 is torch's answer for this process, never read from the flags
    assert avx2["native_bf16"] == amx["native_bf16"] == native_bf16(CPU)
    assert describe_cpu({**avx2, "native_bf16": False}) == "AMD EPYC 7B13 (avx2; native bf16: no)"
    assert describe_cpu({"model": "x", "features": [], "native_bf16": True}) == "x (features unknown; native bf16: yes)"
    assert cpu_kind("")["features"] == []  # no /proc/cpuinfo (macOS, Windows): no features, still a model name
