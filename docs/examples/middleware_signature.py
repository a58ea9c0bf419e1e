"""The shape of a middleware (see docs/examples/hooks.py for a whole one)."""

from typing import Any

from koyojobs import CallNext, RunningJob


async def middleware(job: RunningJob, call_next: CallNext) -> Any:
    # before the attempt: set context variables, open a session, start a span
    result = await call_next()
    # after it (not reached when the job raises, unless in a finally)
    return result
