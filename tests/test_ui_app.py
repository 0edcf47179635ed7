"""The real prompt_toolkit application, driven headlessly through a pipe input."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import ColorDepth

from securechat.encoding import b64decode, b64encode
from securechat.events import (
    Acked,
    ConnectionChanged,
    ContactInfo,
    ContactPinned,
    ErrorReported,
    HistoryEntry,
    KeyChangedAlert,
    MessageReceived,
    MessageRejected,
    PresenceChanged,
    Ready,
    RoomChanged,
    ServerPinned,
    ServerRefusedAlert,
)
from securechat.ui import ChatUI, run_chat_ui
from tests.support.ui_fakes import ALICE_FP, BOB_FP, BOB_NEW_FP, FakeSession
from tests.support.ui_harness import (
    ALT_ENTER,
    CTRL_C,
    CTRL_D,
    ENTER,
    PAGE_DOWN,
    PAGE_UP,
    TAB,
    UP,
    TerminalOutput,
    paste,
    running_ui,
    wait_until,
)

pytestmark = pytest.mark.timeout(30)


async def test_start_shows_identity_and_connection_state() -> None:
    async with running_ui() as h:
        await h.shows("you are alice (a1ce a1ce")
        assert " connecting " in h.ui.status_text()
        h.fake.emit(ConnectionChanged("online"))
        assert h.ui.status_text().startswith(" online │ alice a1ce a1ce")
        h.fake.emit(ConnectionChanged("reconnecting", retry_in=4.2))
        assert "reconnecting in 5s" in h.ui.status_text()


async def test_plaintext_is_in_the_status_bar_all_the_time() -> None:
    async with running_ui(FakeSession(plaintext=True)) as h:
        assert "PLAINTEXT: no TLS" in h.ui.status_text()
        h.fake.emit(ConnectionChanged("online"))
        assert "PLAINTEXT: no TLS" in h.ui.status_text()
    async with running_ui() as h:
        assert "PLAINTEXT" not in h.ui.status_text()


async def test_a_refused_server_identity_is_told_with_both_fingerprints_and_the_command() -> None:
    async with running_ui() as h:
        h.fake.emit(ServerPinned("127.0.0.1:5000", BOB_FP))
        await h.shows("first connection to the server at 127.0.0.1:5000: pinned its identity")
        command = f"securechat-client trust-server 127.0.0.1:5000 {BOB_NEW_FP}"
        h.fake.emit(ServerRefusedAlert("127.0.0.1:5000", "identity_changed", "d", BOB_NEW_FP, BOB_FP, command))
        await h.shows("THE IDENTITY OF THE SERVER AT 127.0.0.1:5000 CHANGED")
        await h.shows(command)
        assert BOB_NEW_FP[:4] in h.ui.pane_text() and BOB_FP[:4] in h.ui.pane_text()


async def test_first_run_shows_fingerprint_and_how_to_compare() -> None:
    async with running_ui(first_run=True) as h:
        assert "first session" not in h.ui.pane_text()  # not before the server took the name
        h.fake.emit(Ready("alice", ALICE_FP, new=True))
        await h.shows("your fingerprint")
        await h.shows("---     " + " ".join([ALICE_FP[:4]] * 8) + "\n")
        await h.shows("/verify NAME FINGERPRINT")
        # A later Ready(new=True) does not repeat it.
        before = h.ui.pane_text().count("first session")
        h.fake.emit(Ready("alice", ALICE_FP, new=True))
        assert h.ui.pane_text().count("first session") == before == 1


async def test_ready_new_shows_intro_once_and_fetches_users() -> None:
    async with running_ui() as h:
        h.fake.emit(Ready("alice", ALICE_FP, new=True))
        h.fake.emit(Ready("alice", ALICE_FP, new=True))
        assert h.ui.pane_text().count("first session") == 1
        await wait_until(lambda: ("list_users", None) in h.fake.calls)
        await wait_until(lambda: h.ui.executor.online.get("bob") is True)


async def test_plain_text_goes_to_the_current_conversation_with_delivery_state() -> None:
    fake = FakeSession(auto_ack=None)
    async with running_ui(fake) as h:
        await h.line("hello?")
        await h.shows("no conversation yet")
        assert fake.sent == []
        await h.line("/to bob")
        h.type("hi bob" + ENTER)
        await wait_until(lambda: fake.sent == [("bob", "hi bob")])
        await h.shows("<alice> hi bob  [sending…]")
        msg_id = next(iter(h.ui.state.by_id))
        fake.emit(Acked(msg_id, "bob", "queued"))
        await h.shows("<alice> hi bob  [queued]")
        fake.emit(Acked(msg_id, "bob", "delivered"))
        fake.emit(Acked(msg_id, "bob", "queued"))  # late duplicate: never step back
        await h.shows("<alice> hi bob  [delivered]")
        assert h.ui.pane_text().count("hi bob") == 1
        assert "→ bob" in h.ui.status_text()


async def test_messages_leave_in_typing_order() -> None:
    async with running_ui() as h:
        await h.line("/to bob")
        h.type("".join(f"m{i}{ENTER}" for i in range(10)))
        await wait_until(lambda: len(h.fake.sent) == 10)
        assert [t for _to, t in h.fake.sent] == [f"m{i}" for i in range(10)]


async def test_msg_sends_once_without_switching() -> None:
    async with running_ui() as h:
        await h.line("/to bob")
        await h.line("/msg Carol see you at 5")
        await wait_until(lambda: h.fake.sent == [("carol", "see you at 5")])
        assert h.ui.state.current == "bob"
        await h.shows("<alice → carol> see you at 5  [queued]")  # also echoed here, naming where it went
        assert any(line.text == "see you at 5" for line in h.ui.state.windows["carol"])


async def test_incoming_message_in_other_conversation_counts_unread() -> None:
    async with running_ui() as h:
        await h.line("/to bob")
        h.fake.emit(MessageReceived("carol", "c1" * 16, 1_700_000_000_000, "psst", "P1"))
        h.fake.emit(MessageReceived("carol", "c2" * 16, 1_700_000_000_000, "psst 2", "P2"))
        h.fake.emit(MessageReceived("bob", "b1" * 16, 1_700_000_000_000, "hey alice", "P3"))
        assert "unread 2 (carol:2)" in h.ui.status_text()
        await h.shows("<bob> hey alice")
        assert "psst" not in h.ui.pane_text()
        await h.line("/to carol")
        await h.shows("<carol> psst 2")
        assert "unread" not in h.ui.status_text()


async def test_first_incoming_message_opens_its_conversation() -> None:
    async with running_ui() as h:
        h.fake.emit(MessageReceived("bob", "b1" * 16, 1_700_000_000_000, "hi", "P"))
        assert h.ui.state.current == "bob"
        await h.shows("<bob> hi")
        assert "you are alice" in h.ui.pane_text()  # the welcome lines came along


async def test_rejected_message_shows_reason_never_text() -> None:
    async with running_ui() as h:
        await h.line("/to bob")
        h.fake.emit(
            MessageRejected("bob", "ee" * 16, "bad_signature", "PSS verification failed", "RAWPAYLOAD")
        )
        await h.shows("!! rejected a message from bob: bad_signature (PSS verification failed)")
        line = h.ui.state.windows["bob"][-1]
        assert line.kind == "rejected"
        assert "RAWPAYLOAD" not in h.ui.pane_text()
        await h.line("/raw")
        await h.shows("RAWPAYLOAD")
        # styled in the warning class
        rows = h.ui.pane.rows()
        assert any(style == "class:rejected" for row in rows for style, *_ in row)


async def test_raw_shows_payload_under_each_message() -> None:
    async with running_ui() as h:
        await h.line("/to bob")
        h.fake.emit(MessageReceived("bob", "b1" * 16, 1_700_000_000_000, "hi", "eyJ2IjoxfQ=="))
        await h.line("/raw")
        text = h.ui.pane_text().splitlines()
        index = next(i for i, row in enumerate(text) if "<bob> hi" in row)
        assert text[index + 1] == "eyJ2IjoxfQ=="
        assert not h.ui.mouse  # so the terminal can select the payload
        await h.line("/raw")
        assert "eyJ2IjoxfQ==" not in h.ui.pane_text()
        assert h.ui.mouse


async def test_key_change_banner_stays_until_trust() -> None:
    fake = FakeSession(changed={"bob"})
    async with running_ui(fake) as h:
        await h.line("/to bob")
        fake.emit(KeyChangedAlert("bob", BOB_FP, BOB_NEW_FP))
        assert "bob" in h.ui.state.banners
        await h.line("still there?")
        await h.shows(
            'not sent to bob ("still there?"): the key of bob changed; compare it (/whois bob), then /trust bob'
        )
        fake.emit(KeyChangedAlert("bob", BOB_FP, BOB_NEW_FP))  # repeated by the session: no new line
        assert h.ui.pane_text().count("the key of bob changed:") == 1
        assert fake.sent == []
        await h.line("/help")
        assert "bob" in h.ui.state.banners
        await h.line("/trust bob")
        assert ("trust", "bob") in fake.calls
        assert "bob" not in h.ui.state.banners
        h.type("now?" + ENTER)
        await wait_until(lambda: fake.sent == [("bob", "now?")])


async def test_banner_is_rendered_on_screen() -> None:
    async with running_ui() as h:
        h.fake.emit(KeyChangedAlert("bob", BOB_FP, BOB_NEW_FP))
        h.ui.app.invalidate()
        await wait_until(lambda: "THE KEY OF BOB CHANGED" in _screen(h.ui))
        assert "now  bad0 bad0" in _screen(h.ui)


def _screen(ui: ChatUI) -> str:
    """What the last render put on the screen, from prompt_toolkit's own buffer."""
    screen = ui.app.renderer.last_rendered_screen
    if screen is None:
        return ""
    size = ui.app.output.get_size()
    rows = []
    for y in range(size.rows):
        row = screen.data_buffer[y]
        rows.append("".join(row[x].char for x in range(size.columns)).rstrip())
    return "\n".join(rows)


