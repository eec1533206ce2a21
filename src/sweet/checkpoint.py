"""Training checkpoints, so that a killed run continues where it stopped and ends as if never interrupted.

A checkpoint lives in ``RUN_DIR/checkpoint/``::

    step-0000200.safetensors  model parameters (``model/<name>``), AdamW state (``optim/<index>/<key>``),
                              the torch RNG states (``rng/torch``, ``rng/cuda/<device>``), and for
                              ``ee_anchor@F`` after the switch the anchor's weights (``anchor/<name>``)
    state.json                everything else: the data position (epoch, batch index), the scheduler, the
                              Python and NumPy RNG states, the loss log so far, a fingerprint of the training
                              setup, and the name, size and SHA-256 of the weights file it belongs to

Writes are atomic. The weights go to a temporary file that is renamed to a new name, then ``state.json`` is
replaced (temporary file + rename), then older weights files are deleted. A checkpoint is only ever reached
through ``state.json``, so a crash at any moment leaves either the previous complete checkpoint or the new one.
Nothing is pickled, and only a ``.safetensors`` file whose size and hash match ``state.json`` is loaded.

The data order is a function of (seed, epoch) (:func:`sweet.encoding.bucketed_batches`), so the data position
is the number of optimizer steps done: ``epoch, batch = divmod(step, steps_per_epoch)``.

A stop on request loses nothing: with a ``stop_file``, training checks after every optimizer step whether that
file exists; when it does, it saves a checkpoint at the current step and raises :class:`TrainingStopped`
(``sweet grid`` uses ``GRID_DIR/STOP``: :data:`STOP_FILE`). Ctrl-C does the same (:func:`interrupt_after_step`):
the first SIGINT while training saves the step in progress once it is done and raises KeyboardInterrupt; a
second one stops at once. Killing the process instead loses the steps since the last periodic checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .errors import SweetError
from .io import atomic_write_json, sha256_file
from .modeling import refuse_pickle

CHECKPOINT_DIR = "checkpoint"
STOP_FILE = "STOP"  # a grid directory's stop request (sweet.experiments.stopping)
STATE_NAME = "state.json"
FORMAT_VERSION = 1
_STATE_KEYS = {"format_version", "step", "epoch", "batch", "steps_per_epoch", "total_steps", "weights",
               "fingerprint", "optimizer", "scheduler", "rng", "progress"}


@dataclass
class TrainState:
    """Where training stands: optimizer steps done, the loss log, the running loss sums since the last log
    entry (one per exit), the wall time of earlier processes, the steps at which the run was resumed, and
    (``pcgrad``) the projections made so far, and (``ee_anchor@F``) the anchor term's running sum."""

    step: int = 0
    log: list = field(default_factory=list)
    window: np.ndarray = field(default_factory=lambda: np.zeros(0))
    window_steps: int = 0
    seconds: float = 0.0
    resumed_at: list = field(default_factory=list)
    projections: dict = field(default_factory=lambda: {"projections": 0, "pairs": 0})
    scaler: dict = field(default_factory=dict)  # fp16: the gradient scaler's state (sweet.training)
    anchor_window: float = 0.0


def training_fingerprint(model, encoded, config) -> dict:
    """What must be the same for a checkpoint to be resumed: the hyper-parameters, the model's shape and the
    exact training data (token ids and labels)."""
    digest = hashlib.sha256()
    for ids in encoded.input_ids:
        digest.update(np.asarray(ids, dtype=np.int64).tobytes())
        digest.update(b"|")
    digest.update(np.asarray(encoded.labels, dtype=np.int64).tobytes())
    fingerprint = {
        "train_config": config.to_dict(),
        "method": model.config.method,
        "exit_layers": list(model.exit_layers),
        "num_labels": int(model.config.num_labels),
        "n_examples": len(encoded),
        "data_sha256": digest.hexdigest(),
    }
    return json.loads(json.dumps(fingerprint))  # the form it has after a round trip through state.json


def _differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current)):
            out += _differences(saved.get(key), current.get(key), f"{prefix}{key}.")
        return out
    if saved == current:
        return []
    if prefix == "data_sha256.":
        return ["the training data (token ids or labels) changed"]
    return [f"{prefix.rstrip('.')} was {saved!r}, now {current!r}"]


class TrainingStopped(Exception):
    """Training stopped on request (its stop file appeared) after saving a checkpoint at ``step`` of
    ``total_steps``; resuming the run continues from there and ends as an uninterrupted run would."""

    def __init__(self, step: int, total_steps: int):
        super().__init__(step, total_steps)  # the arguments, so that the exception pickles (Ray hands it back)
        self.step, self.total_steps = step, total_steps

    def __str__(self) -> str:
        return f"training stopped on request at step {self.step} of {self.total_steps} (checkpoint saved)"


