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
        queues={"default": 8, "long": 2},
        retention={"done": "1h", "failed": "none"},
        path=path,
    )


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
    ],
)
def test_each_malformed_key_is_named_in_one_line(tmp_path: Path, text: str, culprit: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_deployment(_write(tmp_path, text))
    message = str(raised.value)
    assert culprit in message and "pyproject.toml" in message
    assert "\n" not in message
