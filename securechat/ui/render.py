"""Turn :class:`ChatState` into styled text: pane rows, status bar, banners."""

from __future__ import annotations

import weakref
from collections.abc import Callable

from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.utils import get_cwidth

from securechat.commands import times
from securechat.commands.sanitize import Cell, wrap_cells
from securechat.commands.wording import PLAINTEXT_WARNING, banner_lines
from securechat.names import short_fingerprint
from securechat.ui.state import STATUS_LABELS, STATUS_WINDOW, ChatState, Line
from securechat.ui.style import name_class

# A logical line: its fragments (text may hold "\n") and the indent of its
# continuation rows, so wrapped text lines up under the message, not the time.
Logical = tuple[StyleAndTextTuples, int]
# Each line's wrapped rows and what they were made for (width, /raw, status, time shown):
# a redraw wraps only the lines that are new or changed, not the whole window.
RowCache = weakref.WeakKeyDictionary[Line, tuple[tuple[object, ...], list[StyleAndTextTuples]]]


def clock_text(line: Line, now: float) -> str:
    """The line's time (seconds), range-checked, with the server's when far apart (commands/times.py)."""
    server_ms = line.server_ts * 1000 if line.server_ts is not None else None
    return times.message_clock(line.ts * 1000, server_ms, now * 1000)


def _width(text: str) -> int:
    return sum(get_cwidth(ch) for ch in text)


def render_line(line: Line, show_raw: bool, now: float, window: str | None = None) -> list[Logical]:
    """The logical lines for one pane entry (two with ``/raw`` and a payload) shown in ``window``."""
    stamp = clock_text(line, now) + " "
    frags: StyleAndTextTuples = [("class:time", stamp)]
    match line.kind:
        case "in" | "out":
            own = line.kind == "out"
            # A /msg from another window names where it went: "<alice → #ops>", not a post here.
            nick = f"<{line.sender} → {line.to}>" if own and elsewhere(line, window) else f"<{line.sender}>"
            nick_style = name_class(line.sender) + (" class:own" if own else "")
            frags += [(nick_style, nick), ("", " ")]
            frags.append(("class:text", line.text))
            if own and line.status:
                failed = line.status.startswith("failed")
                label = STATUS_LABELS.get(line.status, line.status)
                frags.append(("class:status-tag" + (".failed" if failed else ""), f"  [{label}]"))
            indent = _width(stamp) + _width(nick) + 1
        case "rejected":
            frags.append(("class:rejected", "!! " + line.text))
            indent = _width(stamp) + 3
        case "warn":
            frags.append(("class:warn", "-!- " + line.text))
            indent = _width(stamp) + 4
        case "hint":
            frags.append(("class:hint", "-!- " + line.text))
            indent = _width(stamp) + 4
        case _:
            frags.append(("class:info", "--- " + line.text))
            indent = _width(stamp) + 4
    out: list[Logical] = [(frags, indent)]
    if show_raw and line.payload:
        # Unindented, so a selection of these rows is only the payload.
        out.append(([("class:payload", line.payload)], 0))
    return out


def wrap(frags: StyleAndTextTuples, width: int, indent: int) -> list[StyleAndTextTuples]:
    """Split fragments into rows of at most ``width`` cells; ``\\n`` starts a row.

    :func:`securechat.commands.sanitize.wrap_cells` cuts them, as it does ``--plain``'s
    rows: every row after the first is indented, whatever the sender's name.
    """
    cells = (
        (frag[0], ch, 0 if ch == "\n" else get_cwidth(ch)) for frag in frags for ch in frag[1]
    )
    return [_merge(row) for row in wrap_cells(cells, width, indent)]


def _merge(cells: list[Cell]) -> StyleAndTextTuples:
    out: StyleAndTextTuples = []
    for style, ch, _w in cells:
        if out and out[-1][0] == style:
            out[-1] = (style, out[-1][1] + ch)
        else:
            out.append((style, ch))
    return out


def pane_rows(state: ChatState, width: int, cache: RowCache | None = None) -> list[StyleAndTextTuples]:
    """The rows of the current window at ``width``; lines whose rows are in ``cache`` are not wrapped again."""
    rows: list[StyleAndTextTuples] = []
    now = state.clock()
    for line in state.visible_lines():
        rows.extend(line_rows(line, state.show_raw, now, width, cache, state.current))
    return rows


def elsewhere(line: Line, window: str | None) -> bool:
    """True for an own message shown in a window other than the conversation it went to."""
    return window is not None and bool(line.to) and line.to != window


