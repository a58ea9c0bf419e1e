"""The commands that change the database: ``migrate``, ``prune``, ``retry``, ``cancel``,
``pause`` and ``resume``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import click

from .._text import escape_controls, hidden_characters
from ..broker import Broker
from ..models import Status
from ..schema import build_indexes
from .base import (
    Connection,
    Failure,
    UsageError,
    connects,
    duration_seconds,
    main,
    with_broker,
)


@main.command()
@connects
def migrate(connection: Connection) -> None:
    """Create or upgrade the schema, then build, without blocking writes, any index a
    migration left out on a big table."""

    async def action(broker: Broker) -> tuple[list[int], list[str]]:
        applied = await broker.apply_migrations()
        return applied, await build_indexes(broker.pool)

    applied, built = with_broker(connection, action, migrate=False)
    click.echo(f"applied migrations: {applied}" if applied else "schema is up to date")
    for index in built:
        click.echo(f"built index {index} (concurrently)")


@main.command()
@click.option(
    "--older-than",
    "older_than",
    required=True,
    help="Age, with a unit: s, min, h, d or w (such as 12h or 7d).",
)
@click.option(
    "--dry-run", is_flag=True, help="Count, per status, what would be deleted; delete nothing."
)
@connects
def prune(older_than: str, dry_run: bool, connection: Connection) -> None:
    """Delete jobs that finished (done, failed, cancelled) longer ago than --older-than."""
    try:
        seconds = duration_seconds(older_than)
    except click.BadParameter as exc:
        exc.param_hint = "'--older-than'"
        raise

    if dry_run:

        async def count(broker: Broker) -> dict[Status, int]:
            return await broker.prunable(seconds)

        counts = with_broker(connection, count)
        details = ", ".join(f"{n} {s.value}" for s, n in counts.items())
        click.echo(f"would delete {sum(counts.values())} finished jobs ({details})")
        return

    async def delete(broker: Broker) -> int:
        return await broker.prune(seconds)

    click.echo(f"deleted {with_broker(connection, delete)} finished jobs")


_JOB_ID = click.IntRange(1, 2**63 - 1)
"""A job id: a positive PostgreSQL bigint (a bigger number names no job: a usage error)."""

_FINISHED = frozenset({Status.DONE, Status.FAILED, Status.CANCELLED})


def _job_command(
    verb: str,
    method: Callable[[Broker, int], Awaitable[bool]],
    acts_on: frozenset[Status],
    done: str,
    refused: Callable[[int, Status], str],
) -> Callable[..., None]:
    @click.argument("job_id", type=_JOB_ID, required=False)
    @click.option("--queue", help="Every matching job of this queue (instead of JOB_ID).")
    @click.option("--name", "name", help="Every matching job of this name (instead of JOB_ID).")
    @click.option(
        "--status",
        "statuses",
        multiple=True,
        type=click.Choice(sorted(s.value for s in acts_on)),
        help="Only jobs of this status (repeatable; default: "
        f"{'failed' if verb == 'retry' else 'ready and running'}).",
    )
    @connects
    def command(
        job_id: int | None,
        queue: str | None,
        name: str | None,
        statuses: tuple[str, ...],
        connection: Connection,
    ) -> None:
        if job_id is None:
            if queue is None and name is None:
                raise UsageError(f"{verb} what? Give a JOB_ID, or --queue and/or --name")
            chosen = list(statuses) or (["failed"] if verb == "retry" else None)

            async def many(broker: Broker) -> int:
                bulk_method = broker.retry_many if verb == "retry" else broker.cancel_many
                return await bulk_method(queue=queue, name=name, status=chosen)

            count = with_broker(connection, many)
            click.echo(f"{'retried' if verb == 'retry' else 'cancelled'} {count} jobs")
            return
        if queue is not None or name is not None or statuses:
            raise UsageError("give either JOB_ID or --queue/--name/--status, not both")

        async def action(broker: Broker) -> str | None:
            # The job may change between the refusal and the look at why:
            # try again while the status says it would work now.
            for _ in range(3):
                if await method(broker, job_id):
                    return None
                found = await broker.job_status(job_id)
                if found is None:
                    return f"job {job_id} does not exist"
                if found not in acts_on:
                    return refused(job_id, found)
                holder = await broker.unique_holder(job_id)
                if holder is not None:
                    return f"job {job_id} is unique and job {holder} holds its key now"
            return f"job {job_id} keeps changing; {verb} it again"

        failure = with_broker(connection, action)
        if failure is not None:
            raise Failure(failure)
        click.echo(f"job {job_id} {done}")

    command.__doc__ = (
        f"{verb.capitalize()} job JOB_ID, or every job --queue and/or --name match "
        "(in batches that never hold the workers up)."
    )
    return command


def _retry(broker: Broker, job_id: int) -> Awaitable[bool]:
    return broker.retry_job(job_id)


def _cancel(broker: Broker, job_id: int) -> Awaitable[bool]:
    return broker.cancel(job_id)


main.command("retry")(
    _job_command(
        "retry",
        _retry,
        _FINISHED,
        "is ready to run again",
        lambda job_id, status: (
            f"job {job_id} is {status.value}, not finished: "
            "only a done, failed or cancelled job can be retried"
        ),
    )
)
main.command("cancel")(
    _job_command(
        "cancel",
        _cancel,
        frozenset({Status.READY, Status.RUNNING}),
        "is cancelled",
        lambda job_id, status: f"job {job_id} already finished ({status.value}): nothing to cancel",
    )
)


def _queue_command(verb: str, method: Callable[[Broker, str], Awaitable[None]]) -> Any:
    @click.argument("queue")
    @click.option(
        "--force", is_flag=True, help="Even a queue no job or worker has named (a typo?)."
    )
    @connects
    def command(queue: str, force: bool, connection: Connection) -> None:
        if hidden_characters(queue):
            raise UsageError(f"queue {queue!r} holds a control or invisible character")

        async def action(broker: Broker) -> bool:
            if not force and verb == "paused" and not await broker.queue_known(queue):
                return False
            await method(broker, queue)
            return True

        if not with_broker(connection, action):
            raise UsageError(
                f"no job or worker has named queue {queue!r}: check its spelling, or pass --force "
                "to pause it before its first job"
            )
        click.echo(f"queue {escape_controls(repr(queue))} {verb}")

    return command


main.command("pause")(_queue_command("paused", Broker.pause))
main.command("resume")(_queue_command("resumed", Broker.resume))
main.commands["pause"].help = (
    "Pause QUEUE: its workers in every process claim nothing more (running jobs "
    "finish; enqueueing goes on) until `koyojobs resume QUEUE`. Stored: it outlives restarts."
)
main.commands["resume"].help = "Resume a paused QUEUE: its workers wake and claim again."
