"""The executor: commands over a SessionAPI, and what it keeps for every front end."""

from __future__ import annotations

from pathlib import Path

import pytest

from securechat.commands import Executor
from securechat.commands import grammar as g
from securechat.commands.executor import PAYLOAD_CHARS_KEPT, PAYLOADS_KEPT
from securechat.commands.outcomes import (
    ContactShown,
    Failed,
    Local,
    Opened,
    Said,
    Sent,
    Switched,
    Trusted,
    UsersShown,
    Verified,
)
from securechat.commands.rooms import Leave, Members, Remove
from securechat.commands.roomwording import last_admin_line, remove_yourself
from securechat.commands.wording import (
    BACK_ONLINE,
    NO_CONVERSATION,
    NO_MORE_USERS,
    OFFLINE_USERS,
    RECONNECTING,
    describe,
    help_lines,
    no_payloads,
    offline_first_message,
    payloads_written,
)
from securechat.errors import RequestUnanswered, ServerErrorReply, SessionClosed
from securechat.events import (
    ConnectionChanged,
    ContactInfo,
    ContactPinned,
    ErrorReported,
    HistoryEntry,
    KeyChangedAlert,
    MessageReceived,
    MessageRejected,
    PresenceChanged,
    UserEntry,
    UsersListed,
)
from tests.support.ui_fakes import ALICE_FP, BOB_FP, BOB_NEW_FP, FakeSession

T0 = 1_700_000_000_000


def executor(
    fake: FakeSession | None = None, front_end: g.FrontEnd = g.PLAIN
) -> tuple[Executor, FakeSession]:
    fake = fake or FakeSession()
    ex = Executor(fake, front_end)
    fake.add_listener(ex.observe)
    return ex, fake


async def test_plain_text_needs_a_conversation_and_goes_to_it() -> None:
    ex, fake = executor()
    assert await ex.execute(g.Say("hi")) == [Said((NO_CONVERSATION,), "hint")]
    assert fake.sent == []
    await ex.execute(g.To("bob"))
    [sent] = await ex.execute(g.Say("hi"))
    assert isinstance(sent, Sent) and (sent.to, sent.text) == ("bob", "hi")
    assert fake.sent == [("bob", "hi")]


async def test_msg_does_not_switch() -> None:
    ex, fake = executor()
    await ex.execute(g.To("bob"))
    await ex.execute(g.Msg("carol", "psst"))
    assert ex.current == "bob"
    assert fake.sent == [("carol", "psst")]


async def test_to_brings_the_history_the_first_time_only() -> None:
    hist = [HistoryEntry("bob", "in", "h1", T0, "old")]
    ex, fake = executor(FakeSession(histories={"bob": hist}))
    fake.emit(PresenceChanged("bob", False))
    assert await ex.execute(g.To("bob")) == [Switched("bob", tuple(hist), False)]
    await ex.execute(g.To("carol"))
    assert await ex.execute(g.To("bob")) == [Switched("bob", (), False)]
    assert fake.calls.count(("history", "bob")) == 1


async def test_a_broken_history_still_switches() -> None:
    ex, fake = executor()

    def broken(peer: str, limit: int = 200) -> list[HistoryEntry]:
        raise OSError("unreadable")

    fake.history = broken  # type: ignore[method-assign]
    [switched] = await ex.execute(g.To("bob"))
    assert isinstance(switched, Switched) and switched.history_error == "internal error: OSError: unreadable"
    assert ex.current == "bob"


async def test_whois_asks_the_server_when_online_and_reads_the_pin_offline() -> None:
    ex, fake = executor(FakeSession(server_keys={"bob": BOB_FP}))
    fake.emit(PresenceChanged("bob", True))
    assert await ex.execute(g.Whois("bob")) == [
        ContactShown(ContactInfo("bob", BOB_FP, "unverified"), True, asked=True)
    ]
    assert ("lookup", "bob") in fake.calls
    fake.go_offline()
    assert await ex.execute(g.Whois("bob")) == [
        ContactShown(ContactInfo("bob", BOB_FP, "unverified"), None, asked=False)
    ]
    assert fake.calls.count(("lookup", "bob")) == 1


