"""A multi-exit model's config (saved as sweet_config.json), its output, the exit-ladder check and the file
names of a saved model."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch

from ..errors import SweetError
from ..methods import PAPER_METHODS, check_method

METHODS = PAPER_METHODS  # the paper's three ('all'); every accepted name: sweet.methods.METHOD_NAMES
POOLINGS = ("cls", "mean")
CONFIG_NAME = "sweet_config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1


#: First bytes of files written by pickle (protocol 2-5) or torch.save (a zip archive holding a pickle).
PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")


def refuse_pickle(path: str | os.PathLike) -> None:
    """Refuse, without unpickling anything, a pickle / torch.save file offered where safetensors is expected.
    (Loading goes through safetensors only, which never unpickles; this check just names the problem.)"""
    with open(path, "rb") as fh:
        head = fh.read(9)
    # safetensors: an 8-byte little-endian header length, then the JSON header
    looks_like_safetensors = len(head) == 9 and head[8:9] == b"{"
    if not looks_like_safetensors and head.startswith(PICKLE_MAGIC):
        raise SweetError(
            f"{path} is a pickle (torch.save) file, not safetensors; sweet never loads pickle because it can run "
            "arbitrary code: convert it with safetensors.torch.save_file in a trusted environment"
        )


def validate_exit_layers(exit_layers: Sequence[int], depth: int, allow_partial_depth: bool = False) -> list[int]:
    """Exit layers must be strictly increasing integers in 1..depth, the last equal to depth unless
    ``allow_partial_depth`` (then the encoder is cut after the last exit)."""
    layers = list(exit_layers)
    if not layers:
        raise SweetError("exit layers are empty; give at least one layer, e.g. --exit-layers 1,2,4,6")
    if any(isinstance(x, bool) or int(x) != x for x in layers):
        raise SweetError(f"exit layers must be integers, got {layers}")
    layers = [int(x) for x in layers]
    if any(b <= a for a, b in zip(layers, layers[1:])):
        raise SweetError(f"exit layers must be strictly increasing, got {layers}")
    if layers[0] < 1 or layers[-1] > depth:
        raise SweetError(f"exit layers must lie in 1..{depth} (the backbone's depth), got {layers}")
    if layers[-1] != depth and not allow_partial_depth:
        raise SweetError(
            f"the last exit layer is {layers[-1]} but the backbone has {depth} layers; add {depth} to the exit "
            "layers, or pass allow_partial_depth=True (--allow-partial-depth) to cut the encoder after the last exit"
        )
    return layers


@dataclass
class MultiExitConfig:
    """Everything needed to rebuild a :class:`MultiExitModel` without the original backbone files."""

    method: str
    exit_layers: list[int]
    num_labels: int
    backbone: str  # the name or path it was created from (provenance only)
    backbone_config: dict  # the Hugging Face config of the full backbone
    pooling: str = "cls"
    head_dropout: float | None = None  # None: the backbone's hidden_dropout_prob (or 0.1)
    allow_partial_depth: bool = False
    temperatures: list[float] | None = None  # per-exit temperature, fitted after training
    label_names: list[str] | None = None
    task: str | None = None
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)
    exit_predictors: bool = False  # learning-to-exit modules present (sweet.learn_exit); older models: absent

    def __post_init__(self) -> None:
        self.method = check_method(self.method)
        if self.pooling not in POOLINGS:
            raise SweetError(f"unknown pooling '{self.pooling}'; choose one of: {', '.join(POOLINGS)}")
        if int(self.num_labels) < 2:
            raise SweetError(f"num_labels must be at least 2, got {self.num_labels}")
        if self.temperatures is not None and len(self.temperatures) != len(self.exit_layers):
            raise SweetError("one temperature per exit is required")

    @property
    def depth(self) -> int:
        """Depth of the model as run: the last exit layer (L_M in the cost formulas)."""
        return self.exit_layers[-1]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MultiExitConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise SweetError(f"model config has unknown key(s): {', '.join(unknown)}")
        missing = [k for k in ("method", "exit_layers", "num_labels", "backbone", "backbone_config") if k not in d]
        if missing:
            raise SweetError(f"model config lacks required key(s): {', '.join(missing)}")
        if int(d.get("format_version", FORMAT_VERSION)) > FORMAT_VERSION:
            raise SweetError("model was saved by a newer version of sweet; upgrade sweet to load it")
        return cls(**d)


@dataclass
class MultiExitOutput:
    """``logits``: one [batch, num_labels] tensor per exit. ``loss``: sum of the exits' cross-entropies
    (when labels were given), plus the method's extra term; ``exit_losses``: each exit's own cross-entropy.
    ``hidden``: each exit's pooled representation (what learned exit policies read). ``anchor_loss``:
    ``ee_anchor@F``'s KL term to the anchor (included in ``loss``), while the model holds an anchor."""

    logits: tuple[torch.Tensor, ...]
    loss: torch.Tensor | None = None
    exit_losses: tuple[torch.Tensor, ...] | None = None
    hidden: tuple[torch.Tensor, ...] | None = None
    anchor_loss: torch.Tensor | None = None
