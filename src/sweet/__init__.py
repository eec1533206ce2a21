"""sweet: adaptive inference for transformer classifiers (Early-Exit, SWEET, Multi-Model)."""

__version__ = "0.1.0"

from .errors import SweetError  # noqa: E402
from .modeling import METHODS, MultiExitConfig, MultiExitModel, MultiExitOutput  # noqa: E402
from .policies import ConfidencePolicy, ExitPolicy  # noqa: E402
from .predictor import Predictor, load  # noqa: E402

__all__ = [
    "METHODS",
    "ConfidencePolicy",
    "ExitPolicy",
    "MultiExitConfig",
    "MultiExitModel",
    "MultiExitOutput",
    "Predictor",
    "SweetError",
    "__version__",
    "load",
]
