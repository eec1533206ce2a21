"""Every ```python block of README.md runs as written, and prints what its comments show.

The blocks run in a scratch directory, each in a fresh namespace, with two stand-ins that keep them fast and
offline: the packaged backbone (``sweet.backbones.resolve_backbone("default")``) is a tiny random 6-layer BERT
with a tokenizer, and ``runs/demo/sst2-sweet`` is a run trained on it (the directory ``sweet demo`` writes).

A comment right after a ``print(...)`` line that holds a Python literal (``# [{'label': 'positive', ...}, ...]``)
is the output the README shows. It must have the structure of what the block printed: the same types, the same
dict keys, the same strings (labels are words, not ids); numbers only of the same type, because the stand-in
model's numbers differ from the real one's; ``...`` stands for further items.
"""

from __future__ import annotations

import ast
import random
import re
import warnings
from pathlib import Path

import pytest
import torch

from .conftest import VOCAB, WORDS_NEG, WORDS_NEUTRAL, WORDS_POS, tiny_config, write_tsv

README = Path(__file__).parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


# words of the README's examples ("a gripping film", "flat and dull") that the tiny vocabulary lacks
EXTRA_POS, EXTRA_NEG = ["gripping"], ["flat"]


@pytest.fixture(scope="module")
def tiny_default_backbone(tmp_path_factory) -> Path:
    """A 6-layer tiny BERT (the default ladder [1, 2, 4, 6] fits it) with a tokenizer, saved like a backbone."""
    from transformers import BertModel, BertTokenizer

    d = tmp_path_factory.mktemp("tiny-default")
    vocab = VOCAB + EXTRA_POS + EXTRA_NEG
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(str(d))
    torch.manual_seed(0)
    BertModel(tiny_config("bert", layers=6, vocab_size=len(vocab))).save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_default_backbone) -> Path:
    """A scratch directory holding ``runs/demo/sst2-sweet``: SST-2-shaped data in which one keyword decides the
    label (the README's words among them), learnt by the tiny backbone."""
    from sweet.calibration import TemperatureAtBoundWarning
    from sweet.runs import RunConfig, run

    root = tmp_path_factory.mktemp("readme")
    rng = random.Random(0)
    pos, neg = WORDS_POS + EXTRA_POS * 5, WORDS_NEG + EXTRA_NEG * 5

    def rows(n):
        out = []
        for i in range(n):
            y = rng.randint(0, 1)
            words = rng.sample(WORDS_NEUTRAL, 3) + [rng.choice(pos if y else neg)]
            rng.shuffle(words)
            out.append([i, " ".join(words), y])
        return out

    # tickets.csv for the "Your own data" block: a body and one of three queues, decided by a keyword
    queues = {"billing": pos, "outage": neg, "login": ["plot", "actor"]}
    with open(root / "tickets.csv", "w", encoding="utf-8") as fh:
        fh.write("ticket_id,body,queue\n")
        for i in range(240):
            queue = rng.choice(sorted(queues))
            words = rng.sample(WORDS_NEUTRAL, 3) + [rng.choice(queues[queue])]
            fh.write(f"{i},{' '.join(words)},{queue}\n")
    glue = root / "glue"
    write_tsv(glue / "SST-2" / "train.tsv", ["idx", "sentence", "label"], rows(700))
    write_tsv(glue / "SST-2" / "dev.tsv", ["idx", "sentence", "label"], rows(60))
    config = RunConfig(task="sst2", method="sweet", backbone=str(tiny_default_backbone), n_train=400, epochs=3,
                       learning_rate=3e-3, calibration_size=100, data_dir=str(glue), checkpoint_every=0)
    with warnings.catch_warnings():  # the keyword task separates the calibration split: temperatures at 0.05
        warnings.simplefilter("ignore", TemperatureAtBoundWarning)
        run(config, root / "runs" / "demo" / "sst2-sweet", progress=False)
    return root


