"""Every docstring example of the package runs (``+SKIP`` marks those that need a
database or a running app): a doctest per module, as ``python -m doctest`` would."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import koyojobs
from koyojobs import registry

# Runs the command line when imported.
_NOT_IMPORTED = ("koyojobs.__main__",)
# Loaded by Django itself, once a project's settings are configured (the
# Django tests run them in a real project): importing them here would fail.
_DJANGO_LOADED = (
    "koyojobs.contrib.django.admin",
    "koyojobs.contrib.django.apps",
    "koyojobs.contrib.django.models",
    "koyojobs.contrib.django.migrations",
    "koyojobs.contrib.django.management",
    # The Tasks backend needs a configured project: its examples run in
    # tests/unit/test_django_tasks_doctests.py.
    "koyojobs.contrib.django.tasks",
    "koyojobs.contrib.django._tasks_api",
)

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(koyojobs.__path__, "koyojobs.")
    if not info.name.startswith(_DJANGO_LOADED) and info.name not in _NOT_IMPORTED
)


def test_the_modules_are_found() -> None:
    assert {"koyojobs.broker", "koyojobs.synchronous", "koyojobs.cli.worker"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_the_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    # The examples define jobs (a limited one on "default", say): forget them
    # after, or the workers of later tests would claim as if they ran them.
    known = {d.name for d in registry.definitions()}
    try:
        _run_examples(module, name)
    finally:
        for definition in registry.definitions():
            if definition.name not in known:
                registry.forget(definition.name)


def _run_examples(module: object, name: str) -> None:
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name, globs=vars(module).copy()):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
