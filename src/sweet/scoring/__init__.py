"""Score a table file with a trained run: ``sweet predict RUN --input new.csv --output scored.csv``.

:func:`score_file` reads the input in batches of rows, predicts each batch and writes it at once, so a file of any
size is never held in memory: at most one batch of rows as Python values, and for CSV/TSV input the few tens of
1 MiB read blocks pyarrow parses ahead (:data:`CSV_BLOCK_BYTES`). The
output holds every input row, in input order, with every input column, and the prediction columns added after
them: ``label`` (the label name), ``exit_layer`` (int), ``confidence`` (float) and, with an exit policy other
than ``confidence``, that policy's ``score`` (float).

**Name clash rule**: when the input already has a column named like one of the prediction columns (a labelled
file with its gold ``label``, say), *all* prediction columns are written with the prefix ``sweet_``
(``sweet_label``, ``sweet_exit_layer``, ``sweet_confidence``[, ``sweet_score``]), so they stay together and the
input's columns are never overwritten. An input that also has one of those prefixed names is refused.

Formats (by extension, input and output chosen independently):

* ``.csv``: comma-separated, a header row, ``"`` quotes (a quoted text may span lines). Every input value is read
  as a string, so ids keep their leading zeros; the output quotes every string (RFC 4180).
* ``.tsv``: tab-separated, a header row, **no quoting** (as in GLUE's files, whose texts contain quote
  characters). A value holding a tab or a line break cannot be written to a TSV: use ``.csv`` output for those.
* ``.jsonl``: one JSON object per line (blank lines are skipped). A ``.json`` array cannot be streamed and is
  refused with a hint. JSON Lines are read twice: a first pass checks every line and finds the columns (the
  union of the objects' keys, in order of first appearance) and their types; JSON Lines output keeps each
  object as it was, with the prediction keys added.
* ``.parquet``: read by row batches; its column types are kept where the output format has them.

Rows are numbered from 1, the header (CSV/TSV) not counted; for JSON Lines, errors also name the line.
The output is written to a temporary file beside it and renamed at the end: a failure leaves no partial output
(an existing output file is replaced only by a complete one).
"""

from .common import (
    CLASH_PREFIX,
    CSV_BLOCK_BYTES,
    PREDICTION_COLUMNS,
    SCORABLE,
    is_table_file,
)
from .score import score_file

__all__ = ["CLASH_PREFIX", "CSV_BLOCK_BYTES", "PREDICTION_COLUMNS", "SCORABLE", "is_table_file", "score_file"]
