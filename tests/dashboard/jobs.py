"""Jobs the dashboard tests run, in the worker the live server starts."""

from __future__ import annotations

from datetime import timedelta

from koyojobs import define_job

QUEUE = "dashboard"
fixed: set[str] = set()
"""Keys for which ``fragile`` succeeds: a test "fixes the bug" before pressing Retry."""


@define_job(name="tests.dashboard.fragile", queue=QUEUE, max_attempts=1)
async def fragile(key: str) -> str:
    if key not in fixed:
        raise RuntimeError(f"the printer is on fire ({key})")
    return f"printed {key}"


@define_job(name="tests.dashboard.hostile", queue=QUEUE, max_attempts=1)
async def hostile() -> None:
    raise ValueError("<script>document.title='pwned';alert('pwned')</script><b>bold</b>")


@define_job(name="tests.dashboard.echo", queue=QUEUE, max_attempts=1, label="Say it back")
async def echo(value: object) -> object:
    return value


@define_job(name="tests.dashboard.hourly", queue=QUEUE, every=timedelta(hours=1))
async def hourly() -> str:
    return "tick"
