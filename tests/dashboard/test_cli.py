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
def dashboard(
    dsn: str,
    *options: str,
    env_extra: dict[str, str] | None = None,
    stderr: list[str] | None = None,
) -> Iterator[str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOYOJOBS_")}
    env.update(env_extra or {})
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
    if stderr is not None:
        stderr.append(err)
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


def test_auth_asks_every_request_for_the_login(database: str) -> None:
    seen: list[str] = []
    with dashboard(database, "--allow-actions", "--auth", "ops:pa55", stderr=seen) as url:
        assert httpx.get(url + "/").status_code == 401
        assert httpx.get(url + "/", auth=("ops", "nope")).status_code == 401
        assert httpx.get(url + "/", auth=("ops", "pa55")).status_code == 200
    assert "warning" not in seen[0]
    with dashboard(database, env_extra={"KOYOJOBS_DASHBOARD_AUTH": "env:word"}) as url:
        assert httpx.get(url + "/").status_code == 401
        assert httpx.get(url + "/", auth=("env", "word")).status_code == 200


def test_actions_without_auth_warn(database: str) -> None:
    seen: list[str] = []
    with dashboard(database, "--allow-actions", stderr=seen) as url:
        assert httpx.get(url + "/").status_code == 200
    [warning] = [line for line in seen[0].splitlines() if line.startswith("warning:")]
    assert "--allow-actions without --auth" in warning


def test_a_malformed_auth_is_a_usage_error(database: str) -> None:
    result = koyojobs("dashboard", "--dsn", database, "--auth", "nopassword")
    assert result.returncode == 2
    assert result.stderr.strip() == "Error: --auth must be USER:PASSWORD, both non-empty"


def test_it_answers_only_to_local_names_and_its_own(database: str) -> None:
    # DNS rebinding: a name the attacker controls, resolving to 127.0.0.1.
    with dashboard(database, "--allowed-host", "ops.example.com") as url:
        assert httpx.get(url + "/").status_code == 200
        for host, expected in (
            ("attacker.example", 400),
            ("localhost", 200),
            ("ops.example.com", 200),
            ("evil.ops.example.com", 400),
        ):
            response = httpx.get(url + "/", headers={"host": host})
            assert response.status_code == expected, host


def test_it_never_migrates(empty_database_sync: str) -> None:
    result = koyojobs("dashboard", "--dsn", empty_database_sync, "--port", str(_free_port()))
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "the koyojobs schema is not in this database" in line and "run koyojobs migrate" in line
