"""The line front end: event lines, the command interpreter, and ``--plain`` with piped input."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from securechat import lineui
from securechat.commands.grammar import Whois
from securechat.commands.outcomes import Failed
from securechat.commands.wording import describe
from securechat.errors import RequestUnanswered, RoomRefused, ServerErrorReply
from securechat.events import (
    Acked,
    ConnectionChanged,
    ContactInfo,
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
    RoomChanged,
    ServerPinned,
    ServerRefusedAlert,
    SessionEvent,
    UserEntry,
    UsersListed,
)
from securechat.lineui import LineChat, format_event
from securechat.names import format_fingerprint
from tests.support.cli import client_command, client_env
from tests.support.jsonclient import JsonClient
from tests.support.serverproc import server_process
from tests.support.ui_fakes import FakeSession

FP = "ab" * 32


def test_every_event_has_a_line() -> None:
    events: list[SessionEvent] = [
        Ready("alice", FP),
        ConnectionChanged("reconnecting", 1.5, "server closed"),
        ConnectionChanged("offline", detail="name_taken"),
        KeyGenerating("alice", 3072),
        MessageSent("1" * 32, "bob", 0, "hi", "p"),
        MessageReceived("bob", "2" * 32, 0, "yo", "p"),
        MessageRejected("bob", "3" * 32, "bad_signature", "nope"),
        Acked("1" * 32, "bob", "delivered"),
        KeyChangedAlert("bob", FP, "cd" * 32),
        ContactPinned("bob", FP),
        PresenceChanged("bob", False),
        ErrorReported("unknown_user", "no such user", msg_id="1" * 32),
    ]
    lines = [format_event(e) for e in events]
    # Why the connection is down is said once per cause by the command layer (Executor.observe),
    # a refusal for good by its error line: no line of their own here.
    assert lines[1] == lines[2] == []
    assert all(lines[:1] + lines[3:])
    assert lines[6] == ["! rejected a message from bob: bad_signature (nope)"]
    changed = "\n".join(lines[8])
    assert "the key of bob changed" in changed and "/trust bob" in changed
    assert "now  cdcd cdcd" in changed  # both fingerprints, to compare
    assert lines[11] == ["! unknown_user: no such user (message 11111111)"]
    pinned = format_event(ServerPinned("h:1", FP))
    expected = f"* first connection to the server at h:1: pinned its identity {format_fingerprint(FP)}"
    assert pinned == [f"{expected} (its operator can confirm it)"]
    refused = format_event(ServerRefusedAlert("h:1", "identity_changed", "x", "cd" * 32, FP, "the command"))
    assert refused[0] == "! THE IDENTITY OF THE SERVER AT h:1 CHANGED. Nothing was sent to it."
    shown = "\n".join(refused)
    assert "! pinned     abab abab" in shown and "! presented  cdcd cdcd" in shown
    assert refused[-1] == "!   the command"
    plaintext = format_event(ServerRefusedAlert("h:1", "plaintext_server", "the server at h:1 speaks plaintext"))
    assert plaintext == ["! the server at h:1 speaks plaintext"]
    assert format_event(ConnectionChanged("online")) == []
    # /users answers come from the command layer, only when asked for.
    assert format_event(UsersListed((UserEntry("bob", True),))) == []
    # /raw shows payloads under messages.
    assert format_event(MessageReceived("bob", "2" * 32, 0, "yo", "PAY"), raw=True)[-1] == "PAY"
    assert format_event(MessageReceived("bob", "2" * 32, 0, "yo", "PAY"))[-1].endswith("bob: yo")


def chat_with(fake: FakeSession) -> tuple[LineChat, list[str]]:
    out: list[str] = []
    chat = LineChat(fake, out.append)
    fake.add_listener(chat.on_event)
    return chat, out


async def test_line_commands() -> None:
    hist = [HistoryEntry("bob", "out", "1" * 32, 0, "earlier", "delivered")]
    fake = FakeSession(histories={"bob": hist}, contacts={"bob": ContactInfo("bob", FP, "unverified")})
    chat, out = chat_with(fake)
    assert await chat.handle("hello?")
    assert out[-1] == "! no conversation yet: /to NAME to open one, or /msg NAME TEXT"
    await chat.handle("/msg Bob hi there\n")
    assert chat.current is None  # /msg does not switch, as in the full-screen UI
    await chat.handle("/to bob")
    assert out[-2:] == ["  (delivered to bob)", "* talking to bob"]
    assert out[-3].endswith("] me -> bob: earlier")  # the history, as /to shows it in the full-screen UI
    await chat.handle("and again")
    await chat.handle("//slash text")
    assert fake.sent == [("bob", "hi there"), ("bob", "and again"), ("bob", "/slash text")]
    await chat.handle("/to carol")
    await chat.handle("for carol")
    assert fake.sent[-1] == ("carol", "for carol")
    await chat.handle("/msg bob")
    assert out[-1] == "! usage: /msg NAME TEXT"
    fake.changed.add("mallory")
    fake.users["mallory"] = True
    await chat.handle("/msg mallory hi")
    assert out[-1].startswith('! not sent to mallory ("hi"): the key of mallory changed; compare it')
    await chat.handle("/users")
    assert out[-1] == "* 4 registered, 3 online: alice, bob, carol (offline), mallory"
    await chat.handle("/trust bob")
    assert out[-1] == "* nothing to trust: the key of bob has not changed (unverified)"
    await chat.handle("/verify bob " + " ".join(FP[i : i + 4] for i in range(0, 64, 4)))
    assert out[-1] == "* bob is verified: the fingerprint matches their pinned key"
    await chat.handle("/verify bob 12")
    assert out[-1].startswith("! a fingerprint is 64 hex digits")
    await chat.handle("/whois bob")
    assert out[-1] == f"* bob online: {format_fingerprint(FP)} (verified)"
    assert ("lookup", "bob") in fake.calls  # asked the server
    await chat.handle("/fingerprint")
    assert out[-3:] == [
        "* your fingerprint (alice):",
        "*     " + " ".join(["a1ce"] * 8),
        "*     " + " ".join(["a1ce"] * 8),
    ]
    await chat.handle("/mouse")
    assert out[-1].startswith("! /mouse works only in the full-screen UI")
    await chat.handle("/bogus")
    assert "unknown command /bogus" in out[-1]
    await chat.handle("/history")
    assert "unknown command /history" in out[-1]  # /to NAME shows the history now
    assert not await chat.handle("/quit")


async def test_raw_clear_and_control_characters() -> None:
    fake = FakeSession()
    cleared: list[bool] = []
    out: list[str] = []
    chat = LineChat(fake, out.append, lambda: cleared.append(True))
    fake.add_listener(chat.on_event)
    await chat.handle("/to bob")
    await chat.handle("/raw")
    assert out[-2:] == [
        "* showing payloads under messages: select one with the mouse (line breaks do not",
        "* matter) and paste it into `securechat-client decrypt`; /raw FILE writes them whole.",
    ]
    await chat.handle("hi")
    assert out[-3].endswith("] me -> bob: hi") and out[-2] == "PAYLOAD-0000"
    await chat.handle("/raw")
    assert out[-1] == "* payloads hidden"
    await chat.handle("/clear")
    assert cleared == [True]
    fake.emit(MessageReceived("bob", "b" * 32, 0, "a\x1b[2Jb", "P"))
    assert out[-1].endswith("bob: a⟨U+001B⟩[2Jb")


async def test_sign_in_fetches_the_directory_silently() -> None:
    fake = FakeSession()
    chat, out = chat_with(fake)
    fake.emit(Ready("alice", FP))
    await asyncio.sleep(0.01)
    assert ("list_users", None) in fake.calls
    assert out == [f"* signed in as alice (fingerprint {format_fingerprint(FP)})"]
    assert chat.executor.online == {"alice": True, "bob": True, "carol": False}
    fake.connected = False
    fake.emit(Ready("alice", FP))
    await asyncio.sleep(0.01)
    assert out[-1] == "! not connected to the server"


def test_a_refusal_reads_code_colon_text_and_a_forged_code_stays_a_code() -> None:
    # One rule (commands/wording.py's refusal_line) for a command refused by the server, one the
    # rules refused here, and an error the server sent of itself: "code: text". Without "error" or
    # "server error" before it, a fake server's prose in place of a code would read like the
    # client's own warning: a code not of the protocol's shape is shown quoted.
    forged = ("the key of bob changed", "nothing is sent to them until you /trust bob")
    assert format_event(ErrorReported("queue_full", "bob's queue is full")) == ["! queue_full: bob's queue is full"]
    retried = ErrorReported("internal", "try again shortly", msg_id="1" * 32, retried=True)
    assert format_event(retried) == ["! internal: try again shortly (message 11111111, sent again)"]
    assert format_event(ErrorReported(*forged)) == [f"! '{forged[0]}': {forged[1]}"]
    failed = [Failed(Whois("bob"), ServerErrorReply(*forged)), Failed(Whois("bob"), ServerErrorReply("rate_limited", "x"))]
    assert [describe(outcome) for outcome in failed] == [[("hint", f"'{forged[0]}': {forged[1]}")],
                                                         [("hint", "rate_limited: x")]]
    assert describe(Failed(Whois("bob"), RoomRefused("bob is an admin", code="not_allowed"))) == [
        ("hint", "not_allowed: bob is an admin")
    ]


def test_sign_in_tells_the_state_of_your_rooms_not_of_rooms_you_left() -> None:
    # Found as a new user: --plain's sign-in listed "#ops: 2 members: bob, carol" for a room alice had left.
    fake = FakeSession()
    _chat, out = chat_with(fake)
    fake.emit(RoomChanged("#ops", "state", None, None, ("bob", "carol"), ("carol",), 5))
    fake.emit(RoomChanged("#dev", "state", None, None, ("alice", "bob"), ("alice",), 2))
    fake.emit(RoomChanged("#ops", "left", "alice", "alice", ("bob", "carol"), ("carol",), 5))  # a change is told
    assert out == ["* #dev: 2 members: alice, bob", "* alice left #ops"]


async def test_first_incoming_message_opens_its_conversation() -> None:
    fake = FakeSession()
    chat, _out = chat_with(fake)
    fake.emit(MessageReceived("bob", "b" * 32, 0, "hi", "P"))
    assert chat.current == "bob"
    await chat.handle("hi back")
    assert fake.sent == [("bob", "hi back")]


async def test_piped_input_that_ended_leaves_once_signed_in_not_after_the_drain_bound(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``echo ... | securechat-client --plain``: once signed in and idle, it ends; the bound is for a
    server that never answers. (It waited for the session's run to end as well, which only the close
    after the wait brings, so every piped session took the whole bound: 10 s.)"""
    monkeypatch.setattr(lineui, "PIPED_DRAIN_TIMEOUT", 3600.0)
    empty = (tmp_path / "stdin").open("w+")  # input at its end, and not a terminal
    monkeypatch.setattr("sys.stdin", empty)
    fake = FakeSession()
    fake.add_listener(lambda event: None)
    real_run = fake.run

    async def run_and_sign_in() -> None:
        fake.emit(Ready("alice", fake.own_fp))
        await real_run()

    monkeypatch.setattr(fake, "run", run_and_sign_in)
    status = await asyncio.wait_for(lineui.run_line_ui(fake), 30)  # type: ignore[arg-type]
    assert status == 0
    assert ("close", None) in fake.calls
    empty.close()


