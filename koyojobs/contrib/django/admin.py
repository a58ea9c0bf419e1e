"""The jobs in Django's admin: a list filtered by status and queue, and each job's error.

Read-only: nothing is added, changed or deleted here (``manage.py koyojobs
retry`` and ``cancel`` do that). The payloads are never loaded, let alone
unpickled: the admin shows their sizes.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models.functions import Length

from .models import Job

__all__ = ["JobAdmin"]


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Lists jobs newest first; a job's page shows its last error and traceback."""

    list_display = ("id", "name", "queue", "status", "attempts", "scheduled_at", "error")
    list_filter = ("status", "queue")
    search_fields = ("name",)
    list_per_page = 50
    show_full_result_count = False  # a count(*) of a large table on every page
    fields = (
        ("id", "name", "queue", "priority"),
        ("status", "attempts", "max_attempts"),
        ("scheduled_at", "created_at"),
        ("started_at", "finished_at", "lease_expires_at"),
        "worker_id",
        ("arguments_size", "result_size"),
        "last_error",
        "last_traceback",
    )
    readonly_fields = tuple(
        name for row in fields for name in ((row,) if isinstance(row, str) else row)
    )

    def get_queryset(self, request: Any) -> Any:
        # The sizes, computed by the database: the payloads never leave it.
        return (
            super()
            .get_queryset(request)
            .defer("args", "result")
            .annotate(args_bytes=Length("args"), result_bytes=Length("result"))
        )

    @admin.display(description="last error")
    def error(self, job: Job) -> str:
        return (job.last_error or "").split("\n", 1)[0][:120]

    @admin.display(description="arguments (bytes, not loaded)")
    def arguments_size(self, job: Any) -> int:
        size: int = job.args_bytes
        return size

    @admin.display(description="result (bytes, not loaded)")
    def result_size(self, job: Any) -> int | None:
        size: int | None = job.result_bytes
        return size

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False
