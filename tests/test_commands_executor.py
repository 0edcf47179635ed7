"""The executor: commands over a SessionAPI, and what it keeps for every front end."""

from __future__ import annotations

import pytest

from securechat.commands import Executor
from securechat.commands import grammar as g
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
from securechat.commands.wording import NO_CONVERSATION, help_lines
from securechat.errors import ServerErrorReply, SessionClosed
from securechat.events import (
    ContactInfo,
    ContactPinned,
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
    assert await ex.execute(g.Users()) == []  # the fake answers during the call
    assert fake.calls.count(("list_users", None)) == 1
    assert ex.observe(listing).outcomes == ()  # one answer per /users
    fake.go_offline()
    [failed] = await ex.execute(g.Users())
    assert isinstance(failed, Failed) and isinstance(failed.error, SessionClosed)
    assert ex.observe(listing).outcomes == ()  # the failed request does not claim a later listing


async def test_users_outcome_comes_through_observe() -> None:
    ex, fake = executor()
    shown: list[object] = []
    fake.listeners.insert(0, lambda event: shown.extend(ex.observe(event).outcomes))
    fake.listeners.remove(ex.observe)
    await ex.execute(g.Users())
    assert shown == [UsersShown(tuple(UserEntry(n, on) for n, on in sorted(fake.users.items())))]


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