@contextmanager
def interrupt_after_step():
    """While training: the first Ctrl-C (SIGINT) sets the yielded flag (``flag["asked"]``) instead of interrupting,
    so that the loop can finish the step in progress, save it, and then raise KeyboardInterrupt; a second Ctrl-C
    interrupts at once. Only in the main thread and where SIGINT is handled by Python (not where it is ignored);
    the previous handler is restored afterwards."""
    flag = {"asked": False}
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield flag
        return

    def ask(signum, frame):
        if flag["asked"]:
            raise KeyboardInterrupt("interrupted twice: stopped at once")
        flag["asked"] = True
        print("\ninterrupt: stopping once this step is done, with a checkpoint of it (Ctrl-C again: at once)",
              file=sys.stderr, flush=True)

    signal.signal(signal.SIGINT, ask)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


class Checkpointer:
    """Saves and restores training checkpoints in ``directory`` (``RUN_DIR/checkpoint``).

    ``every``: save after every ``every`` optimizer steps and after the last step (0: never save; an existing
    checkpoint can still be resumed). ``stop_file``: a path whose existence asks training to save a checkpoint
    at the current step and stop (:class:`TrainingStopped`)."""

    def __init__(self, directory: str | os.PathLike, every: int = 0, stop_file: str | os.PathLike | None = None):
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise SweetError(f"checkpoint interval must be 0 (off) or a positive number of steps, got {every}")
        self.directory = Path(directory)
        self.every = every
        self.stop_file = None if stop_file is None else Path(stop_file)

    def stop_requested(self) -> bool:
        """Whether the stop file exists (one ``stat`` per optimizer step)."""
        return self.stop_file is not None and self.stop_file.exists()

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_NAME

    def exists(self) -> bool:
        return self.state_path.is_file()

    def due(self, step: int, total_steps: int) -> bool:
        return self.every > 0 and (step % self.every == 0 or step == total_steps)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    # ------------------------------------------------------------------------------------------- save

    def save(self, model, optimizer, scheduler, state: TrainState, fingerprint: dict, *, steps_per_epoch: int,
             total_steps: int, seconds: float) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"model/{k}": v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        if model.anchor is not None:  # ee_anchor@F after the switch: the frozen copy is not in the state dict
            anchor = model.anchor.state_dict()
            tensors.update({f"anchor/{k}": v.detach().contiguous().clone() for k, v in anchor.items()})
        opt = optimizer.state_dict()
        for index, values in opt["state"].items():
            for key, value in values.items():
                if not torch.is_tensor(value):
                    raise TypeError(f"optimizer state {index}/{key} is not a tensor; cannot checkpoint it")
                tensors[f"optim/{index}/{key}"] = value.detach().contiguous().clone()
        tensors["rng/torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for device, rng in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng/cuda/{device}"] = rng

        name = f"step-{state.step:07d}.safetensors"
        tmp = self.directory / f".{name}.tmp"
        save_file(tensors, str(tmp), metadata={"format": "pt", "sweet_checkpoint_version": str(FORMAT_VERSION)})
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.directory / name)

        np_state = np.random.get_state(legacy=True)
        py_state = random.getstate()
        epoch, batch = divmod(state.step, steps_per_epoch)
        atomic_write_json(self.state_path, {
            "format_version": FORMAT_VERSION,
            "step": state.step,
            "epoch": epoch,
            "batch": batch,
            "steps_per_epoch": steps_per_epoch,
            "total_steps": total_steps,
            "weights": {"file": name, "bytes": (self.directory / name).stat().st_size,
                        "sha256": sha256_file(self.directory / name)},
            "fingerprint": fingerprint,
            "optimizer": {"param_groups": opt["param_groups"]},
            "scheduler": scheduler.state_dict(),
            "rng": {
                "python": [py_state[0], list(py_state[1]), py_state[2]],
                "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
            },
            "progress": {**asdict(state), "window": [float(x) for x in state.window], "seconds": round(seconds, 3)},
        })
        for old in self.directory.iterdir():  # older weights and leftovers of an interrupted save
            if old.name not in (name, STATE_NAME) and old.is_file():
                old.unlink()
        return self.directory / name

    # ------------------------------------------------------------------------------------------- load

    def read_state(self) -> dict:
        path = self.state_path
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SweetError(f"no checkpoint in {self.directory} ({STATE_NAME} is missing)") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise SweetError(f"{path}: not valid JSON ({exc}); delete {self.directory} to start over") from exc
        if not isinstance(state, dict):
            raise SweetError(f"{path}: expected a JSON object; delete {self.directory} to start over")
        unknown = sorted(set(state) - _STATE_KEYS)
        if unknown:
            raise SweetError(f"{path} has unknown key(s): {', '.join(unknown)}; it was not written by this version of sweet")
        missing = sorted(_STATE_KEYS - set(state))
        if missing:
            raise SweetError(f"{path} lacks key(s): {', '.join(missing)}; delete {self.directory} to start over")
        if state["format_version"] != FORMAT_VERSION:
            raise SweetError(f"{path}: checkpoint format {state['format_version']} is not supported "
                             f"(this sweet writes format {FORMAT_VERSION})")
        return state

    def _weights_path(self, state: dict) -> Path:
        weights = state["weights"]
        name = str(weights.get("file", ""))
        if not name.endswith(".safetensors") or Path(name).name != name:
            raise SweetError(f"{self.state_path} names the weights file '{name}'; only a .safetensors file inside "
                             f"{self.directory} is loaded (pickle is never loaded)")
        path = self.directory / name
        start_over = f"delete {self.directory} (or pass --overwrite) to start over"
        if not path.is_file():
            raise SweetError(f"checkpoint weights file {path} is missing; {start_over}")

        refuse_pickle(path)
        size = path.stat().st_size
        if size != weights.get("bytes"):
            raise SweetError(f"checkpoint weights file {path} is truncated or damaged ({size} bytes, expected "
                             f"{weights.get('bytes')}); {start_over}")
        if sha256_file(path) != weights.get("sha256"):
            raise SweetError(f"checkpoint weights file {path} is damaged (SHA-256 differs from {STATE_NAME}); {start_over}")
        return path

    def verify(self, fingerprint: dict) -> tuple[dict, Path]:
        """Check, before anything is loaded or written, that the checkpoint is complete, undamaged and made
        for this training setup. Returns its state and its weights file."""
        state = self.read_state()
        diffs = _differences(state["fingerprint"], fingerprint)
        if diffs:
            raise SweetError(f"the checkpoint in {self.directory} was made for a different training setup "
                             f"({'; '.join(diffs[:3])}); use the same options, or --overwrite to start over")
        return state, self._weights_path(state)

    def load(self, model, optimizer, scheduler, fingerprint: dict) -> TrainState:
        """Restore model, optimizer, scheduler and RNG states; returns where training stands."""
        state, path = self.verify(fingerprint)
        try:
            tensors = load_file(str(path))
        except Exception as exc:  # safetensors' own error types
            raise SweetError(f"checkpoint weights file {path} is not readable safetensors ({exc})") from exc

        model_state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
        try:
            model.load_state_dict(model_state, strict=True)
        except RuntimeError as exc:
            raise SweetError(f"checkpoint weights file {path} does not fit the model ({str(exc).splitlines()[0]})") from exc
        anchor_state = {k[len("anchor/"):]: v for k, v in tensors.items() if k.startswith("anchor/")}
        model.release_anchor()
        if anchor_state:  # saved after the switch: train on against the same anchor
            try:
                model.freeze_anchor(anchor_state)
            except RuntimeError as exc:
                raise SweetError(f"checkpoint weights file {path}: the anchor does not fit the model "
                                 f"({str(exc).splitlines()[0]})") from exc

        fresh_groups = optimizer.state_dict()["param_groups"]
        groups = state["optimizer"]["param_groups"]
        if len(groups) != len(fresh_groups):
            raise SweetError(f"checkpoint in {self.directory} has {len(groups)} optimizer group(s), expected {len(fresh_groups)}")
        for group, fresh in zip(groups, fresh_groups):  # JSON turned tuples (betas) into lists
            for key, value in fresh.items():
                if isinstance(value, tuple) and isinstance(group.get(key), list):
                    group[key] = tuple(group[key])
        opt_state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optim/"):
                _, index, name = key.split("/", 2)
                opt_state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
        scheduler.load_state_dict(state["scheduler"])

        torch.set_rng_state(tensors["rng/torch"])
        cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng/cuda/")]
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        py = state["rng"]["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        name, keys, pos, has_gauss, cached = state["rng"]["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))

        progress = dict(state["progress"])
        unknown = sorted(set(progress) - set(TrainState.__dataclass_fields__))
        if unknown:
            raise SweetError(f"{self.state_path}: progress has unknown key(s): {', '.join(unknown)}")
        window = np.array([np.nan if x is None else x for x in progress.pop("window", [])], dtype=np.float64)
        restored = TrainState(**progress, window=window)
        restored.resumed_at = [*restored.resumed_at, restored.step]
        return restored


def checkpoint_step(run_dir: str | os.PathLike) -> tuple[int, int] | None:
    """(steps done, total steps) of the checkpoint in ``run_dir``, or None if it has none (or it is unreadable)."""
    path = Path(run_dir) / CHECKPOINT_DIR / STATE_NAME
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        return int(state["step"]), int(state["total_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
