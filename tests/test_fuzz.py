"""Property-based tests (hypothesis) of what takes outside input: the TSV and predict-input readers, the CLI
argument parser, and the cost accounting over random exit ladders, logits and thresholds.

No deadline: the machine these run on is small and shared, and a slow example is not a wrong one."""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sweet import SweetError
from sweet.cost import cost_ratio, exit_costs, threshold_grid
from sweet.data import get_task, read_task_file, read_unlabelled
from sweet.policies import ConfidencePolicy, decide

FUZZ = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
CLI_FUZZ = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])

SST2, RTE = get_task("sst2"), get_task("rte")
# Command-line arguments cannot hold NUL bytes, and text we are given is valid Unicode (no lone surrogates).
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def assert_one_line(exc: SweetError) -> None:
    assert str(exc).strip() and "\n" not in str(exc)


# ----------------------------------------------------------------------------------------- data readers

CELL = st.one_of(st.sampled_from(["0", "1", "2", "-1", "positive", "negative", "", " ", "good film", "a\tb"]), TEXT)
HEADER = st.lists(st.sampled_from(["idx", "sentence", "label", "sentence1", "sentence2", "text", "label "]), max_size=5)


@FUZZ
@given(header=HEADER, rows=st.lists(st.lists(CELL, max_size=5), max_size=6), raw=st.none() | st.binary(max_size=64),
       newline=st.sampled_from(["\n", "\r\n"]), task=st.sampled_from([SST2, RTE]))
def test_tsv_reader_gives_valid_examples_or_one_clear_error(scratch, header, rows, raw, newline, task):
    path = scratch / "train.tsv"
    if raw is not None:
        path.write_bytes(raw)
    else:
        lines = ["\t".join(header)] + ["\t".join(r) for r in rows]
        path.write_bytes(newline.join(lines).encode("utf-8") + newline.encode())
    try:
        ex = read_task_file(path, task)
    except SweetError as exc:
        assert_one_line(exc)
        return
    assert len(ex) >= 1 and len(ex.labels) == len(ex.texts) == len(ex.ids)
    assert all(0 <= int(y) < task.num_labels for y in ex.labels)
    assert all(len(t) == len(task.text_fields) and all(s.strip() for s in t) for t in ex.texts)


@FUZZ
@given(lines=st.lists(st.one_of(TEXT, st.sampled_from(["", "  ", "a\tb", "a\t", "\tb", "good"])), max_size=8),
       task=st.sampled_from([SST2, RTE]))
def test_predict_input_reader_gives_examples_or_one_clear_error(lines, task):
    try:
        ex = read_unlabelled(lines, task)
    except SweetError as exc:
        assert_one_line(exc)
        return
    assert 1 <= len(ex) <= len(lines) and ex.labels is None
    assert all(len(t) == len(task.text_fields) and all(s.strip() for s in t) for t in ex.texts)


# ----------------------------------------------------------------------------------------- the CLI parser


class Accepted(Exception):
    """The arguments passed every check; the run itself is not started."""


def fake_run(config, output_dir, progress=True, overwrite=False, resume=False):
    from sweet.config import training_config

    training_config(config)  # the checks that need no data
    raise Accepted


OPTIONS = {
    "train": ["--task", "-t", "--method", "-m", "--output", "-o", "--backbone", "--exit-layers", "--n-train", "--seed",
              "--lr", "--epochs", "--batch-size", "--max-length", "--pooling", "--data-dir", "--data-source",
              "--checkpoint-every", "--resume", "--overwrite", "--no-progress", "--allow-partial-depth"],
    "evaluate": ["--data-dir", "--file", "--json", "--no-progress"],
    "predict": ["--input", "-i", "--threshold", "--task", "--format"],
    "tasks": ["--data-dir"],
}
VALUE = st.one_of(
    st.sampled_from(["sst2", "rte", "sweet", "early_exit", "multi_model", "1,2,4,6", "1,3,2", ",", "0", "-1", "1e-5",
                     "nan", "inf", "0.5", "1.5", "cls", "mean", "auto", "hub", "local", "tsv", "jsonl", "default"]),
    st.integers(-10, 10_000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    TEXT,
)


@st.composite
def argv(draw):
    command = draw(st.sampled_from(sorted(OPTIONS)))
    args = [command]
    if command in ("evaluate", "predict"):
        args.append(draw(st.sampled_from(["no-such-run", "."])))
    if command == "train" and draw(st.booleans()):  # the required options, so that some lists get through
        args += ["--task", draw(st.sampled_from(["sst2", "RTE", "mnli", "stsb"])),
                 "--method", draw(st.sampled_from(["sweet", "early_exit", "multi_model", "fast"])), "--output", "out"]
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.integers(0, 4)):
            option = draw(st.sampled_from(OPTIONS[command]))
        else:
            option = draw(st.one_of(st.sampled_from(["--bogus", "-x", "--help"]), TEXT))
        args.append(option)
        if draw(st.booleans()):
            args.append(draw(VALUE))
    return args


