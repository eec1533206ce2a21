"""Labelled text data from a file, a folder, a ``save_to_disk`` folder or the Hugging Face hub (issue #23).

:func:`load_source` reads a :class:`SourceSpec` into a :class:`SourceData`: the training pool (and the evaluation
split, when the data has one) as Arrow text arrays and int64 label ids, the label names, the provenance of every
file and one-line notes for the user. Every input it refuses raises :class:`sweet.SweetError` with one line
(docs/errors.md, "Your own data"). The rules live with their code:

* where the data is and which split evaluates: :mod:`sweet.sources.locate`;
* how each file type is read: :mod:`sweet.sources.files` (``datasets``: :mod:`sweet.sources.datasets_io`);
* which columns: :mod:`sweet.sources.columns`; labels: :mod:`sweet.sources.labels`; texts: :mod:`sweet.sources.texts`.

Nothing is kept as one Python object per row (except a JSON array, which the ``json`` module parses whole): the
texts stay Arrow arrays, checks are ``pyarrow.compute`` kernels, and only offending rows are materialised.
The same files give the same tables in the same row order.
"""

from .columns import LABEL_NAMES, PAIR_TEXT_NAMES, SINGLE_TEXT_NAMES, detect_columns
from .load import SMALL_CLASS_ROWS, load_source
from .locate import evaluation_split_name
from .spec import (
    NO_EVAL_SPLIT,
    SUPPORTED_EXTENSIONS,
    LabelledTable,
    SourceData,
    SourceSpec,
)

__all__ = [
    "LABEL_NAMES",
    "NO_EVAL_SPLIT",
    "PAIR_TEXT_NAMES",
    "SINGLE_TEXT_NAMES",
    "SMALL_CLASS_ROWS",
    "SUPPORTED_EXTENSIONS",
    "LabelledTable",
    "SourceData",
    "SourceSpec",
    "detect_columns",
    "evaluation_split_name",
    "load_source",
]
