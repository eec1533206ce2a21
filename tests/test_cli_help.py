"""Every command answers --help, and --help shows the allowed values: choice lists and number ranges are declared
to the parser once (sweet.cli.options), and bad choices fail while parsing with the library's own message."""

from __future__ import annotations

import io
import sys

import pytest

import sweet.cli.base as cli_base
from sweet import __version__
from sweet.cli import main
from sweet.cli import options
from sweet.config import POOLING_CHOICES
from sweet.policies import POLICIES

COMMANDS = [["train"], ["demo"], ["evaluate"], ["predict"], ["bench"], ["export"], ["tune"], ["grid"], ["report"], ["tasks"], ["serve"],
            ["loadtest"], ["analyze", "gradients"]]


def run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv, sys.stdout, sys.stderr
    sys.argv, sys.stdout, sys.stderr = ["sweet", *args], out, err
    cli_base.STATE["debug"] = False
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv, sys.stdout, sys.stderr = saved
    return code, out.getvalue(), err.getvalue()


def test_every_command_is_listed_here():
    names = {c.name or c.callback.__name__ for c in cli_base.app.registered_commands}
    assert names == {c[0] for c in COMMANDS if c[0] != "analyze"}
    assert [c.name for c in cli_base.analyze_app.registered_commands] == ["gradients"]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_answers_help(command):
    code, out, err = run([*command, "--help"])
    assert code == 0, err
    assert "Usage: sweet " + " ".join(command) in " ".join(out.split())


@pytest.mark.parametrize("command, shown", [
    (["predict"], ["[tsv|jsonl]", "[confidence|entropy|patience|learned]", "[auto|fp32|bf16|fp16|int8]",
                   "FLOAT in [0, 1]", "INTEGER >= 1", "[torch|onnxruntime]", "pip install 'sweet[onnx]'"]),
    (["export"], ["[onnx]", "--int8", "--overwrite"]),
    (["train"], ["[auto|cls|mean]", "[local|hub]", "[auto|fp32|bf16|fp16]", "INTEGER >= 8", "FLOAT > 0"]),
    (["serve"], ["[local|ray]", "INTEGER >= 1", "[torch|onnxruntime]"]),
    (["grid"], ["[local|ray]"]),
    (["bench"], ["pip install 'sweet[onnx]'"]),  # rich markup must not swallow the extra's brackets
])
def test_help_shows_choices_and_ranges(command, shown, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # a wide terminal: rich shortens long values in narrow ones
    out = run([*command, "--help"])[1]
    flat = "".join(out.split())  # rich wraps long lines in boxes
    for text in shown:
        assert "".join(text.split()) in flat, text


def test_the_choice_lists_are_the_library_ones():
    assert options.POLICIES == tuple(POLICIES)
    assert options.POOLINGS == tuple(POOLING_CHOICES)


@pytest.mark.parametrize("args, message", [
    (["predict", "RUN", "--format", "xml"], "--format must be tsv or jsonl, got 'xml'"),
    (["predict", "RUN", "--policy", "fastest"], "unknown exit policy 'fastest'; choose one of: confidence, entropy, patience, learned"),
    (["predict", "RUN", "--precision", "fp8"], "unknown precision 'fp8'; choose one of: auto, fp32, bf16, fp16, int8"),
    (["train", "-t", "sst2", "-m", "sweet", "-o", "x", "--precision", "int8"], "unknown precision 'int8' (int8 is for inference only"),
    (["train", "-t", "sst2", "-m", "sweet", "-o", "x", "--pooling", "max"], "unknown pooling 'max'; choose one of: auto, cls, mean"),
    (["serve", "RUN", "--threads", "0"], "--threads must be positive, got 0"),
])
def test_a_bad_choice_fails_while_parsing_with_the_library_message(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert list(tmp_path.iterdir()) == []  # nothing was written


def test_version():
    code, out, _ = run(["--version"])
    assert code == 0 and out.strip() == f"sweet {__version__}"
