"""The installed version of koyojobs: ``koyojobs.__version__`` and ``koyojobs --version``.

The one source of truth is ``version`` in ``pyproject.toml``; an installed
koyojobs (wheel or editable) reads it back from its distribution metadata, so
the number is never written twice. A source tree that was never installed
(a clone on ``PYTHONPATH``) reads its ``pyproject.toml``; failing both, the
version is ``0+unknown`` (a valid PEP 440 version that sorts below any release)
rather than an import error.

Example:
    >>> from koyojobs import __version__
    >>> from importlib.metadata import version
    >>> __version__ == version("koyojobs")
    True
"""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["__version__", "find_version"]

_UNKNOWN = "0+unknown"


def find_version() -> str:
    """The version of the koyojobs in use: installed metadata, else ``pyproject.toml``.

    Example:
        >>> find_version().count(".") >= 1 or find_version() == "0+unknown"
        True
    """
    try:
        return version("koyojobs")
    except PackageNotFoundError:
        pass
    # Not installed: a clone used through PYTHONPATH, whose pyproject.toml is one up.
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text("utf-8")).get("project", {})
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return _UNKNOWN
    found = project.get("version") if project.get("name") == "koyojobs" else None
    return found if isinstance(found, str) and found else _UNKNOWN


__version__ = find_version()
