"""Automatic retention: running workers delete finished jobs once they are old enough.

By default ``done`` jobs go after one day, ``failed`` and ``cancelled`` ones
after seven; ``Broker(db, retention={...})`` changes that per status
(``None`` keeps them). Each worker runs a :class:`Pruner`: one small
``DELETE`` at a time (at most :data:`BATCH` rows, so no statement holds many
locks or runs long), back to back while batches come back full, then one
look every :data:`EVERY` seconds. An advisory lock held for each statement
lets one process prune at a time; rows another transaction holds are
skipped, and ``ready`` and ``running`` jobs are never touched. The worker's
VACUUM (:mod:`koyojobs.maintenance`) then cleans what was deleted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

from .errors import log_trouble
from .lifecycle import cancel_and_wait, raise_if_stopping
from .models import Status
from .sql import QUERIES

if TYPE_CHECKING:
    from .broker import Broker

__all__ = [
    "BATCH",
    "DEFAULT_RETENTION",
    "EVERY",
    "Pruner",
    "Retention",
    "expired_ages",
    "resolve_retention",
]

log = logging.getLogger("koyojobs.retention")

Retention = dict[Status, timedelta | None]
"""How long finished jobs are kept, per status (``None``: for good)."""

DEFAULT_RETENTION: Retention = {
    Status.DONE: timedelta(days=1),
    Status.FAILED: timedelta(days=7),
    Status.CANCELLED: timedelta(days=7),
}

BATCH = 1000
"""Most rows one pruning statement deletes."""

EVERY = 60.0
"""Seconds between a worker's looks for expired jobs once none are left."""

_MAX_ERROR_DELAY = 60.0


def expired_ages(retention: Retention) -> list[float | None] | None:
    """The ages in seconds of done, failed and cancelled jobs to delete (``None``: kept),
    or ``None`` when every status is kept and there is nothing to prune.

    Example:
        >>> expired_ages(resolve_retention({"failed": None}))
        [86400.0, None, 604800.0]
    """
    ages = [retention[s] for s in (Status.DONE, Status.FAILED, Status.CANCELLED)]
    seconds = [None if age is None else age.total_seconds() for age in ages]
    return seconds if any(s is not None for s in seconds) else None


def resolve_retention(retention: Mapping[Status | str, timedelta | None] | None) -> Retention:
    """The defaults, overridden by ``retention``; a bad key or value is a one-line ``ValueError``.

    Example:
        >>> from datetime import timedelta
        >>> resolve_retention({"done": timedelta(hours=1), "failed": None})[Status.FAILED] is None
        True
    """
    resolved = dict(DEFAULT_RETENTION)
    if retention is None:
        return resolved
    if not isinstance(retention, Mapping):
        raise ValueError(
            f"Broker retention must be a dict such as {{'done': timedelta(days=1)}}, "
            f"got {retention!r}"
        )
    for key, age in retention.items():
        try:
            status = Status(key)
        except ValueError:
            status = None
        if status not in DEFAULT_RETENTION:
            raise ValueError(
                f"Broker retention: {key!r} is not a finished status "
                "(use 'done', 'failed' or 'cancelled')"
            )
        assert status is not None
        if age is not None and (not isinstance(age, timedelta) or age < timedelta(0)):
            raise ValueError(
                f"Broker retention[{status.value!r}] must be a timedelta >= 0 or None (keep), "
                f"got {age!r}"
            )
        resolved[status] = age
    return resolved


class Pruner:
    """A worker's pruning loop (started and stopped with it)."""

    def __init__(self, broker: Broker, *, every: float = EVERY, batch: int = BATCH) -> None:
        self.broker = broker
        self.every = every
        self.batch = batch
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if all(age is None for age in self.broker.retention.values()):
            return  # everything is kept: nothing to look for
        self._task = asyncio.create_task(self._loop(), name="koyojobs-retention")

    async def stop(self) -> None:
        # A batch cut short rolls back whole: nothing half-deleted.
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _loop(self) -> None:
        failures = 0
        while True:
            try:
                deleted = await self.broker.prune_expired(self.batch)
                await self.broker.pool.execute(QUERIES["prune_rate_windows"])
                failures = 0
            except Exception as exc:
                raise_if_stopping(exc)
                failures += 1
                if failures == 1:
                    log_trouble(log, "pruning finished jobs failed; retrying", exc)
                await asyncio.sleep(min(_MAX_ERROR_DELAY, self.every, 0.5 * 2**failures))
                continue
            if deleted:
                log.info("pruned finished jobs", extra={"jobs": deleted})
            if deleted < self.batch:
                # The period between looks: a clock, not a wait for a state.
                await asyncio.sleep(self.every)
