"""Length-bucketed batches cover the data exactly once, deterministically; padding and truncation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sweet.encoding import Collator, bucketed_batches, encode, sorted_batches
from sweet.data import Examples


def test_bucketed_batches_cover_every_row_once_and_are_deterministic():
    lengths = np.random.default_rng(0).integers(3, 100, 1003)
    a = bucketed_batches(lengths, 16, seed=3, epoch=0)
    b = bucketed_batches(lengths, 16, seed=3, epoch=0)
    c = bucketed_batches(lengths, 16, seed=3, epoch=1)
    flat = np.concatenate(a)
    assert sorted(flat.tolist()) == list(range(1003))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    # batches are length-homogeneous: far less padding than random batching
    pad = sum(lengths[r].max() * len(r) - lengths[r].sum() for r in a)
    rand = np.random.default_rng(0).permutation(1003)
    pad_random = sum(lengths[r].max() * len(r) - lengths[r].sum() for r in np.array_split(rand, len(a)))
    assert pad < pad_random / 3


def test_sorted_batches_longest_first():
    lengths = np.array([3, 9, 5, 7])
    assert [r.tolist() for r in sorted_batches(lengths, 2)] == [[1, 3], [2, 0]]


def test_encode_truncates_and_counts(tiny_backbone_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_backbone_dir))
    ex = Examples([("good " * 40,), ("bad film",)], [1, 0], name="t")
    with pytest.warns(UserWarning, match="1 of 2 examples .* longer than 16 tokens"):
        enc = encode(tok, ex, max_length=16)
    assert enc.n_truncated == 1 and max(enc.lengths) == 16
    pairs = encode(tok, Examples([("good film", "bad plot")], [0]), max_length=16)
    assert pairs.token_type_ids is not None and 1 in pairs.token_type_ids[0]


def test_collator_pads_and_masks(tiny_backbone_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_backbone_dir))
    enc = encode(tok, Examples([("good",), ("bad film plot",)], [1, 0]), max_length=16)
    b = Collator(tok.pad_token_id, use_token_type_ids=True)(enc, [0, 1])
    assert b["input_ids"].shape == (2, 5)
    assert b["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert b["input_ids"][0, 3:].tolist() == [tok.pad_token_id] * 2
    assert b["labels"].tolist() == [1, 0]
    assert "token_type_ids" not in Collator(0, use_token_type_ids=False)(enc, [0, 1])


def test_collator_pads_each_row_with_its_own_tokens_and_token_types():
    from sweet.encoding import Encoded

    rng = np.random.default_rng(0)
    ids = [rng.integers(5, 90, int(n)).tolist() for n in rng.integers(1, 12, 40)]
    types = [[int(j >= len(r) // 2) for j in range(len(r))] for r in ids]
    enc = Encoded(ids, types, list(range(40)), 0)
    rows = rng.permutation(40)[:17]
    b = Collator(7, use_token_type_ids=True)(enc, rows)
    width = max(len(ids[r]) for r in rows)
    assert b["input_ids"].shape == b["attention_mask"].shape == b["token_type_ids"].shape == (17, width)
    for i, r in enumerate(rows):
        n = len(ids[r])
        assert b["input_ids"][i].tolist() == ids[r] + [7] * (width - n)
        assert b["attention_mask"][i].tolist() == [1] * n + [0] * (width - n)
        assert b["token_type_ids"][i].tolist() == types[r] + [0] * (width - n)
    assert b["labels"].tolist() == [int(r) for r in rows]
    assert b["input_ids"].dtype == b["attention_mask"].dtype == torch.long


def test_encode_equals_the_truncating_tokenizer(tiny_backbone_dir):
    """encode tokenises once and re-encodes only the rows longer than max_length: the ids and token types are
    exactly the tokenizer's own truncation=True output (longest_first for pairs), singles and pairs mixed in length."""
    import random

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_backbone_dir))
    rng = random.Random(3)
    words = ["good", "bad", "film", "plot", "unbelievably", "naïve", "!"]
    single = [(" ".join(rng.choice(words) for _ in range(rng.randint(1, 30))),) for _ in range(40)]
    pairs = [(a[0], b[0]) for a, b in zip(single, reversed(single))]
    for texts in (single, pairs):
        first = [t[0] for t in texts]
        second = [t[1] for t in texts] if len(texts[0]) == 2 else None
        want = tok(first, second, truncation=True, max_length=16)
        got = encode(tok, Examples(texts, None, name="t"), max_length=16, warn=False)
        assert got.input_ids == want["input_ids"]
        assert got.token_type_ids == want.get("token_type_ids")
        full = tok(first, second)["input_ids"]
        assert 0 < got.n_truncated == sum(len(x) > 16 for x in full) < len(texts)
