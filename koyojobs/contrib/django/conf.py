"""``settings.KOYOJOBS`` and the DSN built from ``DATABASES``.

.. code-block:: python

    KOYOJOBS = {
        "database": "default",           # the alias of DATABASES jobs live in
        "modules": ["shop.jobs"],        # imported by `manage.py koyojobs worker`
        "queues": {"default": 8, "emails": 2},  # queue = concurrency (or a list of names)
        "secret": env("KOYOJOBS_SECRET"),        # a key, or a list of keys to rotate
        "retention": 7 * 24 * 3600,      # seconds: `manage.py koyojobs prune`'s default
        "processes": 2,                  # worker processes of `manage.py koyojobs worker`
    }

Every key is optional. A malformed value is an ``ImproperlyConfigured`` of one
line naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlencode

from django.core.exceptions import ImproperlyConfigured

from ..._validate import is_count, is_seconds
from ...serializer import Secret, Serializer

__all__ = ["KoyojobsSettings", "dsn_from_database", "read_settings"]

_KNOWN = ("database", "modules", "queues", "secret", "retention", "processes")
_ENGINES = frozenset({"django.db.backends.postgresql", "django.contrib.gis.db.backends.postgis"})
# Connection options of DATABASES[...]["OPTIONS"] that mean the same to libpq and asyncpg.
_PASSED_OPTIONS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "application_name")
_DEFAULT_CONCURRENCY = 8


@dataclass(frozen=True)
class KoyojobsSettings:
    """``settings.KOYOJOBS``, checked.

    Example:
        >>> read_settings({"modules": ["shop.jobs"], "queues": ["default"]}).queues
        {'default': 8}
    """

    database: str = "default"
    modules: tuple[str, ...] = ()
    queues: dict[str, int] = field(default_factory=dict)
    secret: Secret | tuple[Secret, ...] | None = None
    retention: float | None = None
    """Seconds finished jobs are kept, whatever their status: the workers of
    ``manage.py koyojobs worker`` prune older ones (``None``: koyojobs'
    defaults, a day for done jobs and seven for the others), and
    ``manage.py koyojobs prune`` deletes older ones when given no ``--older-than``."""
    processes: int | None = None
    """Worker processes ``manage.py koyojobs worker`` runs under one supervisor
    (``None``: one; ``--processes`` wins)."""


def read_settings(value: Any) -> KoyojobsSettings:
    """Check ``settings.KOYOJOBS`` (``None``: not set, every default).

    Example:
        >>> read_settings({"retention": 3600}).retention
        3600.0
        >>> read_settings({"queue": ["default"]})
        Traceback (most recent call last):
        ...
        django.core.exceptions.ImproperlyConfigured: settings.KOYOJOBS: unknown key 'queue' (known: database, modules, queues, secret, retention, processes)
    """  # noqa: E501
    if value is None:
        return KoyojobsSettings()
    if not isinstance(value, Mapping):
        raise _bad("", f"must be a dict, got {type(value).__name__}")
    for key in value:
        if key not in _KNOWN:
            raise _bad("", f"unknown key {key!r} (known: {', '.join(_KNOWN)})")
    database = value.get("database", "default")
    if not isinstance(database, str) or not database:
        raise _bad("database", f"must be an alias of DATABASES, got {database!r}")
    modules = value.get("modules", ())
    if isinstance(modules, str) or not isinstance(modules, Sequence):
        raise _bad("modules", f"must be a list of module names, got {modules!r}")
    if not all(isinstance(m, str) and m for m in modules):
        raise _bad("modules", f"must be a list of module names, got {modules!r}")
    return KoyojobsSettings(
        database=database,
        modules=tuple(modules),
        queues=_queues(value.get("queues", {})),
        secret=_secret(value.get("secret")),
        retention=_retention(value.get("retention")),
        processes=_processes(value.get("processes")),
    )


def _bad(key: str, rule: str) -> ImproperlyConfigured:
    where = f"settings.KOYOJOBS[{key!r}]" if key else "settings.KOYOJOBS"
    return ImproperlyConfigured(f"{where}: {rule}")


def _queues(queues: Any) -> dict[str, int]:
    if isinstance(queues, Mapping):
        pairs = list(queues.items())
    elif isinstance(queues, Sequence) and not isinstance(queues, str):
        pairs = [(q, _DEFAULT_CONCURRENCY) for q in queues]
    else:
        raise _bad("queues", f"must be a dict of queue: concurrency or a list, got {queues!r}")
    for queue, concurrency in pairs:
        if not isinstance(queue, str) or not queue:
            raise _bad("queues", f"queue names must be non-empty strings, got {queue!r}")
        if not is_count(concurrency):
            raise _bad("queues", f"{queue}: concurrency must be an int >= 1, got {concurrency!r}")
    return dict(pairs)


def _processes(processes: Any) -> int | None:
    if processes is not None and not is_count(processes):
        raise _bad("processes", f"must be an int >= 1, got {processes!r}")
    return processes


def _secret(secret: Any) -> Secret | tuple[Secret, ...] | None:
    if secret is None:
        return None  # KOYOJOBS_SECRET, or unsigned
    if isinstance(secret, list):
        secret = tuple(secret)
    try:
        Serializer.from_options(secret)
    except (TypeError, ValueError) as exc:
        raise _bad("secret", str(exc)) from None
    checked: Secret | tuple[Secret, ...] = secret
    return checked


def _retention(retention: Any) -> float | None:
    if retention is None:
        return None
    if isinstance(retention, timedelta):
        retention = retention.total_seconds()
    if not is_seconds(retention, zero=True):
        raise _bad("retention", f"must be seconds >= 0 or a timedelta, got {retention!r}")
    return float(retention)


def dsn_from_database(alias: str, databases: Mapping[str, Any]) -> str:
    """The PostgreSQL URL of ``DATABASES[alias]``, for asyncpg and psycopg alike.

    ``HOST`` may be a folder (a Unix socket); of ``OPTIONS``, the SSL settings
    and ``application_name`` are kept, the rest are Django's own.

    Example:
        >>> dsn_from_database("default", {"default": {
        ...     "ENGINE": "django.db.backends.postgresql", "NAME": "shop",
        ...     "USER": "web", "PASSWORD": "p@ss", "HOST": "db", "PORT": 5432}})
        'postgresql://web:p%40ss@db:5432/shop'
    """
    if alias not in databases:
        raise ImproperlyConfigured(
            f"settings.KOYOJOBS['database']: {alias!r} is not an alias of DATABASES "
            f"(known: {', '.join(databases) or 'none'})"
        )
    config = databases[alias]
    engine = config.get("ENGINE", "")
    if engine not in _ENGINES:
        raise ImproperlyConfigured(
            f"DATABASES[{alias!r}] uses {engine or 'no ENGINE'}: koyojobs needs PostgreSQL "
            "(django.db.backends.postgresql)"
        )
    user = quote(str(config.get("USER") or ""), safe="")
    password = quote(str(config.get("PASSWORD") or ""), safe="")
    credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = str(config.get("HOST") or "")
    port = str(config.get("PORT") or "")
    query: dict[str, str] = {}
    if host.startswith("/"):
        query["host"], host = host, ""
        if port:
            query["port"], port = port, ""
    netloc = credentials + (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    options = config.get("OPTIONS") or {}
    query.update({k: str(options[k]) for k in _PASSED_OPTIONS if k in options})
    name = quote(str(config.get("NAME") or ""), safe="")
    suffix = f"?{urlencode(query)}" if query else ""
    return f"postgresql://{netloc}/{name}{suffix}"
