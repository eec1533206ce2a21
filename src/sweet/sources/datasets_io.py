"""Reading through the ``datasets`` library: folders written by ``save_to_disk`` and Hugging Face hub datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from ..errors import SweetError
from .part import Part, Raw, first_line


def class_labels_of(features: Any) -> dict[str, list[str]]:
    """Column -> label names, for each column that ``datasets`` declares as a ``ClassLabel``."""
    import datasets

    return {name: list(f.names) for name, f in features.items() if isinstance(f, datasets.ClassLabel)}


def class_labels_of_schema(schema: pa.Schema) -> dict[str, list[str]]:
    """The ``ClassLabel`` columns that ``datasets`` recorded in an Arrow schema's metadata (e.g. ``to_parquet``)."""
    if not schema.metadata or b"huggingface" not in schema.metadata:
        return {}
    import datasets

    try:
        features = datasets.Features.from_arrow_schema(schema)
    except Exception:  # metadata written by another version or by hand: read the columns as they are
        return {}
    return class_labels_of(features)


def is_saved_dataset(path: Path) -> bool:
    """A folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return (path / "dataset_dict.json").is_file() or ((path / "state.json").is_file() and (path / "dataset_info.json").is_file())


def load_saved(path: Path) -> Any:
    import datasets

    try:
        return datasets.load_from_disk(str(path))
    except Exception as exc:  # damaged folders raise many kinds of errors; name the cause once
        raise SweetError(f"{path}: not a readable save_to_disk folder ({first_line(exc)})") from None


def load_hub(dataset_id: str, config: str | None) -> Any:
    """``datasets.load_dataset(id, config)``: a DatasetDict with the dataset's splits."""
    import datasets

    shown = f"'{dataset_id}'" + (f" (config '{config}')" if config else "")
    try:
        return datasets.load_dataset(dataset_id, config)
    except ConnectionError as exc:  # also what datasets raises when HF_HUB_OFFLINE=1
        raise SweetError(
            f"'{dataset_id}' is not a local file or folder, and reading it from the Hugging Face hub needs network "
            f"access, which failed ({first_line(exc)}); without network, pass a local file or a save_to_disk folder"
        ) from None
    except datasets.exceptions.DatasetNotFoundError as exc:
        raise SweetError(
            f"'{dataset_id}' is not a local file or folder, nor a dataset on the Hugging Face hub ({first_line(exc)})"
        ) from None
    except Exception as exc:  # a bad config name (ValueError), a broken dataset script, ...
        raise SweetError(f"could not load {shown} from the Hugging Face hub ({first_line(exc)})") from None


def dataset_part(dataset: Any, name: str, where: str) -> Part:
    """A part for one ``datasets.Dataset`` (a split of a DatasetDict, or a single saved Dataset)."""
    if dataset.num_rows == 0:
        raise SweetError(f"{where}: no rows")

    def read(columns: list[str]) -> Raw:
        return Raw(dataset.select_columns(columns).with_format("arrow")[:])

    return Part(
        name, where, where, str(dataset._fingerprint), list(dataset.column_names), read, class_labels_of(dataset.features)
    )
