"""sweet: adaptive inference for transformer classifiers (Early-Exit, SWEET, Multi-Model).

The public names below are loaded on first use (PEP 562), so that importing a light module such as
``sweet.errors`` or running ``sweet --help`` does not load torch.
"""

from __future__ import annotations

import importlib

from .errors import SweetError  # noqa: F401 (public)
from .version import __version__  # noqa: F401 (public)

#: public name -> the module that defines it (or (module, name there))
_LAZY = {
    "METHODS": "modeling",
    "MultiExitConfig": "modeling",
    "MultiExitModel": "modeling",
    "MultiExitOutput": "modeling",
    "ConfidencePolicy": "policies",
    "ExitPolicy": "policies",
    "Predictor": "predictor",
    "load": "loader",
    "RunConfig": "config",
    "run": "runs",
    "train": ("runs", "train_run"),
}

__all__ = sorted([*_LAZY, "SweetError", "__version__"])


def __getattr__(name: str):
    if name in _LAZY:
        module, attribute = _LAZY[name] if isinstance(_LAZY[name], tuple) else (_LAZY[name], name)
        value = getattr(importlib.import_module(f".{module}", __name__), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
