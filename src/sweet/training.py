"""Fine-tuning, top to bottom: AdamW (0.9, 0.999), linear decay, batch 16, 2 epochs (the paper's setup).

The method (:mod:`sweet.methods`) lives almost entirely in the model: the loss is the sum of the exits'
cross-entropies (plus the distillation term for ``distill@W``, the anchor term for ``ee_anchor@F``), and what
each exit's gradient may reach is decided in the forward pass. What the loop does per method:

* it tells the model how far training is before each step (``model.set_progress``), which scheduled methods
  (``sweet_then_ee@F``, ``ee_then_sweet@F``, ``ee_anchor@F``) use to switch between SWEET and Early-Exit;
* ``ee_anchor@F``: at the switch (the first step at progress >= F) it has the model take its anchor, a frozen
  copy (:meth:`MultiExitModel.freeze_anchor`); the model adds the KL term to the anchor to its loss from then on;
  the log gets ``anchor_kl`` (the term's mean per step since the last entry, 0 before the switch). A checkpoint
  after the switch holds the anchor's weights, so a resumed run trains against the same anchor; the anchor
  is dropped when training ends (the saved model never holds it);
* ``pcgrad`` replaces the one backward pass by one per exit and a per-block projection
  (:func:`sweet.gradients.pcgrad_backward`), with a random order drawn from a generator seeded by (seed, step),
  so it is deterministic and resumable;
* gradient clipping is applied per independently trained unit (:meth:`MultiExitModel.parameter_groups`): the
  whole model for the single-backbone methods, each (backbone, head) pair for multi_model, so Multi-Model's
  models are not coupled through a shared clipping factor.

Training can be checkpointed, stopped on request and resumed (:mod:`sweet.checkpoint`); a resumed run ends
with the same weights, bit for bit, as an uninterrupted one on CPU.

Determinism on CPU (docs/determinism.md). The same seed, data and *intra-op thread count* give the same weights
bit for bit, alone or next to other jobs. The thread count is part of the result: two CPU ops of a step sum
per-thread partial results, so 1 and 2 threads end in different weights (by ~1e-6 after ten steps):
``native_layer_norm_backward`` (the LayerNorm weight and bias gradients: each thread sums a block of rows) and
``_softmax_backward_data`` (attention). ``torch.use_deterministic_algorithms(True)`` names neither: each is
deterministic for a fixed number of threads. What it counts is the threads OpenMP actually starts, which is
``torch.get_num_threads()`` unless the OpenMP runtime may adjust it: with ``OMP_DYNAMIC=true``, GNU OpenMP
sizes each parallel region from the machine's load average, so a run next to other jobs computes with fewer
threads than it reports and ends elsewhere. :func:`fixed_thread_team` turns that adjustment (and MKL's,
``MKL_DYNAMIC``) off for the duration of training. The training log records the thread count (``threads``, and
per log entry, so a run resumed with another count shows it) and whether an adjustment was turned off.
"""

from __future__ import annotations

import ctypes
import math
import os
import random
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from .checkpoint import (
    Checkpointer,
    TrainingStopped,
    TrainState,
    interrupt_after_step,
    training_fingerprint,
)
from .encoding import Collator, Encoded, bucketed_batches
from .errors import SweetError
from .gradients import pcgrad_backward
from .precision import Placement, to_device


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
    precision: str = "fp32"  # fp32, bf16 or fp16 (autocast, float32 master weights); see sweet.precision

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise SweetError(f"training precision must be fp32, bf16 or fp16, got {self.precision!r}")
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
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise SweetError(f"seed must be a non-negative integer, got {self.seed}")

    def to_dict(self) -> dict:
        return asdict(self)


def seed_everything(seed: int) -> None:
    """Same seed -> same head initialisation, dropout masks and batch order (CPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


#: OpenMP runtimes torch is built with (GNU, LLVM, Intel), by their usual names.
_OPENMP_RUNTIMES = ("libgomp.so.1", "libomp.so", "libomp.dylib", "libiomp5.so", "libiomp5.dylib")


def _loaded_openmp_paths() -> list[str]:
    """Files of the OpenMP runtimes loaded in this process, on Linux (a wheel may bundle one under a renamed
    file such as libgomp-1a2b3c4d.so.1, which the names above miss)."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as fh:
            paths = {fields[-1] for fields in map(str.split, fh) if len(fields) >= 6 and fields[-1].startswith("/")}
    except OSError:
        return []
    return sorted(p for p in paths if os.path.basename(p).startswith(("libgomp", "libomp", "libiomp")))


