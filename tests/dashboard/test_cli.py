"""``koyojobs dashboard``: the dashboard served alone, as an operator starts it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from koyojobs.testing import _free_port
from tests.acceptance.test_cli import koyojobs

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def dashboard(dsn: str, *options: str) -> Iterator[str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOYOJOBS_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "koyojobs",
            "dashboard",
            "--dsn",
            dsn,
            "--port",
            str(port),
            *options,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.communicate()
            try:
                httpx.get(url + "/api/queues", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the dashboard did not start in 30s"
                time.sleep(0.05)  # polling for a port to open: there is nothing to wait on
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    assert f"koyojobs dashboard on http://127.0.0.1:{port}/" in out


def test_read_only_unless_allowed(database: str) -> None:
    with dashboard(database, "tests.dashboard.jobs") as url:
        page = httpx.get(url + "/periodic")
        assert page.status_code == 200 and "read-only" in page.text
        assert "tests.dashboard.hourly" in page.text and "Run now" not in page.text
        refused = httpx.post(url + "/periodic/run", data={"name": "tests.dashboard.hourly"})
        assert refused.status_code == 403
    with dashboard(database, "tests.dashboard.jobs", "--allow-actions") as url:
        assert "Run now" in httpx.get(url + "/periodic").text


def test_without_a_database_it_says_so_in_one_line() -> None:
    result = koyojobs("dashboard")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: no database given: pass --dsn or set KOYOJOBS_DSN"
    )


def test_a_port_taken_is_one_line_and_exit_status_1(database: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = koyojobs("dashboard", "--dsn", database, "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: cannot listen on 127.0.0.1:{port}: "), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
