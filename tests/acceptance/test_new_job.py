"""``koyojobs new job``: into a fresh project, where the generated test passes
as generated, and never over a file that exists."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from koyojobs.scaffold import ScaffoldError, plan_job


def koyojobs(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "koyojobs", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )


def pytest_in(project: Path) -> subprocess.CompletedProcess[str]:
    # As the generated test's docstring says to run it: python -m pytest, from the
    # project. Without pytest-asyncio: the generated test needs no plugin (and the
    # plugin warns about its own settings, which -W error would make a failure).
    options = ["-p", "no:cacheprovider", "-p", "no:asyncio", "-W", "error", "-q"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", *options],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_generated_job_and_test_pass_in_a_fresh_project(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "shop"\n\n[tool.koyojobs]\njobs_dir = "shop/jobs"\n'
        'tests_dir = "tests/jobs"\n'
    )
    made = koyojobs(tmp_path, "new", "job", "send_receipt", "--queue", "emails")
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines() == [
        "created shop/jobs/send_receipt.py",
        "created tests/jobs/test_send_receipt.py",
    ]
    assert '@define_job(queue="emails")' in (tmp_path / "shop/jobs/send_receipt.py").read_text()
    ran = pytest_in(tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "2 passed" in ran.stdout, ran.stdout


def test_a_second_run_refuses_to_overwrite(tmp_path: Path) -> None:
    assert koyojobs(tmp_path, "new", "job", "send_receipt").returncode == 0
    job = tmp_path / "jobs/send_receipt.py"
    job.write_text("# edited by hand\n")
    again = koyojobs(tmp_path, "new", "job", "send_receipt")
    assert again.returncode == 2
    assert again.stderr.strip() == (
        "Error: jobs/send_receipt.py already exists; not overwriting it (nothing was written)"
    )
    assert job.read_text() == "# edited by hand\n"
    # Only the test missing is refused too: nothing is half-written.
    (tmp_path / "tests/test_send_receipt.py").unlink()
    assert koyojobs(tmp_path, "new", "job", "send_receipt").returncode == 2
    assert not (tmp_path / "tests/test_send_receipt.py").exists()


def test_path_overrides_the_jobs_folder(tmp_path: Path) -> None:
    made = koyojobs(tmp_path, "new", "job", "nightly_report", "--path", "app/reports")
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "app/reports/nightly_report.py").is_file()
    assert (
        "from app.reports.nightly_report import nightly_report"
        in (tmp_path / "tests/test_nightly_report.py").read_text()
    )
    ran = pytest_in(tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("SendReceipt",), "job name 'SendReceipt' must be a lowercase Python identifier"),
        (("import",), "job name 'import' must be a lowercase Python identifier"),
        (("ok", "--path", "my-app/jobs"), "'my-app' is not a Python identifier"),
        (("ok", "--path", "/srv/jobs"), "must be a relative folder inside the project"),
        (("ok", "--queue", ""), "queue '' must be a non-empty string"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = koyojobs(tmp_path, "new", "job", *args)
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_malformed_config_is_named(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.koyojobs]\njobs_dir = "../elsewhere"\n')
    result = koyojobs(tmp_path, "new", "job", "send_receipt")
    assert result.returncode == 2
    assert "jobs_dir: must be a relative folder inside the project" in result.stderr


def test_the_plan_names_the_module_by_its_folder() -> None:
    plan = plan_job("send_receipt", jobs_dir="shop/jobs")
    assert plan.module == "shop.jobs.send_receipt"
    with pytest.raises(ScaffoldError, match=r"tests folder '\.\./t'"):
        plan_job("send_receipt", tests_dir="../t")
