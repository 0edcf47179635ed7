"""ChatState and its rendering: session events in, screen model out, no terminal."""

from __future__ import annotations

import weakref

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from prompt_toolkit.utils import get_cwidth

from securechat.commands.rooms import Seats
from securechat.commands.sanitize import sanitize
from securechat.commands.wording import pretty_fingerprint
from securechat.events import (
    Acked,
    ConnectionChanged,
    ContactPinned,
    ErrorReported,
    HistoryEntry,
    KeyChangedAlert,
    KeyGenerating,
    MessageReceived,
    MessageRejected,
    MessageSent,
    PresenceChanged,
    Ready,
    UserEntry,
    UsersListed,
)
from securechat.lineui import format_event as lineui_lines
from securechat.ui import render
from securechat.ui.state import MAX_LINES, STATUS_WINDOW, ChatState, Line
from securechat.ui.style import NAME_COLOURS, build_style, name_class, no_color
from tests.support.ui_fakes import FP_A, Clock, make_state, pane

FP_B = "b0b0" * 16
FP_B2 = "bad0" * 16
T0 = 1_700_000_000_000


def texts(state: ChatState, window: str | None = None) -> list[str]:
    lines = state.windows[state.current if window is None else window]
    return [line.text for line in lines]


def test_own_message_delivery_state_updates_in_place() -> None:
    s = make_state()
    s.switch("bob")
    s.apply(MessageSent("m1", "bob", T0, "hi", "P1"))
    assert s.by_id["m1"].status == "sending"
    assert "<alice> hi  [sending…]" in pane(s)
    s.apply(Acked("m1", "bob", "queued"))
    assert "<alice> hi  [queued]" in pane(s)
    s.apply(Acked("m1", "bob", "delivered"))
    s.apply(Acked("m1", "bob", "queued"))
    assert "<alice> hi  [delivered]" in pane(s)
    assert pane(s).count("hi") == 1


def test_a_room_messages_status_counts_members_and_says_when_nobody_else_is_in_it() -> None:
    s = make_state()
    s.switch("#ops")
    s.apply(MessageSent("r1", "#ops", T0, "hi all", "P1"))
    s.apply(Acked("r1", "#ops", "delivered", "bob", 1, 2))
    assert "<alice> hi all  [delivered 1/2]" in pane(s)
    s.apply(MessageSent("r2", "#ops", T0, "only me now", "P2"))
    s.apply(Acked("r2", "#ops", "delivered", "", 0, 0))  # routed to nobody: the only member
    assert "<alice> only me now  [no other members]" in pane(s)
    assert lineui_lines(Acked("r2", "#ops", "delivered", "", 0, 0)) == ["  (no other members in #ops)"]
    assert lineui_lines(Acked("r1", "#ops", "delivered", "bob", 1, 2)) == ["  (delivered 1/2 to #ops)"]


def test_incoming_time_is_the_signed_one_and_the_servers_is_kept() -> None:
    s = make_state()
    s.apply(MessageReceived("bob", "b1", T0, "late", "P", server_ts=T0 + 3_600_000))
    s.apply(MessageReceived("bob", "b2", T0, "no server time", "P"))
    lines = s.windows["bob"][-2:]
    assert [(line.ts, line.server_ts) for line in lines] == [(T0 / 1000, T0 / 1000 + 3600), (T0 / 1000, None)]


def test_ack_for_unknown_id_is_ignored() -> None:
    s = make_state()
    s.apply(Acked("nope", "bob", "delivered"))
    assert s.by_id == {}


def test_note_sent_does_not_duplicate_a_message_sent_event() -> None:
    s = make_state()
    s.switch("bob")
    s.apply(MessageSent("m1", "bob", T0, "hi", "P1"))
    s.note_sent("m1", "bob", "hi")
    s.note_sent("m2", "bob", "offline one")
    assert texts(s).count("hi") == 1
    assert s.by_id["m2"].status == "sending"
    s.apply(MessageSent("m2", "bob", T0, "offline one", "P2"))
    assert s.by_id["m2"].payload == "P2"
    assert texts(s).count("offline one") == 1


def test_msg_to_another_conversation_is_echoed_here_and_shares_state() -> None:
    s = make_state()
    s.switch("bob")
    s.apply(MessageSent("m1", "carol", T0, "psst", "P"))
    assert s.windows["carol"][-1] is s.windows["bob"][-1]
    s.apply(Acked("m1", "carol", "delivered"))
    assert s.windows["bob"][-1].status == "delivered"