def line_rows(
    line: Line,
    show_raw: bool,
    now: float,
    width: int,
    cache: RowCache | None = None,
    window: str | None = None,
) -> list[StyleAndTextTuples]:
    """One pane entry's rows, from ``cache`` when made for the same width, /raw, status, time and place."""
    key = (
        width,
        show_raw,
        line.status,
        line.payload is not None,
        line.sender,
        clock_text(line, now),
        elsewhere(line, window),
    )
    hit = cache.get(line) if cache is not None else None
    if hit is not None and hit[0] == key:
        return hit[1]
    rows = [row for frags, indent in render_line(line, show_raw, now, window) for row in wrap(frags, width, indent)]
    if cache is not None:
        cache[line] = (key, rows)
    return rows


def plain(frags: StyleAndTextTuples) -> str:
    return "".join(frag[1] for frag in frags)


def status_bar(state: ChatState, scrolled: bool, width: int | None = None) -> StyleAndTextTuples:
    """The status bar. To fit ``width`` it gives up, one at a time: the rooms' unread list, the long
    PLAINTEXT warning (for its short form), your name, the end of a long conversation name, the
    PageDown hint, the retry countdown, the conversation (the prompt below names it), raw,
    PLAINTEXT's "no TLS", "more below", the unread total, the connection's state and the separator
    before PLAINTEXT: the word PLAINTEXT is never given up (it fits down to 9 columns)."""
    conn = state.connection
    label = conn
    if conn == "reconnecting" and (left := state.retry_in()) is not None:
        label = f"reconnecting in {left}s"
    where = f"→ {state.where()} " if state.current != STATUS_WINDOW else "(no conversation) "
    unread = state.unread_summary()
    total = _piece("class:statusbar.unread", f"unread {sum(c for _n, c in unread)} ") if unread else []
    plain_style, bar = "class:statusbar.plaintext", "class:statusbar"
    parts: dict[str, StyleAndTextTuples] = {
        "head": [(f"class:statusbar.{conn}", f" {label} ")],
        "me": _piece(bar, f"{state.own_name or '?'} {short_fingerprint(state.fingerprint)} "),
        "here": _piece(bar, where),
        "unread": total,
        "plain": _piece(plain_style, f"{PLAINTEXT_WARNING} ") if state.plaintext else [],
        "raw": _piece(bar, "raw ") if state.show_raw else [],
        "more": _piece("class:statusbar.scrolled", "more below: PageDown ") if scrolled else [],
    }

    def over() -> int:  # cells past the width (<= 0: it fits)
        return 0 if width is None else _width(plain([f for part in parts.values() for f in part])) - width

    smaller: list[tuple[str, Callable[[], StyleAndTextTuples]]] = [  # in the order they give way
        ("plain", lambda: _piece(plain_style, "PLAINTEXT: no TLS ")),
        ("me", list),
        ("here", lambda: _piece(bar, _cut(where, over()))),  # a long room name: the prompt names it whole
        ("more", lambda: _piece("class:statusbar.scrolled", "more below ")),
        ("head", lambda: [(f"class:statusbar.{conn}", f" {conn} ")]),
        ("here", list),
        ("raw", list),
        ("plain", lambda: _piece(plain_style, "PLAINTEXT ")),
        ("more", list),
        ("unread", list),
        ("head", list),  # below 26 columns the connection's state goes too, and then PLAINTEXT's separator
        ("plain", lambda: [(plain_style, "PLAINTEXT")]),
    ]
    for key, smaller_part in smaller:
        if over() <= 0:
            break
        if parts[key]:
            parts[key] = smaller_part()
    if parts["unread"] and (names := _unread_names(unread, None if width is None else -over())):  # in the room left
        parts["unread"] = total + [("class:statusbar.unread", names)]
    return [f for part in parts.values() for f in part]


def _cut(where: str, over: int) -> str:
    """``where`` cut by ``over`` cells and marked with ``…``, keeping its first six; as it is if too short to cut."""
    return where[: max(len(where) - over - 2, 6)] + "… " if len(where) > 8 else where


def _piece(style: str, text: str) -> StyleAndTextTuples:
    return [("class:statusbar", "│ "), (style, text)]


def _unread_names(unread: list[tuple[str, int]], room: int | None) -> str:
    """``(#ops:2 bob:1) `` after the unread total; in ``room`` cells those that fit, then ``…``, or none."""
    entries = [f"{n}:{c}" for n, c in unread]
    whole = "(" + " ".join(entries) + ") "
    if room is None or _width(whole) <= room:
        return whole
    shown: list[str] = []
    for entry in entries:  # a long room name gives way to the shorter ones after it
        if _width("(" + " ".join([*shown, entry]) + " …) ") <= room:
            shown.append(entry)
    return "(" + " ".join([*shown, "…"]) + ") " if shown else ""


def banner(state: ChatState) -> StyleAndTextTuples:
    """One block per contact whose key changed; stays until the user trusts the new key."""
    lines: list[str] = []
    for _name, alert in sorted(state.banners.items()):
        first, *rest = banner_lines(alert)
        lines += [f" !! {first}", *(f"  {line}" for line in rest)]
    return [("class:banner", "\n".join(lines))] if lines else []
