"""The one sanitiser for text from outside, and the row layout that keeps it from passing for ours.

Everything a peer, a server or a payload wrote reaches a terminal through
:func:`sanitize` (a message's text: its line breaks stay, a layout indents them)
or :func:`one_line` (a name, an error code or message, a reason). Both make the
dangerous characters *visible* as a mark such as ``⟨U+202E⟩`` instead of
dropping them, so nothing is hidden from the reader either:

- every control character (C0 but the line break, DEL, C1): no cursor moves,
  erasing, escape sequences, window titles;
- every format character (Unicode ``Cf``: bidi overrides, embeddings and
  isolates, zero-width spaces, the byte order mark, soft hyphens, tags), line
  and paragraph separators, lone surrogates, and the few letters that draw as
  nothing (:data:`INVISIBLE`); the zero-width (non-)joiner is kept only between
  two visible characters, where emoji sequences and Persian or Indic words need it.

A tab becomes four spaces; ``\\r\\n`` is a line break.

:func:`rows` lays a line out for a terminal: sanitised, cut into rows no wider
than the terminal (so the terminal never wraps a row itself, at a column a peer
could aim for), and every row after the first indented, so that a peer's text
can never start a row the way the program's own rows start. The full-screen
pane wraps its styled text with the same :func:`wrap_cells`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable
from typing import Final, TextIO

TAB: Final = "    "
# Letters that draw as nothing (Hangul fillers, the combining grapheme joiner,
# Khmer inherent vowels, Mongolian variation selectors): a way to hide text.
INVISIBLE: Final = frozenset("\u115f\u1160\u3164\uffa0\u034f\u17b4\u17b5\u180b\u180c\u180d\u180f")
JOINERS: Final = frozenset("\u200c\u200d")
_MARKED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_INVISIBLE_PATTERN: Final = re.compile("[" + "".join(sorted(INVISIBLE)) + "]")
# The offline subcommands (history, decrypt) indent a message's text by this much.
TEXT_INDENT: Final = 4
# When the wanted indent would take half the row: this much, so a continuation still starts with a space.
FALLBACK_INDENT: Final = 6
# Rows that continue one of our own lines (under the text after "* " or "! ").
OWN_INDENT: Final = 2

# A styled cell of a row: (style, character, cells wide).
Cell = tuple[str, str, int]


def mark(ch: str) -> str:
    """How a dangerous character is shown."""
    return f"⟨U+{ord(ch):04X}⟩"


def _visible(ch: str) -> bool:
    return not (ch.isspace() or unicodedata.category(ch) in _MARKED_CATEGORIES or ch in INVISIBLE)


def _hidden(line: str, i: int) -> bool:
    ch = line[i]
    if ch in INVISIBLE:
        return True
    if unicodedata.category(ch) not in _MARKED_CATEGORIES:
        return False
    if ch in JOINERS:
        return not (0 < i < len(line) - 1 and _visible(line[i - 1]) and _visible(line[i + 1]))
    return True


def _line(line: str) -> str:
    # Most text is printable and free of invisible letters: one C-speed check each.
    if line.isprintable() and _INVISIBLE_PATTERN.search(line) is None:
        return line
    return "".join(mark(ch) if _hidden(line, i) else ch for i, ch in enumerate(line))


def sanitize(text: str) -> str:
    """``text`` from outside, safe for a terminal; line breaks stay (lay it out with :func:`rows`)."""
    return "\n".join(_line(line) for line in text.replace("\r\n", "\n").replace("\t", TAB).split("\n"))


def one_line(text: str) -> str:
    """``text`` from outside as one safe line: a line break is shown as its mark too."""
    return mark("\n").join(_line(line) for line in text.replace("\r\n", "\n").replace("\t", TAB).split("\n"))


# --- widths and rows ----------------------------------------------------------------------


def char_width(ch: str) -> int:
    """Cells a character takes, erring wide: a terminal that draws narrower never wraps a row itself."""
    if unicodedata.combining(ch) or ch in JOINERS or unicodedata.category(ch) == "Mn":
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def cell_width(text: str) -> int:
    """Cells a (sanitised) row takes; an emoji presentation selector widens its character to two."""
    total = 0
    previous = 0
    for ch in text:
        if ch == "\ufe0f" and previous == 1:
            total += 1
            previous = 2
            continue
        previous = char_width(ch)
        total += previous
    return total


def continuation_indent(indent: int, width: int) -> int:
    """The indent of rows after the first: ``indent``, or less when it would take half the row.

    Never zero when an indent was asked for (unless the row is under three cells, where
    an indent and a double-width character would not fit), so a continuation row never
    starts at the first column, whatever the sender's name.
    """
    if indent == 0 or indent < width // 2:
        return indent
    return 0 if width < 3 else max(1, min(FALLBACK_INDENT, width // 4))


def wrap_cells(cells: Iterable[Cell], width: int, indent: int) -> list[list[Cell]]:
    """Cut cells into rows of at most ``width``; a ``\\n`` cell starts a row; rows after the first indented.

    Rows break after a space when there is one in the row's second half (words and
    fingerprint groups stay whole), else at the edge.
    """
    width = max(width, 1)
    indent = continuation_indent(indent, width)
    pad: list[Cell] = [("", " ", 1)] * indent
    rows: list[list[Cell]] = [[]]
    col = 0
    for cell in cells:
        ch, w = cell[1], cell[2]
        if ch == "\n":
            rows.append(list(pad))
            col = indent
            continue
        if col + w > width and col > indent:
            if ch == " ":  # the edge falls on a space: break there and drop it
                rows.append(list(pad))
                col = indent
                continue
            row = rows[-1]
            cut = _break_at(row, indent, width)
            moved = row[cut:] if cut else []
            del row[len(row) - len(moved) :]
            rows.append(pad + moved)
            col = indent + sum(c[2] for c in moved)
        rows[-1].append(cell)
        col += w
    return rows


def _break_at(row: list[Cell], indent: int, width: int) -> int:
    """Index just after the last space in the row's second half, or 0 for none."""
    for i in range(len(row) - 1, max(indent, width // 2) - 1, -1):
        if row[i][1] == " ":
            return i + 1 if i + 1 < len(row) else 0
    return 0


def rows(text: str, indent: int = 0, width: int | None = None) -> list[str]:
    """``text`` (our prefix, then perhaps a peer's text) as terminal rows: sanitised, every row after
    the first indented by ``indent``, none wider than ``width`` (None: no limit)."""
    clean = sanitize(text)
    if width is None:
        pad = " " * indent
        first, *rest = clean.split("\n")
        return [first, *(pad + line for line in rest)]
    cells = [("", ch, 0 if ch == "\n" else char_width(ch)) for ch in clean]
    return ["".join(cell[1] for cell in row) for row in wrap_cells(cells, width, indent)]


def terminal_columns() -> int | None:
    """How wide the terminal our output ends in is, as well as we can tell; None for no terminal.

    Standard output's terminal; else ``$COLUMNS``; else the terminal of standard
    error or input, or the controlling terminal (a pipe such as ``| tee`` usually
    ends there). With no terminal anywhere (a file, another program) rows are not
    cut: nothing will wrap them.
    """
    if sys.stdout.isatty():
        return _columns(sys.stdout.fileno())
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    for fd in (2, 0):
        if os.isatty(fd) and (columns := _columns(fd)) is not None:
            return columns
    try:
        with open("/dev/tty", "rb") as tty:
            return _columns(tty.fileno())
    except OSError:
        return None


def _columns(fd: int) -> int | None:
    """A terminal's width; None when it does not say (a new pseudo-terminal reports 0)."""
    try:
        columns = os.get_terminal_size(fd).columns
    except (OSError, ValueError):
        return None
    return columns if columns > 0 else None


def echo_rows(echo: Callable[[str], object], text: str, indent: int = TEXT_INDENT) -> None:
    """``text`` through ``echo`` in :func:`rows` as wide as :func:`terminal_columns` (the subcommands)."""
    for row in rows(text, indent, terminal_columns()):
        echo(row)


def log_handler(stream: TextIO) -> logging.Handler:
    """The client's log on ``stream``, every record through :class:`SafeFormatter`."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeFormatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    return handler


class SafeFormatter(logging.Formatter):
    """Log records on stderr through the one sanitiser: a record's message is one line, and the
    rows of a traceback after it are indented, so text quoted from outside cannot fake a record."""

    def format(self, record: logging.LogRecord) -> str:
        flat = logging.makeLogRecord({**record.__dict__, "msg": one_line(record.getMessage()), "args": None})
        first, *rest = super().format(flat).split("\n")
        return "\n".join([one_line(first), *(" " * OWN_INDENT + one_line(row) for row in rest)])