def test_msg_to_another_conversation_names_it_where_it_is_echoed() -> None:
    # Found as a new user: "/msg #ops ping" typed in #dev showed "<carol> ping" in #dev, as if
    # it had been posted there; it names where it went, and only outside that conversation.
    s = make_state()
    s.switch("#dev")
    s.apply(MessageSent("m1", "#ops", T0, "ping", "P"))
    s.apply(MessageSent("m2", "#dev", T0, "here", "P"))
    here = pane(s)
    assert "<alice → #ops> ping" in here and "<alice> here" in here
    cache: render.RowCache = weakref.WeakKeyDictionary()  # the pane's cache: the same line, rows per window
    render.pane_rows(s, 80, cache)
    s.switch("#ops")
    assert "<alice> ping" in pane(s) and "→" not in pane(s)
    assert "→" not in "".join(render.plain(row) for row in render.pane_rows(s, 80, cache))
    s.switch("bob")
    s.apply(MessageSent("m3", "carol", T0, "psst", "P"))
    assert "<alice → carol> psst" in pane(s)


def test_unread_counts_and_switch_clears_them() -> None:
    s = make_state()
    s.switch("bob")
    for i in range(3):
        s.apply(MessageReceived("carol", f"c{i}", T0, f"m{i}", "P"))
    s.apply(MessageRejected("dave", None, "bad_signature"))
    s.apply(MessageReceived("bob", "b1", T0, "here", "P"))
    assert s.unread_summary() == [("carol", 3), ("dave", 1)]
    status = render.plain(render.status_bar(s, scrolled=False))
    assert "unread 4 (carol:3 dave:1)" in status
    s.switch("carol")
    assert s.unread_summary() == [("dave", 1)]
    assert texts(s)[-1] == "m2"


def test_leaving_the_status_window_keeps_welcome_lines() -> None:
    # The command layer opens bob's conversation for his first message (tests/test_commands_executor.py).
    s = make_state()
    s.info("welcome")
    s.switch("bob")
    s.apply(MessageReceived("bob", "b1", T0, "hi", "P"))
    assert s.current == "bob"
    assert texts(s) == ["welcome", "hi"]
    assert s.unread == {}
    s.switch("carol")
    s.switch("bob")
    assert texts(s) == ["welcome", "hi"]  # carried along once only


def test_a_msg_sent_from_the_status_window_is_not_carried_twice_into_its_conversation() -> None:
    """``/msg bob ...`` on the start screen shows the message there and in bob's window (one line object);
    leaving the start screen carries its lines into bob's window, which held that one already. Tried in
    tmux on a fresh install: alice's first message showed twice in bob's window once bob answered."""
    s = make_state()
    s.info("welcome")
    s.apply(MessageSent("m1", "bob", T0, "hello bob", "P1"))  # from the status window: it stays current
    assert s.current == STATUS_WINDOW
    s.switch("bob")
    assert texts(s) == ["welcome", "hello bob"]
    assert pane(s).count("hello bob") == 1


def test_rejected_message_shows_reason_and_never_text() -> None:
    s = make_state()
    s.switch("bob")
    s.apply(MessageRejected("bob", "x1", "decrypt_failed", "GCM tag", payload="PAYLOAD"))
    line = s.windows["bob"][-1]
    assert line.kind == "rejected"
    assert "!! rejected a message from bob: decrypt_failed (GCM tag)" in pane(s)
    assert "PAYLOAD" not in pane(s)
    s.toggle_raw()
    assert "PAYLOAD" in pane(s)
    rows = render.pane_rows(s, 80)
    assert any(frag[0] == "class:rejected" for row in rows for frag in row)


def test_key_change_banner_stays_until_contact_is_repinned() -> None:
    s = make_state()
    s.switch("bob")
    s.apply(KeyChangedAlert("bob", FP_B, FP_B2))
    assert "bob" in s.banners
    banner = render.plain(render.banner(s))
    assert "THE KEY OF BOB CHANGED" in banner
    assert "was  " + " ".join(["b0b0"] * 8) + "\n       " + " ".join(["b0b0"] * 8) in banner
    assert "now  " + " ".join(["bad0"] * 8) in banner
    assert all(len(row) <= 80 for row in banner.splitlines())
    assert "/trust bob" in banner
    for event in (
        MessageReceived("bob", "b1", T0, "x", "P"),
        ConnectionChanged("online"),
        ContactPinned("bob", FP_B2, "changed"),
    ):
        s.apply(event)
        assert "bob" in s.banners
    s.apply(ContactPinned("bob", FP_B2, "unverified"))
    assert s.banners == {}


