"""Text from outside on a terminal (issue 13, item 3): one sanitiser, every output path.

Each hostile string of :data:`HOSTILE` is pushed through every place that shows
text from outside: ``--plain`` (events, history, a server's error code and
message), the full-screen pane (as rows, and as the bytes prompt_toolkit writes),
``--json`` lines, the ``history`` and ``decrypt`` subcommands, the log on stderr,
and a real ``--plain`` process against a hostile server with its stdout on a pipe.
Everywhere:

- no control character, no C1, no bidi override or isolate, no zero-width or
  other invisible format character reaches the output: each is shown as a
  visible mark (``⟨U+202E⟩``), not dropped;
- a peer's text never starts a row that looks like the program's own: every row
  after the first of a message is indented (``--plain``: by 8 spaces; the
  full-screen pane: by at least one space, whatever the length of the sender's
  name; the subcommands: by 4 spaces), and no row is wider than the terminal.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prompt_toolkit.application import create_app_session
from prompt_toolkit.data_structures import Size
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output.vt100 import Vt100_Output

from securechat import crypto
from securechat.client.state import ClientStore
from securechat.clock import now_ms
from securechat.commands import sanitize as safe
from securechat.events import (
    ConnectionChanged,
    ErrorReported,
    MessageReceived,
    MessageRejected,
    SessionEvent,
)
from securechat.jsonmode import JsonFrontEnd
from securechat.lineui import MESSAGE_INDENT, LineChat
from securechat.records import HistoryEntry
from securechat.ui import ChatUI
from securechat.ui.render import pane_rows, plain
from securechat.ui.state import ChatState
from tests.support.cli import client_command, client_env
from tests.support.hostile import HostileServer
from tests.support.plainclient import PlainClient
from tests.support.rawclient import identity_key
from tests.support.ui_fakes import FakeSession
from tests.support.ui_harness import wait_until

pytestmark = pytest.mark.timeout(90)

FAKE_LINE = "[12:00] carol: send me the code"
HOSTILE: dict[str, str] = {
    "carriage return": "hi\r" + FAKE_LINE,
    "newline then a fake --plain message": "hi\n" + FAKE_LINE,
    "newline then a fake nick": "ok\n<bob> give me your password",
    "newline then a fake info line": "ok\n* bob is verified: the fingerprint matches their pinned key",
    "newline then a fake pane row": "ok\n12:00 <bob> fake",
    "backspaces": "real\b\b\b\bfake",
    "erase the screen": "\x1b[2J\x1b[Hfake",
    "window title (BEL)": "\x1b]0;pwned\x07",
    "window title (ST)": "\x1b]2;pwned\x1b\\",
    "C1 CSI": "\x9b2J",
    "C1 OSC": "\x9d0;pwned\x9c",
    "DEL": "a\x7fb",
    "right-to-left override": "abc\u202efed",
    "left-to-right isolate": "\u2066isolated\u2069",
    "zero-width space": "pay\u200bpal",
    "byte order mark": "\ufeffhi",
    "line separator": "a\u2028b",
    "hangul filler": "a\u3164b",
    "soft hyphen": "a\u00adb",
    "a long line then a fake line where a terminal would wrap": "x" * 300 + FAKE_LINE,
}
LONG_NAME = "m" * 32
WIDTHS = (20, 40, 80, 200)


def dangerous(ch: str) -> bool:
    """What must never reach a terminal as itself."""
    return ch != "\n" and (unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp", "Cs"} or ch in safe.INVISIBLE)


def assert_clean(rows: list[str], width: int | None = None) -> None:
    for row in rows:
        assert "\n" not in row, repr(row)
        bad = [ch for ch in row if dangerous(ch)]
        assert not bad, (bad, row)
        if width is not None:
            assert safe.cell_width(row) <= width, (width, row)


def marks_of(text: str) -> list[str]:
    """The visible marks the dangerous characters of ``text`` must become."""
    return [safe.mark(ch) for ch in text.replace("\r\n", "\n") if dangerous(ch)]


# --- the sanitiser itself ---------------------------------------------------------------------


def test_dangerous_characters_are_made_visible_not_dropped() -> None:
    assert safe.sanitize("a\u202eb") == "a⟨U+202E⟩b"
    assert safe.sanitize("\x1b]0;pwned\x07") == "⟨U+001B⟩]0;pwned⟨U+0007⟩"
    assert safe.sanitize("two\nlines\r\nand a tab\t.") == "two\nlines\nand a tab    ."
    assert safe.one_line("two\nlines") == "two⟨U+000A⟩lines"
    for text in HOSTILE.values():
        shown = safe.sanitize(text)
        assert [ch for ch in shown if dangerous(ch)] == []
        for mark in marks_of(text):
            assert mark in shown
        assert safe.sanitize(shown) == shown  # idempotent: a mark is plain text


def test_joiners_stay_inside_words_and_emoji_only() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"
    assert safe.sanitize(family) == family and safe.sanitize(persian) == persian
    assert safe.sanitize("\u200dhidden") == "⟨U+200D⟩hidden"
    assert safe.sanitize("a \u200c b") == "a ⟨U+200C⟩ b"


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("indent", [0, 2, 8])
def test_rows_fit_and_every_continuation_is_indented(width: int, indent: int) -> None:
    for text in HOSTILE.values():
        rows = safe.rows("[12:00] " + LONG_NAME + ": " + text, indent, width)
        assert_clean(rows, width)
        for row in rows[1:]:
            assert row.startswith(" " * min(indent, width // 2)) and (indent == 0 or row[0] == " ")


# --- --plain ------------------------------------------------------------------------------------


def _hostile_events(text: str) -> list[SessionEvent]:
    return [
        MessageReceived(LONG_NAME, "a" * 32, now_ms(), text, "P"),
        MessageRejected("bob", "b" * 32, "bad_signature", text),
        ErrorReported(text[:40], text),
        ConnectionChanged("reconnecting", 1.0, text),
    ]


@pytest.mark.parametrize("width", [40, 80])
@pytest.mark.parametrize("name", HOSTILE)
async def test_plain_rows(name: str, width: int) -> None:
    text = HOSTILE[name]
    out: list[str] = []
    history = {"bob": [HistoryEntry("bob", "in", "c" * 32, now_ms(), text)]}
    chat = LineChat(FakeSession(histories=history), out.append, width=lambda: width)
    for event in _hostile_events(text):
        before = len(out)
        chat.on_event(event)
        assert out[before:], event
        assert_clean(out[before:], width)
        if isinstance(event, MessageReceived):
            assert out[before].startswith("[")
            assert all(row.startswith(" " * MESSAGE_INDENT) for row in out[before + 1 :])
        else:
            assert all(not row.startswith(("[", " " * MESSAGE_INDENT)) for row in out[before + 1 :])
    before = len(out)
    await chat.handle("/to bob")
    assert out[before].startswith("[") and all(row.startswith(" " * MESSAGE_INDENT) for row in out[before + 1 : -1])
    assert_clean(out, width)
    joined = "".join(out)
    for mark in marks_of(text):
        assert mark in joined


# --- the full-screen UI ---------------------------------------------------------------------------


@pytest.mark.parametrize("sender", ["b", LONG_NAME])
@pytest.mark.parametrize("width", WIDTHS)
def test_pane_rows(sender: str, width: int) -> None:
    state = ChatState(own_name="alice")
    state.switch(sender)
    for text in HOSTILE.values():
        state.windows[sender].clear()
        state.apply(MessageReceived(sender, "d" * 32, now_ms(), text, "P"))
        rows = [plain(row) for row in pane_rows(state, width)]
        assert_clean(rows, width)
        assert rows[0][0].isdigit()  # the time stamp
        assert all(row.startswith(" ") for row in rows[1:]), rows
        joined = "".join(rows)
        for mark in marks_of(text):
            assert mark.replace(" ", "") in joined.replace(" ", "")


async def test_the_full_screen_writes_no_peer_control_to_the_terminal() -> None:
    """The bytes prompt_toolkit writes, not only the rows: no peer sequence, no bidi, the marks."""
    screen = io.StringIO()
    output = Vt100_Output(screen, lambda: Size(rows=60, columns=200), term="xterm-256color")
    fake = FakeSession()
    with create_pipe_input() as inp, create_app_session(input=inp, output=output):
        ui = ChatUI(fake, monochrome=True)
        task = asyncio.ensure_future(ui.run())
        await wait_until(lambda: ui.app.is_running and fake.running.is_set(), what="app running")
        for i, text in enumerate(HOSTILE.values()):
            fake.emit(MessageReceived("bob", f"{i:032x}", now_ms(), text, "P"))
        await wait_until(lambda: "⟨U+2069⟩" in screen.getvalue(), what="the hostile lines drawn")
        ui.quit()
        await asyncio.wait_for(task, 5)
    written = screen.getvalue()
    for sequence in ("\x1b]0;pwned", "\x1b]2;pwned", "\x9b", "\x9d", "\u202e", "\u2066", "\u200b", "\ufeff"):
        assert sequence not in written, repr(sequence)
    assert "⟨U+202E⟩" in written and "⟨U+001B⟩]0;pwned⟨U+0007⟩" in written


# --- --json ----------------------------------------------------------------------------------------


def test_json_lines_are_printable_ascii() -> None:
    lines = io.StringIO()
    front = JsonFrontEnd(FakeSession(), lambda obj: lines.write(json.dumps(obj) + "\n"), own_stdout=False)
    for text in HOSTILE.values():
        for event in _hostile_events(text):
            front.on_event(event)
    for line in lines.getvalue().splitlines():
        assert all(" " <= ch <= "~" for ch in line), line
        assert json.loads(line)  # and still the text, escaped


# --- the offline subcommands and the log -----------------------------------------------------------


def _run(home: Path, *args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = client_env(home, COLUMNS=str(columns))
    return subprocess.run([*client_command(), *args], capture_output=True, text=True, env=env, timeout=30, check=False)


def _assert_subcommand_rows(stdout: str, program_prefixes: tuple[str, ...], columns: int = 80) -> None:
    rows = stdout.splitlines()
    assert_clean(rows, columns)
    for row in rows:
        assert row.startswith(program_prefixes) or row.startswith(" " * safe.TEXT_INDENT), row


def test_history_and_decrypt_subcommands(tmp_path: Path) -> None:
    bob = identity_key("bob")
    with ClientStore.open(tmp_path, "alice", bits=2048) as alice:
        alice.pins.pin("bob", crypto.public_key_pem(bob.public_key()))
        assert alice.identity is not None
        payloads = []
        for i, text in enumerate(HOSTILE.values()):
            alice.history.add(HistoryEntry("bob", "in", f"{i:032x}", now_ms(), text))
            envelope = crypto.seal_envelope(bob, alice.identity.public_key, "bob", "alice", text)
            payloads.append(crypto.encode_payload(envelope))
    history = _run(tmp_path, "history", "--name", "alice", "bob")
    assert history.returncode == 0, history.stderr
    _assert_subcommand_rows(history.stdout, ("20",))
    for mark in marks_of("".join(HOSTILE.values())):
        assert mark in history.stdout
    # Wide enough for our own line about each payload to fit one row: every other row is the text.
    opened = _run(tmp_path, "decrypt", "--name", "alice", *payloads, columns=300)
    assert opened.returncode == 0, opened.stderr
    _assert_subcommand_rows(opened.stdout, ("payload ",), 300)
    for mark in marks_of("".join(HOSTILE.values())):
        assert mark in opened.stdout


def test_the_log_formatter_keeps_records_to_one_clean_line() -> None:
    formatter = safe.SafeFormatter("%(levelname)s %(message)s")
    for text in HOSTILE.values():
        record = logging.LogRecord("securechat", logging.WARNING, __file__, 1, "server said %s", (text,), None)
        rows = formatter.format(record).split("\n")
        assert_clean(rows)
        assert len(rows) == 1


# --- a real --plain process, stdout on a pipe, against a hostile server -------------------------------


async def test_plain_process_on_a_pipe_against_a_hostile_server(tmp_path: Path) -> None:
    srv = HostileServer()
    srv.keys["bob"] = crypto.public_key_pem(identity_key("bob").public_key())

    async def attack(hostile: HostileServer, _writer: object) -> None:
        assert hostile.client_key is not None
        for i, text in enumerate(HOSTILE.values()):
            hostile.push({"type": "error", "code": text[:40], "message": text, "fatal": False})
            hostile.push({"type": text[:40], "x": 1})  # unknown types are ignored, not shown
            hostile.push({"type": "presence", "name": text[:40], "online": True})  # bad name: a notice
            envelope = crypto.seal_envelope(identity_key("bob"), hostile.client_key, "bob", "alice", text)
            hostile.message("bob", envelope)
        hostile.push({"type": "error", "code": "done", "message": "the end", "fatal": False})

    srv.scripts.append(attack)
    await srv.start()
    client = await PlainClient.start("alice", srv.port, tmp_path / "home", COLUMNS="80")
    try:
        await client.wait_line(lambda line: "done: the end" in line)
        status, stderr = await client.finish()
        assert status == 0 and "Traceback" not in stderr, stderr
    finally:
        client.kill()
        await srv.close()
    text = client.out.decode("utf-8")
    assert not [ch for ch in text if dangerous(ch)]
    rows = text.splitlines()
    assert_clean(rows, 80)
    assert not any(row.startswith("[12:00] carol") for row in rows)
    assert not any(row.startswith(("<bob>", "12:00 <bob>")) for row in rows)


@given(st.text())
def test_no_text_gets_a_dangerous_character_through(text: str) -> None:
    shown = safe.sanitize(text)
    assert [ch for ch in shown if dangerous(ch) and not (ch in safe.JOINERS)] == []
    assert safe.sanitize(shown) == shown
    assert "\n" not in safe.one_line(text)
