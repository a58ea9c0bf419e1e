"""A real PgBouncer in transaction mode, started for the tests on a free port.

Debian's ``pgbouncer`` package (``.ci/install`` installs it). PgBouncer
refuses to run as root, so as root it runs as the ``postgres`` user, like
the throwaway cluster. Its startup-parameter policy is left at the default
(no ``ignore_startup_parameters``): a client that needs one it rejects must
fail here as it would in production.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

from koyojobs.testing import _free_port

_SERVER_USER = "postgres"


def find_pgbouncer() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None
    )
    if found is None:
        raise FileNotFoundError(
            "pgbouncer was not found; install it (Debian: apt-get install pgbouncer, "
            "as .ci/install does)"
        )
    return found


class PgBouncer:
    """``pgbouncer`` in front of the server at ``server_dsn``, ``pool_mode = transaction``."""

    def __init__(self, server_dsn: str, *, pool_size: int = 20) -> None:
        parts = urlsplit(server_dsn)
        self.server_host = parts.hostname or "127.0.0.1"
        self.server_port = parts.port or 5432
        self.user = parts.username or "postgres"
        self.pool_size = pool_size
        self.port = _free_port()
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def dsn_for(self, database: str) -> str:
        """The URL of ``database`` through the pooler."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="koyojobs-pgbouncer-"))
        (self._dir / "users.txt").write_text(f'"{self.user}" ""\n')
        (self._dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={self.server_host} port={self.server_port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self._dir / 'users.txt'}\n"
            "pool_mode = transaction\n"
            "max_client_conn = 1000\n"
            f"default_pool_size = {self.pool_size}\n"
            "server_reset_query =\n"
            f"logfile = {self._dir / 'pgbouncer.log'}\n"
        )
        command = [find_pgbouncer(), str(self._dir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            user = pwd.getpwnam(_SERVER_USER)
            for path in (self._dir, *self._dir.iterdir()):
                os.chown(path, user.pw_uid, user.pw_gid)
            command = ["runuser", "-u", _SERVER_USER, "--", *command]
        # A session of its own, so that stop() signals runuser and pgbouncer
        # together: runuser killed alone would leave pgbouncer running.
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        self._wait_listening()

    def _wait_listening(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + 10
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited ({self._process.returncode}): {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not listen in 10 s: {self.log()}") from None
                # Polling a port that is about to open: no event to wait on.
                time.sleep(0.02)

    @staticmethod
    def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)

    def log(self) -> str:
        """What PgBouncer logged (the last lines)."""
        if self._dir is None or not (self._dir / "pgbouncer.log").exists():
            return ""
        return "".join((self._dir / "pgbouncer.log").read_text().splitlines(True)[-30:])

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            self._signal_group(process, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                self._signal_group(process, signal.SIGKILL)
                process.wait()
            # runuser may end before the pgbouncer it started: no survivor.
            self._signal_group(process, signal.SIGKILL)
        if self._dir is not None:
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