def test_key_change_elsewhere_warns_in_current_window() -> None:
    s = make_state()
    s.switch("carol")
    s.apply(KeyChangedAlert("bob", FP_B, FP_B2))
    assert any("see the banner" in t for t in texts(s))
    assert s.windows["bob"][-1].kind == "warn"


def test_status_bar_fits_its_width_keeping_what_matters() -> None:
    # Found as a new user: with long room names in the unread list the bar ran past 80 columns and
    # at 40 the unread count (and PLAINTEXT, "more below") fell off its end.
    s = make_state()
    s.apply(ConnectionChanged("online"))
    s.rooms["#ops"] = Seats(tuple(f"m{i}" for i in range(256)))
    s.switch("#ops")
    long_rooms = [f"#{c}bcdefghijklmnopqrstuvwxyz012345" for c in "abcde"]
    s.unread = {room: 1 for room in long_rooms}
    whole = render.plain(render.status_bar(s, scrolled=True))
    assert "alice a1ce a1ce" in whole and all(f"{room}:1" in whole for room in long_rooms)
    for width in (80, 40):
        bar = render.plain(render.status_bar(s, scrolled=False, width=width))
        assert get_cwidth(bar) <= width, bar
        assert bar.startswith(" online │ ") and "→ #ops (256) │ unread 5" in bar, bar
    assert bar == " online │ → #ops (256) │ unread 5 "  # at 40 your own name gave way
    s.plaintext = True
    bar = render.plain(render.status_bar(s, scrolled=True, width=80))
    assert get_cwidth(bar) <= 80 and "PLAINTEXT: no TLS" in bar and "more below" in bar, bar
    s.rooms[long_rooms[0]] = Seats(("alice",), ("alice",))
    s.switch(long_rooms[0])
    bar = render.plain(render.status_bar(s, scrolled=False, width=60))  # its name cut, the prompt says it
    assert get_cwidth(bar) <= 60 and "unread 4" in bar and "PLAINTEXT: no TLS" in bar and "→ #abcdefghijklmn… │" in bar, bar
    s.plaintext = False
    s.switch("#ops")
    bar = render.plain(render.status_bar(s, scrolled=False, width=120))  # room for some of the list
    assert get_cwidth(bar) <= 120 and "alice a1ce a1ce" in bar and f"({long_rooms[1]}:1 …) " in bar
    s.unread = {long_rooms[0]: 2, "bob": 1}  # the short names after a long one still show
    assert render.plain(render.status_bar(s, scrolled=False, width=80)).endswith("│ unread 3 (bob:1 …) ")
    s.unread = {}
    for width in (None, 80):  # nothing unread: no unread part at all
        assert render.plain(render.status_bar(s, scrolled=False, width=width)).endswith("│ → #ops (256) ")


@pytest.mark.parametrize("width", [40, 30, 26])
def test_plaintext_is_the_last_thing_the_status_bar_gives_up(width: int) -> None:
    # Found as a new user: at 40 columns, with a long room name, PLAINTEXT fell off the bar's end
    # (it ran to 72 cells and the terminal cut it).
    s = make_state()
    s.apply(ConnectionChanged("reconnecting", retry_in=12))
    room = "#abcdefghijklmnopqrstuvwxyz012345"
    s.rooms[room] = Seats(("alice",), ("alice",))
    s.switch(room)
    s.plaintext, s.show_raw, s.unread = True, True, {"#x": 3}
    bar = render.plain(render.status_bar(s, scrolled=True, width=width))
    assert get_cwidth(bar) <= width and bar.startswith(" reconnecting │ ") and "│ PLAINTEXT" in bar, bar
    assert bar == (" reconnecting │ unread 3 │ PLAINTEXT " if width >= 37 else " reconnecting │ PLAINTEXT "), bar
    s.plaintext = False  # encrypted: what PLAINTEXT's room holds instead
    assert render.plain(render.status_bar(s, scrolled=True, width=40)) == " reconnecting │ unread 3 │ more below "


