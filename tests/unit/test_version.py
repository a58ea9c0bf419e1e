"""One version, from the installed metadata: ``koyojobs.__version__`` and ``koyojobs --version``."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

from click.testing import CliRunner

import koyojobs
from koyojobs.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_version_is_the_installed_one() -> None:
    assert koyojobs.__version__ == version("koyojobs")
    # Metadata, not API: star imports do not bring it.
    assert "__version__" not in koyojobs.__all__


def _find_version_uninstalled(module_file: Path) -> str:
    # python -S: no site-packages, so no installed koyojobs (nor its
    # dependencies, hence the module loaded alone, by its path: it needs only
    # the standard library). As a clone used without installing it is. -B: no
    # bytecode written into the checkout.
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('v', {str(module_file)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(module.find_version())\n"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-B", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", "")},
        cwd=module_file.parent,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_not_installed_it_reads_the_clones_pyproject() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert _find_version_uninstalled(ROOT / "koyojobs" / "_version.py") == declared


def test_with_neither_it_is_unknown_rather_than_an_error(tmp_path: Path) -> None:
    (tmp_path / "koyojobs").mkdir()
    copy = tmp_path / "koyojobs" / "_version.py"
    copy.write_text((ROOT / "koyojobs" / "_version.py").read_text())
    assert _find_version_uninstalled(copy) == "0+unknown"


def test_the_command_prints_it() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"koyojobs {koyojobs.__version__}\n"
