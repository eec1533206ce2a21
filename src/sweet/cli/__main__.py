"""``python -m sweet.cli``: the same as the ``sweet`` command."""

from .main import main

main()
