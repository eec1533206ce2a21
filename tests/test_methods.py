"""Methods beyond the paper (sweet.methods): name grammar, gradient scaling (alpha = 0 is SWEET and 1 is
Early-Exit, exactly), schedules, self-distillation, and the PCGrad-style conflict projection."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import sweet
from sweet import SweetError
from sweet.gradients import distillation_loss, pcgrad_backward, project_conflicts
from sweet.inference import EarlyExitEngine
from sweet.methods import METHOD_NAMES, check_method, method_label, parse_method
from sweet.modeling import find_layer_list
from sweet.policies import ConfidencePolicy
from sweet.training import TrainConfig, train

from .conftest import batch, tiny_model

KINDS = ["bert", "mpnet", "deberta"]


# ----------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "given_name, canonical",
    [("early_exit", "early_exit"), ("sweet", "sweet"), ("multi_model", "multi_model"), ("pcgrad", "pcgrad"),
     ("grad_scale", "grad_scale@0.5"), ("grad_scale@0.25", "grad_scale@0.25"), ("grad_scale@1", "grad_scale@1"),
     ("sweet_then_ee", "sweet_then_ee@0.5"), ("ee_then_sweet@0.3", "ee_then_sweet@0.3"), ("distill", "distill@1"),
     ("distill@0.50", "distill@0.5"), ("grad_scale_first", "grad_scale_first@0.1"), ("ee_anchor", "ee_anchor@0.5")],
)
def test_method_names_are_canonicalised(given_name, canonical):
    assert check_method(given_name) == canonical
    assert check_method(canonical) == canonical


@pytest.mark.parametrize(
    "bad, message",
    [("foo", "unknown method 'foo'"), ("sweet@1", "takes no parameter"), ("grad_scale@1.5", "ALPHA must lie in [0, 1]"),
     ("grad_scale@x", "must be a number"), ("sweet_then_ee@1", "in (0, 1)"), ("distill@-1", ">= 0"),
     ("grad_scale@nan", "finite"), ("", "must be a name"), ("grad_scale_first@-0.1", "ALPHA must lie in [0, 1]")],
)
def test_bad_method_names_are_clear_errors(bad, message):
    with pytest.raises(SweetError, match=__import__("re").escape(message)):
        parse_method(bad)


def test_every_method_has_a_label_and_builds_a_model():
    labels = set()
    for name in METHOD_NAMES:
        m = tiny_model("bert", name, exit_layers=(1, 2))
        assert m.config.method == check_method(name)
        labels.add(method_label(m.config.method))
    assert len(labels) == len(METHOD_NAMES)


# ------------------------------------------------------------------------------ structure and cost


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_structure_one_backbone_or_one_per_exit(name):
    m = parse_method(name)
    one_per_exit = name == "multi_model"
    assert m.shares_backbone is (not one_per_exit)
    assert m.num_backbones(4) == (4 if one_per_exit else 1)
    assert m.backbone_depths([1, 4, 6, 12]) == ([1, 4, 6, 12] if one_per_exit else [12])
    assert m.exit_costs([1, 4, 6, 12]) == ([1.0, 5.0, 11.0, 23.0] if one_per_exit else [1.0, 4.0, 6.0, 12.0])
    assert m.cost_points_above_one == ((1.375, 1.75) if one_per_exit else ())
    assert (m.gradient_scale() is None) is one_per_exit


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 48), min_size=1, max_size=8, unique=True))
def test_exit_costs_are_the_layers_or_their_running_sum(layers):
    layers = sorted(layers)
    assert parse_method("sweet").exit_costs(layers) == [float(x) for x in layers]
    assert parse_method("multi_model").exit_costs(layers) == np.cumsum(np.asarray(layers, dtype=np.float64)).tolist()


@pytest.mark.parametrize("name", ["early_exit", "multi_model", "grad_scale@0.5"])
def test_models_and_the_engine_follow_the_method_structure(name):
    model = tiny_model("bert", name, exit_layers=(1, 2, 3))
    spec = model.method_spec
    assert len(model.backbones) == spec.num_backbones(model.num_exits)
    assert [len(find_layer_list(bb)) for bb in model.backbones] == spec.backbone_depths(model.exit_layers)
    assert len(model.parameter_groups()) == (1 if spec.shares_backbone else model.num_exits)
    engine = EarlyExitEngine(model, ConfidencePolicy([1.0] * model.num_exits), threshold=0.9)
    assert engine.segmented is spec.shares_backbone


def test_training_time_factor_and_the_alpha_line():
    assert parse_method("multi_model").train_time_factor == 2.2 and parse_method("pcgrad").train_time_factor == 2.8
    assert {parse_method(n).train_time_factor for n in METHOD_NAMES
            if n not in ("multi_model", "pcgrad", "ee_anchor", "own")} == {1.0}
    assert parse_method("own@0.5").train_time_factor > 1.0 and parse_method("own@0").train_time_factor == 1.0
    assert [n for n in METHOD_NAMES if parse_method(n).alpha_is_parameter] == ["grad_scale"]


@pytest.mark.parametrize("name, full", [
    ("early_exit", True), ("pcgrad", True), ("distill", True), ("grad_scale@1", True), ("grad_scale_first@1", True),
    ("sweet", False), ("multi_model", False), ("grad_scale@0.5", False), ("grad_scale_first", False),
    ("sweet_then_ee", False), ("ee_then_sweet", False), ("ee_anchor", False), ("own@0", True), ("own@0.5", False),
])
def test_every_exit_reaches_every_layer(name, full):
    assert parse_method(name).every_exit_reaches_every_layer is full


def _method_name_literal(node) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        name = node.value.partition("@")[0]
        return node.value if name in METHOD_NAMES else None
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return next((x for x in map(_method_name_literal, node.elts) if x), None)
    return None


def test_no_module_but_methods_compares_method_names():
    """Every method-specific question is asked of :class:`sweet.methods.Method`: outside methods.py, no
    ``x == "multi_model"``, ``x in ("sweet", ...)``, ``x.startswith("grad_scale@")`` or ``{"pcgrad": ...}.get(x)``."""
    src = Path(sweet.__file__).parent
    found = []
    for path in sorted(src.rglob("*.py")):
        if path.name == "methods.py" and path.parent == src:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            hit = None
            if isinstance(node, ast.Compare):
                hit = next((x for x in map(_method_name_literal, [node.left, *node.comparators]) if x), None)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in ("startswith", "endswith"):
                    hit = next((x for x in map(_method_name_literal, node.args) if x), None)
                elif node.func.attr == "get" and isinstance(node.func.value, ast.Dict):
                    hit = next((x for x in map(_method_name_literal, node.func.value.keys) if x), None)
            elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Dict):
                hit = next((x for x in map(_method_name_literal, node.value.keys) if x), None)
            if hit:
                found.append(f"{path.relative_to(src)}:{node.lineno}: {hit!r}")
    assert not found, "method names compared outside sweet/methods.py (ask the Method instead):\n" + "\n".join(found)


def test_methods_module_imports_no_torch():
    tree = ast.parse((Path(sweet.__file__).parent / "methods.py").read_text(encoding="utf-8"))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "torch" not in imported


# ------------------------------------------------------------------------------------- gradient scaling


def _grads(model, ids, mask, labels):
    model.zero_grad(set_to_none=True)
    model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    return {n: (None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()}


def _same_weights(method, reference, kind):
    m = tiny_model(kind, method, seed=7)
    m.load_state_dict(reference.state_dict())
    return m


def _assert_grads_equal(a, b):
    assert a.keys() == b.keys()
    for name in a:
        ga, gb = a[name], b[name]
        ga = torch.zeros(1) if ga is None else ga
        gb = torch.zeros(1) if gb is None else gb
        if ga.shape != gb.shape:  # one side had no gradient at all: the other must be exactly zero
            assert float((ga if ga.numel() > 1 else gb).abs().max()) == 0.0, name
            continue
        assert torch.equal(ga, gb), name


@pytest.mark.parametrize("kind", KINDS)
def test_grad_scale_alpha_0_gives_sweets_gradients_and_alpha_1_early_exits(kind):
    ids, mask, labels = batch()
    ref = tiny_model(kind, "early_exit")
    g_ee = _grads(ref, ids, mask, labels)
    g_sw = _grads(_same_weights("sweet", ref, kind), ids, mask, labels)
    _assert_grads_equal(_grads(_same_weights("grad_scale@0", ref, kind), ids, mask, labels), g_sw)
    _assert_grads_equal(_grads(_same_weights("grad_scale@1", ref, kind), ids, mask, labels), g_ee)


@pytest.mark.parametrize("kind", KINDS)
def test_grad_scale_in_between_scales_later_exits_contribution(kind):
    """The gradient of the last exit's loss on the layers below its segment scales by alpha once per
    boundary crossed; layers 5-6 (its own segment) are unscaled; the forward is untouched."""
    ids, mask, labels = batch()
    ref = tiny_model(kind, "early_exit")
    gs = _same_weights("grad_scale@0.5", ref, kind)
    out_ref = ref(input_ids=ids, attention_mask=mask, labels=labels)
    out = gs(input_ids=ids, attention_mask=mask, labels=labels)
    for a, b in zip(out_ref.logits, out.logits):
        assert torch.equal(a, b)
    layer = lambda m, k: dict(m.backbones[0].encoder.layer[k - 1].named_parameters())  # noqa: E731
    grads = []
    for m, o in ((ref, out_ref), (gs, out)):
        m.zero_grad(set_to_none=True)
        o.exit_losses[-1].backward()
        grads.append(m)
    # exits after 1, 2, 4, 6: layers 5-6 are its own segment (x1), 3-4 one boundary below (x0.5), 2 two (x0.25), 1 three
    for k, factor in ((6, 1.0), (5, 1.0), (4, 0.5), (3, 0.5), (2, 0.25), (1, 0.125)):
        a = layer(ref, k)["output.dense.weight"].grad
        b = layer(gs, k)["output.dense.weight"].grad
        assert torch.allclose(b, factor * a, rtol=1e-4, atol=1e-8), (k, factor)


@pytest.mark.parametrize("kind", KINDS)
def test_grad_scale_first_scales_only_the_first_boundary(kind):
    """grad_scale_first@ALPHA: the last exit's gradient reaches layers 2-6 in full (Early-Exit's) and layer 1,
    below the first boundary, times ALPHA; at ALPHA = 1 it is Early-Exit bit for bit."""
    ids, mask, labels = batch()
    ref = tiny_model(kind, "early_exit")
    _assert_grads_equal(_grads(_same_weights("grad_scale_first@1", ref, kind), ids, mask, labels),
                        _grads(ref, ids, mask, labels))
    gs = _same_weights("grad_scale_first@0.25", ref, kind)
    assert gs.boundary_scales == (0.25, 1.0, 1.0)
    out_ref = ref(input_ids=ids, attention_mask=mask, labels=labels)
    out = gs(input_ids=ids, attention_mask=mask, labels=labels)
    for a, b in zip(out_ref.logits, out.logits):
        assert torch.equal(a, b)
    layer = lambda m, k: dict(m.backbones[0].encoder.layer[k - 1].named_parameters())  # noqa: E731
    for m, o in ((ref, out_ref), (gs, out)):
        m.zero_grad(set_to_none=True)
        o.exit_losses[-1].backward()
    for k, factor in ((6, 1.0), (4, 1.0), (3, 1.0), (2, 1.0), (1, 0.25)):
        a = layer(ref, k)["output.dense.weight"].grad
        b = layer(gs, k)["output.dense.weight"].grad
        assert torch.allclose(b, factor * a, rtol=1e-4, atol=1e-8), (k, factor)
    # the first exit's own gradient is untouched
    for m, o in ((ref, ref(input_ids=ids, attention_mask=mask, labels=labels)),
                 (gs, gs(input_ids=ids, attention_mask=mask, labels=labels))):
        m.zero_grad(set_to_none=True)
        o.exit_losses[0].backward()
    assert torch.equal(layer(ref, 1)["output.dense.weight"].grad, layer(gs, 1)["output.dense.weight"].grad)


def test_schedules_switch_between_sweet_and_early_exit():
    ids, mask, labels = batch()
    ref = tiny_model("bert", "early_exit")
    g_ee = _grads(ref, ids, mask, labels)
    g_sw = _grads(_same_weights("sweet", ref, "bert"), ids, mask, labels)
    s2e = _same_weights("sweet_then_ee@0.4", ref, "bert")
    e2s = _same_weights("ee_then_sweet@0.4", ref, "bert")
    for progress, expect_s2e, expect_e2s in ((0.0, g_sw, g_ee), (0.39, g_sw, g_ee), (0.4, g_ee, g_sw), (0.9, g_ee, g_sw)):
        s2e.set_progress(progress)
        e2s.set_progress(progress)
        _assert_grads_equal(_grads(s2e, ids, mask, labels), expect_s2e)
        _assert_grads_equal(_grads(e2s, ids, mask, labels), expect_e2s)


def test_training_drives_the_schedule(monkeypatch):
    """train() tells the model its progress before each step: the first 40% of steps run as SWEET."""
    from sweet.encoding import Collator, Encoded

    seen = []
    model = tiny_model("bert", "sweet_then_ee@0.4", exit_layers=(1, 2), num_labels=2)
    original = type(model).set_progress

    def spy(self, progress):
        original(self, progress)
        seen.append(self.gradient_scale)

    monkeypatch.setattr(type(model), "set_progress", spy)
    enc = Encoded(input_ids=[[2, 5 + i % 7, 6, 3] for i in range(40)], token_type_ids=None, labels=[i % 2 for i in range(40)], n_truncated=0)
    train(model, enc, Collator(0, False), TrainConfig(epochs=1, batch_size=4, seed=0), progress=False)
    assert seen[:-1] == [0.0] * 4 + [1.0] * 6  # 10 steps; then the final set_progress(1.0)
    assert model.gradient_scale == 1.0


# --------------------------------------------------------------------------------------- distillation


def test_distill_loss_is_cross_entropy_plus_weighted_kl_and_spares_the_teacher():
    ids, mask, labels = batch()
    ref = tiny_model("bert", "early_exit")
    kd = _same_weights("distill@0.7", ref, "bert")
    out = kd(input_ids=ids, attention_mask=mask, labels=labels)
    ce = sum(F.cross_entropy(z, labels) for z in out.logits)
    t = 2.0
    teacher = F.softmax(out.logits[-1] / t, -1)
    kl = sum((teacher * (teacher.log() - F.log_softmax(z / t, -1))).sum(-1).mean() for z in out.logits[:-1])
    assert torch.allclose(out.loss, ce + 0.7 * t * t * kl, rtol=1e-5)
    assert distillation_loss(out.logits, 0.0).item() == 0.0
    # the last head is the teacher: its gradient is that of its own cross-entropy alone
    g_ee, g_kd = _grads(ref, ids, mask, labels), _grads(kd, ids, mask, labels)
    for name in g_ee:
        if name.startswith("heads.3."):
            assert torch.equal(g_ee[name], g_kd[name]), name
    assert not torch.equal(g_ee["heads.0.classifier.weight"], g_kd["heads.0.classifier.weight"])


# ------------------------------------------------------------------------------------ conflict projection


def _cos(a, b):
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


def test_projection_removes_a_constructed_conflict():
    g1 = torch.tensor([1.0, 0.0])
    g2 = torch.tensor([-1.0, 1.0])  # cos = -0.707
    (p1, p2), made = project_conflicts([g1, g2])
    assert made == 2
    assert torch.allclose(p1, torch.tensor([0.5, 0.5]))
    assert torch.allclose(p2, torch.tensor([0.0, 1.0]))
    assert abs(_cos(p1, g2)) < 1e-7 and abs(_cos(p2, g1)) < 1e-7  # conflict removed, not reversed
    (q1, q2), made = project_conflicts([g1, torch.tensor([1.0, 1.0])])  # no conflict: untouched
    assert made == 0 and torch.equal(q1, g1)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 5), st.integers(2, 12), st.integers(0, 10_000))
def test_projection_never_increases_the_conflict_it_removes(n, dim, seed):
    """A projection against g_j happens only where g_i' . g_j < 0 and leaves it exactly 0, so after the last
    step of i's order the pair (i, last) has no conflict left, whatever it had before; for two gradients every
    pair ends without conflict; no gradient grows in norm."""
    g = torch.Generator().manual_seed(seed)
    grads = [torch.randn(dim, generator=g, dtype=torch.float64) for _ in range(n)]
    order = [torch.randperm(n, generator=g).tolist() for _ in range(n)]
    out, _ = project_conflicts(grads, order)
    for i in range(n):
        last = [j for j in order[i] if j != i][-1]
        before = float(torch.dot(grads[i], grads[last]))
        after = float(torch.dot(out[i], grads[last]))
        assert after >= min(0.0, before) - 1e-9  # never more conflict than before ...
        assert after >= -1e-9  # ... and none left with the gradient projected against last
        assert float(out[i].norm()) <= float(grads[i].norm()) + 1e-9
    if n == 2:
        assert float(torch.dot(out[0], grads[1])) >= -1e-9 and float(torch.dot(out[1], grads[0])) >= -1e-9


def test_pcgrad_backward_equals_plain_backward_without_conflicts():
    """Two identical losses never conflict: the result is exactly twice one loss's gradient."""
    model = tiny_model("bert", "pcgrad", exit_layers=(1, 2))
    ids, mask, labels = batch()
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    model.zero_grad(set_to_none=True)
    counts = pcgrad_backward((out.exit_losses[1], out.exit_losses[1]), model.gradient_blocks())
    assert counts["projections"] == 0
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    (2 * out.exit_losses[1]).backward()
    for n, p in model.named_parameters():
        if p.grad is None:
            assert n not in got or float(got[n].abs().max()) == 0.0
        else:
            assert torch.allclose(got[n], p.grad, rtol=1e-5, atol=1e-9), n


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_blocks_partition_the_parameters(kind):
    model = tiny_model(kind, "pcgrad")
    ids = [id(p) for b in model.gradient_blocks() for p in b]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))


