"""Tasks the Django Tasks tests run (found by the worker as the app's tasks module)."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

from django.dispatch import receiver

from koyojobs import define_job

if TYPE_CHECKING:  # django-stubs describe Django 6's django.tasks
    from django.tasks import TaskContext, task
    from django.tasks.signals import task_finished, task_started
else:
    try:
        from django.tasks import TaskContext, task
        from django.tasks.signals import task_finished, task_started
    except ImportError:  # Django 5.2, with the django-tasks backport
        from django_tasks import TaskContext, task
        from django_tasks.signals import task_finished, task_started

from .models import Run


class DeclinedError(Exception):
    """A failure of the task's own."""


@task(queue_name="serial")
def record(label: str) -> str:
    Run.objects.create(label=label)
    return label


@define_job(queue="serial")
def record_job(label: str) -> str:
    """A plain koyojobs job, for the order among tasks and jobs."""
    Run.objects.create(label=label)
    return label


# koyojobs' own option (KoyojobsTask, Django 6.1 and the backport): not in django-stubs.
@task(max_attempts=1)  # type: ignore[call-overload, untyped-decorator]
def decline(reason: str) -> None:
    raise DeclinedError(reason)


@task
async def add(a: int, b: int) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"sum": a + b, "thread": threading.current_thread().name}


@task(takes_context=True)
def with_context(context: TaskContext[Any, Any], x: int) -> dict[str, Any]:
    result = context.task_result
    return {
        "id": result.id,
        "attempt": context.attempt,
        "status": str(result.status),
        "x": x,
        "queue": result.task.queue_name,
        "enqueued_at": str(result.enqueued_at),
    }


@receiver(task_started)
def _started(sender: type, task_result: Any, **kwargs: Any) -> None:
    Run.objects.create(label=f"started {task_result.task.name} {task_result.status}")


@receiver(task_finished)
def _finished(sender: type, task_result: Any, **kwargs: Any) -> None:
    Run.objects.create(label=f"finished {task_result.task.name} {task_result.status}")
