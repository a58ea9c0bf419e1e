"""The README's example, the first code a newcomer copies, runs as written:
saved to a file outside the repository and run with ``KOYOJOBS_DSN`` set."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_example() -> str:
    """The README's one python block, as a user would copy it."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert len(blocks) == 1, f"expected the README to hold one python example, got {len(blocks)}"
    return str(blocks[0])


async def test_the_readme_example_runs_saved_as_a_file(dsn: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(script)],
        cwd=tmp_path,  # not the repository: nothing of it on the path but koyojobs
        env={**os.environ, "KOYOJOBS_DSN": dsn},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done hello, Bogdan", result.stdout + result.stderr
