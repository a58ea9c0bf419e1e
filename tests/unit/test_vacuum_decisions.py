"""When a worker decides to VACUUM: the threshold, what the last VACUUM left, the pace."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from koyojobs import maintenance
from koyojobs.maintenance import Vacuum


class _Counts:
    """Stands in for the dead_rows query: answers what the test sets."""

    def __init__(self, dead: int, may_vacuum: bool = True) -> None:
        self.dead, self.may_vacuum, self.asked = dead, may_vacuum, 0

    async def __call__(self, query: str, *args: Any) -> list[dict[str, Any]]:
        self.asked += 1
        return [{"n_dead_tup": self.dead, "may_vacuum": self.may_vacuum}]


class _NoDatabase:
    """A broker whose VACUUM never reaches a server (this tier has none)."""

    class database:  # noqa: N801
        @staticmethod
        async def connect(**settings: str) -> Any:
            await asyncio.Event().wait()  # stays pending until cancelled


@pytest.fixture(autouse=True)
def _no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maintenance, "CHECK_EVERY", 0.0)


async def _check(vacuum: Vacuum, threshold: int | None, counts: _Counts) -> bool:
    task = await vacuum.check(threshold, counts, _NoDatabase())  # type: ignore[arg-type]
    if task is None:
        return False
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return True


async def test_below_the_threshold_nothing_starts_and_at_it_a_vacuum_does() -> None:
    vacuum = Vacuum()
    assert not await _check(vacuum, 1000, _Counts(999))
    assert await _check(vacuum, 1000, _Counts(1000))


async def test_none_never_even_counts() -> None:
    counts = _Counts(10**9)
    assert not await _check(Vacuum(), None, counts)
    assert counts.asked == 0


async def test_rows_the_last_vacuum_left_do_not_count_until_cleaned_elsewhere() -> None:
    vacuum = Vacuum()
    vacuum._left = 5000  # an old snapshot held them back
    assert not await _check(vacuum, 1000, _Counts(5500))
    assert await _check(vacuum, 1000, _Counts(6000))
    vacuum._left = 5000
    assert not await _check(vacuum, 1000, _Counts(200))  # autovacuum cleaned up meanwhile
    assert await _check(vacuum, 1000, _Counts(1200))  # so the floor fell with it


async def test_one_vacuum_at_a_time() -> None:
    vacuum = Vacuum()
    first = await vacuum.check(10, _Counts(100), _NoDatabase())  # type: ignore[arg-type]
    assert first is not None
    assert await vacuum.check(10, _Counts(100), _NoDatabase()) is None  # type: ignore[arg-type]
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)


async def test_counted_at_most_once_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maintenance, "CHECK_EVERY", 1.0)
    vacuum, counts = Vacuum(), _Counts(0)
    for _ in range(5):
        await _check(vacuum, 1000, counts)
    assert counts.asked == 1


async def test_a_role_that_may_not_vacuum_is_told_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="koyojobs.maintenance")
    vacuum, counts = Vacuum(), _Counts(5000, may_vacuum=False)
    for _ in range(3):
        assert not await _check(vacuum, 1000, counts)
    assert vacuum.refused
    assert counts.asked == 1
    assert len(caplog.records) == 1
