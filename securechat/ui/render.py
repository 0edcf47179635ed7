"""Turn :class:`ChatState` into styled text: pane rows, status bar, banners."""

from __future__ import annotations

from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.utils import get_cwidth

from securechat.commands import times
from securechat.commands.wording import banner_lines
from securechat.names import short_fingerprint
from securechat.ui.state import STATUS_LABELS, STATUS_WINDOW, ChatState, Line
from securechat.ui.style import name_class

# A logical line: its fragments (text may hold "\n") and the indent of its
# continuation rows, so wrapped text lines up under the message, not the time.
Logical = tuple[StyleAndTextTuples, int]


def clock_text(line: Line, now: float) -> str:
    """The line's time (seconds), range-checked, with the server's when far apart (commands/times.py)."""
    server_ms = line.server_ts * 1000 if line.server_ts is not None else None
    return times.message_clock(line.ts * 1000, server_ms, now * 1000)


def _width(text: str) -> int:
    return sum(get_cwidth(ch) for ch in text)


def render_line(line: Line, show_raw: bool, now: float) -> list[Logical]:
    """The logical lines for one pane entry (two with ``/raw`` and a payload)."""
    stamp = clock_text(line, now) + " "
    frags: StyleAndTextTuples = [("class:time", stamp)]
    match line.kind:
        case "in" | "out":
            nick = f"<{line.sender}>"
            own = line.kind == "out"
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

    Rows break after a space when there is one in the row's second half (so
    words and fingerprint groups stay whole), else at the edge.
    """
    width = max(width, 1)
    indent = indent if indent < width // 2 else 0
    pad: list[tuple[str, str, int]] = [("", " ", 1)] * indent
    rows: list[list[tuple[str, str, int]]] = [[]]
    col = 0
    for frag in frags:
        style, text = frag[0], frag[1]
        for ch in text:
            if ch == "\n":
                rows.append(list(pad))
                col = indent
                continue
            w = get_cwidth(ch)
            if col + w > width and col > indent:
                if ch == " ":
                    # The edge falls on a space: break there and drop it.
                    rows.append(list(pad))
                    col = indent
                    continue
                row = rows[-1]
                cut = _break_at(row, indent, width)
                moved = row[cut:] if cut else []
                del row[len(row) - len(moved) :]
                rows.append(pad + moved)
                col = indent + sum(c[2] for c in moved)
            rows[-1].append((style, ch, w))
            col += w
    return [_merge(row) for row in rows]


def _break_at(row: list[tuple[str, str, int]], indent: int, width: int) -> int:
    """Index just after the last space in the row's second half, or 0 for none."""
    for i in range(len(row) - 1, max(indent, width // 2) - 1, -1):
        if row[i][1] == " ":
            return i + 1 if i + 1 < len(row) else 0
    return 0


def _merge(cells: list[tuple[str, str, int]]) -> StyleAndTextTuples:
    out: StyleAndTextTuples = []
    for style, ch, _w in cells:
        if out and out[-1][0] == style:
            out[-1] = (style, out[-1][1] + ch)
        else:
            out.append((style, ch))
    return out


def pane_rows(state: ChatState, width: int) -> list[StyleAndTextTuples]:
    rows: list[StyleAndTextTuples] = []
    now = state.clock()
    for line in state.visible_lines():
        for frags, indent in render_line(line, state.show_raw, now):
            rows.extend(wrap(frags, width, indent))
    return rows


def plain(frags: StyleAndTextTuples) -> str:
    return "".join(frag[1] for frag in frags)


def status_bar(state: ChatState, scrolled: bool) -> StyleAndTextTuples:
    conn = state.connection
    label = conn
    if conn == "reconnecting" and (left := state.retry_in()) is not None:
        label = f"reconnecting in {left}s"
    frags: StyleAndTextTuples = [
        (f"class:statusbar.{conn}", f" {label} "),
        ("class:statusbar", "│ "),
        ("class:statusbar", f"{state.own_name or '?'} {short_fingerprint(state.fingerprint)} "),
        ("class:statusbar", "│ "),
        (
            "class:statusbar",
            f"→ {state.current} " if state.current != STATUS_WINDOW else "(no conversation) ",
        ),
    ]
    unread = state.unread_summary()
    if unread:
        total = sum(c for _n, c in unread)
        names = " ".join(f"{n}:{c}" for n, c in unread)
        frags += [("class:statusbar", "│ "), ("class:statusbar.unread", f"unread {total} ({names}) ")]
    if state.show_raw:
        frags.append(("class:statusbar", "│ raw "))
    if scrolled:
        frags.append(("class:statusbar.scrolled", "│ more below: PageDown "))
    return frags


def banner(state: ChatState) -> StyleAndTextTuples:
    """One block per contact whose key changed; stays until the user trusts the new key."""
    lines: list[str] = []
    for _name, alert in sorted(state.banners.items()):
        first, *rest = banner_lines(alert)
        lines += [f" !! {first}", *(f"  {line}" for line in rest)]
    return [("class:banner", "\n".join(lines))] if lines else []