def _openmp_runtime():
    """The OpenMP runtime already loaded by torch (a ctypes handle), or None. Loads nothing (RTLD_NOLOAD)."""
    noload = getattr(os, "RTLD_NOLOAD", None)
    if noload is None:
        return None
    for name in (*_OPENMP_RUNTIMES, *_loaded_openmp_paths()):
        try:
            lib = ctypes.CDLL(name, mode=noload)
        except OSError:
            continue
        if hasattr(lib, "omp_get_dynamic") and hasattr(lib, "omp_set_dynamic"):
            return lib
    return None


@contextmanager
def fixed_thread_team():
    """Run the enclosed code with exactly ``torch.get_num_threads()`` threads in every intra-op parallel region.

    Re-applies the thread count (``torch.set_num_threads``, which also turns MKL's dynamic thread adjustment
    off for the rest of the process) and turns OpenMP's dynamic adjustment (``OMP_DYNAMIC``) off in this thread,
    restoring it on exit. Yields ``{"threads": n, "openmp_dynamic_off": bool}``: the latter is True when an
    adjustment that was on (so: load-dependent results) was turned off."""
    threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    omp = _openmp_runtime()
    dynamic = omp is not None and bool(omp.omp_get_dynamic())
    if dynamic:
        omp.omp_set_dynamic(0)
    try:
        yield {"threads": threads, "openmp_dynamic_off": dynamic}
    finally:
        if dynamic:
            omp.omp_set_dynamic(1)


