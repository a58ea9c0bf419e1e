"""Sessions: tests, lint, typecheck, docs. CI (.ci/run) runs the same commands."""

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, against a throwaway PostgreSQL (or $KOYOJOBS_TEST_DSN)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint rules and formatting."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package, the tests and the docs' examples."""
    # mypy reads psycopg, django-stubs, starlette, and what the tests and examples import.
    session.install("-e", ".[test,lint,django,dashboard]")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """The user's guide, built strictly."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", env={"NO_MKDOCS_2_WARNING": "1"})