def shown_outputs(block: str) -> list[tuple[int, object]]:
    """(line number, literal) of every whole-line comment that holds a Python literal (a list, tuple or dict):
    an output the README shows. Each must follow a print(...) line, so that the block prints it."""
    lines = block.splitlines()
    shown = []
    for i, line in enumerate(lines):
        text = line.strip()
        if not text.startswith("#"):
            continue
        try:
            value = ast.literal_eval(text[1:].strip())
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, (list, tuple, dict)):
            assert i > 0 and lines[i - 1].lstrip().startswith("print("), (
                f"line {i + 1} shows an output, but the line before it does not print one: {lines[i - 1]!r}")
            shown.append((i + 1, value))
    return shown


def assert_same_shape(shown, printed, where: str = "output") -> None:
    """``shown`` (from the README) has the structure of ``printed``; see the module docstring."""
    if isinstance(shown, (list, tuple)):
        assert type(printed) is type(shown), (where, shown, printed)
        items = list(shown)
        more = bool(items) and items[-1] is Ellipsis
        items = items[:-1] if more else items
        assert len(printed) >= len(items) if more else len(printed) == len(items), (where, shown, printed)
        for k, (s, p) in enumerate(zip(items, printed)):
            assert_same_shape(s, p, f"{where}[{k}]")
    elif isinstance(shown, dict):
        assert isinstance(printed, dict) and list(printed) == list(shown), (where, shown, printed)
        for k in shown:
            assert_same_shape(shown[k], printed[k], f"{where}[{k!r}]")
    elif isinstance(shown, str):
        assert printed == shown, (where, shown, printed)
    else:  # a number: the stand-in model's differ; the type must not
        assert type(printed) is type(shown), (where, shown, printed)


def test_the_readme_has_python_blocks_and_they_show_outputs():
    assert len(BLOCKS) >= 2
    assert sum(len(shown_outputs(b)) for b in BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i + 1}" for i in range(len(BLOCKS))])
def test_a_readme_python_block_runs_and_prints_what_it_shows(index, workspace, tiny_default_backbone, monkeypatch,
                                                            capsys):
    import sweet.backbones
    import sweet.config
    import sweet.modeling.model
    import sweet.runs

    real = sweet.backbones.resolve_backbone
    for module in (sweet.backbones, sweet.config, sweet.modeling.model, sweet.runs):  # every module that imported it
        monkeypatch.setattr(module, "resolve_backbone",
                            lambda name: str(tiny_default_backbone) if name == "default" else real(name))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(workspace)
    block = BLOCKS[index]
    exec(compile(block, f"README.md python block {index + 1}", "exec"), {"__name__": "__readme__"})
    printed = [ast.literal_eval(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    shown = shown_outputs(block)
    assert len(printed) == len(shown), (printed, shown)
    for (lineno, s), p in zip(shown, printed):
        assert_same_shape(s, p, f"block {index + 1} line {lineno}")


def test_an_output_shown_after_a_line_that_prints_nothing_is_refused():
    with pytest.raises(AssertionError, match="does not print one"):
        shown_outputs('clf.predict(["a"])\n# [{\'label\': \'1\'}]\n')
    assert shown_outputs('print(1)\n# a comment, not an output\nx = 1  # [1, 2]\n') == []


def test_the_shape_check_catches_what_the_readme_got_wrong():
    printed = [{"label": "positive", "label_id": 1, "exit_layer": 1, "confidence": 0.93}]
    assert_same_shape([{"label": "positive", "label_id": 1, "exit_layer": 1, "confidence": 0.97}, ...], printed)
    for wrong in ([{"label": "1", "label_id": 1, "exit_layer": 1, "confidence": 0.97}],  # the old README's label
                  [{"label": "positive", "label_id": 1, "exit_layer": 1}],
                  [{"label": "positive", "label_id": 1.0, "exit_layer": 1, "confidence": 0.97}]):
        with pytest.raises(AssertionError):
            assert_same_shape(wrong, printed)