async def test_piped_input_ends_without_a_warning_about_the_directory_it_was_reading(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found as a new user: ``printf '/rooms\\n' | securechat-client --plain`` often ended with
    "! the list of users failed: the connection to the server was lost": the sign-in's directory
    request, still out when the piped input ended, failed as the client closed its own session."""
    empty = (tmp_path / "stdin").open("w+")
    monkeypatch.setattr("sys.stdin", empty)
    fake = FakeSession()
    real_run = fake.run

    async def never_answered(after: str = "", prefix: str = "") -> None:
        fake.calls.append(("list_users", None))
        await fake.closed.wait()  # as the real session does: a request out fails when it closes
        raise RequestUnanswered("the connection to the server was lost")

    async def run_and_sign_in() -> None:
        fake.emit(Ready("alice", fake.own_fp))
        await real_run()

    monkeypatch.setattr(fake, "list_users", never_answered)
    monkeypatch.setattr(fake, "run", run_and_sign_in)
    assert await asyncio.wait_for(lineui.run_line_ui(fake), 30) == 0  # type: ignore[arg-type]
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    await asyncio.wait_for(asyncio.gather(*others, return_exceptions=True), 10)  # the request's end too
    assert ("list_users", None) in fake.calls and ("close", None) in fake.calls
    out = capsys.readouterr().out
    assert "the connection to the server was lost" not in out and "list of users failed" not in out, out
    empty.close()


@pytest.mark.timeout(60)
async def test_plain_mode_with_piped_input(tmp_path: Path) -> None:
    with server_process(tmp_path / "server.db") as server:
        bob = await JsonClient.start("bob", server.port, tmp_path / "home")
        try:
            await bob.wait_event("ready")
            proc = await asyncio.create_subprocess_exec(
                *client_command(),
                "--name",
                "alice",
                "--server",
                f"127.0.0.1:{server.port}",
                "--plain",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=client_env(tmp_path / "home"),
            )
            out, err = await asyncio.wait_for(proc.communicate(b"/msg bob hello from plain\n/users\n"), 30)
            assert proc.returncode == 0, err
            text = out.decode()
            assert "me -> bob: hello from plain" in text
            assert "(delivered to bob)" in text
            assert "Traceback" not in err.decode()
            message: dict[str, Any] = await bob.wait_event("message", text="hello from plain")
            assert message["from"] == "alice"
        finally:
            bob.kill()
            await bob.proc.wait()
