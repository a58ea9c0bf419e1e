"""The jobs table, unmanaged: koyojobs' own migrations create it (``koyojobs migrate``)."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies: ClassVar[list[tuple[str, str]]] = []

    operations: ClassVar[list[Any]] = [
        migrations.CreateModel(
            name="Job",
            fields=[
                ("id", models.BigIntegerField(primary_key=True, serialize=False)),
                ("name", models.TextField()),
                ("queue", models.TextField()),
                ("priority", models.IntegerField()),
                (
                    "status",
                    models.TextField(
                        choices=[
                            ("ready", "ready"),
                            ("running", "running"),
                            ("done", "done"),
                            ("failed", "failed"),
                            ("cancelled", "cancelled"),
                        ]
                    ),
                ),
                ("args", models.BinaryField(editable=False)),
                ("result", models.BinaryField(editable=False, null=True)),
                ("attempts", models.IntegerField()),
                ("max_attempts", models.IntegerField()),
                ("scheduled_at", models.DateTimeField()),
                ("created_at", models.DateTimeField()),
                ("started_at", models.DateTimeField(null=True)),
                ("finished_at", models.DateTimeField(null=True)),
                ("lease_expires_at", models.DateTimeField(null=True)),
                ("worker_id", models.TextField(null=True)),
                ("last_error", models.TextField(null=True)),
                ("last_traceback", models.TextField(null=True)),
            ],
            options={
                "verbose_name": "job",
                "db_table": "koyojobs_jobs",
                "ordering": ("-id",),
                "managed": False,
            },
        ),
    ]