async def test_whois_fingerprint_and_verify() -> None:
    fake = FakeSession(contacts={"bob": ContactInfo("bob", BOB_FP, "unverified", BOB_NEW_FP)})
    async with running_ui(fake) as h:
        fake.emit(PresenceChanged("bob", True))
        await h.line("/whois bob")
        await h.shows(f"bob online: {' '.join([BOB_FP[:4]] * 16)} (unverified)")
        await h.shows("bob now presents another key: bad0")
        await h.line("/whois carol")
        await h.shows("carol: no key pinned yet")
        await h.line("/fingerprint")
        await h.shows("your fingerprint (alice):\n")
        await h.shows("---     " + " ".join([ALICE_FP[:4]] * 8))
        await h.line("/verify bob " + " ".join([BOB_FP[:4]] * 16))
        assert ("verify", ("bob", BOB_FP)) in fake.calls
        await h.shows("bob is verified")
        await h.line("/verify bob " + "00" * 32)
        await h.shows("does NOT match")
        await h.line("/verify bob 1234")
        await h.shows("a fingerprint is 64 hex digits")


async def test_whois_asks_the_server_and_reads_the_pin_offline() -> None:
    fake = FakeSession(server_keys={"bob": BOB_FP})
    async with running_ui(fake) as h:
        await h.line("/whois bob")
        assert ("lookup", "bob") in fake.calls
        await h.shows(f"bob: {' '.join([BOB_FP[:4]] * 16)} (unverified)")
        assert "pinned the key of bob" in "\n".join(line.text for line in h.ui.state.windows["bob"])
        fake.go_offline()
        await h.line("/whois bob")
        await h.shows("(offline: that is what is pinned here; the server was not asked)")
        assert fake.calls.count(("lookup", "bob")) == 1


