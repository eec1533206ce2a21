"""Training twice at the same time, with the same seed and thread count, ends in bit-identical weights.

Each training runs in its own process (a tiny random BERT, 2 torch threads, 12 steps), both started
together so that they compete for the cores, as runs do on a shared machine. Two CPU ops of a training step
(LayerNorm and softmax backward) sum per-thread partial results, so the weights depend on how many threads
each parallel region really gets (see :mod:`sweet.training`). That number is ``torch.get_num_threads()``
unless the OpenMP runtime adjusts it (``OMP_DYNAMIC``): the second test makes GNU OpenMP want fewer threads
(the process may only use one CPU) and checks that training still computes with the 2 it reports. Without
:func:`sweet.training.fixed_thread_team` that test fails (69 of 81 tensors differ, by up to 2e-8).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .conftest import tiny_model


TRAIN = r"""
import json, os, sys
out, threads, cpus = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if cpus:  # before torch (and its OpenMP runtime) is loaded
    os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
import torch
from safetensors.torch import save_file
from transformers import BertConfig
from sweet import MultiExitConfig, MultiExitModel
from sweet.encoding import Collator, Encoded
from sweet.training import TrainConfig, train

torch.set_num_threads(threads)
g = torch.Generator().manual_seed(0)
rows = [torch.randint(5, 64, (int(torch.randint(6, 24, (1,), generator=g)),), generator=g).tolist() for _ in range(192)]
encoded = Encoded([[2, *r, 3] for r in rows], None, [int(sum(r) % 2) for r in rows], 0)
backbone = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                      max_position_embeddings=64, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
torch.manual_seed(0)
model = MultiExitModel(MultiExitConfig(method="sweet", exit_layers=[1, 2, 4], num_labels=2, backbone="tiny-bert",
                                       backbone_config=backbone.to_dict()))
log = train(model, encoded, Collator(0, False), TrainConfig(learning_rate=1e-3, epochs=1, seed=3), progress=False)
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, "model.safetensors"))
with open(os.path.join(out, "log.json"), "w") as fh:
    json.dump(log, fh)
"""


def _train_concurrently(tmp_path: Path, variants: dict[str, dict]) -> dict[str, tuple[dict, dict]]:
    """Start one training process per variant at once; wait for all. Returns name -> (weights, train log)."""
    procs = {}
    for name, v in variants.items():
        out = tmp_path / name
        out.mkdir()
        # threads that sleep while they wait (instead of spinning) make 2-thread training on a busy machine ~50x
        # faster here; how the threads wait does not change what they compute
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", **v.get("env", {})}
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1] / "src"), env.get("PYTHONPATH", "")])
        procs[name] = (out, subprocess.Popen(
            [sys.executable, "-c", TRAIN, str(out), "2", v.get("cpus", "")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    results = {}
    for name, (out, proc) in procs.items():
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, output[-3000:]
        results[name] = (load_file(str(out / "model.safetensors")), json.loads((out / "log.json").read_text()))
    return results


def _can_pin_one_cpu() -> bool:
    from sweet.training import _openmp_runtime

    return hasattr(os, "sched_setaffinity") and _openmp_runtime() is not None


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    """Two plain trainings and (Linux, OpenMP runtime found) one with ``OMP_DYNAMIC=true`` on a single CPU, all
    three at the same time."""
    variants = {"a": {}, "b": {}}
    if _can_pin_one_cpu():
        variants["dynamic"] = {"env": {"OMP_DYNAMIC": "true"}, "cpus": str(sorted(os.sched_getaffinity(0))[0])}
    return _train_concurrently(tmp_path_factory.mktemp("concurrent"), variants)


def _assert_bit_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    differ = {k: float((a[k] - b[k]).abs().max()) for k in a if not torch.equal(a[k], b[k])}
    assert not differ, f"{len(differ)} of {len(a)} tensors differ, by up to {max(differ.values()):.1e}"


# The two tests below share one fixture: three fresh processes importing torch, all at once (~12 s on a busy
# 2-core machine).
@pytest.mark.slow
def test_two_concurrent_trainings_end_bit_identical(trained):
    (wa, la), (wb, lb) = trained["a"], trained["b"]
    assert la["threads"] == lb["threads"] == 2
    assert all(entry["threads"] == 2 for entry in la["log"])
    _assert_bit_identical(wa, wb)
    assert la["log"] == lb["log"]


@pytest.mark.slow
def test_openmp_dynamic_thread_adjustment_does_not_change_the_weights(trained):
    """With ``OMP_DYNAMIC=true`` GNU OpenMP sizes each parallel region from the CPUs the process may use and the
    load average: here one CPU, so it would run every region with 1 thread while torch reports 2, and the weights
    would differ (as they did before training turned the adjustment off: sweet.training.fixed_thread_team)."""
    if "dynamic" not in trained:
        pytest.skip("needs os.sched_setaffinity (Linux) and torch's OpenMP runtime, to turn its adjustment off")
    (w_plain, l_plain), (w_dyn, l_dyn) = trained["a"], trained["dynamic"]
    assert l_plain["threads"] == l_dyn["threads"] == 2
    _assert_bit_identical(w_plain, w_dyn)
    assert l_dyn["openmp_dynamic_off"] and not l_plain["openmp_dynamic_off"]


def test_fixed_thread_team_restores_the_openmp_setting():
    from sweet.training import _openmp_runtime, fixed_thread_team

    omp = _openmp_runtime()
    if omp is None:
        pytest.skip("torch's OpenMP runtime was not found")
    before = omp.omp_get_dynamic()
    omp.omp_set_dynamic(1)
    try:
        with fixed_thread_team() as team:
            assert omp.omp_get_dynamic() == 0
            assert team == {"threads": torch.get_num_threads(), "openmp_dynamic_off": True}
        assert omp.omp_get_dynamic() == 1
    finally:
        omp.omp_set_dynamic(before)


def test_resuming_with_another_thread_count_warns(tmp_path):
    """The log records each entry's thread count; a run resumed with another count says that its weights will
    not be those of an uninterrupted run."""
    from sweet.encoding import Collator, Encoded
    from sweet.checkpoint import Checkpointer
    from sweet.training import TrainConfig, train


    encoded = Encoded([[2, 5 + i % 7, 6 + i % 5, 3] for i in range(32)], None, [i % 2 for i in range(32)], 0)
    config = TrainConfig(epochs=1, batch_size=8, log_every=2)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        log = train(tiny_model("bert", "sweet", num_labels=2), encoded, Collator(0, False), config, progress=False,
                    checkpointer=Checkpointer(tmp_path / "ckpt", every=2))
        assert [e["threads"] for e in log["log"]] == [1, 1]
        torch.set_num_threads(2)
        with pytest.warns(UserWarning, match="resuming at step 4 with 2 torch thread"):
            train(tiny_model("bert", "sweet", num_labels=2), encoded, Collator(0, False), config, progress=False,
                  checkpointer=Checkpointer(tmp_path / "ckpt", every=2), resume=True)
    finally:
        torch.set_num_threads(before)
