"""Reliability: every bad input gets a one-line error and leaves nothing behind; a killed training run
resumes to the same result; reruns are bit-identical; results are written atomically; pickle is refused.

The bad-input cases below are the table in docs/errors.md (case ids are the same)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from sweet.checkpoint import CHECKPOINT_DIR, STATE_NAME, checkpoint_step
from sweet.io import atomic_write_json, read_json
from sweet.runs import RunConfig, run

from .conftest import VOCAB, tiny_config

# The run every case below starts from (and the one that is killed and resumed): a 4-layer tiny BERT with
# dropout (so the RNG state matters on resume), 200 examples, 2 epochs of 13 steps, a checkpoint every 5 steps.
N_TRAIN, EPOCHS, STEPS = 200, 2, 26
KILL_AT_STEP, LAST_CHECKPOINT = 17, 15


@pytest.fixture(scope="module")
def dropout_backbone(tmp_path_factory) -> Path:
    from transformers import BertModel, BertTokenizer

    d = tmp_path_factory.mktemp("tiny-bert-dropout")
    BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)}, do_lower_case=True).save_pretrained(str(d))
    torch.manual_seed(0)
    BertModel(tiny_config("bert", layers=4, vocab_size=len(VOCAB), dropout=0.1)).save_pretrained(str(d))
    return d


def config(backbone, glue, **over) -> RunConfig:
    base = dict(task="sst2", method="sweet", backbone=str(backbone), exit_layers=[1, 2, 4], n_train=N_TRAIN,
                epochs=EPOCHS, learning_rate=3e-3, data_dir=str(glue), checkpoint_every=5)
    return RunConfig(**{**base, **over})


def train_args(backbone, glue, out, /, **over) -> list[str]:
    """`sweet train` arguments equal to :func:`config`; ``over`` replaces options (None drops one)."""
    opts = {"--task": "sst2", "--method": "sweet", "--backbone": str(backbone), "--exit-layers": "1,2,4",
            "--n-train": str(N_TRAIN), "--epochs": str(EPOCHS), "--lr": "3e-3", "--data-dir": str(glue),
            "--output": str(out), "--checkpoint-every": "5"}
    for k, v in over.items():
        opts["--" + k.replace("_", "-")] = v
    args = ["train", "--no-progress"]
    for k, v in opts.items():
        if v is True:
            args.append(k)
        elif v is not None:
            args += [k, v]
    return args


class Crash(Exception):
    """Stands in for a crash inside a run."""


def on_batch(monkeypatch, step: int, action) -> None:
    """Call ``action()`` when the training collator is asked for the batch of ``step`` (1-based): training sees
    its effect after that step (or, for an exception, inside it)."""
    from sweet.encoding import Collator

    original, calls = Collator.__call__, {"n": 0}

    def counting(self, encoded, rows):
        calls["n"] += 1
        if calls["n"] == step:
            action()
        return original(self, encoded, rows)

    monkeypatch.setattr(Collator, "__call__", counting)


def crash_at_step(monkeypatch, step: int) -> None:
    """Make the training collator raise when it is asked for the batch of ``step`` (1-based)."""

    def crash():
        raise Crash(f"simulated crash at step {step}")

    on_batch(monkeypatch, step, crash)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, dropout_backbone, tiny_glue_dir) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    run(config(dropout_backbone, tiny_glue_dir), out, progress=False)
    return out


@pytest.fixture(scope="module")
def unfinished_run(tmp_path_factory, dropout_backbone, tiny_glue_dir) -> Path:
    out = tmp_path_factory.mktemp("unfinished") / "run"
    with pytest.MonkeyPatch.context() as mp:
        crash_at_step(mp, KILL_AT_STEP)
        with pytest.raises(Crash):
            run(config(dropout_backbone, tiny_glue_dir), out, progress=False)
    assert checkpoint_step(out) == (LAST_CHECKPOINT, STEPS)
    return out


def comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "timing"}


def comparable_log(log: dict) -> dict:
    return {k: v for k, v in log.items() if k not in ("seconds", "examples_per_second", "resumed_at_steps", "threads")}


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    # Compare tensors, not file bytes: safetensors writes its metadata map in no fixed order.
    from safetensors.torch import load_file

    return load_file(str(run_dir / "model" / "model.safetensors"))


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def assert_same_result(a: Path, b: Path) -> None:
    """Bit-identical weights, equal metrics (all but wall times) and equal training logs."""
    assert same_weights(a, b)
    assert comparable(read_json(a / "metrics.json")) == comparable(read_json(b / "metrics.json"))
    assert comparable_log(read_json(a / "train_log.json")) == comparable_log(read_json(b / "train_log.json"))


# --------------------------------------------------------------------------------------- the CLI in-process


def cli(args: list[str], stdin: bytes = b"") -> tuple[int, str, str]:
    """Run ``sweet ARGS`` in this process; returns (exit code, stdout, stderr). Any exception other than
    SystemExit propagates, i.e. fails the test: the CLI must turn every bad input into an exit code."""
    import sweet.cli as sweet_cli
    import sweet.cli.base as sweet_cli_base

    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv, sys.stdin, sys.stdout, sys.stderr, warnings.formatwarning
    sys.argv, sys.stdout, sys.stderr = ["sweet", *args], out, err
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    sweet_cli_base.STATE["debug"] = False
    code = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            # as outside pytest, which otherwise records warnings instead of printing them
            warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
                warnings.formatwarning(message, category, filename, lineno, line))
            sweet_cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv, sys.stdin, sys.stdout, sys.stderr, warnings.formatwarning = saved
    return code, out.getvalue(), err.getvalue()


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


class Workspace:
    """A scratch directory with fresh copies of what a case may damage."""

    def __init__(self, root: Path, backbone: Path, glue: Path, finished: Path, unfinished: Path):
        self.root, self.backbone, self._glue, self._finished, self._unfinished = root, backbone, glue, finished, unfinished
        self.out = root / "out"

    def _copy(self, src: Path, name: str) -> Path:
        dst = self.root / name
        if not dst.exists():
            shutil.copytree(src, dst)
        return dst

    @property
    def glue(self) -> Path:
        return self._copy(self._glue, "glue")

    @property
    def run(self) -> Path:
        return self._copy(self._finished, "finished")

    @property
    def unfinished(self) -> Path:
        return self._copy(self._unfinished, "unfinished")

    def train(self, **over) -> list[str]:
        return train_args(self.backbone, self.glue, self.out, **over)

    def sst2_train(self, content: bytes) -> list[str]:
        (self.glue / "SST-2" / "train.tsv").write_bytes(content)
        return self.train()

    def ckpt_weights(self) -> Path:
        state = read_json(self.unfinished / CHECKPOINT_DIR / STATE_NAME)
        return self.unfinished / CHECKPOINT_DIR / state["weights"]["file"]

    def edit_json(self, path: Path, change) -> None:
        data = read_json(path)
        change(data)
        path.write_text(json.dumps(data), encoding="utf-8")


def _truncated_sst2(ws: Workspace) -> list[str]:
    path = ws.glue / "SST-2" / "train.tsv"
    raw = path.read_bytes()
    row_start = raw.rindex(b"\n", 0, len(raw) * 2 // 3) + 1
    return ws.sst2_train(raw[: raw.index(b"\t", row_start) + 5])  # cut inside the sentence of a row


def _pickle_checkpoint(ws: Workspace) -> list[str]:
    weights = ws.ckpt_weights()
    torch.save({"w": torch.zeros(3)}, weights)
    return _resume(ws)


def _pickle_model(ws: Workspace) -> list[str]:
    torch.save({"w": torch.zeros(3)}, ws.run / "model" / "model.safetensors")
    return ["predict", str(ws.run)]


def _only_pickle_weights(ws: Workspace) -> list[str]:
    weights = ws.run / "model" / "model.safetensors"
    torch.save({"w": torch.zeros(3)}, ws.run / "model" / "pytorch_model.bin")
    weights.unlink()
    return ["predict", str(ws.run)]


def _changed_data(ws: Workspace) -> list[str]:
    """Same options (the data directory may move on resume), but the sentences changed."""
    path = ws.glue / "SST-2" / "train.tsv"
    header, *rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
    rows = [header] + [[i, s + " again", y] for i, s, y in rows]
    path.write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")
    return train_args(ws.backbone, ws.glue, ws.unfinished, resume=True)


def after(*steps):
    """Evaluate ``steps`` in order (side effects first) and return the last: the arguments of a case."""
    return steps[-1]


def _resume(ws: Workspace, **over) -> list[str]:
    return train_args(ws.backbone, ws.glue, ws.unfinished, resume=True, **over)


# (case id, setup(ws) -> args or (args, stdin), the message the single error line must contain)
BAD_INPUTS = [
    # data directory and task files
    ("data-dir-missing", lambda ws: ws.train(data_dir=str(ws.root / "absent")), "GLUE data directory not found"),
    ("data-dir-not-given", lambda ws: ws.train(data_dir=None), "no GLUE data directory given"),
    ("task-file-missing", lambda ws: ws.train(task="rte", data_dir=str(ws.root)), "RTE: no training file"),
    ("task-file-empty", lambda ws: ws.sst2_train(b""), "file is empty"),
    ("task-file-header-only", lambda ws: ws.sst2_train(b"idx\tsentence\tlabel\n"), "train.tsv: no rows after the header"),
    ("task-file-truncated", _truncated_sst2, "expected 3 tab-separated fields, found 2"),
    ("task-file-wrong-columns", lambda ws: ws.sst2_train(b"idx\ttext\tlabel\n0\tgood\t1\n"),
     "text column 'sentence' not found; the data has columns: idx, text, label"),
    ("task-file-duplicate-column", lambda ws: ws.sst2_train(b"sentence\tsentence\tlabel\na\tb\t1\n"),
     "column 'sentence' appears more than once (the data has columns: sentence, sentence, label); give each column its own name"),
    ("label-outside-label-set", lambda ws: ws.sst2_train(b"idx\tsentence\tlabel\n0\tfine\t0\n1\tgood\t7\n"),
     "train.tsv: label '7' is not one of sst2's labels (negative, positive, or their positions 0..1)"),
    ("label-unknown-name", lambda ws: ws.sst2_train(b"idx\tsentence\tlabel\n0\tfine\t0\n1\tgood\tneutral\n"),
     "label 'neutral' is not one of sst2's labels"),
    ("text-empty", lambda ws: ws.sst2_train(b"idx\tsentence\tlabel\n0\t\t1\n"),
     "train.tsv: row 1: empty text in column 'sentence'; fix it or pass --drop-invalid to skip the invalid row"),
    ("text-whitespace-only", lambda ws: ws.sst2_train(b"idx\tsentence\tlabel\n0\t \xc2\xa0 \t1\n"),
     "row 1: blank text in column 'sentence' (only spaces or invisible characters)"),
    ("text-zero-width-only", lambda ws: ws.sst2_train("idx\tsentence\tlabel\n0\t\u200b \u200d\t1\n".encode()),
     "row 1: blank text in column 'sentence' (only spaces or invisible characters)"),
    ("non-utf8-bytes", lambda ws: ws.sst2_train(b"idx\tsentence\tlabel\n0\tgood\t1\n1\tcaf\xe9\t0\n"),
     ":3: not valid UTF-8 (byte offset 33, byte 0xe9); re-encode the file as UTF-8"),
    # options
    ("unknown-task", lambda ws: ws.train(task="stsb"), "unknown task 'stsb'; choose one of: sst2, mrpc, cola, mnli, qnli, qqp, rte"),
    ("unknown-method", lambda ws: ws.train(method="fast"), "unknown method 'fast'; choose one of: early_exit, sweet, multi_model"),
    ("method-parameter-out-of-range", lambda ws: ws.train(method="grad_scale@2"),
     "method 'grad_scale@2': ALPHA must lie in [0, 1] (0 = sweet, 1 = early_exit), got 2"),
    ("method-takes-no-parameter", lambda ws: ws.train(method="sweet@0.5"), "method 'sweet' takes no parameter, got 'sweet@0.5'"),
    ("method-switch-point-out-of-range", lambda ws: ws.train(method="ee_anchor@1"),
     "method 'ee_anchor@1': the switch point F is a fraction of training in (0, 1), got 1"),
    ("method-parameter-not-a-number", lambda ws: ws.train(method="ee_anchor@half"),
     "method 'ee_anchor@half': the parameter after '@' must be a number, got 'half'"),
    ("method-own-rho-out-of-range", lambda ws: ws.train(method="own@1.5"),
     "method 'own@1.5': RHO is the owned fraction of heads and FFN units, in [0, 1] (0 = early_exit), got 1.5"),
    ("exit-layers-not-increasing", lambda ws: ws.train(exit_layers="1,3,2"), "exit layers must be strictly increasing, got [1, 3, 2]"),
    ("exit-layers-repeated", lambda ws: ws.train(exit_layers="1,2,2,4"), "strictly increasing"),
    ("exit-layers-above-depth", lambda ws: ws.train(exit_layers="1,2,9"), "exit layers must lie in 1..4 (the backbone's depth), got [1, 2, 9]"),
    ("exit-layers-zero", lambda ws: ws.train(exit_layers="0,2,4"), "exit layers must lie in 1..4"),
    ("exit-layers-empty", lambda ws: ws.train(exit_layers=","), "exit layers are empty"),
    ("exit-layers-not-integers", lambda ws: ws.train(exit_layers="1,a"), "--exit-layers must be comma-separated integers"),
    ("exit-layers-short-of-depth", lambda ws: ws.train(exit_layers="1,2"), "the last exit layer is 2 but the backbone has 4 layers"),
    ("learning-rate-zero", lambda ws: ws.train(lr="0"), "learning rate must be a positive number, got 0.0"),
    ("learning-rate-negative", lambda ws: ws.train(lr="-1e-5"), "learning rate must be a positive number, got -1e-05"),
    ("learning-rate-nan", lambda ws: ws.train(lr="nan"), "learning rate must be a positive number, got nan"),
    ("train-sample-size-zero", lambda ws: ws.train(n_train="0"), "train-sample size (--n-train) must be positive, got 0"),
    ("train-sample-size-negative", lambda ws: ws.train(n_train="-5"), "train-sample size (--n-train) must be positive, got -5"),
    ("epochs-zero", lambda ws: ws.train(epochs="0"), "epochs must be positive, got 0"),
    ("batch-size-zero", lambda ws: ws.train(batch_size="0"), "batch size must be positive, got 0"),
    ("max-length-too-small", lambda ws: ws.train(max_length="4"), "max length must be at least 8 tokens, got 4"),
    ("seed-negative", lambda ws: ws.train(seed="-1"), "seed must be a non-negative integer, got -1"),
    ("unknown-pooling", lambda ws: ws.train(pooling="max"), "unknown pooling 'max'; choose one of: auto, cls, mean"),
    ("unknown-data-source", lambda ws: ws.train(data_source="ftp"), "unknown data source 'ftp'; use 'local' or 'hub'"),
    ("backbone-dir-missing", lambda ws: ws.train(backbone=str(ws.root / "no-model")), "backbone directory not found"),
    ("checkpoint-every-negative", lambda ws: ws.train(checkpoint_every="-1"), "--checkpoint-every must be 0"),
    ("option-value-not-a-number", lambda ws: ws.train(lr="fast"), "Invalid value for '--lr'"),
    ("unknown-option", lambda ws: ws.train(speed="11"), "No such option: --speed"),
    ("unknown-command", lambda ws: ["frobnicate"], "No such command 'frobnicate'"),
    # output and run directories
    ("output-is-a-file", lambda ws: after((ws.root / "f").write_text("x"), ws.train(output=str(ws.root / "f"))),
     "exists and is not a directory"),
    ("output-not-a-run-directory", lambda ws: ws.train(output=str(ws.glue)), "is not empty and is not a sweet run directory"),
    ("output-holds-finished-run", lambda ws: ws.train(output=str(ws.run)), "already holds a finished run; pass --overwrite"),
    ("output-holds-unfinished-run", lambda ws: ws.train(output=str(ws.unfinished)),
     f"holds an unfinished run (checkpoint at step {LAST_CHECKPOINT} of {STEPS}); pass --resume"),
    ("resume-and-overwrite", lambda ws: _resume(ws, overwrite=True), "pass only one of them"),
    ("resume-not-a-run-directory", lambda ws: ws.train(resume=True), "nothing to resume"),
    ("resume-finished-run", lambda ws: ws.train(output=str(ws.run), resume=True), "there is nothing to resume"),
    ("resume-with-other-options", lambda ws: _resume(ws, lr="1e-3"),
     "it was started with learning_rate=0.003 (now 0.001); pass the same options"),
    ("resume-with-other-data", _changed_data, "was made for a different training setup (the training data (token ids or labels) changed)"),
    ("checkpoint-weights-missing", lambda ws: after(ws.ckpt_weights().unlink(), _resume(ws)), "is missing; delete"),
    ("checkpoint-weights-truncated", lambda ws: after(ws.ckpt_weights().write_bytes(ws.ckpt_weights().read_bytes()[:1000]),
                                                      _resume(ws)), "is truncated or damaged (1000 bytes, expected"),
    ("checkpoint-weights-pickle", _pickle_checkpoint, "is a pickle (torch.save) file, not safetensors; sweet never loads pickle"),
    ("checkpoint-names-pickle-file", lambda ws: after(ws.edit_json(ws.unfinished / CHECKPOINT_DIR / STATE_NAME,
                                                                   lambda s: s["weights"].update(file="optimizer.pt")),
                                                      _resume(ws)), "only a .safetensors file"),
    ("checkpoint-state-unknown-keys", lambda ws: after(ws.edit_json(ws.unfinished / CHECKPOINT_DIR / STATE_NAME,
                                                                    lambda s: s.update(momentum=0.9)),
                                                       _resume(ws)), "has unknown key(s): momentum"),
    ("checkpoint-state-damaged", lambda ws: after((ws.unfinished / CHECKPOINT_DIR / STATE_NAME).write_text('{"step": 1'),
                                                  _resume(ws)), "not valid JSON"),
    ("run-dir-not-a-run", lambda ws: ["evaluate", str(ws.glue)], "is not a sweet run directory (run_config.json is missing)"),
    ("run-dir-missing", lambda ws: ["predict", str(ws.root / "nowhere")], "does not exist"),
    ("run-dir-unfinished", lambda ws: ["evaluate", str(ws.unfinished), "--no-progress"],
     "is an unfinished run (it has no model/ yet)"),
    ("run-config-unknown-keys", lambda ws: after(ws.edit_json(ws.run / "run_config.json", lambda c: c.update(dropout=0.3)),
                                                 ["evaluate", str(ws.run)]), "run_config.json: run config has unknown key(s): dropout"),
    ("run-config-damaged", lambda ws: after((ws.run / "run_config.json").write_text('{"task": "sst2", "meth'),
                                            ["evaluate", str(ws.run)]), "run_config.json: not valid JSON"),
    ("model-config-unknown-keys", lambda ws: after(ws.edit_json(ws.run / "model" / "sweet_config.json",
                                                                lambda c: c.update(speed=2)),
                                                   ["predict", str(ws.run)]), "sweet_config.json: model config has unknown key(s): speed"),
    ("model-config-damaged", lambda ws: after((ws.run / "model" / "sweet_config.json").write_text("{"),
                                              ["predict", str(ws.run)]), "sweet_config.json: not valid JSON"),
    ("model-weights-missing", lambda ws: after((ws.run / "model" / "model.safetensors").unlink(), ["predict", str(ws.run)]),
     "weights file model.safetensors is missing"),
    ("model-weights-truncated", lambda ws: after((ws.run / "model" / "model.safetensors").write_bytes(
        (ws.run / "model" / "model.safetensors").read_bytes()[:5000]), ["predict", str(ws.run)]), "not a readable safetensors file"),
    ("model-weights-pickle-only", _only_pickle_weights, "(found pytorch_model.bin: pickle files are never loaded)"),
    ("model-weights-are-pickle", _pickle_model, "is a pickle (torch.save) file, not safetensors"),
    ("model-config-num-labels-edited", lambda ws: after(ws.edit_json(ws.run / "model" / "sweet_config.json",
                                                                     lambda c: c.update(num_labels=3, temperatures=None)),
                                                        ["predict", str(ws.run)]), "does not match sweet_config.json (size mismatch"),
    ("num-labels-model-vs-data", lambda ws: after(ws.edit_json(ws.run / "run_config.json", lambda c: c.update(task="mnli")),
                                                  ["evaluate", str(ws.run)]), "the model has 2 labels but task mnli has 3"),
    ("num-labels-model-vs-predict-task", lambda ws: ["predict", str(ws.run), "--task", "mnli"],
     "the model has 2 labels but task mnli has 3; pass the task it was trained on (sst2)"),
    ("evaluate-file-missing", lambda ws: ["evaluate", str(ws.run), "--file", str(ws.root / "mine.tsv")], "mine.tsv: file not found"),
    ("evaluate-file-bad-label", lambda ws: after((ws.root / "mine.tsv").write_text("sentence\tlabel\ngood\t5\n"),
                                                 ["evaluate", str(ws.run), "--file", str(ws.root / "mine.tsv")]),
     "mine.tsv: label '5' is not one of sst2's labels (negative, positive, or their positions 0..1)"),
    ("evaluate-file-no-header", lambda ws: after((ws.root / "mine.tsv").write_text("a gripping film\t1\nflat and dull\t0\n"),
                                                 ["evaluate", str(ws.run), "--file", str(ws.root / "mine.tsv")]),
     "mine.tsv: text column 'sentence' not found; the data has columns: a gripping film, 1"),
    ("evaluate-data-bad-split", lambda ws: ["evaluate", str(ws.run), "--data", str(ws.glue / "SST-2"), "--eval-split", "test"],
     "SST-2: no file for split 'test' (expected test.csv, test.tsv, test.json, test.jsonl or test.parquet); the folder has splits: dev, train"),
    ("evaluate-eval-split-without-data", lambda ws: ["evaluate", str(ws.run), "--eval-split", "dev"],
     "--data-config and --eval-split choose the split of --data; give --data SOURCE with them"),
    # predict
    ("predict-input-empty", lambda ws: (["predict", str(ws.run)], b""), "predict input is empty"),
    ("predict-input-blank-lines", lambda ws: (["predict", str(ws.run)], b" \n\t\n\n"), "predict input is empty"),
    ("predict-input-zero-width-lines", lambda ws: (["predict", str(ws.run)], "\u200b\n \u2060\n".encode()),
     "predict input is empty"),
    ("predict-input-file-missing", lambda ws: ["predict", str(ws.run), "--input", str(ws.root / "in.txt")], "input file not found"),
    ("predict-input-non-utf8", lambda ws: (["predict", str(ws.run)], b"good film\ncaf\xe9\n"),
     "standard input:2: not valid UTF-8 (byte offset 13, byte 0xe9)"),
    ("predict-input-wrong-field-count", lambda ws: (["predict", str(ws.run)], b"good\tfilm\n"),
     "input line 1: sst2 expects 1 tab-separated text(s) (sentence), found 2"),
    ("predict-pair-with-empty-text", lambda ws: (["predict", str(ws.run), "--task", "rte"], b"a film\t \n"),
     "input line 1: empty text in a pair"),
    ("predict-pair-with-zero-width-text", lambda ws: (["predict", str(ws.run), "--task", "rte"], "a film\t\u200b\n".encode()),
     "input line 1: empty text in a pair"),
    ("threshold-above-one", lambda ws: (["predict", str(ws.run), "--threshold", "1.5"], b"good\n"),
     "threshold must be a number in [0, 1], got 1.5"),
    ("threshold-negative", lambda ws: (["predict", str(ws.run), "--threshold", "-0.1"], b"good\n"),
     "threshold must be a number in [0, 1], got -0.1"),
    ("threshold-nan", lambda ws: (["predict", str(ws.run), "--threshold", "nan"], b"good\n"), "threshold must be a number in [0, 1], got nan"),
    ("unknown-policy", lambda ws: (["predict", str(ws.run), "--policy", "fastest"], b"good\n"),
     "unknown exit policy 'fastest'; choose one of: confidence, entropy, patience, learned"),
    ("learned-policy-without-predictors", lambda ws: ["evaluate", str(ws.run), "--policy", "learned"],
     "this model has no learning-to-exit predictors: train it with 'sweet train ... --learn-exit'"),
    ("predict-unknown-format", lambda ws: (["predict", str(ws.run), "--format", "xml"], b"good\n"), "--format must be tsv or jsonl"),
    # your own data: the options (the data itself: tests/test_sources.py, docs/errors.md "Your own data (--data)")
    ("no-task-no-data", lambda ws: ["train", "-m", "sweet", "-o", str(ws.out)],
     "give a GLUE task preset (--task, one of: sst2, mrpc, cola, mnli, qnli, qqp, rte) or your own data (--data FILE, FOLDER or HUB_ID)"),
    ("data-options-without-data", lambda ws: [*ws.train(), "--label-column", "y"],
     "--eval-data, --data-config, --train-split, --eval-split, --text-column(s), --label-column and --drop-invalid describe --data; give --data too"),
    ("text-column-and-text-columns", lambda ws: ["train", "-m", "sweet", "-o", str(ws.out), "--data",
                                                 str(ws.glue / "SST-2" / "train.tsv"), "--text-column", "a", "--text-columns", "a,b"],
     "give --text-column (single texts) or --text-columns A,B (pairs), not both"),
    ("unknown-metric", lambda ws: [*ws.train(), "--metric", "auc"], "unknown metric 'auc'; choose one of: accuracy, f1_macro, f1, mcc"),
    ("positive-label-without-f1", lambda ws: ["train", "-m", "sweet", "-o", str(ws.out), "--data",
                                              str(ws.glue / "SST-2" / "train.tsv"), "--positive-label", "1"],
     "--positive-label goes with --metric f1 (binary F1 of that class)"),
    ("f1-with-three-classes", lambda ws: ["train", "-m", "sweet", "-o", str(ws.out), "--data",
                                          str(ws.glue / "MNLI" / "train_pool.tsv"), "--metric", "f1"],
     "--metric f1 is the binary F1 of one class and needs 2 classes, but the data has 3; use --metric f1_macro"),
    ("positive-label-not-a-class", lambda ws: ["train", "-m", "sweet", "-o", str(ws.out), "--data",
                                               str(ws.glue / "SST-2" / "train.tsv"), "--metric", "f1", "--positive-label", "7"],
     "--positive-label '7' is not a class of the data; its classes are: 0, 1"),
    ("evaluate-overwrite-with-file", lambda ws: ["evaluate", str(ws.run), "--file", str(ws.glue / "SST-2" / "dev.tsv"), "--overwrite"],
     "--overwrite replaces the run's own results in metrics.json; it does not apply to --data/--file"),
    ("predict-output-without-input", lambda ws: ["predict", str(ws.run), "--output", str(ws.root / "scored.csv")],
     "--output needs --input FILE (.csv, .tsv, .jsonl or .parquet); standard input is read as lines"),
]


@pytest.fixture
def workspace(tmp_path, dropout_backbone, tiny_glue_dir, finished_run, unfinished_run, monkeypatch) -> Workspace:
    monkeypatch.delenv("SWEET_GLUE_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return Workspace(tmp_path, dropout_backbone, tiny_glue_dir, finished_run, unfinished_run)


def test_there_are_at_least_30_distinct_cases_and_docs_list_them_all():
    ids = [case[0] for case in BAD_INPUTS]
    assert len(ids) == len(set(ids)) >= 30
    table = (Path(__file__).parents[1] / "docs" / "errors.md").read_text(encoding="utf-8")
    assert [i for i in ids if f"`{i}`" not in table] == []


@pytest.mark.parametrize("case, setup, message", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gives_one_line_error_and_leaves_nothing_behind(workspace, case, setup, message):
    made = setup(workspace)
    args, stdin = made if isinstance(made, tuple) else (made, b"")
    before = snapshot(workspace.root)
    code, out, err = cli(args, stdin)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], lines[0]
    assert "Traceback" not in err and out == ""
    assert snapshot(workspace.root) == before  # no partial result: nothing created, changed or removed


def test_debug_shows_the_traceback(workspace):
    with pytest.raises(Exception, match="unknown method 'fast'"):
        cli(["--debug", *workspace.train(method="fast")])


@pytest.mark.slow
def test_user_errors_from_a_real_process(tmp_path, tiny_glue_dir):
    """The same contract at the process level: exit code 2, one line, no traceback, nothing written."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "sweet.cli", "train", "--task", "sst2", "--method", "sweet", "--lr", "-1",
                        "--data-dir", str(tiny_glue_dir), "--output", str(out)], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 2 and r.stderr == "error: learning rate must be a positive number, got -1.0\n"
    assert not out.exists()
    r = subprocess.run([sys.executable, "-m", "sweet.cli", "predict", str(tmp_path), "--threshold", "x"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Invalid value for '--threshold'" in r.stderr


# ------------------------------------------------------------------------------------ long texts: truncate


def test_far_too_long_text_is_truncated_and_reported_once(workspace):
    path = workspace.glue / "SST-2" / "train.tsv"
    header, *rows = path.read_text(encoding="utf-8").splitlines()
    long_text = " ".join(["good film"] * 15_000)  # 150k characters: beyond csv's default field limit as well
    rows = [f"{i}\t{long_text}\t1" if i % 4 == 0 else row for i, row in enumerate(rows)]
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    code, _, err = cli(workspace.train(max_length="32", epochs="1", n_train="40"))
    assert code == 0, err
    # (40 examples x 1 epoch cannot calibrate: its temperature warnings are tested in test_calibration.py)
    notes = [line for line in err.splitlines() if line.strip() and "temperature fitted at its" not in line]
    assert len(notes) == 1 and notes[0].startswith("warning: ") and "longer than 32 tokens and were truncated" in notes[0]
    n_train = read_json(workspace.out / "train_log.json")["n_truncated"]
    assert 0 < n_train < 40 and f"(train sample {n_train}/40, calibration " in notes[0], notes

    code, out, err = cli(["predict", str(workspace.run)], stdin=f"{long_text}\nbad film\n{long_text}\n".encode())
    assert code == 0 and len(out.splitlines()) == 3
    assert [line for line in err.splitlines() if line.strip()] == [  # 256 capped at the backbone's 64 positions
        "warning: 2 of 3 examples in 'input' are longer than 64 tokens and were truncated"]


# -------------------------------------------------------------------------------------------- resume


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from sweet.encoding import Collator
    original, calls = Collator.__call__, [0]
    def counting(self, encoded, rows):
        calls[0] += 1
        if calls[0] == int(os.environ["KILL_AT_STEP"]):
            os.kill(os.getpid(), signal.SIGKILL)   # no cleanup of any kind, as with kill -9 or an OOM kill
        return original(self, encoded, rows)
    Collator.__call__ = counting
    from sweet.cli import main
    sys.argv = ["sweet", *sys.argv[1:]]
    main()
""")


@pytest.mark.slow
def test_killed_training_resumes_and_ends_as_an_uninterrupted_run(tmp_path, dropout_backbone, tiny_glue_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "KILL_AT_STEP": str(KILL_AT_STEP)}

    def sweet(*args, kill=False):
        cmd = [sys.executable, "-c", KILL_SCRIPT, *args] if kill else [sys.executable, "-m", "sweet.cli", *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)

    reference, resumed = tmp_path / "uninterrupted", tmp_path / "killed"
    r = sweet(*train_args(dropout_backbone, tiny_glue_dir, reference, checkpoint_every="0"))
    assert r.returncode == 0, r.stderr
    assert not (reference / CHECKPOINT_DIR).exists()

    r = sweet(*train_args(dropout_backbone, tiny_glue_dir, resumed), kill=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert not (resumed / "metrics.json").exists()
    assert checkpoint_step(resumed) == (LAST_CHECKPOINT, STEPS)  # steps 16 and 17 were lost with the process
    assert sorted(p.name for p in (resumed / CHECKPOINT_DIR).iterdir()) == [STATE_NAME, f"step-{LAST_CHECKPOINT:07d}.safetensors"]

    r = sweet(*train_args(dropout_backbone, tiny_glue_dir, resumed))  # without --resume: refused, untouched
    assert r.returncode == 2 and "pass --resume to continue it" in r.stderr
    r = sweet(*train_args(dropout_backbone, tiny_glue_dir, resumed, resume=True))
    assert r.returncode == 0, r.stderr
    assert f"from its checkpoint at step {LAST_CHECKPOINT} of {STEPS}" in r.stderr
    assert read_json(resumed / "train_log.json")["resumed_at_steps"] == [LAST_CHECKPOINT]
    # the summary counts the training done before the kill in the total too: total >= training time
    timing = read_json(resumed / "metrics.json")["timing"]
    assert timing["total_seconds"] >= timing["train_seconds"] and timing["seconds_before_resume"] > 0
    assert "before the resume" in r.stdout
    assert not (resumed / CHECKPOINT_DIR).exists()  # removed once the run finished
    assert_same_result(reference, resumed)


def test_crash_while_writing_a_checkpoint_leaves_the_previous_one(tmp_path, dropout_backbone, tiny_glue_dir,
                                                                  finished_run, monkeypatch):
    """The third checkpoint's weights are written, then the process dies before state.json is replaced:
    the second checkpoint (step 10) is still complete, and resuming from it gives the same result."""
    import sweet.checkpoint as ckpt

    out = tmp_path / "run"
    real_write, saves = ckpt.atomic_write_json, []

    def dying_write(path, obj):
        saves.append(obj["step"])
        if len(saves) == 3:
            raise Crash("died while writing a checkpoint")
        return real_write(path, obj)

    monkeypatch.setattr(ckpt, "atomic_write_json", dying_write)
    with pytest.raises(Crash):
        run(config(dropout_backbone, tiny_glue_dir), out, progress=False)
    assert checkpoint_step(out) == (10, STEPS)
    assert (out / CHECKPOINT_DIR / "step-0000015.safetensors").is_file()  # written, but no state.json names it
    monkeypatch.setattr(ckpt, "atomic_write_json", real_write)
    run(config(dropout_backbone, tiny_glue_dir), out, progress=False, resume=True)
    assert read_json(out / "train_log.json")["resumed_at_steps"] == [10]
    assert_same_result(finished_run, out)


def test_crash_after_training_resumes_without_training_again(tmp_path, dropout_backbone, tiny_glue_dir, finished_run,
                                                             monkeypatch):
    import sweet.runs

    out = tmp_path / "run"
    def dies(*args, **kwargs):
        raise Crash("calibration")

    monkeypatch.setattr(sweet.runs, "fit_temperatures", dies)
    with pytest.raises(Crash):
        run(config(dropout_backbone, tiny_glue_dir), out, progress=False)
    assert checkpoint_step(out) == (STEPS, STEPS) and not (out / "metrics.json").exists()
    monkeypatch.undo()
    run(config(dropout_backbone, tiny_glue_dir), out, progress=False, resume=True)
    assert read_json(out / "train_log.json")["resumed_at_steps"] == [STEPS]
    assert_same_result(finished_run, out)


@pytest.mark.parametrize("method", ["early_exit", "multi_model", "pcgrad", "sweet_then_ee@0.5"])
def test_every_method_resumes_to_the_uninterrupted_result(tmp_path, dropout_backbone, tiny_glue_dir, monkeypatch, method):
    reference, out = tmp_path / "reference", tmp_path / "crashed"
    run(config(dropout_backbone, tiny_glue_dir, method=method, checkpoint_every=0), reference, progress=False)
    with monkeypatch.context() as mp:
        crash_at_step(mp, KILL_AT_STEP)
        with pytest.raises(Crash):
            run(config(dropout_backbone, tiny_glue_dir, method=method), out, progress=False)
    run(config(dropout_backbone, tiny_glue_dir, method=method), out, progress=False, resume=True)
    assert read_json(out / "train_log.json")["resumed_at_steps"] == [LAST_CHECKPOINT]
    assert_same_result(reference, out)


def test_resume_restores_the_rng_state(tmp_path, dropout_backbone, tiny_glue_dir, finished_run, unfinished_run,
                                       monkeypatch):
    """Guard against a test that cannot fail: with the dropout RNG state not restored, the resumed run differs."""
    import sweet.checkpoint as ckpt

    out = tmp_path / "run"
    shutil.copytree(unfinished_run, out)
    monkeypatch.setattr(ckpt.torch, "set_rng_state", lambda state: None)
    run(config(dropout_backbone, tiny_glue_dir), out, progress=False, resume=True)
    assert not same_weights(finished_run, out)


def test_resume_without_a_checkpoint_starts_over(tmp_path, dropout_backbone, tiny_glue_dir, finished_run):
    out = tmp_path / "run"
    out.mkdir()
    atomic_write_json(out / "run_config.json", {**config(dropout_backbone, tiny_glue_dir).to_dict(), "environment": {}})
    with pytest.warns(UserWarning, match="has no checkpoint yet; training starts from the beginning"):
        run(config(dropout_backbone, tiny_glue_dir), out, progress=False, resume=True)
    assert_same_result(finished_run, out)


# ------------------------------------------------------------------------------------------ determinism


def test_two_runs_with_the_same_seed_are_bit_identical(tmp_path, dropout_backbone, tiny_glue_dir, finished_run):
    again = tmp_path / "again"
    run(config(dropout_backbone, tiny_glue_dir, checkpoint_every=0), again, progress=False)
    assert_same_result(finished_run, again)
    other = tmp_path / "other-seed"
    run(config(dropout_backbone, tiny_glue_dir, seed=1), other, progress=False)
    assert not same_weights(other, again)


# ---------------------------------------------------------------------------------------- atomic results


def test_a_crash_during_a_json_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"auc": 1.0})

    def dies(fd):
        raise Crash("power cut")

    monkeypatch.setattr(os, "fsync", dies)  # the new content is in the temporary file, not yet renamed
    with pytest.raises(Crash):
        atomic_write_json(target, {"auc": 2.0, "curve": list(range(10_000))})
    monkeypatch.undo()
    assert read_json(target) == {"auc": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)


def test_a_run_that_crashed_is_not_a_finished_run(tmp_path, dropout_backbone, tiny_glue_dir, monkeypatch):
    """metrics.json is written last: a run that dies while evaluating has none, and every command that reads
    runs treats it as unfinished."""
    import sweet.evaluation

    out = tmp_path / "run"
    real = sweet.evaluation.evaluate_logits
    calls = []

    def dies_on_second_call(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise Crash("evaluation")
        return real(*a, **k)

    monkeypatch.setattr(sweet.runs, "evaluate_logits", dies_on_second_call)
    with pytest.raises(Crash):
        run(config(dropout_backbone, tiny_glue_dir), out, progress=False)
    assert (out / "model" / "model.safetensors").is_file() and not (out / "metrics.json").exists()
    assert not [p for p in out.rglob("*.tmp")]
    code, _, err = cli(train_args(dropout_backbone, tiny_glue_dir, out))
    assert code == 2 and "holds an unfinished run" in err
