"""[tool.koyojobs] in pyproject.toml: what it declares, and each malformed key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from koyojobs.config import ConfigError, Deployment, load_deployment


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text(text)
    return path


def test_a_declared_deployment_is_read(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
[project]
name = "app"

[tool.koyojobs]
modules = ["app.jobs", "app.reports"]
dsn_env = "DATABASE_URL"
listen_dsn_env = "DIRECT_URL"
statement_cache_size = 0
pool_size = 30
processes = 2

[tool.koyojobs.queues]
default = 8
long = 2

[tool.koyojobs.retention]
done = "1h"
failed = "none"
""",
    )
    assert load_deployment(path) == Deployment(
        modules=("app.jobs", "app.reports"),
        dsn_env="DATABASE_URL",
        listen_dsn_env="DIRECT_URL",
        statement_cache_size=0,
        pool_size=30,
        processes=2,
        queues={"default": 8, "long": 2},
        retention={"done": "1h", "failed": "none"},
        path=path,
    )


def test_the_generator_folders_default_and_are_read(tmp_path: Path) -> None:
    assert (Deployment().jobs_dir, Deployment().tests_dir) == ("jobs", "tests")
    path = _write(tmp_path, "[tool.koyojobs]\njobs_dir = 'app/jobs'\ntests_dir = 'tests/my-jobs'\n")
    deployment = load_deployment(path)
    # A tests folder need not be importable; a jobs folder must be.
    assert (deployment.jobs_dir, deployment.tests_dir) == ("app/jobs", "tests/my-jobs")


def test_no_file_or_no_section_declares_nothing(tmp_path: Path) -> None:
    assert load_deployment(tmp_path / "pyproject.toml") == Deployment()
    assert load_deployment(_write(tmp_path, "[project]\nname = 'x'\n")) == Deployment()


@pytest.mark.parametrize(
    ("text", "culprit"),
    [
        ("[tool.koyojobs]\nmodules = 'app.jobs'\n", "modules"),
        ("[tool.koyojobs]\nmodules = ['app.jobs', 3]\n", "modules"),
        ("[tool.koyojobs]\ndsn_env = ''\n", "dsn_env"),
        ("[tool.koyojobs]\nlisten_dsn_env = 5\n", "listen_dsn_env"),
        ("[tool.koyojobs]\nstatement_cache_size = -1\n", "statement_cache_size"),
        ("[tool.koyojobs]\npool_size = 0\n", "pool_size"),
        ("[tool.koyojobs]\nprocesses = 0\n", "processes"),
        ("[tool.koyojobs]\nqueues = ['default']\n", "queues"),
        ("[tool.koyojobs.queues]\ndefault = 'eight'\n", "queues.default"),
        ("[tool.koyojobs.queues]\nlong = 0\n", "queues.long"),
        ("[tool.koyojobs.queues]\nlong = true\n", "queues.long"),
        ("[tool.koyojobs]\nconcurency = 4\n", "'concurency'"),
        ("[tool.koyojobs]\nmodules = [\n", "not valid TOML"),
        ("[tool]\nkoyojobs = 3\n", "must be a table"),
        ("[tool.koyojobs.retention]\nstarted = '1d'\n", "retention.started"),
        ("[tool.koyojobs.retention]\ndone = 3\n", "retention.done"),
        ("[tool.koyojobs]\nretention = 'forever'\n", "retention"),
        ("[tool.koyojobs]\njobs_dir = ''\n", "jobs_dir"),
        ("[tool.koyojobs]\njobs_dir = 3\n", "jobs_dir"),
        ("[tool.koyojobs]\njobs_dir = '/srv/app/jobs'\n", "jobs_dir"),
        ("[tool.koyojobs]\njobs_dir = '../jobs'\n", "jobs_dir"),
        ("[tool.koyojobs]\njobs_dir = 'my-app/jobs'\n", "'my-app' is not a Python identifier"),
        ("[tool.koyojobs]\njobs_dir = 'app/class'\n", "'class'"),
        ("[tool.koyojobs]\ntests_dir = '../tests'\n", "tests_dir"),
        ("[tool.koyojobs]\ntests_dir = []\n", "tests_dir"),
    ],
)
def test_each_malformed_key_is_named_in_one_line(tmp_path: Path, text: str, culprit: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_deployment(_write(tmp_path, text))
    message = str(raised.value)
    assert culprit in message and "pyproject.toml" in message
    assert "\n" not in message