@pytest.mark.parametrize("width", range(9, 26))
def test_below_26_columns_plaintext_still_shows_whole(width: int) -> None:
    # Left alone twice as a note: below 26 columns " reconnecting │ PLAINTEXT " was cut by the terminal
    # at its right edge, PLAINTEXT first. The connection's state gives way before it does.
    s = make_state()
    s.apply(ConnectionChanged("reconnecting", retry_in=12))
    s.plaintext, s.show_raw, s.unread = True, True, {"#x": 3}
    bar = render.plain(render.status_bar(s, scrolled=True, width=width))
    assert get_cwidth(bar) <= width and "PLAINTEXT" in bar, bar
    assert bar == ("│ PLAINTEXT " if width >= 12 else "PLAINTEXT"), bar


def test_connection_states_in_status_bar() -> None:
    clock = Clock()
    s = ChatState(own_name="alice", fingerprint=FP_A, clock=clock)
    assert render.plain(render.status_bar(s, False)).startswith(" connecting │ alice a1ce a1ce")
    s.apply(ConnectionChanged("reconnecting", retry_in=2.5))
    assert "reconnecting in 3s" in render.plain(render.status_bar(s, False))
    clock.now += 2
    assert "reconnecting in 1s" in render.plain(render.status_bar(s, False))
    clock.now += 5
    assert "reconnecting in 0s" in render.plain(render.status_bar(s, False))
    s.apply(ConnectionChanged("online"))
    bar = render.plain(render.status_bar(s, True))
    assert bar.startswith(" online ")
    assert "(no conversation)" in bar
    assert "more below" in bar


def test_ready_intro_only_on_first_run_and_once() -> None:
    s = make_state()
    s.apply(Ready("alice", FP_A, new=False))
    assert texts(s) == []
    s.apply(Ready("alice", FP_A, new=True))
    s.apply(Ready("alice", FP_A, new=True))
    joined = "\n".join(texts(s))
    assert joined.count("first session") == 1
    assert " ".join(["a1ce"] * 8) in joined
    assert "/verify NAME FINGERPRINT" in joined


def test_users_listed_prints_nothing_and_names_complete() -> None:
    # The answer to /users is the command layer's (tests/test_commands_executor.py).
    s = make_state()
    s.apply(UsersListed((UserEntry("bob", True), UserEntry("carol", False))))
    assert texts(s) == []
    assert s.known_names(["alice", "bob", "carol"]) == ["bob", "carol"]
    s.switch("dave")
    s.apply(KeyChangedAlert("erin", FP_B, FP_B2))
    assert s.known_names(["bob"]) == ["bob", "dave", "erin"]


def test_presence_error_keygen_and_pinned_lines() -> None:
    s = make_state()
    s.switch("bob")
    s.apply(MessageSent("m1", "bob", T0, "hi", "P"))
    s.apply(MessageSent("m2", "bob", T0, "still there?", "P"))
    s.apply(PresenceChanged("bob", False))
    s.apply(ErrorReported("queue_full", "bob's queue is full", msg_id="m1", retried=True))  # the outbox resends it
    s.apply(ErrorReported("unknown_user", "no such user", msg_id="m2"))  # given up
    s.apply(KeyGenerating("alice", 3072))
    s.apply(ContactPinned("bob", FP_B))
    s.apply(PresenceChanged("zed", True))  # no window for zed: none is created
    assert "zed" not in s.windows
    out = pane(s)
    assert "bob is offline" in out
    assert "hi  [retrying: queue_full]" in out and "still there?  [failed: unknown_user]" in out
    assert "-!- queue_full: bob's queue is full" in out
    assert "generating a 3072-bit key for alice" in out
    assert f"pinned the key of bob: {pretty_fingerprint(FP_B)} (unverified)" in out


def test_history_goes_above_and_is_deduplicated() -> None:
    s = make_state()
    s.switch("bob")
    s.apply(MessageReceived("bob", "live", T0, "live one", "P"))
    added = s.add_history(
        "bob",
        [
            HistoryEntry("bob", "in", "h1", T0 - 5000, "old in"),
            HistoryEntry("bob", "out", "h2", T0 - 4000, "old out", "queued"),
            HistoryEntry("bob", "in", "live", T0, "live one"),
        ],
    )
    assert added == 2
    assert texts(s)[-3:] == ["old in", "old out", "live one"]
    s.apply(Acked("h2", "bob", "delivered"))
    assert s.by_id["h2"].status == "delivered"


