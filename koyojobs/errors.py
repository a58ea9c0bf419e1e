"""The exceptions koyojobs raises on purpose."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

__all__ = [
    "JobDefinitionError",
    "KoyojobsError",
    "PayloadError",
    "SchemaError",
    "SerializationError",
    "WiringError",
    "describe",
    "is_connection_trouble",
    "log_trouble",
    "quiet_pool_reconnects",
]

_MAX_DESCRIPTION = 1000


class KoyojobsError(Exception):
    """Base class of koyojobs' own errors.

    Example:
        >>> try:
        ...     raise SerializationError("argument 'x' of job 'm.f' cannot be serialized")
        ... except KoyojobsError as exc:
        ...     print(exc)
        argument 'x' of job 'm.f' cannot be serialized
    """


class SerializationError(KoyojobsError, TypeError):
    """An argument or a result cannot be turned into bytes; the message names it.

    Example:
        >>> # await send(sqlite3.connect(":memory:"))  raises
        >>> # SerializationError: argument 'conn' of job 'app.send' cannot be serialized: ...
    """


class PayloadError(KoyojobsError):
    """Stored bytes cannot be turned back into Python: corrupt, or a bad signature.

    Example:
        >>> str(PayloadError("bad signature"))
        'bad signature'
    """


class JobDefinitionError(KoyojobsError, ValueError):
    """A job definition is invalid: a bad option, or a name already taken.

    Example:
        >>> str(JobDefinitionError("job name 'x' is already defined by m.f"))
        "job name 'x' is already defined by m.f"
    """


class SchemaError(KoyojobsError, RuntimeError):
    """The database lacks koyojobs' schema, or has an older one, and this use may not change it.

    Example:
        >>> str(SchemaError("the koyojobs schema is not in this database: run koyojobs migrate"))
        'the koyojobs schema is not in this database: run koyojobs migrate'
    """


class WiringError(KoyojobsError, ValueError):
    """A :class:`koyojobs.System` is wired wrong: a cycle, an unknown or duplicate component.

    Example:
        >>> str(WiringError("dependency cycle: a -> b -> a"))
        'dependency cycle: a -> b -> a'
    """


def describe(exc: BaseException) -> str:
    """``Type: message`` on one line, whatever the exception's own methods do.

    For errors that reach ``last_error`` from what a row holds: a hostile
    exception's ``__str__`` may raise, and a message may span lines or be huge.

    Example:
        >>> describe(ValueError("bad\\nvalue"))
        'ValueError: bad value'
        >>> class Mute(Exception):
        ...     def __str__(self) -> str:
        ...         raise RuntimeError
        >>> describe(Mute())
        'Mute: <str() failed>'
    """
    name = type(exc).__name__
    try:
        message = str(exc)
    except Exception:
        message = "<str() failed>"
    text = " ".join(f"{name}: {message}".split()) if message else name
    if len(text) > _MAX_DESCRIPTION:
        text = text[: _MAX_DESCRIPTION - 3] + "..."
    return text


def is_connection_trouble(exc: BaseException) -> bool:
    """Whether ``exc`` is a known, passing loss of the database: a dropped, refused or
    timed-out connection, a server restarting or shutting down.

    Example:
        >>> is_connection_trouble(ConnectionRefusedError()), is_connection_trouble(ValueError())
        (True, False)
    """
    return isinstance(
        exc,
        OSError
        | TimeoutError
        | asyncpg.InterfaceError
        | asyncpg.InternalClientError
        | asyncpg.PostgresConnectionError
        | asyncpg.OperatorInterventionError,
    )


def log_trouble(log: logging.Logger, message: str, exc: BaseException, **extra: Any) -> None:
    """Log ``message`` at WARNING: one line with the cause for connection trouble
    (the operator needs the cause, not asyncpg's internals), a traceback for anything else.

    Example:
        >>> log_trouble(logging.getLogger("doc"), "claim failed", TimeoutError("no answer"))
    """
    if is_connection_trouble(exc):
        log.warning(message, extra={**extra, "cause": describe(exc)})
    else:
        log.warning(message, exc_info=exc, extra=extra)


class _OneLineTrouble(logging.Filter):
    """Turns a record's traceback of connection trouble into ``cause=`` on its line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and is_connection_trouble(exc):
            record.msg = f"{record.getMessage()} cause={describe(exc)}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


_ONE_LINE_TROUBLE = _OneLineTrouble()


def quiet_pool_reconnects() -> None:
    """Log asyncpg's pool's failed reconnects as one line with their cause.

    The pool reopens its floor of connections (``min_size``) by itself after
    one is lost, and logs each failed try at WARNING with a traceback: in an
    outage, one every few seconds for a refused connection. Unknown errors
    keep theirs. Called when a :class:`~koyojobs.Database` opens its pool.

    Example:
        >>> quiet_pool_reconnects()
        >>> len([f for f in logging.getLogger("asyncpg.pool").filters
        ...      if isinstance(f, _OneLineTrouble)])
        1
    """
    logger = logging.getLogger("asyncpg.pool")
    if _ONE_LINE_TROUBLE not in logger.filters:
        logger.addFilter(_ONE_LINE_TROUBLE)
