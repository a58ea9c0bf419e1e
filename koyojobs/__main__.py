"""``python -m koyojobs``: the same as the ``koyojobs`` command."""

from .cli import run

run()
