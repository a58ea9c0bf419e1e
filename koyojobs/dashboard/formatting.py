"""How the dashboard writes times, ages, payloads and labels: the templates' filters."""

from __future__ import annotations

import reprlib
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup, escape

from .._text import code_point, escape_controls, looks_mixed
from ..registry import lookup

__all__ = [
    "age",
    "label_of",
    "payload_repr",
    "size",
    "visible",
    "visible_svg",
    "visible_text",
    "when",
]

_REPR = reprlib.Repr()
_REPR.maxstring = 2000
_REPR.maxother = 2000
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 50
_REPR.maxlevel = 4


def label_of(name: str | None) -> str | None:
    """The ``label=`` of the job defined under ``name`` in this process, if any.

    Example:
        >>> label_of("no.such.job") is None
        True
    """
    definition = None if name is None else lookup(name)
    return None if definition is None else definition.label


def when(moment: datetime | None) -> str:
    """A time in UTC, to the second; ``-`` for none.

    Example:
        >>> when(datetime(2026, 5, 1, 12, 0, 7, 123, tzinfo=UTC))
        '2026-05-01 12:00:07 UTC'
    """
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def age(seconds: float | None) -> str:
    """A duration as an operator reads it at a glance; ``-`` for none.

    Example:
        >>> age(3725), age(42.5), age(None)
        ('1h 2min', '42s', '-')
    """
    if seconds is None:
        return "-"
    whole = int(max(seconds, 0))
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60)):
        if whole >= size:
            rest = (whole % size) // sub_size
            return f"{whole // size}{unit} {rest}{sub}" if rest else f"{whole // size}{unit}"
    if whole >= 60:
        return f"{whole // 60}min {whole % 60}s" if whole % 60 else f"{whole // 60}min"
    return f"{whole}s"


def payload_repr(value: Any) -> str:
    """A bounded ``repr`` of a loaded payload: a page never holds megabytes of it.

    Example:
        >>> payload_repr(((1, "a"), {"to": "x@example.com"}))
        "((1, 'a'), {'to': 'x@example.com'})"
    """
    return _REPR.repr(value)


def _marked(text: str, keep: str, hidden: Markup) -> Markup:
    if escape_controls(text, keep) == text:
        return escape(text)
    # Each hidden character becomes its code point, marked so it stands out.
    parts = []
    for char in text:
        shown = escape_controls(char, keep)
        parts.append(escape(char) if shown == char else hidden.format(shown))
    return Markup("").join(parts)


_HIDDEN_CHAR = Markup('<span class="hidden-char" title="invisible character">{}</span>')
_LOOKALIKE = Markup(' <span class="lookalike" title="mixes scripts">({})</span>')
# In SVG text: a tspan (an HTML span there would hide its content).
_HIDDEN_TSPAN = Markup('<tspan class="hidden-char">{}</tspan>')
_LOOKALIKE_TSPAN = Markup(' <tspan class="lookalike">({})</tspan>')


def _spelled(text: str) -> str:
    return "".join(c if c.isascii() and c.isprintable() else code_point(c) for c in text)


def visible(name: object) -> Markup:
    r"""A name (job, queue, label) as HTML with nothing hidden in it.

    Control, bidirectional and invisible characters show as their code
    points; a name mixing ASCII with other letters (a Cyrillic e, U+0435,
    in "default") is followed by its spelling in code points.

    Example:
        >>> print(visible("invoice\u202egpj.exe"))
        invoice<span class="hidden-char" title="invisible character">\u202e</span>gpj.exe
        >>> print(visible("d\u0435fault").split(" ", 1)[1])
        <span class="lookalike" title="mixes scripts">(d\u0435fault)</span>
    """
    return _shown(name, _HIDDEN_CHAR, _LOOKALIKE)


def visible_svg(name: object) -> Markup:
    r"""A name as the content of an SVG ``<text>``: :func:`visible`, in ``tspan`` elements.

    Example:
        >>> print(visible_svg("a<b‮c"))
        a&lt;b<tspan class="hidden-char">‮</tspan>c
    """
    return _shown(name, _HIDDEN_TSPAN, _LOOKALIKE_TSPAN)


def _shown(name: object, hidden: Markup, lookalike: Markup) -> Markup:
    if name is None:
        return Markup("")
    text = str(name)
    shown = _marked(text, "", hidden)
    if looks_mixed(text):
        shown += lookalike.format(_spelled(text))
    return shown


def visible_text(text: object) -> Markup:
    r"""An error or traceback as HTML: like :func:`visible`, keeping line breaks and tabs.

    Example:
        >>> print(visible_text("a<b\x1b[2J"))
        a&lt;b<span class="hidden-char" title="invisible character">\x1b</span>[2J
    """
    return Markup("") if text is None else _marked(str(text), "\n\t", _HIDDEN_CHAR)


def size(count: int | None) -> str:
    """A payload's size in bytes, as read at a glance.

    Example:
        >>> size(512), size(300_000_000), size(None)
        ('512 bytes', '286.1 MB', '-')
    """
    if count is None:
        return "-"
    if count < 1024:
        return f"{count} bytes"
    value = float(count)
    for unit in ("KB", "MB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} GB"
