"""The SQL koyojobs sends: named queries and numbered schema migrations.

Statements live in ``queries/*.sql`` (one file per concern: ``enqueue``,
``claim``, ``leases``...) as blocks headed ``-- name: NAME``, and in
``schema/NNNN_name.sql``; they are read once, at import, so the rest of the
package asks for a statement by name and never builds SQL. A line
``-- include: NAME`` in a block stands for the text of the block NAME (a part
two statements share, written once).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

__all__ = ["MIGRATIONS", "QUERIES", "Migration", "pyformat"]

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_INCLUDE = re.compile(r"^-- include: (\w+)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_(\w+)\.sql$")
# What pyformat() must step over or rewrite: quoted literals and names, comments,
# dollar-quoted bodies, $n parameters and percent signs.
_PYFORMAT_TOKEN = re.compile(
    r"(?P<quoted>'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\")"
    r"|(?P<comment>--[^\n]*)"
    r"|(?P<dollar>\$(?P<tag>[A-Za-z_]\w*)?\$(?:.|\n)*?\$(?P=tag)?\$)"
    r"|\$(?P<number>\d+)"
    r"|(?P<percent>%)"
)


@dataclass(frozen=True)
class Migration:
    """One schema step: applied once, in version order."""

    version: int
    name: str
    sql: str


def _load_queries() -> dict[str, str]:
    folder = resources.files(__package__).joinpath("queries")
    files = sorted((e for e in folder.iterdir() if e.name.endswith(".sql")), key=lambda e: e.name)
    queries: dict[str, str] = {}
    where: dict[str, str] = {}
    for entry in files:
        # parts: [preamble, name1, body1, name2, body2, ...]
        parts = _NAME.split(entry.read_text("utf-8"))
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            _add_block(queries, where, name, body, entry.name)
    return {name: _included(queries, name) for name in queries}


def _included(queries: dict[str, str], name: str) -> str:
    # Included blocks may include others in turn.
    return _INCLUDE.sub(lambda m: _included(queries, m[1]), queries[name])


def _add_block(
    queries: dict[str, str], where: dict[str, str], name: str, body: str, file: str
) -> None:
    if name in queries:
        raise RuntimeError(f"queries/{file} names {name!r}, as queries/{where[name]} does")
    where[name] = file
    lines = body.strip().splitlines()
    while lines and lines[0].startswith("--"):
        lines.pop(0)  # a block's leading comment is for readers of the file
    queries[name] = "\n".join(lines)


def _load_migrations() -> tuple[Migration, ...]:
    folder = resources.files(__package__).joinpath("schema")
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    return tuple(found)


def pyformat(sql: str) -> tuple[str, tuple[int, ...]]:
    """``sql`` with asyncpg's ``$n`` parameters as the ``%s`` of psycopg and Django.

    Returns the statement and, for each ``%s`` in order, the index (from 0)
    of the argument it takes, so one named query serves both drivers. A
    ``$n`` in quoted text, comments and dollar-quoted bodies is no parameter
    and stays; every literal ``%`` is doubled, there too (psycopg reads ``%``
    anywhere in the statement).

    Example:
        >>> pyformat("SELECT $2::int, $1, $2, '$1 100%' -- $3")
        ("SELECT %s::int, %s, %s, '$1 100%%' -- $3", (1, 0, 1))
    """
    order: list[int] = []

    def replace(match: re.Match[str]) -> str:
        if match["number"] is not None:
            order.append(int(match["number"]) - 1)
            return "%s"
        return match[0].replace("%", "%%")

    return _PYFORMAT_TOKEN.sub(replace, sql), tuple(order)


QUERIES: dict[str, str] = _load_queries()
MIGRATIONS: tuple[Migration, ...] = _load_migrations()
