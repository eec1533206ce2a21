"""The manifest of an exported model folder (``sweet export RUN_DIR --format onnx``): what the ONNX Runtime engine
needs besides the graphs, in one JSON file, so that the folder answers on its own (no run directory, no torch).

Layout of a folder::

    manifest.json            this file's content (:class:`Manifest`)
    fp32/exit-1.onnx ...     one graph per segment (early_exit, sweet, ...) or per member model (multi_model)
    int8/exit-1.onnx ...     the same graphs dynamically quantized by ONNX Runtime (with --int8)
    tokenizer.json ...       the tokenizer files of the run's model (tokenizer.json is what the runtime reads)

Graph inputs and outputs (dynamic ``batch`` and ``sequence`` axes):

* segment 1 (and every Multi-Model member): ``input_ids`` [B, S] int64, ``attention_mask`` [B, S] int64 and, where
  the model takes them, ``token_type_ids`` [B, S] int64;
* segment k > 1: ``hidden`` [B, S, d] float32 (the hidden state that left segment k - 1) and ``attention_mask``;
* every graph: ``logits`` [B, K] float32 (exit k's head) and ``pooled`` [B, d] float32 (the head's pooled
  representation, read by the ``learned`` policy); segments also ``hidden_out`` [B, S, d] (exit k's representation,
  the next segment's input).

Torch-free: the runtime reads it with json alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..choices import RUNTIMES  # noqa: F401 (public here too)
from ..errors import SweetError

MANIFEST = "manifest.json"
FORMAT = "sweet-onnx"
FORMAT_VERSION = 1
TOKENIZER_JSON = "tokenizer.json"
#: the precisions an exported folder can hold (ONNX Runtime runs the fp32 graphs and their dynamic int8 quantization)
ONNX_PRECISIONS = ("fp32", "int8")


def graph_name(exit_index: int) -> str:
    """File name of exit ``exit_index``'s graph (0-based index, 1-based name)."""
    return f"exit-{exit_index + 1}.onnx"


@dataclass
class Manifest:
    """Everything the ONNX engine needs besides the graphs and the tokenizer (see the module docstring)."""

    method: str
    backbone: str
    segmented: bool  # True: one shared encoder cut into segments (hidden states handed on); False: member models
    exit_layers: list[int]
    num_labels: int
    label_names: list[str]
    task: dict  # sweet.data.Task.to_dict(): name, text_fields, label_names, metric
    temperatures: list[float] | None
    policy: str
    threshold: float
    max_length: int
    hidden_size: int
    inputs: list[str]  # the first graph's inputs: input_ids, attention_mask[, token_type_ids]
    pad_token_id: int
    precisions: dict[str, list[str]]  # precision -> graph files (relative paths), one per exit
    tokenizer_files: list[str]
    exit_predictors: dict | None = None  # {"weights": [[d floats] per exit], "biases": [float per exit]} (learned)
    int8: dict | None = None  # how the int8 graphs were quantized
    source: str | None = None  # the run directory it was exported from
    source_sha256: str | None = None  # of the run's model.safetensors (a cached export is refreshed when it changes)
    sweet_version: str = ""
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    notes: list[str] = field(default_factory=list)

    @property
    def num_exits(self) -> int:
        return len(self.exit_layers)

    @property
    def uses_token_type_ids(self) -> bool:
        return "token_type_ids" in self.inputs

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def read(cls, folder: str | Path) -> "Manifest":
        """Read and check ``folder/manifest.json`` and that the graphs and tokenizer it names exist."""
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            raise SweetError(f"{folder} is not an exported sweet model folder ({MANIFEST} is missing); "
                             "write one with 'sweet export RUN_DIR --format onnx --output DIR'")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise SweetError(f"{path}: not valid JSON ({exc}); the file is damaged") from exc
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise SweetError(f"{path}: not a sweet ONNX manifest (format is not {FORMAT!r})")
        if raw.get("format_version") != FORMAT_VERSION:
            raise SweetError(f"{path}: format version {raw.get('format_version')} is not {FORMAT_VERSION}; "
                             "export the model again with this version of sweet")
        known = set(cls.__dataclass_fields__)
        try:
            manifest = cls(**{k: v for k, v in raw.items() if k in known})
        except TypeError as exc:  # a required key is missing
            raise SweetError(f"{path}: {exc}") from exc
        for precision, files in manifest.precisions.items():
            if len(files) != manifest.num_exits:
                raise SweetError(f"{path}: {precision} lists {len(files)} graphs for {manifest.num_exits} exits")
            for name in files:
                if not (folder / name).is_file():
                    raise SweetError(f"{folder}: graph {name} named in {MANIFEST} is missing")
        if not (folder / TOKENIZER_JSON).is_file():
            raise SweetError(f"{folder}: {TOKENIZER_JSON} is missing (the runtime tokenizes with it)")
        return manifest
