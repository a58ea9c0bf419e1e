"""``koyojobs new job NAME``: a job module and a test for it, written from templates."""

from __future__ import annotations

from pathlib import Path

import click

from ..scaffold import ScaffoldError, new_job
from .base import UsageError, deployment, main


@main.group()
def new() -> None:
    """Generate code: a job module and its test."""


@new.command("job")
@click.argument("name")
@click.option("--queue", default="default", show_default=True, help="The job's queue.")
@click.option("--path", help="Folder for the job module (default: [tool.koyojobs] jobs_dir, jobs).")
def new_job_command(name: str, queue: str, path: str | None) -> None:
    """Write a job module NAME and a test for it; never overwrites a file."""
    declared = deployment()
    folders = {"jobs_dir": path or declared.jobs_dir, "tests_dir": declared.tests_dir}
    try:
        for written in new_job(name, root=Path.cwd(), queue=queue, **folders):
            click.echo(f"created {written.relative_to(Path.cwd())}")
    except ScaffoldError as exc:
        raise UsageError(str(exc)) from None
