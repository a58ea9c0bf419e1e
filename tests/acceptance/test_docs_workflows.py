"""The Workflows page's examples (docs/examples/workflows.py) against a real PostgreSQL."""

from __future__ import annotations

import pytest

from docs.examples import workflows


async def test_the_workflows_page_runs(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    await workflows.main(dsn)
    assert capsys.readouterr().out.splitlines() == [
        "done ['https://img.example.com/42.png@256', 'https://img.example.com/42.png@64']",
        "loaded 600 rows of 2026-12-05",
        "pdf of: loaded 600 rows of 2026-12-06",
        "1000 shards, 2997 in all",
        "1.0 500 of 500 rows",
        "charge failed RuntimeError: card declined",
        "ship cancelled upstream step 'charge' failed",
        "email cancelled upstream step 'charge' failed",
        "cleanup done -",
        "failed",
    ]
