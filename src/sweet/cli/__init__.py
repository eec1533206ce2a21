"""Command line interface: ``sweet train | demo | evaluate | predict | bench | export | tune | grid | report | tasks |
serve | loadtest`` and ``sweet analyze gradients``, one module per command group:

- :mod:`~sweet.cli.training`: train, demo
- :mod:`~sweet.cli.inference`: evaluate, predict, bench, export
- :mod:`~sweet.cli.tuning`: tune
- :mod:`~sweet.cli.experiments`: grid, report, tasks
- :mod:`~sweet.cli.analysis`: analyze gradients
- :mod:`~sweet.cli.serving`: serve, loadtest

Options shared by several commands are declared once in :mod:`~sweet.cli.options`; the app and ``--debug`` /
``--version`` in :mod:`~sweet.cli.base`; the entry point and its error handling in :mod:`~sweet.cli.main`.
"""

from . import analysis, experiments, inference, serving, training, tuning  # noqa: F401  (each registers its commands)
from .base import app
from .main import main

__all__ = ["app", "main"]

if __name__ == "__main__":
    main()
