"""Every code sample in the docs runs: the pages include them from docs/examples/,
and these tests run those files against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pendulum
import pytest

from docs.examples import (
    components,
    defining,
    flow_control,
    hooks,
    inside_a_job,
    middleware_signature,
    observability,
    periodic,
    retention,
)

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


async def test_hello_runs_end_to_end(dsn: str) -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "docs/examples/hello.py"],
        cwd=ROOT,
        env={**os.environ, "KOYOJOBS_DSN": dsn},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(
        r"job 1 done after [\d.]+ ms \(attempts=1\): result='hello, Bogdan'", result.stdout
    )


async def test_defining(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    await defining.main(dsn)
    assert capsys.readouterr().out.strip() == "cat.png@640"


async def test_inside_a_job(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    await inside_a_job.main(dsn)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "docs.poll_payment done 3 payment 42 settled after 3 attempts"
    assert (
        lines[1] == "docs.flaky_export failed 2 ExportUnavailableError: the export service is down"
    )
    assert lines[2].startswith("docs.slow_report failed 1 TimeoutError: job 'docs.slow_report'")


async def test_components(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    await components.main(dsn)
    assert capsys.readouterr().out.strip() == "5"


async def test_hooks(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    await hooks.main(dsn)
    lines = capsys.readouterr().out.splitlines()
    assert sorted(lines) == sorted(
        [
            "welcome ada@example.com: contact 1",
            "gave up on not-an-address after 2 attempts: not an email address: 'not-an-address'",
            "done 1",
            "failed 2 ValueError: not an email address: 'not-an-address'",
        ]
    )


async def test_the_middleware_shape_passes_the_result_through() -> None:
    from koyojobs import RunningJob

    async def call_next() -> str:
        return "result"

    job = RunningJob(1, "docs.job", "default", 1, 3, pendulum.now("UTC"))
    assert await middleware_signature.middleware(job, call_next) == "result"


async def test_observability(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    await observability.main(dsn)
    lines = capsys.readouterr().out.splitlines()
    assert lines[:5] == [
        "1 trace, 4 spans",
        "POST /orders [INTERNAL]",
        "  send emails [PRODUCER] messaging.destination.name=emails messaging.message.id=1",
        "    process emails [CONSUMER] messaging.destination.name=emails "
        "messaging.message.id=1 koyojobs.outcome=done",
        "      render receipt [INTERNAL]",
    ]
    job, done, queue = (
        "koyojobs.job.name=docs.send_receipt",
        "koyojobs.outcome=done",
        "messaging.destination.name=emails",
    )
    assert sorted(lines[5:]) == [
        f"koyojobs.attempts{{{job}, {done}, {queue}}} = 1",
        f"koyojobs.queue.wait{{{job}, {queue}}} count 1",
        f"messaging.process.duration{{{job}, {done}, {queue}}} count 1",
    ]
    # The page shows this very output.
    page = (DOCS / "observability.md").read_text()
    assert "\n".join(lines) in page


def test_retention_example() -> None:
    from datetime import timedelta

    from koyojobs import Status

    broker = retention.make_broker("postgresql://localhost/app")
    assert broker.retention == {
        Status.DONE: timedelta(hours=1),
        Status.FAILED: None,
        Status.CANCELLED: timedelta(days=7),
    }


async def test_periodic(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    await periodic.main(dsn)
    assert capsys.readouterr().out.splitlines() == [
        "docs.nightly_cleanup 0 3 * * * Europe/Amsterdam",
        "docs.sample every 1s UTC",
        "a second apart: True",
    ]


async def test_testing_your_app_runs_as_the_page_says(tmp_path: Path) -> None:
    # The page's three files as a user lays them out, and nothing else: the
    # conftest starts its own PostgreSQL, the settings are the ones shown.
    examples = DOCS / "examples"
    (tmp_path / "conftest.py").write_text((examples / "testing_conftest.py").read_text())
    (tmp_path / "test_app.py").write_text((examples / "testing_your_app.py").read_text())
    (tmp_path / "pyproject.toml").write_text((examples / "testing_pyproject.toml").read_text())
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-W", "error", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout, result.stdout


def test_python_samples_on_pages_come_from_tested_files() -> None:
    fence = re.compile(r"```python\n(.*?)```", re.DOTALL)
    for page in DOCS.glob("*.md"):
        for block in fence.findall(page.read_text()):
            lines = [line for line in block.strip().splitlines() if line.strip()]
            assert all(line.startswith('--8<-- "docs/examples/') for line in lines), (
                f"{page.name}: a python sample not included from docs/examples/:\n{block}"
            )
            for line in lines:
                # "path" or "path:section" (a section between --8<-- [start:x] and [end:x]).
                path, _, section = line.split('"')[1].partition(":")
                included = ROOT / path
                assert included.exists(), f"{page.name} includes missing {included}"
                if section:
                    text = included.read_text()
                    assert f"[start:{section}]" in text and f"[end:{section}]" in text, (
                        f"{page.name} includes a missing section {section!r} of {path}"
                    )


async def test_the_operations_page_commands_run(dsn: str) -> None:
    from koyojobs import Broker, set_current_broker
    from tests import jobs

    async with Broker(dsn) as broker:
        set_current_broker(broker)
        try:
            ids = [await jobs.echo(n) for n in range(3)]
        finally:
            set_current_broker(None)
        assert ids == [1, 2, 3]  # the page retries job 2 and cancels job 3
        await broker.pool.execute(
            "UPDATE koyojobs_jobs SET status = 'failed', finished_at = now(), "
            "last_error = 'ValueError: example' WHERE id = 2"
        )
    page = (DOCS / "operations.md").read_text()
    block = re.search(r"```bash\n(.*?)```", page, re.DOTALL)
    assert block is not None
    commands = [line.split("#")[0].split() for line in block[1].splitlines() if line.strip()]
    assert [c[1] for c in commands] == [
        "migrate",
        "status",
        "jobs",
        "retry",
        "retry",
        "cancel",
        "cancel",
        "prune",
    ]
    for command in commands:
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "koyojobs", *command[1:]],
            cwd=ROOT,
            env={**os.environ, "KOYOJOBS_DSN": dsn},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, (command, result.stderr)


async def test_flow_control(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    await flow_control.main(dsn)
    assert capsys.readouterr().out.splitlines() == [
        "one sync for u-1: True",
        "while paused: queue paused",
        "all done",
    ]
