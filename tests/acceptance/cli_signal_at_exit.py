"""A job module for one test only (never import it elsewhere): at exit, its process sends
itself SIGTERM.

That is a signal landing after a clean stop, once the event loop is closed and
before the process is gone: the window where a second SIGTERM once killed a
worker that had stopped cleanly (exit status -15).
"""

from __future__ import annotations

import atexit
import os
import signal

from tests.acceptance.cli_jobs import echo

__all__ = ["echo"]

atexit.register(os.kill, os.getpid(), signal.SIGTERM)
