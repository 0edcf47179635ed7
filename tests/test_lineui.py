"""The line front end: event lines, the command interpreter, and ``--plain`` with piped input."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from securechat.errors import KeyChanged, SessionClosed
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
    SessionEvent,
    UserEntry,
    UsersListed,
)
from securechat.lineui import LineChat, format_contact, format_event
from tests.support.serverproc import server_process

from .test_cli_json import JsonClient, client_command, client_env

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
        UsersListed((UserEntry("bob", True), UserEntry("carol", False))),
        PresenceChanged("bob", False),
        ErrorReported("unknown_user", "no such user", msg_id="1" * 32),
    ]
    lines = [format_event(e) or "" for e in events]
    assert all(lines)
    assert "CHANGED" in lines[8] and "/trust bob" in lines[8]
    assert "carol (offline)" in lines[10]
    assert format_event(ConnectionChanged("online")) is None
    assert "new key waiting" in format_contact(ContactInfo("bob", FP, "changed", "cd" * 32))
    assert "no key" in format_contact(ContactInfo("bob", None, None))


class FakeSession:
    name = "alice"
    fingerprint = FP

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.calls: list[str] = []

    async def send(self, to: str, text: str) -> str:
        if to == "mallory":
            raise KeyChanged("mallory", FP, "cd" * 32)
        self.sent.append((to.lower(), text))
        return "1" * 32

    async def list_users(self) -> None:
        self.calls.append("list")

    async def lookup(self, name: str) -> ContactInfo:
        raise SessionClosed("offline")

    def contact(self, name: str) -> ContactInfo:
        return ContactInfo(name.strip().lower(), FP, "unverified")

    def trust(self, name: str) -> None:
        self.calls.append(f"trust {name}")

    def verify(self, name: str, fingerprint: str) -> bool:
        return fingerprint.replace(" ", "") == FP

    def history(self, peer: str, limit: int = 200) -> list[HistoryEntry]:
        return [HistoryEntry(peer, "out", "1" * 32, 0, "earlier", "delivered")]


async def test_line_commands() -> None:
    session = FakeSession()
    out: list[str] = []
    chat = LineChat(session, out.append)  # type: ignore[arg-type]
    assert await chat.handle("hello?")
    assert "no conversation" in out[-1]
    await chat.handle("/msg Bob hi there")
    await chat.handle("and again")
    await chat.handle("//slash text")
    assert session.sent == [("bob", "hi there"), ("bob", "and again"), ("bob", "/slash text")]
    await chat.handle("/to carol")
    await chat.handle("for carol")
    assert session.sent[-1] == ("carol", "for carol")
    await chat.handle("/msg bob")
    assert "usage" in out[-1]
    await chat.handle("/msg mallory hi")
    assert out[-1].startswith("! the key of 'mallory' changed")
    await chat.handle("/users")
    await chat.handle("/trust bob")
    assert session.calls == ["list", "trust bob"]
    await chat.handle("/verify bob " + " ".join(FP[i : i + 4] for i in range(0, 64, 4)))
    assert out[-1] == "* bob verified"
    await chat.handle("/whois bob")
    assert "unverified" in out[-1]
    await chat.handle("/history")
    assert "earlier" in out[-1]
    await chat.handle("/bogus")
    assert "unknown command" in out[-1]
    assert not await chat.handle("/quit")


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