def run_cli(args: list[str]) -> tuple[int, str, str]:
    import sweet.cli as sweet_cli
    import sweet.cli.base as sweet_cli_base

    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv, sys.stdin, sys.stdout, sys.stderr, warnings.formatwarning
    sys.argv, sys.stdout, sys.stderr = ["sweet", *args], out, err
    sys.stdin = io.TextIOWrapper(io.BytesIO(b"a good film\n"), encoding="utf-8")
    sweet_cli_base.STATE["debug"] = False
    try:
        sweet_cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv, sys.stdin, sys.stdout, sys.stderr, warnings.formatwarning = saved
    return code, out.getvalue(), err.getvalue()


@pytest.mark.slow
@CLI_FUZZ
@given(args=argv())
def test_cli_parser_never_crashes(scratch, args):
    """Any argument list ends in a clean exit: help or success (0), a one-line error (2), or a configuration
    that passed every check (the training itself is not run)."""
    import sweet.runs

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweet.runs, "run", fake_run)
        mp.delenv("SWEET_GLUE_DIR", raising=False)
        mp.chdir(scratch)  # relative paths in the arguments land here; nothing is written anyway
        try:
            code, out, err = run_cli(args)
        except Accepted:
            event("accepted")
            return
    event(f"exit {code}")
    assert code in (0, 2), (args, code, err)
    assert "Traceback" not in err
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, err)


@FUZZ
@given(text=TEXT)
def test_exit_layers_option_parses_to_integers_or_one_clear_error(text):
    from sweet.cli.options import parse_layers

    try:
        layers = parse_layers(text)
    except SweetError as exc:
        assert_one_line(exc)
        return
    assert layers is None or all(isinstance(x, int) for x in layers)


# ----------------------------------------------------------------------------------------- cost accounting


LADDER = st.lists(st.integers(1, 48), min_size=1, max_size=6, unique=True).map(sorted)
METHOD = st.sampled_from(["early_exit", "sweet", "multi_model"])


def cost_bounds(ladder: list[int], method: str) -> tuple[float, float]:
    """[L_1/L_M, 1] for early exit models; [L_1/L_M, sum L_i / L_M] for Multi-Model."""
    top = sum(ladder) / ladder[-1] if method == "multi_model" else 1.0
    return ladder[0] / ladder[-1], top


@FUZZ
@given(data=st.data(), ladder=LADDER, method=METHOD)
def test_cost_ratio_stays_within_its_bounds(data, ladder, method):
    counts = data.draw(st.lists(st.integers(0, 1000), min_size=len(ladder), max_size=len(ladder)).filter(lambda c: sum(c) > 0))
    lo, hi = cost_bounds(ladder, method)
    assert lo - 1e-12 <= cost_ratio(counts, ladder, method) <= hi + 1e-12
    everyone_last = [0] * (len(ladder) - 1) + [7]
    assert cost_ratio(everyone_last, ladder, method) == pytest.approx(hi)
    assert cost_ratio([7] + [0] * (len(ladder) - 1), ladder, method) == pytest.approx(lo)
    assert np.all(np.diff(exit_costs(ladder, method)) > 0)  # a later exit always costs more


@FUZZ
@given(ladder=LADDER, method=METHOD, n=st.integers(1, 60), num_labels=st.integers(2, 5), seed=st.integers(0, 2**32 - 1),
       scale=st.floats(0.01, 30), threshold=st.floats(0, 1), calibrated=st.booleans())
def test_exit_decisions_count_every_sample_once_and_cost_within_bounds(ladder, method, n, num_labels, seed, scale,
                                                                         threshold, calibrated):
    rng = np.random.default_rng(seed)
    logits = [(rng.normal(size=(n, num_labels)) * scale).astype(np.float32) for _ in ladder]
    temperatures = rng.uniform(0.2, 5.0, size=len(ladder)).tolist() if calibrated else None
    policy = ConfidencePolicy(temperatures)
    lo, hi = cost_bounds(ladder, method)

    chosen, preds, _ = decide(policy, logits, threshold)
    counts = np.bincount(chosen, minlength=len(ladder))
    assert counts.shape == (len(ladder),) and counts.sum() == n
    assert lo - 1e-12 <= cost_ratio(counts, ladder, method) <= hi + 1e-12
    stacked = np.stack([lg.argmax(1) for lg in logits])
    assert np.array_equal(preds, stacked[chosen, np.arange(n)])  # the prediction is the chosen exit's

    costs = []
    for t in threshold_grid(num_labels):
        c = np.bincount(decide(policy, logits, float(t))[0], minlength=len(ladder))
        assert c.sum() == n
        costs.append(cost_ratio(c, ladder, method))
    assert costs[0] == pytest.approx(lo) and costs[-1] == pytest.approx(hi)  # 1/#labels: all leave first; 1: none early
    assert all(b >= a - 1e-12 for a, b in zip(costs, costs[1:]))  # a higher threshold never costs less
