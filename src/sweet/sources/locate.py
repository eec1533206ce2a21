"""Where the data is: a file, a folder of split files, a save_to_disk folder or a hub dataset, and its splits.

* An existing **file** is one part (the pool; it has no evaluation split of its own).
* An existing **folder** written by ``save_to_disk`` is read with ``datasets.load_from_disk``: a ``Dataset`` is one
  part, a ``DatasetDict`` has one part per split.
* An existing folder given with a config (``--data-config``) is a local copy of a hub dataset repository: it is
  read as a hub id is (``datasets.load_dataset(folder, config)``).
* Another existing **folder** holds split files ``SPLIT.EXT`` (EXT one of the supported extensions): the split
  names are the file names without extension (``train``, ``dev``, ``dev_matched``, ...).
* A path that does not exist is refused when it looks like a path (it starts with ``/``, ``.`` or ``~``, has more
  than one ``/``, or ends with a file extension); otherwise it is taken as a **hub id** and read with
  ``datasets.load_dataset(id, config)``.

The evaluation split, when ``eval_split`` is not given: ``validation``, else ``dev``, else ``test`` when it has
labels (an unlabelled ``test`` is skipped with a note); none for a single file or Dataset. ``--eval-data`` is read
the same way: a file is the evaluation; from a source with splits, the split is chosen by the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import SweetError
from .datasets_io import dataset_part, is_saved_dataset, load_hub, load_saved
from .files import file_part
from .part import Part
from .spec import SUPPORTED_EXTENSIONS

#: The evaluation splits tried in order when none is given ('test' only when it has labels).
DEFAULT_EVAL_SPLITS = ("validation", "dev", "test")
#: Suffixes that mark a missing ``data`` as a file rather than a hub id.
_FILE_SUFFIXES = (*SUPPORTED_EXTENSIONS, ".txt", ".xlsx", ".xls", ".gz", ".zip", ".arrow", ".feather")


@dataclass
class Source:
    given: str  # as the user gave it
    kind: str  # 'file', 'dataset' (a single saved Dataset), 'folder', 'saved' (a saved DatasetDict) or 'hub'
    single: Part | None = None
    splits: dict[str, Callable[[], Part]] = field(default_factory=dict)
    where: str = ""  # how messages name the whole source

    def part(self, split: str, flag: str) -> Part:
        if split in self.splits:
            return self.splits[split]()
        has = ", ".join(self.splits) or "(none)"
        if self.kind != "folder":
            raise SweetError(f"{self.where}: no split '{split}'; the dataset has splits: {has}; pass {flag} NAME")
        *first, last = [f"{split}{e}" for e in SUPPORTED_EXTENSIONS]
        expected = f"{', '.join(first)} or {last}"
        if flag == "--train-split":
            raise SweetError(f"{self.where}: no training file; expected {expected} (or a folder written by save_to_disk)")
        raise SweetError(f"{self.where}: no file for split '{split}' (expected {expected}); the folder has splits: {has}")


def looks_like_path(text: str) -> bool:
    return (
        text.startswith(("/", ".", "~"))
        or "\\" in text
        or text.count("/") > 1
        or Path(text).suffix.lower() in _FILE_SUFFIXES
    )


def open_source(given: str, config: str | None) -> Source:
    path = Path(given).expanduser()
    if path.is_file():
        return Source(given, "file", single=file_part(path, "file"), where=str(path))
    if path.is_dir():
        if is_saved_dataset(path):
            return _saved_source(given, path)
        if config is None:
            return _folder_source(given, path)
    elif looks_like_path(given):
        raise SweetError(f"{path}: file not found")
    dataset = load_hub(given, config)
    where = f"{given}:{config or 'default'}"
    splits = {name: _maker(dataset[name], name, f"{where}/{name}") for name in dataset}
    return Source(given, "hub", splits=splits, where=where)


def _maker(dataset, name: str, where: str) -> Callable[[], Part]:
    return lambda: dataset_part(dataset, name, where)


def _saved_source(given: str, path: Path) -> Source:
    import datasets

    loaded = load_saved(path)
    if isinstance(loaded, datasets.Dataset):
        return Source(given, "dataset", single=dataset_part(loaded, "file", str(path)), where=str(path))
    splits = {name: _maker(loaded[name], name, str(path / name)) for name in loaded}
    return Source(given, "saved", splits=splits, where=str(path))


def _folder_source(given: str, path: Path) -> Source:
    files: dict[str, list[Path]] = {}
    for child in sorted(path.iterdir()):
        if child.is_file() and child.suffix.lower() in SUPPORTED_EXTENSIONS:
            files.setdefault(child.stem, []).append(child)

    def maker(split: str, found: list[Path]) -> Callable[[], Part]:
        def make() -> Part:
            if len(found) > 1:
                names = ", ".join(f.name for f in found)
                raise SweetError(f"{path}: more than one file for split '{split}' ({names}); keep one")
            return file_part(found[0], split)

        return make

    splits = {split: maker(split, found) for split, found in files.items()}
    return Source(given, "folder", splits=splits, where=str(path))



def evaluation_split_name(given: str, config: str | None, eval_split: str | None) -> str:
    """The split of ``given`` (a folder, a ``save_to_disk`` folder or a hub id) to evaluate on: ``eval_split``, or
    the first of validation, dev and test it has (a single saved ``Dataset``: all of it)."""
    source = open_source(given, config)
    if source.single is not None:
        if eval_split is not None:
            raise SweetError(f"--eval-split '{eval_split}' does not apply: {source.where} has no splits")
        return "train"  # read whole, as load_source reads a single part
    if eval_split is not None:
        source.part(eval_split, "--eval-split")  # a clear error when it has no such split
        return eval_split
    for name in DEFAULT_EVAL_SPLITS:
        if name in source.splits:
            return name
    raise SweetError(f"{source.where}: no validation, dev or test split to evaluate on "
                     f"(it has: {', '.join(source.splits) or '(none)'}); pass --eval-split NAME")
