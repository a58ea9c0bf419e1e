"""``koyojobs new job NAME``: a job module and a test for it, as Loco's generator writes them.

The job goes to ``<jobs_dir>/NAME.py`` and its test to
``<tests_dir>/test_NAME.py`` (``[tool.koyojobs]`` sets both folders, default
``jobs`` and ``tests``; ``--path`` overrides the first). The test passes as
generated: it runs the job inline with :func:`koyojobs.execute_jobs_synchronously`,
so it needs no database and no pytest plugin. Nothing is ever overwritten: if
either file exists, neither is written and the error names it.

Example:
    >>> from pathlib import Path
    >>> import tempfile
    >>> project = Path(tempfile.mkdtemp())
    >>> [str(p.relative_to(project)) for p in new_job("send_receipt", root=project)]
    ['jobs/send_receipt.py', 'tests/test_send_receipt.py']
"""

from __future__ import annotations

import json
import keyword
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .config import folder_error

__all__ = ["GeneratedJob", "ScaffoldError", "new_job", "plan_job"]

_JOB_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_MAX_QUEUE_LENGTH = 200  # as define_job allows

_JOB_TEMPLATE = '''\
"""The {name} job.

A worker runs it once this module is imported. From the project's folder:

    koyojobs worker {module} --queue {queue}

or list it in the ``modules`` of ``[tool.koyojobs]``.
Enqueue it with ``await {name}(...)``.
"""

from koyojobs import define_job


@define_job(queue={queue_literal})
async def {name}(subject: str) -> str:
    """Replace with the work. Arguments and the result are pickled: keep them small."""
    return f"{name}: {{subject}}"
'''

_TEST_TEMPLATE = '''\
"""Tests of the {name} job.

Run from the project's folder with ``python -m pytest``: the project's folder
is then on the path, so that its job modules import.
"""

import asyncio

from koyojobs import execute_jobs_synchronously

from {module} import {name}


def test_{name}_does_its_work() -> None:
    result = asyncio.run({name}.fn("example"))
    assert result == "{name}: example"


def test_{name}_enqueues_and_runs_inline() -> None:
    async def enqueue() -> None:
        # Inline, the job runs at the enqueue, its arguments pickled and
        # unpickled as a worker would see them; no database: the id is the
        # inline run's, a negative number that no stored job has.
        with execute_jobs_synchronously():
            assert await {name}("example") < 0

    asyncio.run(enqueue())
'''


class ScaffoldError(ValueError):
    """The generator cannot write what was asked; the message says why, in one line."""


@dataclass(frozen=True)
class GeneratedJob:
    """What ``koyojobs new job`` writes: the files and their contents, not yet written.

    Example:
        >>> plan = plan_job("send_receipt", queue="emails")
        >>> plan.job_path, plan.module
        (PosixPath('jobs/send_receipt.py'), 'jobs.send_receipt')
    """

    name: str
    module: str
    """The job module's import name (``myapp.jobs.send_receipt``)."""
    job_path: Path
    test_path: Path
    job_source: str
    test_source: str


def plan_job(
    name: str, *, queue: str = "default", jobs_dir: str = "jobs", tests_dir: str = "tests"
) -> GeneratedJob:
    """The job module and test for ``name``, with paths relative to the project.

    Raises :class:`ScaffoldError` for a name that is not a lowercase Python
    identifier, a bad queue, or a folder outside the project (or, for the
    jobs, one that is not importable).

    Example:
        >>> plan_job("SendReceipt")
        Traceback (most recent call last):
        ...
        koyojobs.scaffold.ScaffoldError: job name 'SendReceipt' must be a lowercase Python identifier, such as send_receipt
    """  # noqa: E501 (a doctest's traceback line cannot be wrapped)
    if not _JOB_NAME.fullmatch(name) or keyword.iskeyword(name):
        raise ScaffoldError(
            f"job name {name!r} must be a lowercase Python identifier, such as send_receipt"
        )
    if not queue or len(queue) > _MAX_QUEUE_LENGTH:
        raise ScaffoldError(
            f"queue {queue!r} must be a non-empty string of at most {_MAX_QUEUE_LENGTH} characters"
        )
    for option, folder, importable in (("jobs", jobs_dir, True), ("tests", tests_dir, False)):
        error = folder_error(folder, importable=importable)
        if error is not None:
            raise ScaffoldError(f"{option} folder {folder!r}: {error}")
    jobs = PurePosixPath(jobs_dir.replace("\\", "/"))
    module = ".".join([*jobs.parts, name])
    # A JSON string is a Python string literal too, double-quoted as ruff formats it.
    fields = {"name": name, "module": module, "queue": queue, "queue_literal": json.dumps(queue)}
    return GeneratedJob(
        name=name,
        module=module,
        job_path=Path(jobs, f"{name}.py"),
        test_path=Path(tests_dir, f"test_{name}.py"),
        job_source=_JOB_TEMPLATE.format(**fields),
        test_source=_TEST_TEMPLATE.format(**fields),
    )


def new_job(
    name: str,
    *,
    root: Path,
    queue: str = "default",
    jobs_dir: str = "jobs",
    tests_dir: str = "tests",
) -> list[Path]:
    """Write the job module and its test under ``root``; returns their paths.

    Folders are made as needed. If either file exists, nothing is written
    and :class:`ScaffoldError` names it: a generator that overwrote would
    lose someone's work for a command typed twice.
    """
    plan = plan_job(name, queue=queue, jobs_dir=jobs_dir, tests_dir=tests_dir)
    files = [(root / plan.job_path, plan.job_source), (root / plan.test_path, plan.test_source)]
    for path, _ in files:
        if path.exists():
            raise ScaffoldError(
                f"{_shown(path, root)} already exists; not overwriting it (nothing was written)"
            )
    written: list[Path] = []
    for path, source in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # "x": created here or refused, even should the file appear since the check.
            with path.open("x", encoding="utf-8") as file:
                file.write(source)
        except FileExistsError:
            raise ScaffoldError(
                f"{_shown(path, root)} already exists; not overwriting it"
                + (f" ({_shown(written[0], root)} was written)" if written else "")
            ) from None
        written.append(path)
    return written


def _shown(path: Path, root: Path) -> str:
    # Named as the user gave the folders: relative to the project.
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
