"""Run by .ci/wheel with the virtualenv's python, from a folder outside the
checkout: the README's example and the commands, against a throwaway cluster.

Arguments: the README, the virtualenv's bin folder, the wheel's file name.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import koyojobs
from koyojobs.testing import TemporaryPostgres

README, BIN, WHEEL = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
KOYOJOBS = str(BIN / "koyojobs")


def run(*command: str, env: dict[str, str]) -> str:
    print("+", " ".join(command), flush=True)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        sys.exit(f"{command} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code


def check_dashboard(env: dict[str, str]) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    print(f"+ koyojobs dashboard --port {port}", flush=True)
    server = subprocess.Popen([KOYOJOBS, "dashboard", "--port", str(port)], env=env)
    try:
        # Up when it answers: polled with a deadline, as a load balancer would.
        deadline = time.monotonic() + 30
        while True:
            try:
                if get(f"{base}/") == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the dashboard never answered 200 on {base}/")
            time.sleep(0.1)
        # Every template and static file is read by one of these pages.
        pages = {
            "/jobs": 200,
            "/jobs/1": 200,
            "/jobs/999999": 404,
            "/periodic": 200,
            "/workers": 200,
            "/charts?span=day": 200,
            "/static/dashboard.css": 200,
            "/static/dashboard.js": 200,
        }
        for page, expected in pages.items():
            status = get(base + page)
            if status != expected:
                sys.exit(f"dashboard {page}: {status}, expected {expected}")
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
    if code != 0:
        sys.exit(f"the dashboard exited with {code} on SIGTERM")


def main() -> None:
    where = Path(koyojobs.__file__).resolve()
    if str(where).startswith(str(README.parent.resolve())):
        sys.exit(f"koyojobs was imported from the checkout ({where}), not the wheel")
    version = run(KOYOJOBS, "--version", env=dict(os.environ)).strip()
    if version != f"koyojobs {koyojobs.__version__}" or f"-{koyojobs.__version__}-" not in WHEEL:
        sys.exit(f"version mismatch: {version!r}, __version__ {koyojobs.__version__}, {WHEEL}")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    example = Path("example.py")
    example.write_text(blocks[0])
    with TemporaryPostgres() as cluster:
        env = {**os.environ, "KOYOJOBS_DSN": cluster.dsn}
        run(KOYOJOBS, "migrate", env=env)
        out = run(str(BIN / "python"), str(example), env=env)
        if out.strip() != "done hello, Bogdan":
            sys.exit(f"the README's example printed {out!r}")
        out = run(KOYOJOBS, "status", env=env)
        if "default" not in out:
            sys.exit(f"koyojobs status does not show the default queue:\n{out}")
        check_dashboard(env)


if __name__ == "__main__":
    main()
