"""Helpers for testing code that uses koyojobs.

:class:`TemporaryPostgres` starts a throwaway PostgreSQL cluster in a
temporary directory (``initdb`` + ``pg_ctl``), for test suites and demos on a
machine that has PostgreSQL's binaries but no server to spare.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["TemporaryPostgres", "find_pg_bin"]

_UNPRIVILEGED_USER = "postgres"


def find_pg_bin() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``: on PATH, else Debian's newest.

    Example:
        >>> (find_pg_bin() / "pg_ctl").exists()  # doctest: +SKIP
        True
    """
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    raise FileNotFoundError(
        "PostgreSQL's initdb was not found on PATH nor in /usr/lib/postgresql/*/bin; "
        "install it (Debian: apt-get install postgresql)"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TemporaryPostgres:
    """A PostgreSQL cluster of its own, in a temporary directory, gone on stop.

    It trusts local connections, listens on 127.0.0.1 on a free port and
    runs with ``fsync=off``: fast, and only for throwaway data. As root
    (initdb refuses root) it runs the server as the ``postgres`` user.

    Example:
        >>> with TemporaryPostgres() as pg:  # doctest: +SKIP
        ...     print(pg.dsn)
        postgresql://postgres@127.0.0.1:41234/postgres
    """

    def __init__(self) -> None:
        self.bin = find_pg_bin()
        self.port = _free_port()
        self._dir: Path | None = None

    @property
    def dsn(self) -> str:
        """The URL of the cluster's ``postgres`` database."""
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        """The URL of another database on this cluster."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        assert self._dir is not None, "TemporaryPostgres is not started"
        return self._dir / "data"

    def _as_server_user(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        return ["runuser", "-u", _UNPRIVILEGED_USER, "--"]

    def _run(self, *args: str) -> None:
        command = [*self._as_server_user(), *args]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}"
            )

    def start(self) -> None:
        """initdb and start; returns once the server accepts connections."""
        self._dir = Path(tempfile.mkdtemp(prefix="koyojobs-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam(_UNPRIVILEGED_USER)
            os.chown(self._dir, user.pw_uid, user.pw_gid)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data_dir),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        self._pg_ctl("start")

    def _pg_ctl(self, action: str, *extra: str) -> None:
        assert self._dir is not None
        options = (
            f"-p {self.port} -k {self._dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            action,
            "-D",
            str(self.data_dir),
            "-o",
            options,
            "-l",
            str(self._dir / "server.log"),
            "-w",
            *extra,
        )

    def restart(self, mode: str = "fast") -> None:
        """Restart the server (``fast`` or ``immediate``), dropping every connection."""
        self._pg_ctl("restart", "-m", mode)

    def stop(self) -> None:
        """Stop the server and delete its files."""
        if self._dir is None:
            return
        try:
            self._run(
                str(self.bin / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "immediate", "-w"
            )
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
