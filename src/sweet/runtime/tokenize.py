"""Tokenisation for the ONNX Runtime engine with the ``tokenizers`` library alone (no transformers, no torch).

It reads the ``tokenizer.json`` that ``sweet export`` copies into the folder and gives the same ids as the
Hugging Face tokenizer does in :func:`sweet.encoding.encode`: special tokens added, pairs encoded as pairs,
truncation to ``max_length`` tokens with the ``longest_first`` strategy (transformers' default for
``truncation=True``), no padding (the engine pads each batch to its longest row). Tested for equality.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import SweetError


@dataclass
class TokenRows:
    """Tokenised rows, unpadded: the fields :class:`sweet.encoding.Encoded` has, so either feeds the engine."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: list[int] | None = None
    n_truncated: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self.input_ids))


class RuntimeTokenizer:
    """``tokenizers.Tokenizer`` from a ``tokenizer.json``, set to truncate to ``max_length`` and not to pad."""

    def __init__(self, path: str | Path, max_length: int, use_token_type_ids: bool):
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # a dependency of sweet; named in case a slim image left it out
            raise SweetError("the ONNX runtime needs the tokenizers package: pip install 'tokenizers>=0.20'") from exc
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises its own exception type for unreadable files
            raise SweetError(f"{path}: not a readable tokenizer.json ({exc})") from exc
        self.max_length = int(max_length)
        self.use_token_type_ids = bool(use_token_type_ids)
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        # a second instance that truncates, for the rows longer than max_length (the first pass counts them
        # exactly; the encodings' overflow flag undercounts them for pairs); two instances, not one toggled,
        # so that concurrent calls never see each other's setting
        self.truncating = Tokenizer.from_file(str(path))
        self.truncating.no_padding()
        self.truncating.enable_truncation(self.max_length, strategy="longest_first")

    def encode(self, texts: Sequence[tuple[str, ...]]) -> TokenRows:
        """Tokenise examples: each a 1-tuple (single text) or a 2-tuple (a pair). One pass without truncation;
        the rows longer than ``max_length`` (counted in ``n_truncated``) are encoded again with truncation."""
        batch = [t[0] if len(t) == 1 else (t[0], t[1]) for t in texts]
        encodings = self.tokenizer.encode_batch(batch, add_special_tokens=True)
        long_rows = [i for i, e in enumerate(encodings) if len(e.ids) > self.max_length]
        if long_rows:
            for i, e in zip(long_rows, self.truncating.encode_batch([batch[i] for i in long_rows],
                                                                    add_special_tokens=True)):
                encodings[i] = e
        ids = [e.ids for e in encodings]
        tt = [e.type_ids for e in encodings] if self.use_token_type_ids else None
        return TokenRows(ids, tt, None, len(long_rows))
