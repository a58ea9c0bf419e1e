"""Flow control: unique jobs and concurrency and rate limits.

A unique job's row carries ``unique_key`` (a digest of its name and key, a
UUID), and a unique index over the rows that are pending (a workflow step:
:mod:`koyojobs.workflow_unique`), ready or running lets the
database, not a check before the insert, keep one job per key. A limited
job's row carries ``limit_key`` (its name, and the key ``limit_key=`` gives);
the workers of its queue declare the limits in ``koyojobs_limited_jobs`` and
claim with ``finish_and_claim_limited``, whose ``koyojobs_limited_take``
holds each key's lock while it counts. A queue without limited jobs keeps its
one-statement claim.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._validate import INT_LIMIT, is_count, is_seconds
from .errors import JobDefinitionError
from .registry import definitions
from .sql import QUERIES

if TYPE_CHECKING:
    from .database import Database
    from .jobs import JobDefinition

__all__ = [
    "KeyFunction",
    "Limits",
    "keys_of",
    "limited_jobs",
    "make_limits",
    "register_limits",
]

KeyFunction = Callable[..., str]

# Between a job's name and its key in the stored keys: a character no one
# puts in a job name, so that ("a", "b:c") and ("a:b", "c") stay apart.
_SEPARATOR = "\x1f"
# The columns that hold limits are PostgreSQL integers.


@dataclass(frozen=True, slots=True)
class Limits:
    """The flow-control options of one job, as ``define_job`` took them.

    Example:
        >>> Limits(concurrency=2).limited
        True
        >>> Limits(unique=True).limited
        False
    """

    unique: bool | KeyFunction = False
    concurrency: int | None = None
    rate_limit: tuple[int, float] | None = None
    """``(count, seconds)``: at most ``count`` starts in any window of ``seconds``."""
    limit_key: KeyFunction | None = None

    @property
    def limited(self) -> bool:
        """Whether the job has a concurrency or rate limit."""
        return self.concurrency is not None or self.rate_limit is not None


def make_limits(
    name: str,
    *,
    unique: object,
    concurrency: object,
    rate_limit: object,
    limit_key: object,
) -> Limits | None:
    """Check ``define_job``'s flow-control options; ``None`` when none is set.

    Example:
        >>> make_limits("j", unique=False, concurrency=0, rate_limit=None, limit_key=None)
        Traceback (most recent call last):
        ...
        koyojobs.errors.JobDefinitionError: job 'j': concurrency=0 is invalid: an int >= 1
    """

    def bad(option: str, value: object, rule: str) -> JobDefinitionError:
        return JobDefinitionError(f"job {name!r}: {option}={value!r} is invalid: {rule}")

    if not isinstance(unique, bool) and not callable(unique):
        raise bad("unique", unique, "True, or a callable taking the job's arguments -> str")
    if concurrency is not None and not is_count(concurrency, below=INT_LIMIT):
        raise bad("concurrency", concurrency, "an int >= 1")
    rate: tuple[int, float] | None = None
    if rate_limit is not None:
        rule = "(count, seconds) with an int count >= 1 and seconds > 0"
        if not isinstance(rate_limit, tuple) or len(rate_limit) != 2:
            raise bad("rate_limit", rate_limit, rule)
        count, seconds = rate_limit
        if not is_count(count, below=INT_LIMIT) or not is_seconds(seconds):
            raise bad("rate_limit", rate_limit, rule)
        rate = (count, float(seconds))
    if limit_key is not None:
        if not callable(limit_key):
            raise bad("limit_key", limit_key, "a callable taking the job's arguments -> str")
        if concurrency is None and rate is None:
            raise JobDefinitionError(
                f"job {name!r}: limit_key= needs a limit to key: pass concurrency= or rate_limit="
            )
    if unique is False and concurrency is None and rate is None:
        return None
    if _SEPARATOR in name:
        # The stored keys put it between the name and the key.
        raise JobDefinitionError(
            f"job {name!r}: a job with flow control cannot have chr(31) in its name"
        )
    return Limits(
        unique=unique,
        concurrency=concurrency,
        rate_limit=rate,
        limit_key=limit_key,
    )


def keys_of(
    definition: JobDefinition[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[str | None, str | None]:
    """The ``(unique_key, limit_key)`` a call of ``definition`` is stored with.

    Computed at the call site, so a key function that raises, or returns no
    ``str``, is an error there that names the job.
    """
    limits = definition.limits
    if limits is None:
        return None, None
    unique: str | None = None
    if limits.unique is True:
        unique = _argument_key(definition, args, kwargs)
    elif callable(limits.unique):
        unique = _stored_key(
            definition.name, _called(definition, "unique", limits.unique, args, kwargs)
        )
    limit: str | None = None
    if limits.limited:
        limit = definition.name
        if limits.limit_key is not None:
            key = _called(definition, "limit_key", limits.limit_key, args, kwargs)
            limit += _SEPARATOR + key
    return unique, limit


def _called(
    definition: JobDefinition[Any, Any],
    option: str,
    function: KeyFunction,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> str:
    try:
        key = function(*args, **kwargs)
    except Exception as exc:
        raise ValueError(
            f"job {definition.name!r}: its {option}= function raised {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(key, str):
        raise TypeError(
            f"job {definition.name!r}: its {option}= function returned "
            f"{type(key).__name__} {key!r}, not a str"
        )
    if "\x00" in key or _unencodable(key):
        raise ValueError(
            f"job {definition.name!r}: its {option}= function returned {key!r}, "
            "which PostgreSQL cannot store (a NUL or a lone surrogate)"
        )
    return key


def _digest(name: str) -> hashlib.blake2b:
    # 16 bytes of BLAKE2b, a UUID in the table: fixed and short, since the
    # unique index is maintained on every insert of a unique job (a collision
    # among 2**64 keys is still as good as impossible).
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{name}{_SEPARATOR}".encode())
    return digest


def _stored_key(name: str, key: str) -> str:
    """The ``unique_key`` column's value for the key ``key`` of job ``name`` (32 hex digits).

    Example:
        >>> one = _stored_key("send", "user-1")
        >>> one == _stored_key("send", "user-1") != _stored_key("send", "user-2")
        True
    """
    digest = _digest(name)
    digest.update(key.encode())
    return digest.hexdigest()


def _unencodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def _argument_key(
    definition: JobDefinition[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str:
    """The stored key of a ``unique=True`` call: a digest of the job's name and its
    arguments, equal for equal arguments however they were passed."""
    parameters = definition.signature.parameters
    arguments: Iterable[tuple[str, Any]]
    if not kwargs and len(args) == len(parameters) and definition.positional_only_simple:
        arguments = zip(parameters, args, strict=True)  # the common case, bound quicker
    else:
        bound = definition.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = bound.arguments.items()
    digest = _digest(definition.name)
    try:
        for parameter, value in arguments:
            digest.update(_canonical(value, definition.name, parameter))
    except RecursionError:
        raise TypeError(
            f"job {definition.name!r}: unique=True cannot key arguments that contain "
            "themselves; pass unique=callable returning the key"
        ) from None
    return digest.hexdigest()


def _canonical(value: Any, job: str, path: str) -> bytes:
    # Equal values give equal bytes; types stay apart (1, 1.0, True, "1").
    if value is None or isinstance(value, bool | int | str | bytes):
        return f"{type(value).__name__}:{value!r};".encode()
    if isinstance(value, float):
        return f"float:{(value + 0.0).hex()};".encode()  # -0.0 == 0.0
    if isinstance(value, dt.datetime) and value.utcoffset() is not None:
        # One instant, whatever its zone or class (pendulum's DateTime too).
        return f"datetime:{value.astimezone(dt.UTC).replace(tzinfo=None).isoformat()}Z;".encode()
    if isinstance(value, decimal.Decimal):
        return f"Decimal:{value.normalize()};".encode()  # Decimal("1.0") == Decimal("1")
    # By kind, not class: pendulum's Date equals a date.
    if isinstance(value, dt.datetime):
        return f"naive datetime:{value.isoformat()};".encode()
    if isinstance(value, dt.date | dt.time):
        return f"{_kind(value)}:{value.isoformat()};".encode()
    if isinstance(value, dt.timedelta):
        return f"timedelta:{value.days},{value.seconds},{value.microseconds};".encode()
    if isinstance(value, uuid.UUID):
        return f"uuid:{value};".encode()
    if isinstance(value, enum.Enum):
        return f"enum:{_qualified(type(value))}.{value.name};".encode()
    if isinstance(value, list | tuple):
        parts = b"".join(_canonical(v, job, f"{path}[{i}]") for i, v in enumerate(value))
        return b"%s(%s);" % (type(value).__name__.encode(), parts)
    if isinstance(value, set | frozenset):
        items = sorted(_canonical(v, job, f"{path} item") for v in value)
        return b"set(%s);" % b"".join(items)
    if isinstance(value, dict):
        pairs = sorted(
            _canonical(k, job, f"{path} key") + _canonical(v, job, f"{path}[{k!r}]")
            for k, v in value.items()
        )
        return b"dict(%s);" % b"".join(pairs)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = b"".join(
            _canonical(getattr(value, f.name), job, f"{path}.{f.name}")
            for f in dataclasses.fields(value)
        )
        return b"%s(%s);" % (_qualified(type(value)).encode(), fields)
    raise TypeError(
        f"job {job!r}: unique=True cannot key argument {path!r} "
        f"({type(value).__name__}: only None, bool, int, float, str, bytes, dates and times, "
        "Decimal, UUID, enums, dataclasses and lists, tuples, sets and dicts of them); "
        "pass unique=callable returning the key"
    )


def _kind(value: dt.date | dt.time) -> str:
    return "date" if isinstance(value, dt.date) else "time"


def _qualified(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def limited_jobs(queue: str) -> list[str]:
    """The names of the jobs this process defines for ``queue`` with a concurrency or rate limit."""
    return [d.name for d in definitions() if d.queue == queue and d.limits and d.limits.limited]


async def register_limits(database: Database, queue: str, deadline: float) -> None:
    """Declare the limits of ``queue``'s jobs this process defines (a worker's start)."""
    mine = [d for d in definitions() if d.queue == queue]
    limited = [d for d in mine if d.limits is not None and d.limits.limited]
    rates = [d.limits.rate_limit if d.limits else None for d in limited]
    await database.fetch_within(
        deadline,
        QUERIES["register_limits"],
        [d.name for d in limited],
        [d.limits.concurrency if d.limits else None for d in limited],
        [r[0] if r else None for r in rates],
        [r[1] if r else None for r in rates],
        [d.name for d in mine if d.limits is None or not d.limits.limited],
    )
