"""The callables ``sweet bench`` times, one per configuration: tokenization, the full model in torch and in
ONNX Runtime, the torch engine and the ONNX engine, each over the whole split in batches."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..encoding import Encoded, encode
from ..peers import FullModel
from ..precision import model_placement, to_device


def tokenize_texts(tokenizer, examples, max_length: int) -> Callable[[], object]:
    """The texts to rows, as ``Predictor.predict`` tokenizes them (:func:`sweet.encoding.encode`)."""

    def run():
        return encode(tokenizer, examples, max_length, warn=False)

    return run


def padded_batches(encoded: Encoded, collator, batch_size: int) -> list[dict]:
    """Tokenised rows to padded batches of ``batch_size`` rows in dataset order (each padded to its longest row),
    without labels: what the full model is fed."""
    batches = []
    for i in range(0, len(encoded), batch_size):
        b = collator(encoded, np.arange(i, min(i + batch_size, len(encoded))))
        b.pop("labels", None)
        batches.append(b)
    return batches


def tokenize_and_pad(tokenizer, examples, max_length: int, collator, batch_size: int,
                  numpy: bool = False) -> Callable[[], object]:
    """The texts to padded batches of ``batch_size`` rows in dataset order, what a full model (ONNX Runtime: as
    NumPy arrays) is fed."""

    def run():
        batches = padded_batches(encode(tokenizer, examples, max_length, warn=False), collator, batch_size)
        return [{k: v.numpy() for k, v in b.items()} for b in batches] if numpy else batches

    return run


def first_rows(encoded, k: int):

    return Encoded(encoded.input_ids[:k], None if encoded.token_type_ids is None else encoded.token_type_ids[:k],
                   None, 0)


def torch_full(model, batches: list[dict]) -> Callable[[], np.ndarray]:

    full = FullModel(model, use_token_type_ids=True)
    device = model_placement(model).device

    @torch.inference_mode()
    def run() -> np.ndarray:
        preds = []
        for b in batches:
            b = to_device(b, device)
            preds.append(full(b["input_ids"], b["attention_mask"], b.get("token_type_ids")).argmax(-1))
        return torch.cat(preds).cpu().numpy()

    return run


def onnx_full(session, batches: list[dict]) -> Callable[[], np.ndarray]:
    def run() -> np.ndarray:
        return np.concatenate([session.logits(b).argmax(-1) for b in batches])

    return run


def engine_run(engine, encoded, collator, batch_size: int) -> Callable[[], object]:
    def run():
        return engine.predict(encoded, collator, batch_size, sort_by_length=False)

    return run


def onnx_engine_run(predictor, encoded, threshold: float, policy: str, batch_size: int) -> Callable[[], object]:
    def run():
        return predictor.run(encoded, threshold, policy, batch_size, sort_by_length=False)

    return run


