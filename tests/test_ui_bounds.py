"""Huge messages in the full-screen pane (issue 13, item 6): what a window keeps and what a redraw
costs are bounded, whatever peers send. Speed itself is measured in docs/performance.md, not here.
"""

from __future__ import annotations

import pytest

from securechat.events import HistoryEntry, MessageReceived, MessageRejected
from securechat.ui import render
from securechat.ui.layout import MessagePane
from securechat.ui.state import (
    MAX_LINE_BREAKS,
    MAX_LINE_CHARS,
    MAX_LINES,
    MAX_PAYLOAD_CHARS,
    MAX_TOTAL_CHARS,
    MAX_WINDOW_CHARS,
    ChatState,
    clip,
    cost,
)

MIB = 2**20
T0 = 1_700_000_000_000
# A 1 MiB envelope's payload is about this long (base64 of the envelope).
PAYLOAD = "A" * (MIB * 4 // 3)
NOTE_ROOM = 200  # the note that says how much was cut


def make_state() -> ChatState:
    return ChatState(own_name="alice", fingerprint="a1ce" * 16, clock=lambda: T0 / 1000)


def kept(state: ChatState) -> int:
    return sum(cost(line) for lines in state.windows.values() for line in lines)


def test_eight_megabyte_messages_of_line_breaks_are_kept_small() -> None:
    """The attack that took the UI to 771 MiB: eight 1 MiB messages full of line breaks (and their payloads)."""
    s = make_state()
    s.switch("mallory")
    for i in range(8):
        s.apply(MessageReceived("mallory", f"{i:032x}", T0, "\n" * MIB, PAYLOAD))
    lines = s.windows["mallory"]
    assert len(lines) == 8
    for line in lines:
        assert len(line.text) <= MAX_LINE_CHARS + NOTE_ROOM
        assert line.text.count("\n") <= MAX_LINE_BREAKS + 1
        assert "more characters not shown here" in line.text
        assert line.payload is None  # too large to keep for /raw
    assert kept(s) <= 8 * (MAX_LINE_BREAKS + NOTE_ROOM)
    rows = render.pane_rows(s, 80)
    assert len(rows) <= 8 * (MAX_LINE_BREAKS + 4)
    assert "more characters not shown here" in render.plain(render.pane_rows(s, 200)[-1])


def test_long_text_without_line_breaks_is_cut_too() -> None:
    s = make_state()
    s.apply(MessageReceived("bob", "b" * 32, T0, "x" * MIB, "P" * 100))
    (line,) = s.windows["bob"]
    assert line.text.startswith("x" * MAX_LINE_CHARS) and len(line.text) <= MAX_LINE_CHARS + NOTE_ROOM
    assert f"{MIB - MAX_LINE_CHARS:,} more characters" in line.text
    assert line.payload == "P" * 100  # a small payload stays for /raw


def test_what_fits_is_untouched() -> None:
    text = "word " * 100 + "\n" * MAX_LINE_BREAKS + "end"
    assert clip(text) == text
    assert clip("a" * MAX_LINE_CHARS) == "a" * MAX_LINE_CHARS
    assert clip("\n" * (MAX_LINE_BREAKS + 1)).startswith("\n" * MAX_LINE_BREAKS + "\n[1 more")


def test_a_window_keeps_a_bounded_number_of_characters() -> None:
    s = make_state()
    big = "y" * MAX_LINE_CHARS
    count = 2 * MAX_WINDOW_CHARS // (MAX_LINE_CHARS + MAX_PAYLOAD_CHARS) + 10
    for i in range(count):
        s.apply(MessageReceived("bob", f"{i:032x}", T0, big, "p" * MAX_PAYLOAD_CHARS))
    lines = s.windows["bob"]
    assert sum(map(cost, lines)) <= MAX_WINDOW_CHARS
    assert lines[-1].msg_id == f"{count - 1:032x}"  # the newest stays, the oldest went
    assert s.kept["bob"] == sum(map(cost, lines))  # the running count is the real one
    assert f"{0:032x}" not in s.by_id


def test_all_windows_together_keep_a_bounded_number_of_characters() -> None:
    s = make_state()
    senders = 3 * MAX_TOTAL_CHARS // MAX_WINDOW_CHARS
    for n in range(senders):
        for i in range(MAX_WINDOW_CHARS // (MAX_LINE_CHARS + MAX_PAYLOAD_CHARS) + 2):
            s.apply(MessageReceived(f"u{n}", f"{n:016x}{i:016x}", T0, "z" * MAX_LINE_CHARS, "q" * MAX_PAYLOAD_CHARS))
    assert kept(s) <= MAX_TOTAL_CHARS
    assert s.windows[f"u{senders - 1}"]  # the newest sender's window is there
    for name, lines in s.windows.items():
        assert s.kept.get(name, 0) == sum(map(cost, lines))


def test_history_and_rejections_are_cut_as_well() -> None:
    s = make_state()
    entries = [HistoryEntry("bob", "in", f"{i:032x}", T0, "\n" * MIB) for i in range(3)]
    s.add_history("bob", entries)
    s.apply(MessageRejected("bob", "r" * 32, "bad_signature", "\n" * MIB, PAYLOAD))
    assert all(len(line.text) <= MAX_LINE_CHARS + NOTE_ROOM for line in s.windows["bob"])
    assert kept(s) <= 4 * (MAX_LINE_CHARS + NOTE_ROOM)


def test_a_redraw_wraps_only_new_or_changed_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a redraw costs: the pane keeps each line's rows; an event re-wraps one line, not the window."""
    s = make_state()
    s.switch("bob")
    for i in range(MAX_LINES):
        s.apply(MessageReceived("bob", f"{i:032x}", T0, f"line {i}", "P"))
    wrapped: list[int] = []
    real_wrap = render.wrap

    def counting(*args: object, **kwargs: object) -> object:
        wrapped.append(1)
        return real_wrap(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(render, "wrap", counting)
    pane = MessagePane(s)
    pane.create_content(80, 24)
    assert len(wrapped) == MAX_LINES
    s.info("/help and its answer")
    content = pane.create_content(80, 24)
    assert len(wrapped) == MAX_LINES + 1
    assert "/help and its answer" in render.plain(content.get_line(content.line_count - 1))
    pane.create_content(100, 24)  # a new width wraps everything once
    assert len(wrapped) == 2 * MAX_LINES + 1
