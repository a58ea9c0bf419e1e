"""Django Tasks scenarios the tests run in a process of their own, while a worker
process runs: `python task_scenarios.py NAME`. Each prints one JSON line."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import timedelta
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djproject.settings")

import django

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

# On Django's path (the project's folder), not on mypy's.
from taskapp.models import Run  # type: ignore[import-not-found]  # noqa: E402
from taskapp.tasks import (  # type: ignore[import-not-found]  # noqa: E402
    add,
    decline,
    record,
    record_job,
    with_context,
)

from docs.examples.django_shop.models import Order  # noqa: E402
from docs.examples.django_shop.tasks import send_confirmation  # noqa: E402
from koyojobs.contrib.django._tasks_api import (  # noqa: E402
    InvalidTask,
    TaskResultDoesNotExist,
    task_enqueued,
)
from koyojobs.contrib.django.models import Job  # noqa: E402
from koyojobs.sync import enqueue  # noqa: E402

DEADLINE = 30.0


def _finished(result: Any) -> Any:
    """Poll with refresh() until the task has finished, or fail at the deadline."""
    deadline = time.monotonic() + DEADLINE
    while not result.is_finished:
        assert time.monotonic() < deadline, f"task {result.id} still {result.status}"
        time.sleep(0.02)
        result.refresh()
    return result


def _shown(result: Any) -> dict[str, Any]:
    return {
        "id": result.id,
        "status": str(result.status),
        "return_value": result.return_value if str(result.status) == "SUCCESSFUL" else None,
        "attempts": result.attempts,
        "worker_ids": result.worker_ids,
        "enqueued_at": result.enqueued_at,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "errors": [
            {"path": e.exception_class_path, "traceback": e.traceback} for e in result.errors
        ],
        "queue": result.task.queue_name,
        "priority": result.task.priority,
    }


def orders() -> dict[str, Any]:
    enqueued: list[str] = []
    task_enqueued.connect(
        lambda sender, task_result, **_: enqueued.append(task_result.id), weak=False
    )
    client = Client(raise_request_exception=False)
    committed = client.post("/order", {"email": "ada@example.com", "total": "12.50"})
    rolled_back = client.post("/order", {"email": "bob@example.com", "total": "0"})
    result_id = committed.json()["task"]
    result = _finished(send_confirmation.get_result(result_id))
    shown = client.get(f"/order/task/{result_id}")
    User.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(User.objects.get(username="root"))
    admin = client.get("/admin/koyojobs/job/")
    return {
        "committed": committed.status_code,
        "rolled_back": rolled_back.status_code,
        "orders": list(Order.objects.values_list("email", "receipt_sent")),
        "jobs": list(Job.objects.values_list("name", "queue", "priority", "status")),
        "enqueued_signals": len(enqueued),
        "result": _shown(result),
        "view": shown.json(),
        "admin": admin.content.decode(),
    }


def priorities() -> dict[str, Any]:
    with transaction.atomic():  # committed together: the claim alone orders them
        low = record.using(priority=-10).enqueue("low")
        record.using(priority=90).enqueue("high")
        record.enqueue("default")
        enqueue(record_job("plain"), connection=connection)
        ids = {"low": low.id}
    deadline = time.monotonic() + DEADLINE
    while Run.objects.exclude(label__contains=" ").count() < 4:
        assert time.monotonic() < deadline, list(Run.objects.values_list("label", flat=True))
        time.sleep(0.02)
    return {
        "order": list(
            Run.objects.exclude(label__contains=" ").order_by("id").values_list("label", flat=True)
        ),
        "priorities": sorted(Job.objects.values_list("priority", flat=True)),
        "low": _shown(record.get_result(ids["low"])),
    }


def later() -> dict[str, Any]:
    run_after = timezone.now() + timedelta(seconds=2)
    result = record.using(run_after=run_after).enqueue("later")
    result.refresh()
    before = str(result.status)
    _finished(result)
    return {"before": before, "run_after": run_after, "result": _shown(result)}


def failures() -> dict[str, Any]:
    result = _finished(decline.enqueue("card declined"))
    try:
        result.return_value  # noqa: B018
    except ValueError as exc:
        raised = str(exc)
    error_class = result.errors[0].exception_class.__name__
    missing = []
    for unknown in ("999999", "abc", "-1"):
        try:
            record.get_result(unknown)
        except TaskResultDoesNotExist:
            missing.append(unknown)
    try:
        record.using(queue_name="nowhere")
    except InvalidTask as exc:
        invalid = str(exc)
    signals = list(Run.objects.order_by("id").values_list("label", flat=True))
    later = record.using(run_after=timezone.now() + timedelta(hours=1)).enqueue("never")
    call_command("koyojobs", "cancel", later.id)
    later.refresh()
    return {
        "result": _shown(result),
        "raised": raised,
        "error_class": error_class,
        "missing": missing,
        "invalid": invalid,
        "signals": signals,
        "cancelled": _shown(later),
    }


async def _async_task() -> dict[str, Any]:
    result = await add.aenqueue(2, 3)
    deadline = time.monotonic() + DEADLINE
    while not result.is_finished:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
        await result.arefresh()
    again = await add.aget_result(result.id)
    return {"result": _shown(result), "again": str(again.status)}


def async_task() -> dict[str, Any]:
    return asyncio.run(_async_task())


def context() -> dict[str, Any]:
    result = _finished(with_context.enqueue(7))
    return {"result": _shown(result)}


def bad_options() -> dict[str, Any]:
    from koyojobs.contrib.django.tasks import KoyojobsBackend

    found = {}
    for options in ({"retries": 3}, {"max_attempts": 0}, {"timeout": -1}):
        try:
            KoyojobsBackend("default", {"OPTIONS": options})
        except ImproperlyConfigured as exc:
            found[json.dumps(options)] = str(exc)
    return found


if __name__ == "__main__":
    print(json.dumps(globals()[sys.argv[1]](), default=str))
