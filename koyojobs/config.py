"""``[tool.koyojobs]``: a deployment declared in the app's ``pyproject.toml``.

``koyojobs worker`` with no arguments reads it from the current directory,
imports ``modules`` and runs one worker per declared queue, as Loom's
``serve`` does; options on the command line win over the file.

.. code-block:: toml

    [tool.koyojobs]
    modules = ["myapp.jobs"]
    dsn_env = "DATABASE_URL"            # default: KOYOJOBS_DSN
    listen_dsn_env = "DIRECT_URL"       # behind PgBouncer: LISTEN goes direct
    statement_cache_size = 0            # behind PgBouncer in transaction mode
    pool_size = 40                      # the pool's connections (default: from the queues)
    processes = 2                       # worker processes under one supervisor (default 1)

    [tool.koyojobs.queues]              # queue = concurrency
    default = 8
    long = 2

    [tool.koyojobs.retention]           # how long workers keep finished jobs
    done = "1h"                         # default 1d; failed and cancelled 7d
    failed = "none"                     # kept for good

``koyojobs new job NAME`` writes its job module under ``jobs_dir`` and its test
under ``tests_dir`` (folders relative to the project, default ``jobs`` and
``tests``):

.. code-block:: toml

    [tool.koyojobs]
    jobs_dir = "myapp/jobs"             # imported as myapp.jobs.NAME
    tests_dir = "tests/jobs"
"""

from __future__ import annotations

import keyword
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ._validate import is_count
from .serializer import Secret

__all__ = ["ConfigError", "Deployment", "load_deployment"]

_SECTION = "[tool.koyojobs]"
_FINISHED = ("done", "failed", "cancelled")


class ConfigError(ValueError):
    """``[tool.koyojobs]`` is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class Deployment:
    """What ``[tool.koyojobs]`` declares (empty when there is no such section).

    Example:
        >>> Deployment(modules=("shop.jobs",), queues={"default": 8, "long": 2}).queues
        {'default': 8, 'long': 2}
    """

    modules: tuple[str, ...] = ()
    dsn_env: str = "KOYOJOBS_DSN"
    listen_dsn_env: str | None = None
    statement_cache_size: int | None = None
    pool_size: int | None = None
    processes: int | None = None
    """Worker processes ``koyojobs worker`` runs under one supervisor (``None``: one)."""
    queues: dict[str, int] = field(default_factory=dict)
    retention: dict[str, str] = field(default_factory=dict)
    """Per finished status, how long workers keep such jobs, as written (``"1d"``, ``"none"``)."""
    jobs_dir: str = "jobs"
    """Where ``koyojobs new job`` writes job modules, relative to the project (importable)."""
    tests_dir: str = "tests"
    """Where ``koyojobs new job`` writes their tests, relative to the project."""
    path: Path | None = None
    """The file it was read from (``None``: none was found)."""
    secret: Secret | tuple[Secret, ...] | None = None
    """The payload key(s), never read from the file (a secret has no place in a
    committed file): given by code that builds a deployment, such as the Django
    app; ``None`` leaves it to ``KOYOJOBS_SECRET``."""


def load_deployment(path: Path) -> Deployment:
    """Read ``[tool.koyojobs]`` from the ``pyproject.toml`` at ``path``.

    A missing file or section gives an empty :class:`Deployment`; anything
    malformed raises :class:`ConfigError` naming the key.
    """
    if not path.is_file():
        return Deployment()
    try:
        document = tomllib.loads(path.read_text("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    section = document.get("tool", {}).get("koyojobs")
    if section is None:
        return Deployment()
    where = f"{path} {_SECTION}"
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: must be a table")
    known = {
        "modules",
        "dsn_env",
        "listen_dsn_env",
        "statement_cache_size",
        "pool_size",
        "processes",
        "queues",
        "retention",
        "jobs_dir",
        "tests_dir",
    }
    for key in section:
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
    modules = section.get("modules", [])
    if not isinstance(modules, list) or not all(_name(m) for m in modules):
        raise ConfigError(f"{where} modules: must be a list of module names, got {modules!r}")
    dsn_env = section.get("dsn_env", "KOYOJOBS_DSN")
    if not _name(dsn_env):
        raise ConfigError(f"{where} dsn_env: must name an environment variable, got {dsn_env!r}")
    listen_dsn_env = section.get("listen_dsn_env")
    if listen_dsn_env is not None and not _name(listen_dsn_env):
        raise ConfigError(
            f"{where} listen_dsn_env: must name an environment variable, got {listen_dsn_env!r}"
        )
    queues = section.get("queues", {})
    if not isinstance(queues, dict):
        raise ConfigError(f"{where} queues: must be a table of queue = concurrency")
    for queue, concurrency in queues.items():
        if not _count(concurrency, 1):
            raise ConfigError(
                f"{where} queues.{queue}: concurrency must be an int >= 1, got {concurrency!r}"
            )
    retention = section.get("retention", {})
    if not isinstance(retention, dict):
        raise ConfigError(f"{where} retention: must be a table of status = age")
    for status, age in retention.items():
        if status not in _FINISHED:
            raise ConfigError(
                f"{where} retention.{status}: not a finished status ({', '.join(_FINISHED)})"
            )
        if not _name(age):
            raise ConfigError(
                f"{where} retention.{status}: must be an age such as '7d', or 'none', got {age!r}"
            )
    return Deployment(
        modules=tuple(modules),
        dsn_env=dsn_env,
        listen_dsn_env=listen_dsn_env,
        statement_cache_size=_optional_count(section, "statement_cache_size", 0, where),
        pool_size=_optional_count(section, "pool_size", 1, where),
        processes=_optional_count(section, "processes", 1, where),
        queues=dict(queues),
        retention=dict(retention),
        jobs_dir=_folder(section, "jobs_dir", "jobs", where, importable=True),
        tests_dir=_folder(section, "tests_dir", "tests", where, importable=False),
        path=path,
    )


def _name(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _count(value: Any, least: int) -> bool:
    return is_count(value, least)


def _optional_count(section: dict[str, Any], key: str, least: int, where: str) -> int | None:
    value = section.get(key)
    if value is not None and not _count(value, least):
        raise ConfigError(f"{where} {key}: must be an int >= {least}, got {value!r}")
    return value


def _folder(
    section: dict[str, Any], key: str, default: str, where: str, *, importable: bool
) -> str:
    value = section.get(key, default)
    rule = "a folder inside the project, such as 'myapp/jobs'"
    if not _name(value):
        raise ConfigError(f"{where} {key}: must be {rule}, got {value!r}")
    error = folder_error(value, importable=importable)
    if error is not None:
        raise ConfigError(f"{where} {key}: {error}, got {value!r}")
    return str(value)


def folder_error(folder: str, *, importable: bool) -> str | None:
    """Why ``folder`` cannot hold generated files, or ``None`` if it can.

    It must be relative and stay inside the project; a folder of job modules
    must also be importable (``myapp/jobs`` is the package ``myapp.jobs``),
    since workers and tests import the jobs by that name.

    Example:
        >>> folder_error("myapp/jobs", importable=True) is None
        True
        >>> folder_error("my-app/jobs", importable=True)
        "'my-app' is not a Python identifier, so the jobs could not be imported"
    """
    path = PurePosixPath(folder.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        return "must be a relative folder inside the project"
    if importable:
        for part in path.parts:
            if not part.isidentifier() or keyword.iskeyword(part):
                return f"{part!r} is not a Python identifier, so the jobs could not be imported"
    return None