def test_a_rooms_history_names_each_writer() -> None:
    # Found as a new user: after a restart, /to #ops showed "<#ops> I can review it now" for
    # every member's message (the room, not its writer, as the sender).
    s = make_state()
    s.switch("#ops")
    s.add_history(
        "#ops",
        [
            HistoryEntry("#ops", "in", "r1", T0 - 5000, "I can review it now", sender="bob"),
            HistoryEntry("#ops", "out", "r2", T0 - 4000, "thanks", "delivered 2/2"),
        ],
    )
    assert [(line.sender, line.text) for line in s.window("#ops")[-2:]] == [
        ("bob", "I can review it now"),
        ("alice", "thanks"),
    ]
    assert "<bob> I can review it now" in pane(s) and "<#ops>" not in pane(s)


def test_clear_only_clears_the_current_window() -> None:
    s = make_state()
    s.switch("bob")
    s.apply(MessageReceived("carol", "c1", T0, "hey", "P"))
    s.info("noise")
    s.clear()
    assert texts(s) == []
    assert texts(s, "carol") == ["hey"]


def test_lines_are_bounded() -> None:
    s = make_state()
    s.switch("bob")
    for i in range(MAX_LINES + 50):
        s.apply(MessageSent(f"m{i}", "bob", T0, f"t{i}", "P"))
    assert len(s.windows["bob"]) == MAX_LINES
    assert "m0" not in s.by_id and f"m{MAX_LINES + 49}" in s.by_id


def test_sanitize_marks_terminal_controls_keeps_newlines() -> None:
    assert sanitize("a\x1b[31mb\x07c\r\nd\te\x9bf") == "a⟨U+001B⟩[31mb⟨U+0007⟩c\nd    e⟨U+009B⟩f"


@given(st.text(max_size=300), st.integers(min_value=1, max_value=200), st.integers(min_value=0, max_value=40))
@example("0\N{HOT DOG}", 2, 1)  # a 2-cell row: no room for an indent and a wide character
def test_wrap_rows_fit_and_keep_every_character(text: str, width: int, indent: int) -> None:
    text = sanitize(text)
    rows = render.wrap([("", text)], width, indent)
    for row in rows:
        cells = sum(get_cwidth(ch) for ch in render.plain(row))
        assert cells <= max(width, max((get_cwidth(ch) for ch in text), default=1))
    joined = "".join(render.plain(row).lstrip(" ") for row in rows)
    assert joined.replace(" ", "") == text.replace("\n", "").replace(" ", "")


@given(
    st.lists(st.text(alphabet="abcdefgh/'", min_size=1, max_size=12), min_size=1, max_size=40),
    st.integers(min_value=30, max_value=120),
    st.integers(min_value=0, max_value=14),
)
def test_wrap_breaks_between_words_and_keeps_them_whole(words: list[str], width: int, indent: int) -> None:
    text = " ".join(words)
    rows = [render.plain(row) for row in render.wrap([("", text)], width, indent)]
    assert " ".join(rows).split() == words
    assert all(len(row) <= width for row in rows)


def test_wrapped_continuation_is_indented_under_the_text() -> None:
    s = make_state()
    s.switch("bob")
    s.apply(MessageReceived("bob", "b1", T0, "word " * 30, "P"))
    rows = [render.plain(r) for r in render.pane_rows(s, 40)]
    assert len(rows) > 2
    assert all(len(r) <= 40 for r in rows)
    assert rows[1].startswith(" " * 12) and not rows[1].startswith(" " * 13)


def test_line_render_kinds() -> None:
    kinds = {
        "info": "--- x",
        "hint": "-!- x",
        "warn": "-!- x",
        "rejected": "!! x",
    }
    for kind, prefix in kinds.items():
        ((frags, _indent),) = render.render_line(Line(kind, 0, "x"), show_raw=False, now=0)  # type: ignore[arg-type]
        assert render.plain(frags).endswith(prefix)


def test_name_colour_is_stable_and_not_red() -> None:
    assert name_class("bob") == name_class("bob")
    assert len({name_class(f"user{i}") for i in range(200)}) == len(NAME_COLOURS)
    assert not any("red" in colour for colour in NAME_COLOURS)