async def test_users_lists_registered_and_online() -> None:
    async with running_ui() as h:
        await h.line("/users")
        await h.shows("3 registered, 2 online: alice, bob, carol (offline)")


async def test_unknown_commands_and_bad_arguments_are_hints() -> None:
    async with running_ui() as h:
        await h.line("/frobnicate now")
        await h.shows("unknown command /frobnicate; /help lists the commands")
        await h.line("/to")
        await h.shows("usage: /to NAME")
        await h.line("/to Bob!")
        await h.shows("'Bob!' is not a valid name")
        await h.line("/msg bob")
        await h.shows("usage: /msg NAME TEXT")
        await h.line("/users a b")
        await h.shows("'a b' is not a valid name")
        await h.line("/msg nobody hello")
        await h.shows("""not sent to nobody ("hello"): no such user: nobody (/users lists who is registered)""")
        assert "Traceback" not in h.ui.pane_text()


async def test_session_failures_become_hints_not_crashes() -> None:
    fake = FakeSession()

    def broken_contact(name: str) -> ContactInfo:
        raise RuntimeError("disk on fire\nsecond line")

    async def broken_lookup(name: str) -> ContactInfo:
        raise ValueError("the server's answer broke us\nsecond line")

    def broken_history(peer: str, limit: int = 200) -> list[HistoryEntry]:
        raise OSError("history unreadable")

    fake.contact = broken_contact  # type: ignore[method-assign]
    fake.lookup = broken_lookup  # type: ignore[method-assign]
    fake.history = broken_history  # type: ignore[method-assign]
    async with running_ui(fake) as h:
        await h.line("/whois bob")
        await h.shows("internal error: ValueError: the server's answer broke us")
        fake.connected = False  # offline: /whois reads the local pin
        await h.line("/whois bob")
        await h.shows("internal error: RuntimeError: disk on fire")
        assert "second line" not in h.ui.pane_text()
        await h.line("/to bob")
        await h.shows("could not load the history with bob: internal error: OSError")
        # A malformed event from a buggy or hostile source is a warning, not a crash.
        fake.emit(MessageReceived("bob", "x", None, "hi", "P"))  # type: ignore[arg-type]
        await h.shows("could not show an event")
        fake.emit(ErrorReported("rate_limited", "slow\ndown"))
        await h.shows("-!- rate_limited: slow down")
        assert h.ui.app.is_running