async def test_whois_falls_back_when_the_connection_goes_while_asking() -> None:
    ex, fake = executor(FakeSession(contacts={"bob": ContactInfo("bob", BOB_FP, "verified")}))

    async def gone(name: str) -> ContactInfo:
        raise SessionClosed("the connection to the server was lost")

    fake.lookup = gone  # type: ignore[method-assign]
    [shown] = await ex.execute(g.Whois("bob"))
    assert shown == ContactShown(ContactInfo("bob", BOB_FP, "verified"), None, asked=False)


async def test_whois_of_an_unknown_user_fails_with_the_servers_answer() -> None:
    ex, _fake = executor()
    [failed] = await ex.execute(g.Whois("nobody"))
    assert isinstance(failed, Failed) and isinstance(failed.error, ServerErrorReply)
    assert failed.command == g.Whois("nobody")


async def test_users_answer_is_shown_only_when_asked_for() -> None:
    ex, fake = executor()
    listing = UsersListed((UserEntry("bob", True), UserEntry("carol", False)))
    assert ex.observe(listing).outcomes == ()
    assert ex.online == {"bob": True, "carol": False}
    [shown] = await ex.execute(g.Users())  # the answer to the request, not the event
    assert isinstance(shown, UsersShown) and [u.name for u in shown.users] == ["alice", "bob", "carol"]
    assert fake.calls.count(("list_users", None)) == 1
    assert ex.observe(listing).outcomes == ()  # one answer per /users
    fake.go_offline()
    [failed] = await ex.execute(g.Users())
    assert isinstance(failed, Failed) and isinstance(failed.error, SessionClosed)
    assert ex.observe(listing).outcomes == ()  # the failed request does not claim a later listing


async def test_users_outcome_is_the_commands_not_the_events() -> None:
    ex, fake = executor()
    shown: list[object] = []
    fake.listeners.insert(0, lambda event: shown.extend(ex.observe(event).outcomes))
    fake.listeners.remove(ex.observe)
    page = await ex.execute(g.Users())
    assert page == [UsersShown(tuple(UserEntry(n, on) for n, on in sorted(fake.users.items())))]
    assert shown == []  # the page is the command's outcome; the event only updates who is online


def test_presence_is_tracked() -> None:
    ex, _fake = executor()
    ex.observe(PresenceChanged("zed", True))
    ex.observe(PresenceChanged("bob", False))
    assert ex.online == {"zed": True, "bob": False}


def test_the_first_incoming_message_opens_its_conversation() -> None:
    ex, _fake = executor()
    assert ex.observe(MessageRejected("mallory", None, "bad_signature")).outcomes == (Opened("mallory"),)
    assert ex.current == "mallory"
    assert ex.observe(MessageReceived("bob", "b1", T0, "hi", "P")).outcomes == ()
    assert ex.current == "mallory"


async def test_a_repeated_key_change_alert_is_told_once_until_trusted() -> None:
    ex, _fake = executor(FakeSession(contacts={"bob": ContactInfo("bob", BOB_FP, "changed", BOB_NEW_FP)}))
    alert = KeyChangedAlert("bob", BOB_FP, BOB_NEW_FP)
    assert ex.observe(alert).show
    assert not ex.observe(alert).show
    assert ex.observe(KeyChangedAlert("bob", BOB_FP, "cafe" * 16)).show  # another new key: news
    [trusted] = await ex.execute(g.Trust("bob"))
    assert trusted == Trusted(
        ContactInfo("bob", BOB_FP, "changed", BOB_NEW_FP), ContactInfo("bob", BOB_NEW_FP, "unverified")
    )
    assert ex.observe(alert).show
    assert not ex.observe(alert).show
    assert ex.observe(ContactPinned("bob", BOB_NEW_FP, "changed")).show
    assert not ex.observe(alert).show  # a pin that is still "changed" does not end the alert
    ex.observe(ContactPinned("bob", BOB_NEW_FP, "verified"))
    assert ex.observe(alert).show


