"""Text that came from a job (names, queues, errors) made safe to print, log or show.

A job's name or error can hold characters a terminal or a log reader obeys
(an escape sequence, a newline that starts a forged log line) or that
disguise it (a right-to-left override turns ``invoice\\u202egpj.exe`` into
what reads ``invoiceexe.jpg``; a zero-width space makes two queues look
alike). Such characters are written as escaped code points (``\\u202e``),
visible and unambiguous.
"""

from __future__ import annotations

import unicodedata

__all__ = ["code_point", "escape_controls", "hidden_characters", "looks_mixed"]

# Control (Cc), format (Cf: bidirectional overrides, zero-width characters),
# surrogates, private use and unassigned code points, and line and
# paragraph separators: none is meant to be read as text in a name.
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _is_hidden(char: str) -> bool:
    return unicodedata.category(char) in _HIDDEN


def code_point(char: str) -> str:
    r"""``char`` written as its code point, as Python writes it in a string.

    Example:
        >>> print(code_point("\x00"), code_point("\u202e"))
        \x00 \u202e
    """
    point = ord(char)
    if point < 0x100:
        return f"\\x{point:02x}"
    if point < 0x10000:
        return f"\\u{point:04x}"
    return f"\\U{point:08x}"


def hidden_characters(text: str) -> list[str]:
    """The characters of ``text`` that :func:`escape_controls` would escape.

    Example:
        >>> hidden_characters("a\\x00b\\u202ec")
        ['\\x00', '\\u202e']
    """
    return [char for char in text if _is_hidden(char)]


def escape_controls(text: str, keep: str = "") -> str:
    """``text`` with every control, format or invisible character written as its code point.

    ``keep`` lists characters left as they are (a traceback keeps its ``\\n``).
    A backslash stays a backslash: the output is for reading, not parsing.

    Example:
        >>> escape_controls("job\\nINFO forged line")
        'job\\\\x0aINFO forged line'
        >>> escape_controls("invoice\\u202egpj.exe")
        'invoice\\\\u202egpj.exe'
        >>> escape_controls("a\\tb\\nc", keep="\\n")
        'a\\\\x09b\\nc'
    """
    if text.isprintable() and text.isascii():  # the common case, at C speed
        return text
    return "".join(
        code_point(char) if char not in keep and _is_hidden(char) else char for char in text
    )


def looks_mixed(text: str) -> bool:
    """Whether ``text`` mixes ASCII letters with other letters, as a look-alike name does.

    A Cyrillic e (U+0435) in "default" makes two queues that both read "default";
    a name written all in one script (``письма``) is not suspicious.

    Example:
        >>> looks_mixed("d\\u0435fault"), looks_mixed("default"), looks_mixed("письма")
        (True, False, False)
    """
    if text.isascii():
        return False
    ascii_letter = other_letter = False
    for char in text:
        if char.isalpha():
            if char.isascii():
                ascii_letter = True
            else:
                other_letter = True
    return ascii_letter and other_letter