async def test_control_characters_from_peers_are_neutralised() -> None:
    async with running_ui() as h:
        h.fake.emit(MessageReceived("bob", "b1" * 16, 1_700_000_000_000, "a\x1b[2Jb\x07c", "P"))
        await h.shows("<bob> a⟨U+001B⟩[2Jb⟨U+0007⟩c")


async def test_to_loads_persisted_history_once() -> None:
    hist = [
        HistoryEntry("bob", "in", "h1" * 16, 1_600_000_000_000, "old hello"),
        HistoryEntry("bob", "out", "h2" * 16, 1_600_000_001_000, "old reply", "delivered"),
    ]
    fake = FakeSession(histories={"bob": hist})
    async with running_ui(fake) as h:
        await h.line("/to bob")
        await h.shows("<bob> old hello")
        await h.shows("<alice> old reply  [delivered]")
        await h.line("/to carol")
        await h.line("/to bob")
        assert fake.calls.count(("history", "bob")) == 1
        assert h.ui.pane_text().count("old hello") == 1


async def test_multiline_paste_is_one_message() -> None:
    async with running_ui() as h:
        await h.line("/to bob")
        h.type(paste("line one\nline two\r\nline three"))
        await wait_until(lambda: h.ui.input.text.count("\n") == 2)
        assert h.fake.sent == []
        h.type(ENTER)
        await wait_until(lambda: h.fake.sent == [("bob", "line one\nline two\nline three")])
        await h.shows("<alice> line one\n              line two")