async def test_verify_says_whether_anything_was_pinned() -> None:
    ex, _fake = executor(FakeSession(contacts={"bob": ContactInfo("bob", BOB_FP, "unverified")}))
    assert await ex.execute(g.Verify("bob", BOB_FP)) == [Verified("bob", True, True)]
    assert await ex.execute(g.Verify("bob", BOB_NEW_FP)) == [Verified("bob", False, True)]
    assert await ex.execute(g.Verify("carol", BOB_FP)) == [Verified("carol", False, False)]


async def test_fingerprint_and_help() -> None:
    ex, _fake = executor(front_end=g.FULL_SCREEN)
    [said] = await ex.execute(g.Fingerprint())
    assert isinstance(said, Said) and said.lines[0] == "your fingerprint (alice):"
    assert ALICE_FP[:4] in said.lines[1]
    assert await ex.execute(g.Help()) == [Said(tuple(help_lines(g.FULL_SCREEN)))]


@pytest.mark.parametrize("command", [g.Raw(), g.Clear(), g.Quit(), g.Mouse()])
async def test_front_end_actions(command: g.Raw | g.Clear | g.Quit | g.Mouse) -> None:
    ex, _fake = executor(front_end=g.FULL_SCREEN)
    assert await ex.execute(command) == [Local(command)]


async def test_a_command_of_another_front_end_is_a_clear_hint() -> None:
    ex, _fake = executor(front_end=g.PLAIN)
    [said] = await ex.execute(g.Mouse())
    assert isinstance(said, Said) and said.level == "hint"
    assert said.lines[0].startswith("/mouse works only in the full-screen UI")
    assert await ex.execute(g.Raw()) == [Local(g.Raw())]


async def test_any_failure_is_an_outcome_not_an_exception() -> None:
    ex, fake = executor()

    def broken(name: str) -> ContactInfo:
        raise RuntimeError("bug")

    fake.contact = broken  # type: ignore[method-assign]
    [failed] = await ex.execute(g.Trust("bob"))
    assert isinstance(failed, Failed) and isinstance(failed.error, RuntimeError)
    await ex.execute(g.To("bob"))
    fake.changed.add("bob")
    [failed] = await ex.execute(g.Say("x"))
    assert isinstance(failed, Failed) and failed.command == g.Msg("bob", "x")


async def test_refresh_asks_for_the_directory_and_shows_nothing() -> None:
    ex, fake = executor()
    shown: list[object] = []
    fake.listeners[:] = [lambda event: shown.extend(ex.observe(event).outcomes)]
    assert await ex.refresh() == []
    assert shown == [] and ex.online["bob"] is True
    fake.go_offline()
    [failed] = await ex.refresh()
    assert isinstance(failed, Failed) and failed.command == g.Users()


# --- issue 14: what a newcomer trips over ------------------------------------------------------


async def test_to_asks_the_server_first_and_refuses_an_unknown_name() -> None:
    ex, fake = executor()
    [failed] = await ex.execute(g.To("zed"))
    assert isinstance(failed, Failed) and getattr(failed.error, "code", None) == "unknown_user"
    assert describe(failed) == [("hint", "no such user: zed (/users lists who is registered)")]
    assert ex.current is None and ("lookup", "zed") in fake.calls
    [switched] = await ex.execute(g.To("bob"))
    assert isinstance(switched, Switched) and switched.checked and ex.current == "bob"


async def test_to_while_offline_switches_and_says_it_was_not_checked() -> None:
    ex, _fake = executor(FakeSession(connected=False))
    [switched] = await ex.execute(g.To("zed"))
    assert isinstance(switched, Switched) and not switched.checked
    assert ("hint", "offline: the server could not be asked whether zed exists") in describe(switched)