def test_no_color_detection_and_monochrome_style() -> None:
    assert no_color({"NO_COLOR": "1"})
    assert not no_color({"NO_COLOR": ""})
    assert not no_color({})
    mono = build_style(True).get_attrs_for_style_str("class:banner " + name_class("bob"))
    assert mono.color in ("", None) and mono.bgcolor in ("", None) and mono.reverse
    colour = build_style(False).get_attrs_for_style_str("class:rejected")
    assert colour.color == "ansired"


def test_status_window_label() -> None:
    s = make_state()
    assert s.current == STATUS_WINDOW
    s.switch("bob")
    assert "→ bob" in render.plain(render.status_bar(s, False))


def test_a_room_has_its_window_unread_count_member_count_and_completions() -> None:
    from securechat.commands.grammar import completions
    from securechat.events import RoomChanged as Changed

    state = ChatState(own_name="alice", fingerprint="ab" * 32)
    state.apply(Changed("#ops", "created", "alice", "alice", ("alice",), ("alice",), 0, "invite"))
    state.apply(Changed("#ops", "added", "bob", "alice", ("alice", "bob"), ("alice",), 1, "invite"))
    state.apply(MessageReceived("bob", "ab" * 16, 1_000, "hi all", "P", None, "#ops"))
    state.apply(MessageReceived("bob", "cd" * 16, 2_000, "just you", "P"))
    # The room's changes and message count for the room (not for bob, who wrote it).
    assert state.unread == {"#ops": 3, "bob": 1}
    assert "unread 4 (#ops:3 bob:1)" in render.plain(render.status_bar(state, False))
    state.switch("#ops")
    assert "→ #ops (2) " in render.plain(render.status_bar(state, False))  # the room and its members
    assert [line.text for line in state.window("#ops")] == ["alice created #ops (invite)", "alice added bob to #ops",
                                                            "hi all"]
    names = state.known_names(["bob", "carol"])
    assert names == ["#ops", "bob", "carol"]
    assert completions("/remove #ops ", names, state.rooms, "alice") == [("bob", 0)]  # not herself, an admin
    assert completions("/admin #ops ", names, state.rooms, "alice") == [("bob", 0)]
    assert completions("/add #ops ", names, state.rooms, "alice") == [("carol", 0)]
    assert completions("/leave #o", names, state.rooms) == [("#ops", -2)]
    assert completions("/to #", names, state.rooms) == [("#ops", -1)]
    state.apply(Changed("#ops", "removed", "alice", "bob", ("bob",), ("bob",), 2, "invite"))
    assert "#ops" not in state.rooms and state.where() == "#ops"  # no longer ours: no count, not completed


def test_join_completes_the_open_rooms_that_rooms_listed() -> None:
    # Found as a new user: /rooms showed "#dev (open, 2)", then "/join #d" and Tab offered nothing.
    from securechat.commands.grammar import completions
    from securechat.events import RoomListing, RoomsListed

    state = ChatState(own_name="alice", fingerprint="ab" * 32)
    assert completions("/join #d", state.known_names(["bob"]), state.rooms) == []
    state.apply(RoomsListed((RoomListing("#dev", "open", False, 2), RoomListing("#ops", "invite", False, 3))))
    assert completions("/join #d", state.known_names(["bob"]), state.rooms) == [("#dev", -2)]
    assert completions("/join #", state.known_names(["bob"]), state.rooms) == [("#dev", -1)]  # not invite ones


def test_the_last_admin_leaving_is_said_to_the_members_left() -> None:
    # Found as a new user: carol saw only "bob left #dev" when #dev's last admin left, and later
    # every /add and /remove was refused without her knowing why.
    from securechat.events import RoomChanged as Changed

    state = ChatState(own_name="carol", fingerprint="ab" * 32)
    state.apply(Changed("#dev", "left", "bob", "bob", ("carol",), (), 3, "open"))
    state.apply(Changed("#ops", "left", "bob", "bob", ("alice", "carol"), (), 5, "invite"))
    state.apply(Changed("#ops", "left", "dave", "dave", ("alice", "carol"), ("alice",), 6, "invite"))
    assert [line.text for line in state.window("#dev")] == [
        "bob left #dev, its last admin: nobody can remove a member (anyone may still join) any more"
    ]
    assert [line.text for line in state.window("#ops")] == [
        "bob left #ops, its last admin: nobody can add or remove a member any more",
        "dave left #ops",  # an admin is still there
    ]
