"""koyojobs.testing.TemporaryPostgres and find_pg_bin: which server binaries run."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import asyncpg
import pytest

from koyojobs.testing import PG_BIN_VARIABLE, TemporaryPostgres, find_pg_bin


def _version_of(folder: Path) -> str:
    out = subprocess.run(
        [str(folder / "pg_ctl"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"\d+(\.\d+)?", out)
    assert found is not None, out
    return found.group()


def test_a_named_bin_folder_wins_and_must_hold_the_programs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = find_pg_bin()
    monkeypatch.setenv(PG_BIN_VARIABLE, str(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        find_pg_bin()
    assert str(error.value) == (
        f"{PG_BIN_VARIABLE}={str(tmp_path)!r} is not a PostgreSQL bin folder: "
        "no initdb nor pg_ctl in it"
    )
    # An explicit argument beats the variable.
    assert find_pg_bin(real) == real
    shutil.copy(real / "initdb", tmp_path / "initdb")
    with pytest.raises(FileNotFoundError, match="no pg_ctl in it"):
        TemporaryPostgres()
    monkeypatch.setenv(PG_BIN_VARIABLE, str(real))
    assert find_pg_bin() == real


async def test_the_cluster_runs_the_binaries_named_in_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = find_pg_bin()
    monkeypatch.setenv(PG_BIN_VARIABLE, str(folder))
    with TemporaryPostgres() as pg:
        assert pg.bin == folder
        conn = await asyncpg.connect(pg.dsn)
        try:
            version = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
    assert version.split()[0] == _version_of(folder)


def test_a_cluster_that_fails_to_start_leaves_no_directory(tmp_path: Path) -> None:
    for program in ("initdb", "pg_ctl"):
        script = tmp_path / program
        script.write_text("#!/bin/sh\necho 'no such cluster' >&2\nexit 3\n")
        script.chmod(0o755)
    before = set(Path(tempfile.gettempdir()).glob("koyojobs-pg-*"))
    with pytest.raises(RuntimeError, match="initdb -D failed"), TemporaryPostgres(tmp_path):
        pass
    assert set(Path(tempfile.gettempdir()).glob("koyojobs-pg-*")) == before
