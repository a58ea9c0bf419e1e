"""The SQL koyojobs sends: named queries and numbered schema migrations.

Statements live in ``queries.sql`` as blocks headed ``-- name: NAME`` and in
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
    text = resources.files(__package__).joinpath("queries.sql").read_text("utf-8")
    parts = _NAME.split(text)
    # parts: [preamble, name1, body1, name2, body2, ...]
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise RuntimeError(f"queries.sql names {name!r} twice")
        lines = body.strip().splitlines()
        while lines and lines[0].startswith("--"):
            lines.pop(0)  # a block's leading comment is for readers of the file
        queries[name] = "\n".join(lines)
    for name, body in queries.items():
        queries[name] = _INCLUDE.sub(lambda m: queries[m[1]], body)
    return queries


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
