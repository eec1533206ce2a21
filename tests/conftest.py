"""Shared fixtures: tiny random encoders (BERT, MPNet, DeBERTa-v2), a tiny tokenizer and a tiny GLUE dir."""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path

import pytest
import torch

# The CLI runs that tests start as subprocesses train and predict with tiny models too: one OpenMP thread each,
# unless the caller set a count (the tests of threading set theirs explicitly).
os.environ.setdefault("OMP_NUM_THREADS", "1")

WORDS_POS = ["good", "great", "fine", "lovely", "superb"]
WORDS_NEG = ["bad", "awful", "poor", "dull", "terrible"]
WORDS_NEUTRAL = ["the", "movie", "plot", "actor", "film", "story", "was", "is", "a", "very", "quite", "and"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS_POS, *WORDS_NEG, *WORDS_NEUTRAL]


def tiny_config(kind: str, layers: int = 6, vocab_size: int = 64, dropout: float = 0.0):
    from transformers import BertConfig, DebertaV2Config, MPNetConfig

    common = dict(
        vocab_size=vocab_size,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    if kind == "bert":
        return BertConfig(**common)
    if kind == "mpnet":
        return MPNetConfig(**common)
    if kind == "deberta":
        return DebertaV2Config(
            **common, relative_attention=True, position_buckets=8, norm_rel_ebd="layer_norm",
            pos_att_type=["p2c", "c2p"], type_vocab_size=0,
        )
    raise ValueError(kind)


def tiny_model(kind: str, method: str, exit_layers=(1, 2, 4, 6), num_labels: int = 3, seed: int = 0, **kw):
    from sweet import MultiExitConfig, MultiExitModel

    torch.manual_seed(seed)
    cfg = MultiExitConfig(
        method=method, exit_layers=list(exit_layers), num_labels=num_labels, backbone=f"tiny-{kind}",
        backbone_config=tiny_config(kind, layers=max(exit_layers)).to_dict(), **kw,
    )
    return MultiExitModel(cfg)


@contextlib.contextmanager
def one_torch_thread():
    """Tiny models run fastest on one thread; on a busy 2-core machine multi-threaded tiny ops are 10x+ slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def one_thread_for_the_session():
    """Every test starts on one torch thread (tiny models; see :func:`one_torch_thread`): on a machine with other
    jobs running, two-thread tiny ops wait on each other (a benchmark test: 305 s on two threads, 9.5 on one). Tests of
    threading set their own count; the CLI subprocesses get ``OMP_NUM_THREADS=1`` (above)."""
    with one_torch_thread():
        yield


def padded_batch(n: int = 32, width: int = 12, seed: int = 1):
    """Random token ids with random lengths (right-padded with 0) and the matching attention mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (n, width), generator=g)
    mask = torch.ones_like(ids)
    for r in range(n):
        length = int(torch.randint(4, width + 1, (1,), generator=g))
        mask[r, length:] = 0
        ids[r, length:] = 0
    return ids, mask


def batch(n: int = 4, length: int = 10, vocab: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, length - 3 :] = 0
    ids[0, length - 3 :] = 0
    labels = torch.randint(0, 3, (n,), generator=g)
    return ids, mask, labels


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory) -> Path:
    """A tiny BERT saved like a hub checkpoint (config, safetensors weights, tokenizer)."""
    from transformers import BertModel, BertTokenizer

    d = tmp_path_factory.mktemp("tiny-bert")
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)}, do_lower_case=True)
    tok.save_pretrained(str(d))
    torch.manual_seed(0)
    BertModel(tiny_config("bert", layers=4, vocab_size=len(VOCAB))).save_pretrained(str(d))
    return d


def _sentence(rng: random.Random, label: int) -> str:
    words = rng.sample(WORDS_NEUTRAL, 4) + [rng.choice(WORDS_POS if label else WORDS_NEG)]
    rng.shuffle(words)
    return " ".join(words)


def write_tsv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="session")
def tiny_glue_dir(tmp_path_factory) -> Path:
    """A GLUE-layout directory: SST-2 (train + dev, learnable from one keyword), MNLI (train_pool only),
    RTE (small train + dev)."""
    d = tmp_path_factory.mktemp("glue")
    rng = random.Random(0)
    for split, n in (("train.tsv", 600), ("dev.tsv", 120)):
        rows = []
        for i in range(n):
            y = rng.randint(0, 1)
            rows.append([i, _sentence(rng, y), y])
        write_tsv(d / "SST-2" / split, ["idx", "sentence", "label"], rows)
    rows = [[i, _sentence(rng, 1), _sentence(rng, 0), rng.randint(0, 2)] for i in range(300)]
    write_tsv(d / "MNLI" / "train_pool.tsv", ["idx", "premise", "hypothesis", "label"], rows)
    for split, n in (("train.tsv", 80), ("dev.tsv", 30)):
        rows = [[i, _sentence(rng, 1), _sentence(rng, 0), rng.randint(0, 1)] for i in range(n)]
        write_tsv(d / "RTE" / split, ["idx", "sentence1", "sentence2", "label"], rows)
    return d
