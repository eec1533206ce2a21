"""The scoring loop: read a batch, check it, predict it, write it."""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
from tqdm.auto import tqdm

from ..errors import SweetError
from ..thresholds import check_threshold
from .common import PREDICTION_COLUMNS, _format_of, _prediction_names
from .readers import _open_reader
from .writers import _SINKS, _fsync


def score_file(predictor, input_path: str | os.PathLike, output_path: str | os.PathLike, *,
               threshold: float | None = None, policy: str | None = None, batch_rows: int = 2048,
               progress: bool = False) -> dict:
    """Predict every row of ``input_path`` and write the rows with their predictions to ``output_path``.

    ``predictor`` is a :class:`~sweet.predictor.Predictor` (its ``task.text_fields`` name the text columns;
    ``threshold``/``policy`` default to the predictor's). ``batch_rows`` rows are read, predicted and written at a
    time (the engine batches them further by ``predictor.batch_size``). Returns a summary: ``input``, ``output``,
    ``format``, ``rows``, ``batches``, ``seconds``, ``columns`` (the prediction columns written) and
    ``exit_counts`` (exit layer -> rows).

    Long on purpose: the streaming loop (read a batch, check, predict, write) reads top to bottom."""
    start = time.perf_counter()
    src, dst = Path(input_path), Path(output_path)
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise SweetError(f"batch_rows must be a positive integer, got {batch_rows!r}")
    _format_of(src, "input")
    if not src.is_file():
        raise SweetError(f"{src}: input file not found" if not src.exists() else f"{src}: not a file")
    out_fmt = _format_of(dst, "output")
    if dst.is_dir():
        raise SweetError(f"{dst}: is a folder; name an output file")
    if src.resolve() == dst.resolve() or (dst.exists() and os.path.samefile(src, dst)):
        raise SweetError(f"{dst}: the output cannot be the input file; name another output file")

    if policy is not None and hasattr(predictor, "get_policy"):
        predictor.get_policy(policy)  # an unknown policy fails before the file is read
    if threshold is not None:

        check_threshold(threshold)
    fields = [str(f) for f in predictor.task.text_fields]
    policy_name = policy or getattr(predictor, "policy", "confidence")
    wanted = list(PREDICTION_COLUMNS if policy_name != "confidence" else PREDICTION_COLUMNS[:3])
    reader = _open_reader(src, fields)
    names = _prediction_names(wanted, reader.columns, reader.where)
    extra_types = {n: t for n, t in zip(names, (pa.string(), pa.int64(), pa.float64(), pa.float64()))}


    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    if hasattr(os, "chmod"):
        os.chmod(tmp, 0o644)  # mkstemp creates the file private (0600); results are meant to be shared
    sink = None
    rows = batches = 0
    exits: Counter = Counter()
    bar = tqdm(total=reader.total_rows, desc="score", unit="row", disable=not progress, leave=False)
    try:
        sink = _SINKS[out_fmt](tmp, str(dst), reader.columns + names)
        for batch in reader.batches(batch_rows):
            texts = batch.texts(fields)
            answers = predictor.predict(texts, threshold=threshold, policy=policy)
            if len(answers) != batch.num_rows:
                raise RuntimeError(f"the predictor answered {len(answers)} rows for {batch.num_rows}")
            extra = {
                names[0]: [str(a["label"]) for a in answers],
                names[1]: [int(a["exit_layer"]) for a in answers],
                names[2]: [float(a["confidence"]) for a in answers],
            }
            if len(names) == 4:
                extra[names[3]] = [None if a.get("score") is None else float(a["score"]) for a in answers]
            sink.write(batch, extra, extra_types)
            exits.update(extra[names[1]])
            rows += batch.num_rows
            batches += 1
            bar.update(batch.num_rows)
        if rows == 0:
            raise SweetError(f"{reader.where}: {reader.empty_message}")
        sink.close()
        _fsync(tmp)
        os.replace(tmp, dst)
    except BaseException:
        if sink is not None:
            sink.abort()
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        bar.close()
    return {"input": str(src), "output": str(dst), "format": out_fmt, "rows": rows, "batches": batches,
            "seconds": round(time.perf_counter() - start, 3), "columns": names,
            "exit_counts": {int(k): int(v) for k, v in sorted(exits.items())}}


# ------------------------------------------------------------------------------------------------ checks
