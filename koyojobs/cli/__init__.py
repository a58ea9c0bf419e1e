"""The ``koyojobs`` command: run workers, migrate, inspect, retry and cancel.

Thin over the public API: each command opens a broker on ``--dsn`` (or
``KOYOJOBS_DSN``), does one thing through :class:`~koyojobs.Broker`'s methods,
and closes it. One module per group of commands: ``worker`` (the worker
process), ``inspect`` (status, jobs, schedules), ``control`` (migrate, prune,
retry, cancel, pause, resume), ``dashboard``, ``generate`` (``new job``);
``base`` holds what they share.
"""

from __future__ import annotations

from typing import Any

from . import control, dashboard, generate, inspect, worker
from .base import main
from .worker import default_pool_size, own_connections

__all__ = ["default_pool_size", "main", "own_connections", "run"]

# The command modules register their commands on ``main`` when imported.
_COMMANDS = (control, dashboard, generate, inspect, worker)


def run(argv: list[str] | None = None) -> Any:
    """Entry point of the ``koyojobs`` script.

    Example:
        >>> run(["--help"])  # doctest: +SKIP
    """
    return main.main(args=argv, prog_name="koyojobs")
