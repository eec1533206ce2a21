"""Atomic file writes: a crash never leaves a half-written result that a later step would read as valid."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import SweetError


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, Paths: everything else is a bug and should fail loudly.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


def _clean_floats(obj: Any) -> Any:
    """Replace NaN/inf by None so that the JSON we write is standard JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_floats(v) for v in obj]
    return obj


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same directory and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o644)  # mkstemp creates the file private (0600); results are meant to be shared
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    text = json.dumps(_clean_floats(json.loads(json.dumps(obj, default=_json_default))), indent=2)
    return atomic_write_text(path, text + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def atomic_save_figure(fig, path: str | os.PathLike) -> Path:
    """Save a matplotlib figure as PNG via a temporary file and an atomic rename, then close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return path


def decode_utf8(raw: bytes, where: str) -> str:
    """Strict UTF-8 (a leading byte-order mark is dropped). The one error for text that is not UTF-8, wherever it
    comes from (a data file, ``predict`` input, a load test's texts): it names the line and the byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SweetError(f"{where}:{line}: not valid UTF-8 (byte offset {exc.start}, byte 0x{raw[exc.start]:02x}); "
                         "re-encode the file as UTF-8") from None


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's content, read in 1 MiB blocks (data files, checkpoint weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