async def test_alt_enter_inserts_a_newline() -> None:
    async with running_ui() as h:
        await h.line("/to bob")
        h.type("a" + ALT_ENTER + "b")
        await wait_until(lambda: h.ui.input.text == "a\nb")
        h.type(ENTER)
        await wait_until(lambda: h.fake.sent == [("bob", "a\nb")])


async def test_input_history_with_up() -> None:
    async with running_ui() as h:
        await h.line("/to bob")
        h.type("first" + ENTER)
        await wait_until(lambda: len(h.fake.sent) == 1)
        # Enter resets the buffer, and prompt_toolkit loads the history back into it in a task started by the
        # next redraw: an Up before that finds nothing to recall (a person cannot type that fast; a loaded
        # CI machine delays the redraw).
        await wait_until(lambda: "first" in h.ui.input.buffer._working_lines, what="the history reloaded")
        h.type(UP)
        await wait_until(lambda: h.ui.input.text == "first")
        h.type(ENTER)
        await wait_until(lambda: len(h.fake.sent) == 2)


async def test_tab_completes_commands_and_names() -> None:
    async with running_ui() as h:
        h.fake.emit(Ready("alice", ALICE_FP))
        await wait_until(lambda: "carol" in h.ui.known_names())
        h.type("/wh" + TAB)
        await wait_until(lambda: h.ui.input.text == "/whois")
        h.type(" ca" + TAB)
        await wait_until(lambda: h.ui.input.text == "/whois carol")
        h.type(ENTER)
        await h.shows("carol offline: no key pinned yet")


async def test_tab_after_remove_offers_the_members_you_may_remove() -> None:
    # Found as a new user: Tab after "/remove #ops " offered yourself and the room's admins.
    async with running_ui() as h:
        h.fake.emit(Ready("alice", ALICE_FP))
        h.fake.emit(RoomChanged("#ops", "added", "bob", "alice", ("alice", "bob", "dave"), ("alice", "dave"), 2))
        await wait_until(lambda: "#ops" in h.ui.state.rooms)
        h.type("/remove #ops " + TAB)
        await wait_until(lambda: h.ui.input.text == "/remove #ops bob")


async def test_sign_in_holds_no_state_line_for_a_room_you_left() -> None:
    # --plain listed the rooms alice had left at sign-in; the full screen keeps no line for them either.
    async with running_ui() as h:
        h.fake.emit(Ready("alice", ALICE_FP))
        h.fake.emit(RoomChanged("#ops", "state", None, None, ("bob", "carol"), ("carol",), 5))
        h.fake.emit(RoomChanged("#dev", "state", None, None, ("alice", "bob"), ("alice",), 2))
        await wait_until(lambda: "#dev" in h.ui.state.rooms)
        assert "#ops" not in h.ui.state.windows and "#ops" not in h.ui.state.rooms
        assert [line.text for line in h.ui.state.window("#dev")] == ["#dev: 2 members: alice, bob"]


async def test_pageup_scrolls_back_and_new_messages_do_not_yank() -> None:
    async with running_ui() as h:
        await h.line("/to bob")
        for i in range(60):
            h.fake.emit(MessageReceived("bob", f"{i:032x}", 1_700_000_000_000, f"msg {i}", "P"))
        h.ui.app.invalidate()
        await wait_until(lambda: "msg 59" in _screen(h.ui))
        h.type(PAGE_UP)
        await wait_until(lambda: h.ui.pane.scrolled)
        h.ui.app.invalidate()
        await wait_until(lambda: "msg 59" not in _screen(h.ui) and "more below" in _screen(h.ui))
        top = h.ui.pane.top
        h.fake.emit(MessageReceived("bob", "f" * 32, 1_700_000_000_000, "newest", "P"))
        assert h.ui.pane.top == top
        h.ui.app.invalidate()
        await wait_until(lambda: "more below" in _screen(h.ui))
        assert "newest" not in _screen(h.ui)
        h.type(PAGE_DOWN * 10)
        await wait_until(lambda: not h.ui.pane.scrolled)
        h.ui.app.invalidate()
        await wait_until(lambda: "newest" in _screen(h.ui))


