"""``python manage.py koyojobs COMMAND ...``: the ``koyojobs`` CLI, on Django's database.

Every command and option of ``koyojobs`` (``worker``, ``migrate``,
``status``, ``jobs``, ``retry``, ``cancel``, ``prune``, ``schedules``), with
the DSN built from ``DATABASES`` (``--dsn`` still wins) and the modules,
queues and secret of ``settings.KOYOJOBS``; ``prune`` with no
``--older-than`` uses its ``retention``.

Example:
    $ python manage.py koyojobs migrate
    $ python manage.py koyojobs worker --queue emails --concurrency 4
    $ python manage.py koyojobs worker --processes 2
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from typing import Any

import click
from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils.module_loading import import_string

from koyojobs.cli import main
from koyojobs.config import Deployment
from koyojobs.contrib.django.apps import database_dsn, koyojobs_settings

PROG = "manage.py koyojobs"


class Command(BaseCommand):
    help = "koyojobs' CLI on this project's database: worker, migrate, status, jobs, prune..."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("arguments", nargs=argparse.REMAINDER)

    def run_from_argv(self, argv: list[str]) -> None:
        # click parses the rest, prints the help and errors, and exits with its status:
        # Django's own options parser would take the CLI's options for its own.
        arguments, deployment = _prepare(argv[2:])
        main.main(args=arguments, prog_name=PROG, obj=deployment)

    def handle(self, *args: Any, **options: Any) -> None:
        arguments, deployment = _prepare(list(options["arguments"]))
        try:
            main.main(args=arguments, prog_name=PROG, obj=deployment, standalone_mode=False)
        except click.ClickException as exc:
            raise CommandError(exc.format_message()) from None


def _prepare(arguments: list[str]) -> tuple[list[str], Deployment]:
    config = koyojobs_settings()
    # The CLI reads KOYOJOBS_DSN (after --dsn): DATABASES is this project's database.
    os.environ["KOYOJOBS_DSN"] = database_dsn(config)
    if (
        config.retention is not None
        and arguments[:1] == ["prune"]
        and not any(a.startswith("--older-than") for a in arguments)
    ):
        seconds = config.retention
        text = f"{int(seconds)}s" if seconds.is_integer() else f"{seconds}s"
        arguments = [*arguments, "--older-than", text]
    retention: dict[str, str] = {}
    if config.retention is not None:
        # The workers keep finished jobs as long as `prune` would: every status alike.
        age = f"{int(config.retention)}s"
        retention = {"done": age, "failed": age, "cancelled": age}
    modules = config.modules + tuple(m for m in _task_modules() if m not in config.modules)
    deployment = Deployment(
        modules=modules,
        queues=config.queues,
        secret=config.secret,
        retention=retention,
        processes=config.processes,
    )
    return arguments, deployment


def _task_modules() -> list[str]:
    """Each installed app's ``tasks`` module, when a backend of ``TASKS`` is koyojobs'.

    Django finds tasks by their module path, with no list of modules: the
    worker imports the apps' ``tasks`` modules as Django's conventions place
    them (tasks elsewhere go in ``KOYOJOBS["modules"]``).
    """
    configured = getattr(settings, "TASKS", None) or {}
    if not configured:
        return []
    try:
        from koyojobs.contrib.django.tasks import KoyojobsBackend
    except ImportError:  # no Tasks framework: then no task of koyojobs' either
        return []
    backends = [import_string(str(c.get("BACKEND", ""))) for c in configured.values()]
    if not any(issubclass(b, KoyojobsBackend) for b in backends):
        return []
    return [
        f"{app.name}.tasks"
        for app in apps.get_app_configs()
        if importlib.util.find_spec(f"{app.name}.tasks") is not None
    ]