@pytest.mark.parametrize(
    "command",
    [g.To("alice"), g.Whois("alice"), g.Msg("alice", "hi"), g.Trust("alice"), g.Verify("alice", ALICE_FP)],
)
async def test_commands_about_yourself_are_refused_locally(command: g.Command) -> None:
    ex, fake = executor()
    [said] = await ex.execute(command)
    name = g.slash_name(command)
    assert said == Said(
        (f"that is you: /{name} is for someone else (/fingerprint shows your own key)",), "hint"
    )
    assert fake.calls == [] and fake.sent == [] and ex.current is None


async def test_users_offline_is_answered_at_once() -> None:
    ex, fake = executor()
    fake.go_offline()  # the connection was lost (at start, /users waits for the first connection)
    [failed] = await ex.execute(g.Users())
    assert isinstance(failed, Failed) and isinstance(failed.error, SessionClosed)
    assert describe(failed) == [("hint", OFFLINE_USERS)]
    assert ("list_users", None) not in fake.calls  # not even asked: no wait for a timeout
    [first] = await ex.execute(g.Msg("carol", "hi"))  # no key for carol yet: it needs the server
    assert describe(first) == [("hint", 'not sent to carol ("hi"): ' + offline_first_message("carol"))]
    assert fake.sent == [] and ("lookup", "carol") not in fake.calls
    fake.connected = True
    fake.emit(ConnectionChanged("online"))
    [shown] = await ex.execute(g.Users())
    assert isinstance(shown, UsersShown) and ("list_users", None) in fake.calls


async def test_users_pages_with_plus_and_narrows_with_a_prefix() -> None:
    """Issue 13, item 2: a page of 200 at a time, `/users +` for the next, `/users PREFIX`."""
    ex, fake = executor()
    fake.users.update({f"u{i:03d}": False for i in range(450)})
    pages = [await ex.execute(g.Users(more=n > 0)) for n in range(3)]
    shown = [page[0] for page in pages]
    assert all(isinstance(s, UsersShown) for s in shown)
    assert [len(s.users) for s in shown] == [200, 200, 53]  # alice, bob, carol and 450
    assert [s.more for s in shown] == [True, True, False]
    names = [u.name for s in shown for u in s.users]
    assert names == sorted(fake.users) and len(set(names)) == len(names)
    assert describe(shown[0])[0][1].startswith("200 users (2 online), and more (/users + for the next): alice, ")
    [done] = await ex.execute(g.Users(more=True))
    assert describe(done) == [("hint", NO_MORE_USERS)]
    assert describe(shown[2])[0][1].startswith("53 users (0 online), the last ones: u397 (offline), ")
    [narrow] = await ex.execute(g.Users("u44"))
    assert isinstance(narrow, UsersShown) and [u.name for u in narrow.users] == [f"u44{i}" for i in range(10)]
    assert describe(narrow) == [("info", "10 registered starting with 'u44', 0 online: " + ", ".join(
        f"u44{i} (offline)" for i in range(10)))]


async def test_a_failed_list_at_login_is_told_once_and_not_asked_again() -> None:
    """A server whose `users` answer breaks the connection (too large for a frame) made the UI,
    which listed at every login, reconnect forever: after one failure the login stops asking."""
    ex, fake = executor()
    fake.list_error = RequestUnanswered("the connection to the server was lost")
    [failed] = await ex.refresh()
    assert isinstance(failed, Failed)
    assert await ex.refresh() == []  # the next login: not asked
    assert fake.calls.count(("list_users", None)) == 1
    fake.list_error = ServerErrorReply("rate_limited", "too many lists")
    [refused] = await ex.execute(g.Users())  # /users still asks, and says why it failed
    assert isinstance(refused, Failed) and fake.calls.count(("list_users", None)) == 2


