"""Django's Tasks framework on koyojobs (koyojobs.contrib.django.tasks), in the real
Django project of tests/django_project: Django's own API in one process, a
`manage.py koyojobs worker` in another. Runs with Django 6 (django.tasks) and
with Django 5.2 and the django-tasks backport, whichever is installed."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.acceptance.django_harness import (
    ROOT,
    Process,
    configured,
    environment,
    migrated,
    run,
    scenario,
)

PROJECT = ROOT / "tests" / "django_project"


def _scenario(dsn: str, name: str) -> dict[str, Any]:
    return scenario(dsn, "task_scenarios.py", name)


@pytest.fixture
async def django_db(dsn: str) -> str:
    return await migrated(dsn)


@pytest.fixture
def worker(django_db: str) -> Iterator[Process]:
    # A 30 s poll: tasks start in time only because the commit's NOTIFY woke the worker.
    process = Process(django_db, "manage.py", "koyojobs", "worker", "--poll-interval", "30")
    try:
        process.wait_for("working")
        yield process
    finally:
        process.process.kill()
        process.process.wait()


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def test_a_view_enqueues_a_task_in_its_transaction_and_the_worker_runs_it(
    django_db: str, worker: Process
) -> None:
    found = await asyncio.to_thread(_scenario, django_db, "orders")
    assert (found["committed"], found["rolled_back"]) == (201, 500)
    assert found["orders"] == [["ada@example.com", True]]  # the task saw the committed order
    # One job: the rolled-back view's task never existed.
    assert found["jobs"] == [
        ["docs.examples.django_shop.tasks.send_confirmation", "emails", 90, "done"]
    ]
    assert found["enqueued_signals"] == 2  # sent by enqueue, in the transaction
    result = found["result"]
    assert result["status"] == "SUCCESSFUL"
    assert result["return_value"].startswith("confirmation for order ")
    assert result["attempts"] == 1 and result["errors"] == []
    assert (result["queue"], result["priority"]) == ("emails", 10)
    enqueued, started, finished = (
        _time(result[k]) for k in ("enqueued_at", "started_at", "finished_at")
    )
    assert enqueued <= started <= finished
    assert found["view"] == {
        "status": "SUCCESSFUL",
        "attempts": 1,
        "return_value": result["return_value"],
    }
    # The admin lists the task's job by the task's path.
    assert "docs.examples.django_shop.tasks.send_confirmation" in found["admin"]


async def test_priorities_order_tasks_and_plain_jobs_and_run_after_defers(
    django_db: str, worker: Process
) -> None:
    found = await asyncio.to_thread(_scenario, django_db, "priorities")
    # Django 90 -> koyojobs 10, a plain job's default 50, Django 0 -> 100, -10 -> 110.
    assert found["order"] == ["high", "plain", "default", "low"]
    assert found["priorities"] == [10, 50, 100, 110]
    assert found["low"]["priority"] == -10 and found["low"]["status"] == "SUCCESSFUL"
    later = await asyncio.to_thread(_scenario, django_db, "later")
    assert later["before"] == "READY"
    assert later["result"]["status"] == "SUCCESSFUL"
    assert _time(later["result"]["started_at"]) >= _time(later["run_after"])


async def test_a_failing_task_shows_its_error_and_signals_are_sent(
    django_db: str, worker: Process
) -> None:
    found = await asyncio.to_thread(_scenario, django_db, "failures")
    result = found["result"]
    assert result["status"] == "FAILED"
    assert result["attempts"] == 1  # @task(max_attempts=1): no retry
    [error] = result["errors"]
    assert error["path"] == "taskapp.tasks.DeclinedError"
    assert found["error_class"] == "DeclinedError"
    assert error["traceback"].startswith("Traceback (most recent call last):")
    assert "taskapp.tasks.DeclinedError: card declined" in error["traceback"]
    assert found["raised"] == "Task failed"
    assert found["missing"] == ["999999", "abc", "-1"]
    assert found["invalid"] == "Queue 'nowhere' is not valid for backend."
    assert found["signals"] == ["started decline RUNNING", "finished decline FAILED"]
    # A cancelled job is FAILED to Django, which has no cancelled status.
    cancelled = found["cancelled"]
    assert cancelled["status"] == "FAILED" and cancelled["attempts"] == 0
    assert [e["path"] for e in cancelled["errors"]] == [
        "koyojobs.contrib.django.tasks.TaskCancelledError"
    ]


async def test_async_tasks_run_on_the_workers_loop_and_context_is_passed(
    django_db: str, worker: Process
) -> None:
    found = await asyncio.to_thread(_scenario, django_db, "async_task")
    assert found["result"]["status"] == "SUCCESSFUL"
    assert found["result"]["return_value"] == {"sum": 5, "thread": "MainThread"}
    assert found["again"] == "SUCCESSFUL"
    context = (await asyncio.to_thread(_scenario, django_db, "context"))["result"]
    value = context["return_value"]
    assert value["id"] == context["id"]
    assert (value["attempt"], value["status"], value["x"]) == (1, "RUNNING", 7)
    assert value["queue"] == "default"
    assert _time(value["enqueued_at"]) == _time(context["enqueued_at"])


def test_malformed_options_are_one_line_naming_the_setting(tmp_path: Any) -> None:
    result = run("postgresql:///unused", "task_scenarios.py", "bad_options")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found == {
        '{"retries": 3}': "TASKS['default']['OPTIONS']: unknown key 'retries' "
        "(known: max_attempts, timeout)",
        '{"max_attempts": 0}': "TASKS['default']['OPTIONS']['max_attempts']: must be an int "
        ">= 1, got 0",
        '{"timeout": -1}': "TASKS['default']['OPTIONS']['timeout']: must be seconds > 0 or "
        "None, got -1",
    }


_BACKEND = {
    "default": {
        "BACKEND": "koyojobs.contrib.django.tasks.KoyojobsBackend",
        "QUEUES": ["default", "emails"],
    }
}
_CHECK = "from django.core.management import call_command\ncall_command('check')\n"


def _checked(apps: list[str], database: dict[str, str] | None = None) -> str:
    import django

    tasks_app = [] if django.VERSION >= (6,) else ["django_tasks"]
    settings = (
        f"INSTALLED_APPS={[*apps, *tasks_app]!r}, TASKS={_BACKEND!r}, "
        "KOYOJOBS={'queues': ['default']}"
    )
    code = (
        "import django\nfrom django.conf import settings\n"
        f"settings.configure({settings}, DATABASES={{'default': {database!r}}})\n"
        "django.setup()\n"
        # As a project's tasks modules do (with the app, koyojobs' ready() does it too).
        "import koyojobs.contrib.django._tasks_api\n" + _CHECK
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**environment("postgresql:///unused"), "DJANGO_SETTINGS_MODULE": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stderr


def test_system_checks_name_the_app_the_database_and_the_queues() -> None:
    postgres = {"ENGINE": "django.db.backends.postgresql", "NAME": "app"}
    no_app = _checked([], postgres)
    assert (
        "?: (koyojobs.E001) TASKS['default']: KoyojobsBackend needs "
        "'koyojobs.contrib.django' in INSTALLED_APPS"
    ) in no_app
    sqlite = _checked(
        ["koyojobs.contrib.django"], {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
    )
    assert (
        "?: (koyojobs.E002) TASKS['default']: DATABASES['default'] uses "
        "django.db.backends.sqlite3: koyojobs needs PostgreSQL"
    ) in sqlite
    assert "?: (koyojobs.W001) TASKS['default']['QUEUES']: no worker runs queue 'emails'" in sqlite


def test_the_command_imports_the_apps_tasks_modules() -> None:
    result = configured(
        None,
        "from koyojobs.contrib.django.management.commands.koyojobs import _prepare\n"
        "print(_prepare(['worker'])[1].modules)\n",
        database={"ENGINE": "django.db.backends.postgresql", "NAME": "app", "HOST": "127.0.0.1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "()"  # no TASKS: no tasks modules
