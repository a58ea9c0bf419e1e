"""Jobs that the CLI tests run in ``koyojobs worker tests.acceptance.cli_jobs`` processes."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from koyojobs import current_broker, define_job

# How many jobs of this worker process hold a pool connection now, and the most at once.
_holders = {"now": 0, "most": 0}
_holders_changed = asyncio.Condition()


@define_job(name="tests.cli.hold_a_pool_connection", max_attempts=1)
async def hold_a_pool_connection(together: int, give_up_after: float) -> dict[str, Any]:
    """Hold a connection of the broker's pool until ``together`` jobs hold one (or give up).

    Returns the server process of the connection and the most holders seen.
    """
    broker = current_broker()
    assert broker is not None
    async with broker.pool.acquire() as conn:
        pid: int = await conn.fetchval("SELECT pg_backend_pid()")
        async with _holders_changed:
            _holders["now"] += 1
            _holders["most"] = max(_holders["most"], _holders["now"])
            _holders_changed.notify_all()
            try:
                # The bound only ends a wait that cannot succeed (a pool too
                # small): with room for all, the last one in releases the rest.
                async with asyncio.timeout(give_up_after):
                    await _holders_changed.wait_for(lambda: _holders["now"] >= together)
            except TimeoutError:
                pass
            finally:
                _holders["now"] -= 1
        return {"pid": pid, "most": _holders["most"]}


@define_job(name="tests.cli.prepared_statements", max_attempts=1)
async def prepared_statements() -> dict[str, Any]:
    """Named prepared statements on a pool connection after a query with a parameter."""
    broker = current_broker()
    assert broker is not None
    async with broker.pool.acquire() as conn:
        await conn.fetchval("SELECT $1::int", 1)
        count: int = await conn.fetchval("SELECT count(*) FROM pg_prepared_statements")
    return {"prepared": count, "options": broker.database.connect_options}


@define_job(name="tests.cli.finish_when_file", max_attempts=1)
async def finish_when_file(path: str) -> str:
    """Runs until ``path`` exists (looked for every 10 ms, for at most 60 s)."""
    for _ in range(6000):
        if os.path.exists(path):  # noqa: ASYNC240 - a stat of a local file
            return "finished"
        await asyncio.sleep(0.01)  # the job's own wait for the test's go-ahead
    raise TimeoutError(f"{path} never appeared")


@define_job(name="tests.cli.block", max_attempts=1)
async def block() -> None:
    await asyncio.Event().wait()


@define_job(name="tests.cli.echo", max_attempts=1)
async def echo(value: Any) -> Any:
    return value