def test_why_the_connection_is_down_is_told_once_per_cause() -> None:
    ex, _fake = executor()
    refused = "cannot connect to 127.0.0.1:9: connection refused (is the server running, and on this port?)"
    seen = [ex.observe(ConnectionChanged("reconnecting", 1.0, refused)) for _ in range(3)]
    assert [s.outcomes for s in seen] == [(Said((f"{refused}; retrying until it answers",), "warn"),), (), ()]
    assert all(s.show for s in seen)  # the status bar still counts down
    assert ex.observe(ConnectionChanged("connecting")).outcomes == ()
    other = ex.observe(ConnectionChanged("reconnecting", 2.0, "the server closed the connection"))
    assert other.outcomes == (Said(("the server closed the connection; retrying until it answers",), "warn"),)
    assert ex.observe(ConnectionChanged("online")).outcomes == (Said((BACK_ONLINE,)),)
    assert ex.observe(ConnectionChanged("online")).outcomes == ()  # nothing was said meanwhile
    again = ex.observe(ConnectionChanged("reconnecting", 1.0, refused))
    assert again.outcomes  # the same cause after a success is news again


def test_a_fatal_error_shown_is_not_said_again_by_the_line_about_the_reconnect() -> None:
    """The front end shows the server's fatal error ("the server closed the connection: unavailable: ..."); the
    reconnect that follows says only that it reconnects, not "closed the connection (unavailable)" again.
    A later cause is told in full, as before."""
    ex, _fake = executor()
    assert ex.observe(ErrorReported("unavailable", "this node lost the state the nodes share", fatal=True)).show
    closed = ex.observe(ConnectionChanged("reconnecting", 0.0, "the server closed the connection (unavailable)"))
    assert closed.outcomes == (Said((RECONNECTING,), "warn"),)
    assert ex.observe(ConnectionChanged("connecting")).outcomes == ()
    refused = "cannot connect to 127.0.0.1:9: connection refused (is the server running, and on this port?)"
    later = ex.observe(ConnectionChanged("reconnecting", 1.0, refused))
    assert later.outcomes == (Said((f"{refused}; retrying until it answers",), "warn"),)
    ex.observe(ErrorReported("rate_limited", "slow down"))  # not fatal: the next drop is told in full
    ex.observe(ConnectionChanged("online"))
    dropped = ex.observe(ConnectionChanged("reconnecting", 1.0, "the server closed the connection"))
    assert dropped.outcomes == (Said(("the server closed the connection; retrying until it answers",), "warn"),)


@pytest.mark.parametrize("front_end", [g.PLAIN, g.FULL_SCREEN, g.JSON])
async def test_verify_and_trust_are_said_once(front_end: g.FrontEnd) -> None:
    """After /verify, no second line "pinned the key of bob ... (verified)" (issue 14, item 9)."""
    fake = FakeSession(contacts={"bob": ContactInfo("bob", BOB_FP, "changed", BOB_NEW_FP)})
    ex = Executor(fake, front_end)
    seen: list[object] = []
    fake.add_listener(lambda event: seen.append((event, ex.observe(event))))
    await ex.execute(g.Trust("bob"))
    await ex.execute(g.Verify("bob", BOB_NEW_FP))
    pinned = [(event, s.show) for event, s in seen if isinstance(event, ContactPinned)]
    assert [e.trust for e, _ in pinned] == ["unverified", "verified"]
    assert all(show == (front_end == g.JSON) for _, show in pinned)  # --json prints every event
    # A pin that no command of ours caused is shown.
    fake.emit(ContactPinned("carol", BOB_FP))
    assert seen[-1][1].show  # type: ignore[index]


