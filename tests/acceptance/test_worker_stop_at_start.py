"""``koyojobs worker`` asked to stop while it is still starting: it stops at once, cleanly."""

from __future__ import annotations

import asyncio
import signal

from tests.worker_process import WorkerProcess, until


async def test_a_signal_while_the_database_does_not_answer_stops_the_worker_cleanly() -> None:
    # A server that accepts connections and never answers: the worker's
    # connect would wait a minute for it.
    knocked = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def mute(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        knocked.set()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    worker = WorkerProcess(
        "--dsn",
        f"postgresql://koyo@127.0.0.1:{port}/none",
        "tests.acceptance.cli_jobs",
        log_level="INFO",
    )
    try:
        await worker.start(wait_ready=False)
        # Its signal handlers are in place before it connects.
        await asyncio.wait_for(knocked.wait(), 30)
        worker.signal(signal.SIGTERM)
        code = await worker.wait(10)
    finally:
        worker.signal(signal.SIGKILL)
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    assert code == 0, worker.log()
    await until(lambda: "stopped before it started" in worker.log(), 5, "the log line")
    assert "cannot connect" not in worker.log()
