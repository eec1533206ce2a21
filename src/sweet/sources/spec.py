"""What to read (:class:`SourceSpec`) and what comes back (:class:`LabelledTable`, :class:`SourceData`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pyarrow as pa

#: File types read as data (a folder of split files holds files of these types too).
SUPPORTED_EXTENSIONS = (".csv", ".tsv", ".json", ".jsonl", ".parquet")
#: ``eval_split`` value that asks for no evaluation split even where the data has one.
NO_EVAL_SPLIT = "none"


@dataclass(frozen=True)
class SourceSpec:
    """Where labelled text data comes from.

    ``data`` (and ``eval_data``) is a file (.csv .tsv .json .jsonl .parquet), a folder of split files
    (``train.*``, ``validation.*`` or ``dev.*``, ``test.*``), a folder written by ``datasets``' ``save_to_disk``
    (a ``Dataset`` or a ``DatasetDict``), or a Hugging Face hub dataset id (``data_config`` names its config).
    ``eval_split`` None picks ``validation``, else ``dev``, else ``test`` if it has labels, else no evaluation
    split; ``"none"`` asks for none. ``text_columns`` / ``label_column`` None: detected from the column names.
    ``drop_invalid``: skip rows with a blank, missing or non-string text or a missing label (and say so in a note)
    instead of refusing the data.
    """

    data: str
    eval_data: str | None = None
    data_config: str | None = None
    train_split: str = "train"
    eval_split: str | None = None
    text_columns: tuple[str, ...] | None = None
    label_column: str | None = None
    drop_invalid: bool = False
    id_column: str | None = None  # a column of row ids kept as strings (the GLUE presets' ``idx``), where present
    scoring_only: bool = False  # the data is only scored (evaluate, bench): a single class is allowed


@dataclass
class LabelledTable:
    """Texts and label ids of one split, kept as Arrow arrays and numpy (no Python list per row)."""

    texts: tuple[pa.ChunkedArray, ...]  # one string array per text column, no nulls
    labels: np.ndarray  # int64 ids into SourceData.label_names
    rows: np.ndarray | None = None  # int64: each row's 1-based data row in its source (rows dropped as invalid skipped)
    ids: pa.ChunkedArray | None = None  # the rows' ids (strings) from SourceSpec.id_column, where the data has it

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: Sequence[int] | np.ndarray) -> "LabelledTable":
        """The rows at ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        arrow_idx = pa.array(idx, type=pa.int64())
        return LabelledTable(
            texts=tuple(column.take(arrow_idx) for column in self.texts),
            labels=self.labels[idx],
            rows=None if self.rows is None else self.rows[idx],
            ids=None if self.ids is None else self.ids.take(arrow_idx),
        )

    def text_tuples(self) -> list[tuple[str, ...]]:
        """One tuple of texts per row, as Python strings: for small tables or subsets only."""
        return list(zip(*(column.to_pylist() for column in self.texts)))


@dataclass
class SourceData:
    pool: LabelledTable  # the training pool (train split or the single file)
    evaluation: LabelledTable | None  # the given evaluation split/file, or None (the caller holds out part of the pool)
    text_columns: tuple[str, ...]
    label_column: str
    label_names: list[str]
    evaluation_name: str | None  # e.g. 'validation', 'test', 'file:eval.csv'
    files: dict[str, str]  # role ('pool', 'evaluation') -> path, or 'hubid:config/split'
    fingerprint: dict[str, str]  # role -> sha256 of the file, or the datasets fingerprint (hub / save_to_disk)
    notes: list[str] = field(default_factory=list)  # one-line messages for the user

    @property
    def num_labels(self) -> int:
        return len(self.label_names)
