"""Driving the Django project of tests/django_project from the Django tests:
its environment, commands and scenarios in subprocesses, a worker process."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "tests" / "django_project"


def environment(dsn: str, secret: str | None = None) -> dict[str, str]:
    parts = urlsplit(dsn)
    return {
        **({"DJANGO_TEST_SECRET": secret} if secret else {}),
        **{k: v for k, v in os.environ.items() if not k.startswith(("PG", "KOYOJOBS_"))},
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(PROJECT)]),
        "DJANGO_SETTINGS_MODULE": "djproject.settings",
        "PGHOST": parts.hostname or "",
        "PGPORT": str(parts.port or 5432),
        "PGUSER": parts.username or "",
        "PGDATABASE": parts.path.lstrip("/"),
    }


def run(dsn: str, *arguments: str, secret: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=PROJECT,
        env=environment(dsn, secret),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def scenario(dsn: str, script: str, name: str, secret: str | None = None) -> dict[str, Any]:
    """Run scenario ``name`` of ``script``; returns the JSON it printed last."""
    result = run(dsn, script, name, secret=secret)
    assert result.returncode == 0, result.stderr
    found: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


async def migrated(dsn: str) -> str:
    """The test's database, with koyojobs' schema and then Django's."""
    result = await asyncio.to_thread(run, dsn, "manage.py", "migrate", "--no-input")
    assert result.returncode == 0, result.stderr
    return dsn


class Process:
    """A subprocess whose stderr lines are read as they come."""

    def __init__(self, dsn: str, *arguments: str, secret: str | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, *arguments],
            cwd=PROJECT,
            env=environment(dsn, secret),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 30, count: int = 1) -> None:
        """Until ``count`` lines of the process's stderr hold ``text``."""
        deadline = time.monotonic() + timeout
        while sum(text in line for line in self.seen) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} from the process:\n{''.join(self.seen)}"
            try:
                self.seen.append(self.lines.get(timeout=min(left, 0.5)))
            except queue.Empty:
                exited = self.process.poll() is not None and self.lines.empty()
                assert not exited, f"exited before {text!r}:\n{''.join(self.seen)}"


SQLITE = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}


def configured(
    koyojobs: object, then: str, database: dict[str, str] = SQLITE
) -> subprocess.CompletedProcess[str]:
    """Django set up on ``database`` (SQLite) with ``settings.KOYOJOBS = koyojobs``, then
    ``then`` run."""
    code = (
        "import django, sys\n"
        "from django.conf import settings\n"
        "settings.configure(INSTALLED_APPS=['koyojobs.contrib.django'], "
        f"DATABASES={{'default': {database!r}}}"
        f"{'' if koyojobs is None else f', KOYOJOBS={koyojobs!r}'})\n"
        "django.setup()\n" + then
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**environment("postgresql:///unused"), "DJANGO_SETTINGS_MODULE": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