async def test_mouse_wheel_scrolls_the_pane() -> None:
    from prompt_toolkit.data_structures import Point
    from prompt_toolkit.mouse_events import MouseButton, MouseEvent, MouseEventType

    async with running_ui() as h:
        await h.line("/to bob")
        for i in range(60):
            h.fake.emit(MessageReceived("bob", f"{i:032x}", 1_700_000_000_000, f"msg {i}", "P"))
        h.ui.app.invalidate()
        await wait_until(lambda: "msg 59" in _screen(h.ui))

        def wheel(kind: MouseEventType) -> None:
            h.ui.pane.mouse_handler(MouseEvent(Point(0, 0), kind, MouseButton.NONE, frozenset()))

        wheel(MouseEventType.SCROLL_UP)
        assert h.ui.pane.scrolled
        wheel(MouseEventType.SCROLL_DOWN)
        assert not h.ui.pane.scrolled


async def test_pane_wraps_to_the_terminal_width() -> None:
    async with running_ui(size=(24, 40)) as h:
        await h.line("/to bob")
        h.fake.emit(MessageReceived("bob", "b" * 32, 1_700_000_000_000, "word " * 20, "P"))
        h.ui.app.invalidate()
        await wait_until(lambda: "<bob> word" in _screen(h.ui))
        assert all(len(row) <= 40 for row in _screen(h.ui).splitlines())
    async with running_ui(size=(50, 200)) as h:
        await h.line("/to bob")
        h.fake.emit(MessageReceived("bob", "b" * 32, 1_700_000_000_000, "word " * 20, "P"))
        h.ui.app.invalidate()
        await wait_until(lambda: ("word " * 20).strip() in _screen(h.ui))


async def test_clear_and_help() -> None:
    async with running_ui() as h:
        await h.line("/help")
        await h.shows("/verify NAME FINGERPRINT")
        await h.line("/clear")
        assert "/verify NAME" not in h.ui.pane_text()


async def test_mouse_toggle() -> None:
    async with running_ui() as h:
        assert h.ui.mouse
        await h.line("/mouse")
        assert not h.ui.mouse
        await h.shows("mouse off")


async def test_ctrl_c_quits_and_closes_the_session() -> None:
    async with running_ui() as h:
        h.type("some unsent text")
        assert await h.quit() == 0
        assert ("close", None) in h.fake.calls


async def test_ctrl_d_quits_only_on_an_empty_line() -> None:
    async with running_ui() as h:
        h.type("ab" + "\x01" + CTRL_D)  # Ctrl-A then Ctrl-D deletes a character
        await wait_until(lambda: h.ui.input.text == "b")
        assert not h.task.done()
        h.type("\x01" + CTRL_D)
        await wait_until(lambda: h.ui.input.text == "")
        h.type(CTRL_D)
        assert await asyncio.wait_for(h.task, 5) == 0


async def test_quit_command() -> None:
    async with running_ui() as h:
        h.type("/quit" + ENTER)
        assert await asyncio.wait_for(h.task, 5) == 0
        assert h.fake.closed.is_set()


async def test_session_failure_is_shown_and_gives_exit_code_1() -> None:
    from securechat.errors import ServerErrorReply

    fake = FakeSession(run_error=ServerErrorReply("replaced", "a new session started elsewhere"))
    async with running_ui(fake) as h:
        await h.shows("nothing more is sent or received in this window; /quit to leave")
        assert h.ui.status_text().startswith(" offline ")
        assert await h.quit() == 1


