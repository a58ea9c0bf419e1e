"""Django's Tasks framework, wherever it lives: ``django.tasks`` (Django 6) or the
``django_tasks`` backport (Django 5.2, ``pip install django-tasks``).

The two have the same classes and signals; the backport names one exception
differently (``InvalidTaskError`` for ``InvalidTask``). Type checking reads
Django 6's names (django-stubs describes them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = [
    "BaseTaskBackend",
    "InvalidTask",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "normalize_json",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]

if TYPE_CHECKING:
    from django.tasks import Task, TaskContext, TaskResult, TaskResultStatus, task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import TaskError
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json
else:
    try:
        from django.tasks import Task, TaskContext, TaskResult, TaskResultStatus, task_backends
    except ImportError:  # Django 5.2: the backport
        try:
            from django_tasks import TaskContext, TaskResult, TaskResultStatus, task_backends
        except ImportError:
            raise ImportError(
                "koyojobs.contrib.django.tasks needs Django's Tasks framework: Django 6, "
                "or on Django 5.2 the backport (pip install django-tasks)"
            ) from None
        from django_tasks import checks as _checks  # noqa: F401  (registered by the app too)
        from django_tasks.backends.base import BaseTaskBackend
        from django_tasks.base import Task, TaskError
        from django_tasks.exceptions import InvalidTaskError as InvalidTask
        from django_tasks.exceptions import TaskResultDoesNotExist
        from django_tasks.signals import task_enqueued, task_finished, task_started
        from django_tasks.utils import normalize_json
    else:
        from django.tasks.backends.base import BaseTaskBackend
        from django.tasks.base import TaskError
        from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
        from django.tasks.signals import task_enqueued, task_finished, task_started
        from django.utils.json import normalize_json
