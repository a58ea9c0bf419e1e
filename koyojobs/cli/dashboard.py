"""``koyojobs dashboard``: the web dashboard served on its own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any

import click

from .base import (
    Connection,
    Failure,
    UsageError,
    connects,
    import_job_module,
    main,
    reason,
)

_AUTH_ENV = "KOYOJOBS_DASHBOARD_AUTH"


@main.command()
@click.argument("modules", nargs=-1)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--allow-actions",
    is_flag=True,
    help="Let every visitor retry, cancel, pause, resume and run now (default: read-only). "
    "Give it a login with --auth.",
)
@click.option(
    "--auth",
    envvar=_AUTH_ENV,
    metavar="USER:PASSWORD",
    help=f"Ask every visitor for this login (HTTP basic auth; serve it over TLS, or on "
    f"127.0.0.1 only). Default: ${_AUTH_ENV}.",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="Another host name the dashboard answers to (repeatable; '*.example.com' for "
    "subdomains). Always: 127.0.0.1, localhost, ::1 and --host.",
)
@click.option(
    "--show-payloads",
    is_flag=True,
    help="Show arguments and results even when payloads are not signed (loading them "
    "runs dill: only for a table whose contents you trust).",
)
@connects
def dashboard(
    modules: tuple[str, ...],
    host: str,
    port: int,
    allow_actions: bool,
    auth: str | None,
    allowed_hosts: tuple[str, ...],
    show_payloads: bool,
    connection: Connection,
) -> None:
    """Serve the web dashboard (read-only unless --allow-actions).

    MODULES (default: the modules of [tool.koyojobs]) are imported so that the
    periodic page knows their schedules and can run them now. It answers
    only to the host names 127.0.0.1, localhost, ::1, --host and
    --allowed-host (a page asked for by any other name is refused: DNS
    rebinding). It never changes the schema: a role with SELECT rights
    reads it (actions need more).
    """
    login = None
    if auth is not None:
        user, colon, password = auth.partition(":")
        if not colon or not user or not password:
            raise UsageError("--auth must be USER:PASSWORD, both non-empty")
        login = (user, password)
    try:
        import uvicorn

        from ..dashboard import Dashboard
    except ImportError as exc:
        raise Failure(
            f"the dashboard needs its extra: pip install 'koyojobs[dashboard]' ({exc})"
        ) from None
    sys.path.insert(0, os.getcwd())
    for module in modules or connection.deployment.modules:
        import_job_module(module)
    # Bound here, not by uvicorn: a taken port is then one line and exit status 1.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise Failure(f"cannot listen on {host}:{port}: {reason(exc)}") from None

    hosts = [*_LOCAL, host, *allowed_hosts]
    if host in ("0.0.0.0", "::") and not allowed_hosts:
        click.echo(
            f"note: listening on {host}, the dashboard answers only to {', '.join(_LOCAL)}: "
            "name the others with --allowed-host",
            err=True,
        )
    if allow_actions and login is None:
        click.echo(
            "warning: --allow-actions without --auth: whoever reaches this port can retry, "
            "cancel, delete and pause jobs. Give a login with --auth USER:PASSWORD "
            f"(or ${_AUTH_ENV}).",
            err=True,
        )

    async def serve() -> None:
        async with connection.broker(read_only=True) as broker:
            app = Dashboard(
                broker,
                can_act=(lambda request: True) if allow_actions else None,
                show_payloads=show_payloads,
                allowed_hosts=hosts,
                basic_auth=login,
            )
            config = uvicorn.Config(app, log_level="warning")
            server = _quiet_server_class()(config)
            mode = "actions allowed" if allow_actions else "read-only"
            if login is not None:
                mode += f", login {login[0]!r}"
            click.echo(f"koyojobs dashboard on http://{host}:{port}/ ({mode})")
            await server.serve(sockets=[sock])

    try:
        asyncio.run(serve())
    finally:
        sock.close()


def _quiet_server_class() -> type[Any]:
    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn's server, stopping gracefully on SIGINT/SIGTERM and exiting 0 like a worker.

        (uvicorn re-raises the signal once it has stopped, which would make the
        process die of it, after the broker's clean stop.)
        """

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in _STOP_SIGNALS}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return QuietServer


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_LOCAL = ("127.0.0.1", "localhost", "::1")