async def test_raw_file_writes_the_payloads_received_in_this_conversation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ex, fake = executor()
    assert await ex.execute(g.Raw("none.txt")) == [Said((NO_CONVERSATION,), "hint")]
    await ex.execute(g.To("bob"))
    assert await ex.execute(g.Raw("none.txt")) == [Said((no_payloads("bob"),), "hint")]
    for n, sender in enumerate(["bob", "carol", "bob"]):
        fake.emit(MessageReceived(sender, f"{n:032x}", T0, "hi", f"PAYLOAD-{sender}-{n}"))
    [said] = await ex.execute(g.Raw("bob.txt"))
    assert said == Said(payloads_written(2, "bob", "bob.txt", "alice"))
    assert (tmp_path / "bob.txt").read_text() == "PAYLOAD-bob-0\nPAYLOAD-bob-2\n"
    assert (tmp_path / "bob.txt").stat().st_mode & 0o777 == 0o600
    [again] = await ex.execute(g.Raw("bob.txt"))  # never overwrites
    assert again == Said(("bob.txt exists already: give a new file name",), "hint")
    assert (tmp_path / "bob.txt").read_text() == "PAYLOAD-bob-0\nPAYLOAD-bob-2\n"


async def test_raw_file_in_a_room_writes_the_rooms_payloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Found as a new user: /raw FILE in #qa said "no message from #qa arrived in this session"
    # after two had (the payloads were kept by sender); the README's room /raw and decrypt.
    monkeypatch.chdir(tmp_path)
    ex, fake = executor()
    fake.emit(MessageReceived("bob", "1" * 32, T0, "in the room", "PAYLOAD-room", room="#qa"))
    fake.emit(MessageReceived("bob", "2" * 32, T0, "to alice", "PAYLOAD-direct"))
    await ex.execute(g.To("#qa"))
    [said] = await ex.execute(g.Raw("qa.txt"))
    assert said == Said(payloads_written(1, "#qa", "qa.txt", "alice"))
    assert (tmp_path / "qa.txt").read_text() == "PAYLOAD-room\n"
    await ex.execute(g.To("bob"))
    await ex.execute(g.Raw("bob.txt"))
    assert (tmp_path / "bob.txt").read_text() == "PAYLOAD-direct\n"  # not the room's


async def test_to_a_room_you_left_says_nothing_typed_there_is_sent() -> None:
    # Found as a new user: /to #ops after leaving it switched without a word, and each line typed
    # there then came back "not sent to #ops (...): not_member".
    ex, fake = executor()
    await fake.rooms.create("#ops", open_room=False)
    await fake.rooms.create("#dev", open_room=True)
    [switched] = await ex.execute(g.To("#ops"))
    assert switched == Switched("#ops", (), None, None, True)  # a member: no hint
    for room, back in (("#ops", "an admin can add you again"), ("#dev", "/join #dev to come back")):
        await fake.rooms.leave(room)
        outcomes = await ex.execute(g.To(room))
        assert [type(o) for o in outcomes] == [Switched, Said] and ex.current == room
        assert outcomes[1] == Said((f"you are not a member of {room}: what you type here is not sent ({back})",), "hint")


@pytest.mark.parametrize("front_end", [g.PLAIN, g.FULL_SCREEN, g.JSON])
async def test_the_last_admin_is_told_once_before_leaving_a_room_others_are_in(front_end: g.FrontEnd) -> None:
    # Found as a new user: the only admin's /leave froze an invite room for good without a word
    # (nobody can add, remove or make admins after; docs/protocol.md 11.1).
    ex, fake = executor(front_end=front_end)
    await fake.rooms.create("#ops", open_room=False)
    await fake.rooms.create("#solo", open_room=False)
    await fake.rooms.add("#ops", "bob")
    assert await ex.execute(Leave("#solo")) == []  # nobody else in it: nothing to lose
    first = await ex.execute(Leave("#ops"))
    state = fake.rooms.state("#ops")
    assert state is not None
    if front_end == g.JSON:  # scripts: at once, as the command says
        assert first == [] and "alice" not in state.members
        return
    assert first == [Said((last_admin_line(state),), "hint")] and "alice" in state.members
    assert "nobody can add or remove a member, for good" in last_admin_line(state)
    assert "/admin #ops NAME" in last_admin_line(state)
    await ex.execute(Members("#ops"))  # anything else in between: the next /leave is told again
    assert await ex.execute(Leave("#ops")) == first and "alice" in fake.rooms.states["#ops"].members
    assert await ex.execute(Leave("#ops")) == []  # asked again at once: done
    left = fake.rooms.state("#ops")
    assert left is not None and left.members == {"bob"} and left.admins == frozenset()


