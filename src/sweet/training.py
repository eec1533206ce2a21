"""Fine-tuning, top to bottom: AdamW (0.9, 0.999), linear decay, batch 16, 2 epochs (the paper's setup).

The method (early_exit / sweet / multi_model) lives entirely in the model: the loss is always the sum of
the exits' cross-entropies, and what each exit's gradient may reach is decided in the forward pass.
The one thing the loop does per method is gradient clipping, applied per independently trained unit
(:meth:`MultiExitModel.parameter_groups`): the whole model for early_exit / sweet, each (backbone, head)
pair for multi_model, so Multi-Model's models are not coupled through a shared clipping factor.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from .batching import Collator, Encoded, bucketed_batches
from .errors import SweetError


@dataclass
class TrainConfig:
    learning_rate: float = 5e-5
    epochs: int = 2
    batch_size: int = 16
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    max_grad_norm: float | None = 1.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    seed: int = 0
    log_every: int = 25

    def __post_init__(self) -> None:
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise SweetError(f"learning rate must be a positive number, got {self.learning_rate}")
        if self.epochs <= 0:
            raise SweetError(f"epochs must be positive, got {self.epochs}")
        if self.batch_size <= 0:
            raise SweetError(f"batch size must be positive, got {self.batch_size}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise SweetError(f"warmup ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise SweetError(f"max grad norm must be positive (or None to disable), got {self.max_grad_norm}")

    def to_dict(self) -> dict:
        return asdict(self)


def seed_everything(seed: int) -> None:
    """Same seed -> same head initialisation, dropout masks and batch order (CPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(model, encoded: Encoded, collator: Collator, config: TrainConfig, progress: bool = True) -> dict:
    """Fine-tune ``model`` in place on ``encoded`` (which must carry labels). Returns a training log."""
    if encoded.labels is None:
        raise SweetError("training data has no labels")
    seed_everything(config.seed)
    lengths = encoded.lengths
    steps_per_epoch = math.ceil(len(encoded) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_eps,
        weight_decay=config.weight_decay,
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    groups = model.parameter_groups()

    log: list[dict] = []
    window = np.zeros(model.num_exits)
    window_steps = 0
    start = time.perf_counter()
    model.train()
    bar = tqdm(total=total_steps, desc=f"train {model.config.method}", disable=not progress, unit="step")
    step = 0
    for epoch in range(config.epochs):
        for rows in bucketed_batches(lengths, config.batch_size, config.seed, epoch):
            batch = collator(encoded, rows)
            out = model(**batch)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            if config.max_grad_norm is not None:
                for params in groups:
                    torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            window += np.array([x.detach().item() for x in out.exit_losses])
            window_steps += 1
            if step % config.log_every == 0 or step == total_steps:
                mean = (window / window_steps).round(4).tolist()
                log.append({"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0], "exit_losses": mean})
                bar.set_postfix(loss=f"{sum(mean):.3f}")
                window[:] = 0
                window_steps = 0
            bar.update(1)
    bar.close()
    model.eval()
    seconds = time.perf_counter() - start
    return {
        "steps": step,
        "examples": int(len(encoded) * config.epochs),
        "seconds": round(seconds, 2),
        "examples_per_second": round(len(encoded) * config.epochs / max(seconds, 1e-9), 2),
        "threads": torch.get_num_threads(),
        "log": log,
    }