def make_optimizer(model, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with torch's fused implementation where it has one (CPU and CUDA): one kernel for all parameters
    instead of a Python loop over them (about 4x less optimizer time per step on the default backbone)."""
    kwargs = dict(lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_eps,
                  weight_decay=config.weight_decay)
    if device.type in ("cpu", "cuda"):
        return torch.optim.AdamW(model.parameters(), fused=True, **kwargs)
    return torch.optim.AdamW(model.parameters(), foreach=True, **kwargs)


def train(model, encoded: Encoded, collator: Collator, config: TrainConfig, progress: bool = True,
          checkpointer: Checkpointer | None = None, resume: bool = False) -> dict:
    """Fine-tune ``model`` in place on ``encoded`` (which must carry labels). Returns a training log.

    The model trains on the device its parameters are on, in ``config.precision``: the forward and backward of
    each step run under autocast (entered per step, weight-cast cache off: see :mod:`sweet.precision` for the
    trap this avoids); weights and optimizer state stay float32; fp16 adds a gradient scaler.

    With a ``checkpointer``, the model, optimizer, scheduler, RNG states and data position are saved every
    ``checkpointer.every`` steps and after the last step. With ``resume=True`` too, training continues from
    that checkpoint (if there is one) and ends exactly as an uninterrupted run with the same seed would. When
    the checkpointer's stop file appears, the current step is saved and :class:`~sweet.checkpoint.TrainingStopped`
    is raised; on Ctrl-C, the step in progress is finished and saved, then KeyboardInterrupt is raised
    (:func:`~sweet.checkpoint.interrupt_after_step`)."""
    if encoded.labels is None:
        raise SweetError("training data has no labels")
    with fixed_thread_team() as team, interrupt_after_step() as interrupt:  # the thread count: module docstring
        return _train(model, encoded, collator, config, progress, checkpointer, resume, team, interrupt)


def _train(model, encoded: Encoded, collator: Collator, config: TrainConfig, progress: bool,
           checkpointer: Checkpointer | None, resume: bool, team: dict, interrupt: dict) -> dict:
    """Long on purpose: the training loop read top to bottom (forward, backward, clip, step, log, checkpoint), as in nanoGPT."""
    threads = team["threads"]
    seed_everything(config.seed)
    lengths = encoded.lengths
    steps_per_epoch = math.ceil(len(encoded) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    device = next(model.parameters()).device
    placed = Placement(device, config.precision)
    optimizer = make_optimizer(model, config, device)
    scaler = torch.amp.GradScaler(device.type) if config.precision == "fp16" else None
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    groups = model.parameter_groups()
    spec = model.method_spec
    blocks = model.gradient_blocks() if spec.projection else None

    state = TrainState(window=np.zeros(model.num_exits))
    fingerprint = training_fingerprint(model, encoded, config) if checkpointer is not None else {}
    if resume and checkpointer is not None and checkpointer.exists():
        state = checkpointer.load(model, optimizer, scheduler, fingerprint)  # also restores the RNG states
        if scaler is not None and state.scaler:
            scaler.load_state_dict(state.scaler)
        before = [e["threads"] for e in state.log if "threads" in e]
        if before and before[-1] != threads:
            warnings.warn(f"resuming at step {state.step} with {threads} torch thread(s); the steps before ran with "
                          f"{before[-1]}: the weights will differ (slightly) from those of an uninterrupted run with "
                          f"either count (torch.set_num_threads, or `sweet grid --threads`)", stacklevel=3)

    start = time.perf_counter() - state.seconds
    model.train()
    bar = tqdm(total=total_steps, initial=state.step, desc=f"train {model.config.method}", disable=not progress,
               unit="step")
    first_epoch, first_batch = divmod(state.step, steps_per_epoch)  # the data position
    # autocast is off for the whole step (backward, clipping, optimizer) whatever the caller opened, and on
    # (bf16/fp16) for the forward only; a caller's outer context would otherwise also reach the backward pass
    with placed.no_autocast():
        for epoch in range(first_epoch, config.epochs):
            batches = bucketed_batches(lengths, config.batch_size, config.seed, epoch)
            for rows in batches[first_batch if epoch == first_epoch else 0 :]:
                batch = to_device(collator(encoded, rows), device)
                model.set_progress(state.step / total_steps)
                if spec.anchored(state.step / total_steps) and model.anchor is None:
                    model.freeze_anchor()  # ee_anchor@F: the switch (a resumed run has it from the checkpoint)
                with placed.autocast():
                    out = model(**batch)
                optimizer.zero_grad(set_to_none=True)
                if blocks is not None:
                    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + state.step)
                    losses = out.exit_losses if scaler is None else [scaler.scale(x) for x in out.exit_losses]
                    counts = pcgrad_backward(losses, blocks, generator)
                    state.projections = {k: state.projections[k] + counts[k] for k in counts}
                else:
                    (out.loss if scaler is None else scaler.scale(out.loss)).backward()
                if scaler is not None:
                    scaler.unscale_(optimizer)
                if config.max_grad_norm is not None:
                    for params in groups:
                        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm, foreach=True)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                state.step += 1
                state.window += torch.stack([x.detach().float() for x in out.exit_losses]).cpu().numpy()
                state.window_steps += 1
                if out.anchor_loss is not None:
                    state.anchor_window += float(out.anchor_loss.detach())
                if state.step % config.log_every == 0 or state.step == total_steps:
                    mean = (state.window / state.window_steps).round(4).tolist()
                    state.log.append({"step": state.step, "epoch": epoch, "lr": scheduler.get_last_lr()[0], "exit_losses": mean,
                                      **({"anchor_kl": float(f"{state.anchor_window / state.window_steps:.6g}")}
                                         if spec.anchor_from is not None else {}),
                                      "threads": threads})
                    bar.set_postfix(loss=f"{sum(mean):.3f}")
                    state.window[:] = 0
                    state.window_steps = 0
                    state.anchor_window = 0.0
                # asked to stop (Ctrl-C, or the stop file): the checkpoint below holds this step; a resume goes on from it
                stop = state.step < total_steps and (interrupt["asked"] or (checkpointer is not None
                                                                            and checkpointer.stop_requested()))
                if checkpointer is not None and (stop or checkpointer.due(state.step, total_steps)):
                    if scaler is not None:
                        state.scaler = scaler.state_dict()
                    checkpointer.save(model, optimizer, scheduler, state, fingerprint, steps_per_epoch=steps_per_epoch,
                                      total_steps=total_steps, seconds=time.perf_counter() - start)
                bar.update(1)
                if stop:
                    bar.close()
                    if interrupt["asked"]:
                        raise KeyboardInterrupt(f"interrupted at step {state.step} of {total_steps}"
                                                + (" (checkpoint saved)" if checkpointer is not None else ""))
                    raise TrainingStopped(state.step, total_steps)
    bar.close()
    model.release_anchor()
    model.set_progress(1.0)
    model.eval()
    seconds = time.perf_counter() - start
    return {
        "steps": state.step,
        "examples": int(len(encoded) * config.epochs),
        "seconds": round(seconds, 2),
        "examples_per_second": round(len(encoded) * config.epochs / max(seconds, 1e-9), 2),
        "threads": threads,
        "openmp_dynamic_off": team["openmp_dynamic_off"],
        **placed.to_dict(),
        "resumed_at_steps": state.resumed_at,
        **({"pcgrad": state.projections} if blocks is not None else {}),
        "log": state.log,
    }