def test_pcgrad_training_is_deterministic_and_counts_projections():
    from sweet.encoding import Collator, Encoded

    enc = Encoded(input_ids=[[2, 5 + i % 7, 6 + i % 3, 3] for i in range(32)], token_type_ids=None,
                  labels=[i % 2 for i in range(32)], n_truncated=0)
    results = []
    for _ in range(2):
        model = tiny_model("bert", "pcgrad", exit_layers=(1, 2, 3), num_labels=2)
        log = train(model, enc, Collator(0, False), TrainConfig(epochs=1, batch_size=8, seed=3, learning_rate=1e-3),
                    progress=False)
        results.append((log["pcgrad"], [p.detach().clone() for p in model.parameters()]))
    assert results[0][0] == results[1][0] and results[0][0]["pairs"] > 0
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))


# ------------------------------------------------------------------------------------------------- grids


@pytest.mark.slow
def test_grid_specs_take_method_names_with_parameters(tmp_path, tiny_glue_dir):
    from sweet.experiments import spec_from_dict

    from .test_grid_sizes import _cli

    spec = spec_from_dict({"tasks": ["sst2"], "methods": ["early_exit", "grad_scale", "distill@1.0"], "seeds": [0],
                           "learning_rates": [1e-4]})
    assert spec.methods == ["early_exit", "grad_scale@0.5", "distill@1"]
    with pytest.raises(SweetError, match=r"field 'methods': names the same method twice"):
        spec_from_dict({"tasks": ["sst2"], "methods": ["grad_scale", "grad_scale@0.5"], "seeds": [0], "learning_rates": [1e-4]})
    common = ["grid", "--output", str(tmp_path / "g"), "--data-dir", str(tiny_glue_dir), "--tasks", "sst2", "--seeds", "0",
              "--lrs", "1e-3", "--n-train", "50", "--dry-run"]
    p = _cli(*common, "--name", "mine", "--methods", "sweet,grad_scale@0.25,pcgrad")
    assert p.returncode == 0, p.stderr
    assert "grid 'mine': 3 runs (1 tasks x 3 methods" in p.stdout
    p = _cli(*common, "--methods", "sweet,grad_scale@2")
    assert p.returncode == 2 and "field 'methods': method 'grad_scale@2': ALPHA must lie in [0, 1]" in p.stderr


@pytest.mark.parametrize("method", ["grad_scale@0.25", "grad_scale_first@0.1", "pcgrad", "ee_then_sweet@0.3", "distill@2",
                                    "ee_anchor@0.25"])
def test_new_methods_save_and_load_with_their_name(tmp_path, method):
    from sweet import MultiExitModel

    model = tiny_model("mpnet", method, exit_layers=(1, 3))
    model.save_pretrained(tmp_path / "m")
    loaded = MultiExitModel.from_pretrained(tmp_path / "m")
    assert loaded.config.method == method and loaded.method_spec == parse_method(method)
    ids, mask, _ = batch()
    for a, b in zip(model.eval()(input_ids=ids, attention_mask=mask).logits, loaded(input_ids=ids, attention_mask=mask).logits):
        assert torch.equal(a, b)
