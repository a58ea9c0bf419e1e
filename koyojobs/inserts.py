"""The insert of a batch of job calls: which named statement, its parameters, the ids it gives.

The async broker and :mod:`koyojobs.sync` both enqueue through :func:`insert_for`
and :func:`ids_from`, so a job inserted by either is the same row: the same
statement, the same signed payload, the same columns in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .serializer import Serializer

if TYPE_CHECKING:
    from .jobs import JobCall

__all__ = ["Insert", "first_of_each_key", "ids_from", "ids_in_order", "insert_for"]


@dataclass(frozen=True)
class Insert:
    """A named insert statement and its parameters, for one batch of calls."""

    query: str
    """The name of the statement in ``sql/queries/enqueue.sql``."""
    parameters: tuple[Any, ...]


def insert_for(
    calls: Sequence[JobCall[Any]], serializer: Serializer, trace_context: str | None = None
) -> Insert:
    """The statement that inserts ``calls`` (at least one), their arguments signed.

    One call takes ``insert_job`` (a VALUES insert plans and runs faster than
    unnesting arrays of one), many take ``insert_jobs``, and a batch with a
    unique call ``insert_jobs_unique`` (each key sent once: the others get
    their first's id, see :func:`ids_in_order`). ``trace_context`` is ``$8``
    of each, ``None`` unless OpenTelemetry is on.

    Example:
        >>> from koyojobs import define_job
        >>> @define_job(name="doc.inserts.ping")
        ... def ping(n: int) -> int:
        ...     return n
        >>> calls = [ping(1), ping(2)]
        >>> insert = insert_for(calls, Serializer())
        >>> insert.query, insert.parameters[0]
        ('insert_jobs', ['doc.inserts.ping', 'doc.inserts.ping'])
        >>> for call in calls:  # handed over: no "never awaited" warning
        ...     call.consume()
    """
    if any(call.unique_key is not None for call in calls):
        sent = first_of_each_key(calls)
        keys = [c.unique_key for c in sent]
        return Insert("insert_jobs_unique", (*_columns(sent, serializer), trace_context, keys))
    columns = _columns(calls, serializer)
    if len(calls) == 1:
        return Insert("insert_job", (*(column[0] for column in columns), trace_context))
    return Insert("insert_jobs", (*columns, trace_context))


def ids_from(insert: Insert, calls: Sequence[JobCall[Any]], rows: Sequence[Any]) -> list[int]:
    """The ids the statement of ``insert`` returned as ``rows``, in the calls' order.

    Example:
        >>> ids_from(Insert("insert_jobs", ()), [], [(9,), (8,)])
        [8, 9]
    """
    if insert.query == "insert_jobs_unique":
        return ids_in_order(calls, rows)
    # Identity values are drawn in insertion order, which follows the input.
    return sorted(row[0] for row in rows)


def _columns(calls: Sequence[JobCall[Any]], serializer: Serializer) -> list[list[Any]]:
    # Column by column: a bulk insert of 20,000 calls spends half the time of
    # transposing rows.
    sign = serializer.sign_arguments
    return [
        [c.definition.name for c in calls],
        [c.definition.queue for c in calls],
        [c.definition.priority for c in calls],
        [c.definition.max_attempts for c in calls],
        [sign(c.payload, c.definition.name) for c in calls],
        [c.scheduled_at for c in calls],
        [c.limit_key for c in calls],
    ]


def ids_in_order(calls: Sequence[JobCall[Any]], rows: Sequence[Any]) -> list[int]:
    """The ids ``insert_jobs_unique`` gave ``calls``, in the calls' order.

    A unique call gets the id of its key's job, inserted or found; the others
    were inserted in order, so their ids ascend with them.

    Example:
        >>> import uuid
        >>> key = uuid.uuid4()
        >>> class Call:
        ...     def __init__(self, key): self.unique_key = key
        >>> ids_in_order([Call(key.hex), Call(None), Call(key.hex)], [(7, key), (8, None)])
        [7, 8, 7]
    """
    by_key: dict[str, int] = {}
    plain: list[int] = []
    for job_id, key in rows:
        if key is None:
            plain.append(job_id)
        else:
            by_key[key.hex] = job_id  # a UUID from the driver
    plain.sort()
    unkeyed = iter(plain)
    return [by_key[c.unique_key] if c.unique_key is not None else next(unkeyed) for c in calls]


def first_of_each_key(calls: Sequence[JobCall[Any]]) -> list[JobCall[Any]]:
    """``calls`` without those whose unique key an earlier call has: what to insert.

    Example:
        >>> class Call:
        ...     def __init__(self, key): self.unique_key = key
        >>> [c.unique_key for c in first_of_each_key([Call("a"), Call(None), Call("a")])]
        ['a', None]
    """
    seen: set[str] = set()
    first = []
    for call in calls:
        key = call.unique_key
        if key is None or key not in seen:
            first.append(call)
            if key is not None:
                seen.add(key)
    return first