async def test_leave_without_a_room_leaves_the_room_you_are_talking_in() -> None:
    # Found as a new user: /members without a room meant the current room, /leave without one gave usage.
    ex, fake = executor()
    await fake.rooms.create("#ops", open_room=False)
    await fake.rooms.create("#dev", open_room=False)
    await fake.rooms.add("#ops", "bob")
    usage = [Said(("/leave #ROOM: this conversation is not a room",), "hint")]
    assert await ex.execute(Leave(None)) == usage  # no conversation yet
    await ex.execute(g.To("bob"))
    assert await ex.execute(Leave(None)) == usage  # a person, not a room
    assert await ex.execute(Members(None)) == [Said(("/members #ROOM: this conversation is not a room",), "hint")]
    await ex.execute(g.To("#ops"))
    first = await ex.execute(Leave(None))  # the last admin, bob still in it: told first, as for /leave #ops
    ops = fake.rooms.states["#ops"]
    assert first == [Said((last_admin_line(ops),), "hint")] and "alice" in ops.members
    assert await ex.execute(Leave(None)) == [] and "alice" not in fake.rooms.states["#ops"].members
    assert "alice" in fake.rooms.states["#dev"].members  # only the room talked in


async def test_the_last_admin_is_not_held_up_once_another_is_an_admin() -> None:
    ex, fake = executor()
    await fake.rooms.create("#ops", open_room=True)
    await fake.rooms.add("#ops", "bob")
    await fake.rooms.admin("#ops", "bob")
    assert await ex.execute(Leave("#ops")) == []
    state = fake.rooms.state("#ops")
    assert state is not None and state.members == {"bob"}


@pytest.mark.parametrize("admin", [True, False])
async def test_remove_yourself_points_to_leave(admin: bool) -> None:
    # Found as a new user: carol's "/remove #ops carol" said "not_allowed: carol is not an admin
    # of #ops" (and an admin's, that an admin only leaves): what she wanted is /leave.
    ex, fake = executor()
    await fake.rooms.create("#ops", open_room=False)
    await fake.rooms.add("#ops", "bob")
    if not admin:
        fake.own = "bob"
    calls = len(fake.calls)
    me = fake.own
    assert await ex.execute(Remove("#ops", me)) == [Said((remove_yourself("#ops"),), "hint")]
    assert remove_yourself("#ops").startswith("that is you: /leave #ops leaves it")
    assert len(fake.calls) == calls  # nothing asked of the session
    state = fake.rooms.state("#ops")
    assert state is not None and me in state.members
    ex_json, _ = executor(fake, front_end=g.JSON)  # a script gets the refusal's code, as before
    [failed] = await ex_json.execute(Remove("#ops", me))
    assert isinstance(failed, Failed) and failed.error.code == "not_allowed"  # type: ignore[attr-defined]


def test_kept_payloads_are_bounded_over_every_conversation() -> None:
    ex, fake = executor()
    big = "A" * (PAYLOAD_CHARS_KEPT // 4)
    for n in range(10):
        fake.emit(MessageReceived(f"user{n}", f"{n:032x}", T0, "hi", big))
    assert sum(len(p) for _, p in ex._payloads) <= PAYLOAD_CHARS_KEPT
    for n in range(PAYLOADS_KEPT + 50):
        fake.emit(MessageReceived(f"user{n % 7}", f"{n:032x}", T0, "hi", "p"))
    assert len(ex._payloads) == PAYLOADS_KEPT
