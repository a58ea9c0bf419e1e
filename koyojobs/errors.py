"""The exceptions koyojobs raises on purpose."""

from __future__ import annotations

__all__ = [
    "JobDefinitionError",
    "KoyojobsError",
    "PayloadError",
    "SerializationError",
    "WiringError",
]


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


class WiringError(KoyojobsError, ValueError):
    """A :class:`koyojobs.System` is wired wrong: a cycle, an unknown or duplicate component.

    Example:
        >>> str(WiringError("dependency cycle: a -> b -> a"))
        'dependency cycle: a -> b -> a'
    """