async def test_a_refusal_at_sign_in_ends_the_screen_with_status_1() -> None:
    """name_taken (issue 14, item 4): the screen does not stay open; the command line says why."""
    from securechat.errors import ServerErrorReply

    fake = FakeSession(run_error=ServerErrorReply("name_taken", "alice is registered with another key"))
    async with running_ui(fake) as h:
        assert await asyncio.wait_for(h.task, 5) == 1


async def test_contact_pinned_and_presence_lines() -> None:
    async with running_ui() as h:
        await h.line("/to bob")
        h.fake.emit(ContactPinned("bob", BOB_FP))
        await h.shows("pinned the key of bob: b0b0 b0b0")
        h.fake.emit(PresenceChanged("bob", False))
        await h.shows("bob is offline")


async def test_run_chat_ui_entry_point() -> None:
    fake = FakeSession()
    with create_pipe_input() as inp, create_app_session(input=inp, output=TerminalOutput()):
        task = asyncio.ensure_future(run_chat_ui(fake, first_run=True))
        await wait_until(lambda: fake.running.is_set())
        inp.send_text("/to bob\rhello\r")
        await wait_until(lambda: fake.sent == [("bob", "hello")])
        inp.send_text(CTRL_C)
        assert await asyncio.wait_for(task, 5) == 0
        assert fake.closed.is_set()


def test_no_color_is_monochrome(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    with create_pipe_input() as inp, create_app_session(input=inp, output=TerminalOutput()):
        ui = ChatUI(FakeSession())
        assert ui.app.color_depth == ColorDepth.DEPTH_1_BIT
        assert ui.app.style is not None
        attrs = ui.app.style.get_attrs_for_style_str("class:rejected")
        assert attrs.color in ("", None) and attrs.bold


# --- the real ClientSession against a real in-process ChatServer ----------------------------


async def test_real_session_against_real_server(tmp_path: Path) -> None:
    from securechat import crypto
    from securechat.client import ClientSession
    from securechat.client.home import ClientHome
    from tests.support.rawclient import clients, identity_key, running_server

    async with running_server(tmp_path / "server.db") as server:
        home = ClientHome(tmp_path / "home")
        identity = home.create_identity("alice", bits=2048)
        session = ClientSession(home.open_store("alice", identity), "127.0.0.1", server.port)
        bob_key = identity_key("bob")
        async with clients(server.port, "bob") as (bob,):
            with create_pipe_input() as inp, create_app_session(input=inp, output=TerminalOutput()):
                ui = ChatUI(session, first_run=True, monochrome=False)
                task = asyncio.ensure_future(ui.run())
                await wait_until(lambda: ui.state.connection == "online", 10, "online")
                assert " online │ alice " in ui.status_text()

                inp.send_text("/to bob\rhello bob\r")
                frame = await bob.recv_type("message", 10)
                env = frame["envelope"]
                opened = crypto.open_envelope(bob_key, "bob", identity.public_key, env, frame["from"])
                assert (frame["from"], opened.text) == ("alice", "hello bob")
                await bob.send_frame({"type": "received", "id": env["id"], "from": "alice"})
                await wait_until(lambda: "hello bob  [delivered]" in ui.pane_text(), 10, "delivered")

                # A tampered envelope from bob is shown as rejected, never as text.
                bad = crypto.seal_envelope(bob_key, identity.public_key, "bob", "alice", "tampered secret")
                ct = bytearray(b64decode(bad["ct"]))
                ct[0] ^= 1
                bad["ct"] = b64encode(bytes(ct))
                await bob.send_frame({"type": "send", "to": "alice", "envelope": bad})
                await wait_until(lambda: "rejected a message from bob" in ui.pane_text(), 10, "rejected")
                assert "tampered secret" not in ui.pane_text()

                good = crypto.seal_envelope(bob_key, identity.public_key, "bob", "alice", "hi alice")
                await bob.send_frame({"type": "send", "to": "alice", "envelope": good})
                await wait_until(lambda: "<bob> hi alice" in ui.pane_text(), 10, "bob's message")

                inp.send_text(CTRL_C)
                assert await asyncio.wait_for(task, 10) == 0
