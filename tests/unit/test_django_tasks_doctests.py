"""The examples in koyojobs.contrib.django.tasks' docstrings run (in a process of their
own: Django's settings must be configured to import it, and must not leak here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_docstring_examples_of_the_tasks_backend_pass() -> None:
    code = (
        "import doctest, django\n"
        "from django.conf import settings\n"
        "apps = ['koyojobs.contrib.django']\n"
        "if django.VERSION < (6,):\n"
        "    apps.append('django_tasks')\n"
        "settings.configure(INSTALLED_APPS=apps)\n"
        "django.setup()\n"
        "import koyojobs.contrib.django.tasks as module\n"
        "failed, tried = doctest.testmod(module)\n"
        "print(failed, tried)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    failed, tried = map(int, result.stdout.split())
    assert (failed, tried >= 5) == (0, True), result.stdout
