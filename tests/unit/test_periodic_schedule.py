"""When ticks fall: intervals on the epoch, cron in a zone across daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pendulum
import pytest

from koyojobs import JobDefinitionError, define_job
from koyojobs.periodic import Schedule, make_schedule

AMS = "Europe/Amsterdam"


def _noop() -> None: ...


def _cron(expr: str, zone: str = "UTC") -> Schedule:
    schedule = make_schedule("t.cron", _noop, cron=expr, timezone=zone)
    assert schedule is not None
    return schedule


def _ticks(schedule: Schedule, start: datetime, n: int) -> list[str]:
    found, now = [], start
    for _ in range(n):
        now = schedule.next_tick(now)
        found.append(now.astimezone(pendulum.timezone(schedule.timezone)).isoformat())
    return found


def test_every_ticks_fall_on_multiples_of_the_interval_since_the_epoch() -> None:
    schedule = make_schedule("t.every", _noop, every=timedelta(seconds=30))
    assert schedule is not None
    now = datetime(2026, 5, 1, 12, 0, 44, 500_000, tzinfo=UTC)
    assert schedule.latest_tick(now) == datetime(2026, 5, 1, 12, 0, 30, tzinfo=UTC)
    assert schedule.next_tick(now) == datetime(2026, 5, 1, 12, 1, 0, tzinfo=UTC)
    # A tick itself is its own latest tick: not skipped, not run twice.
    on_tick = datetime(2026, 5, 1, 12, 1, 0, tzinfo=UTC)
    assert schedule.latest_tick(on_tick) == on_tick
    assert schedule.next_tick(on_tick) == on_tick + timedelta(seconds=30)
    seven = make_schedule("t.seven", _noop, every=pendulum.duration(seconds=7))
    assert seven is not None
    assert seven.latest_tick(now).timestamp() % 7 == 0


def test_cron_is_read_in_its_zone() -> None:
    nightly = _cron("0 3 * * *", AMS)
    # 03:00 in Amsterdam is 01:00 UTC in summer.
    assert nightly.latest_tick(datetime(2026, 7, 1, 12, tzinfo=UTC)) == datetime(
        2026, 7, 1, 1, tzinfo=UTC
    )
    assert nightly.next_tick(datetime(2026, 7, 1, 12, tzinfo=UTC)) == datetime(
        2026, 7, 2, 1, tzinfo=UTC
    )


def test_a_daily_job_in_the_skipped_hour_runs_once_right_after_the_gap() -> None:
    # 2026-03-29: Amsterdam's clocks go from 02:00 to 03:00; 02:30 never happens.
    ticks = _ticks(_cron("30 2 * * *", AMS), datetime(2026, 3, 27, 12, tzinfo=UTC), 3)
    assert ticks == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",  # not lost, not twice
        "2026-03-30T02:30:00+02:00",
    ]


def test_a_daily_job_in_the_repeated_hour_runs_once() -> None:
    # 2026-10-25: Amsterdam's clocks go from 03:00 back to 02:00; 02:30 happens twice.
    ticks = _ticks(_cron("30 2 * * *", AMS), datetime(2026, 10, 23, 12, tzinfo=UTC), 3)
    assert ticks == [
        "2026-10-24T02:30:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]


def test_a_frequent_job_keeps_its_rhythm_through_the_repeated_hour() -> None:
    ticks = _ticks(_cron("*/30 * * * *", AMS), datetime(2026, 10, 24, 23, 0, tzinfo=UTC), 5)
    assert ticks == [
        "2026-10-25T01:30:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:30:00+01:00",
    ]


@pytest.mark.parametrize(
    ("alias", "fields"),
    [("@hourly", "0 * * * *"), ("@daily", "0 0 * * *"), ("@weekly", "0 0 * * 0")],
)
def test_aliases_mean_what_cron_means(alias: str, fields: str) -> None:
    now = datetime(2026, 5, 6, 7, 8, tzinfo=UTC)
    assert _cron(alias).next_tick(now) == _cron(fields).next_tick(now)


@pytest.mark.parametrize(
    ("options", "culprit"),
    [
        ({"cron": "61 * * * *"}, "cron='61 * * * *'"),
        ({"cron": "* * *"}, "cron='* * *'"),
        ({"cron": "0 3 * * *", "every": timedelta(minutes=1)}, "not both"),
        ({"every": timedelta(milliseconds=500)}, "at least one second"),
        ({"every": 30}, "every=30"),
        ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "Mars/Olympus"),
        ({"every": timedelta(seconds=5), "timezone": AMS}, "timezone="),
        ({"timezone": AMS}, "without cron"),
        ({"cron": "@daily", "skip_if_running": "yes"}, "skip_if_running"),
    ],
)
def test_bad_periodic_options_are_named(options: dict[str, Any], culprit: str) -> None:
    with pytest.raises(JobDefinitionError, match=r"t\.bad") as raised:
        define_job(name="t.bad", **options)(_noop)
    assert culprit in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_periodic_job_takes_no_required_arguments() -> None:
    def needs(user_id: int, verbose: bool = False) -> None: ...

    with pytest.raises(JobDefinitionError, match=r"t.args.*\['user_id'\]"):
        define_job(name="t.args", queue="periodic-unit", every=timedelta(minutes=1))(needs)

    def optional(verbose: bool = False, *args: Any, **kwargs: Any) -> None: ...

    job = define_job(name="t.optional", queue="periodic-unit", every=timedelta(minutes=1))(optional)
    assert job.schedule is not None and job.schedule.expression == "every 60s"
