"""``securechat-client --json`` processes against a real ``securechat-server`` process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.support.jsonclient import JsonClient
from tests.support.serverproc import ServerProcess

pytestmark = pytest.mark.timeout(90)

WAIT = 15.0


async def test_ready_send_message_ack_list_and_eof(server_proc: ServerProcess, spawn: Any) -> None:
    bob = await spawn("bob", server_proc.port)
    ready = await bob.wait_event("ready", name="bob")
    assert ready["new"] is True and len(ready["fingerprint"]) == 64
    alice = await spawn("alice", server_proc.port)
    await alice.wait_event("ready")
    await alice.command({"cmd": "send", "to": "bob", "text": "hello über bob"})
    sent = await alice.wait_event("sent", to="bob")
    pinned = await alice.wait_event("pinned", name="bob")
    assert pinned["fingerprint"] == ready["fingerprint"] and pinned["trust"] == "unverified"
    message = await bob.wait_event("message", id=sent["id"])
    assert (message["from"], message["text"]) == ("alice", "hello über bob")
    assert isinstance(message["payload"], str) and isinstance(message["server_ts"], int)
    await alice.wait_event("ack", id=sent["id"], status="delivered")
    await alice.command({"cmd": "list"})
    users = await alice.wait_event("users")
    assert {"name": "bob", "online": True} in users["users"]
    await alice.command({"cmd": "whois", "name": "Bob"})
    contact = await alice.wait_event("contact", name="bob")
    assert contact["trust"] == "unverified" and contact["fingerprint"] == ready["fingerprint"]
    await alice.command({"cmd": "verify", "name": "bob", "fingerprint": ready["fingerprint"]})
    assert (await alice.wait_event("verify", name="bob"))["ok"] is True
    status, stderr = await alice.finish()
    assert status == 0, stderr
    assert alice.events[-1] == {"event": "connection", "state": "offline"}
    assert "Traceback" not in stderr
    await bob.wait_event("presence", name="alice", online=False)
    status, _ = await bob.finish()
    assert status == 0


async def test_eof_waits_for_ack_of_queued_message(server_proc: ServerProcess, spawn: Any) -> None:
    bob = await spawn("bob", server_proc.port)
    await bob.wait_event("ready")
    assert (await bob.finish())[0] == 0
    alice = await spawn("alice", server_proc.port)
    await alice.command({"cmd": "send", "to": "bob", "text": "for later"})
    status, stderr = await alice.finish()  # EOF straight after the send
    assert status == 0, stderr
    sent = next(e for e in alice.events if e["event"] == "sent")
    kinds = [e["event"] for e in alice.events]
    assert {"event": "ack", "id": sent["id"], "to": "bob", "status": "queued"} in alice.events
    assert kinds.index("ack") < len(kinds) - 1  # the ack came before the final offline line
    bob2 = await spawn("bob", server_proc.port)
    message = await bob2.wait_event("message", id=sent["id"])
    assert message["text"] == "for later"
    await bob2.finish()


async def test_malformed_commands_are_reported_and_ignored(server_proc: ServerProcess, spawn: Any) -> None:
    alice = await spawn("alice", server_proc.port)
    await alice.wait_event("ready")
    for bad in (
        "this is not json",
        "[1, 2, 3]",
        '{"cmd": "launch"}',
        '{"cmd": "send", "to": "bob"}',
        '{"cmd": "send", "to": 5, "text": "x"}',
        '{"nocmd": true}',
    ):
        await alice.command(bad)
    await alice.command({"cmd": "send", "to": "nobody", "text": "x"})
    await alice.command({"cmd": "send", "to": "Not A Name!", "text": "x"})
    await alice.command({"cmd": "list"})
    await alice.wait_event("users")
    bad_commands = [e for e in alice.events if e["event"] == "error" and e["code"] == "bad_command"]
    assert len(bad_commands) == 6
    assert all(e["fatal"] is False and e["message"] for e in bad_commands)
    assert any(e["event"] == "error" and e["code"] == "unknown_user" for e in alice.events)
    assert any(e["event"] == "error" and e["code"] == "invalid_name" for e in alice.events)
    await alice.command({"cmd": "quit"})
    status, stderr = await alice.finish()
    assert status == 0 and "Traceback" not in stderr


async def test_first_run_announces_key_generation_and_quits_without_server(
    tmp_path: Path, spawn: Any
) -> None:
    # Nothing listens on port 9 (discard): the client keeps retrying until EOF.
    carol = await spawn("carol", 9)
    await carol.wait_event("key_generating", name="carol", bits=2048)
    await carol.wait_event("connection", state="reconnecting")
    status, stderr = await carol.finish()
    assert status == 0
    assert "Generating a 2048-bit RSA key for carol" in stderr
    assert (tmp_path / "home" / "carol" / "identity.pem").exists()


async def test_quit_with_stdin_still_open(server_proc: ServerProcess, spawn: Any) -> None:
    alice = await spawn("alice", server_proc.port)
    await alice.wait_event("ready")
    await alice.command({"cmd": "quit"})
    await alice.wait_event("connection", state="offline")
    # The process exits on its own, stdin still open, without aborting in the reader thread.
    status = await asyncio.wait_for(alice.proc.wait(), WAIT)
    assert alice.proc.stderr is not None
    stderr = (await alice.proc.stderr.read()).decode()
    assert status == 0 and "Fatal Python error" not in stderr, stderr


async def test_stdout_reader_gone_quits(server_proc: ServerProcess, spawn: Any) -> None:
    alice = await spawn("alice", server_proc.port)
    await alice.wait_event("ready")
    assert alice.proc.stdout is not None
    alice.proc._transport.get_pipe_transport(1).close()
    await alice.command({"cmd": "list"})  # its answer hits the broken pipe
    status = await asyncio.wait_for(alice.proc.wait(), WAIT)
    assert alice.proc.stderr is not None
    stderr = (await alice.proc.stderr.read()).decode()
    assert status == 0 and "Traceback" not in stderr and "Fatal" not in stderr, stderr


async def test_name_taken_exits_1(server_proc: ServerProcess, spawn: Any, tmp_path: Path) -> None:
    alice = await spawn("alice", server_proc.port)
    await alice.wait_event("ready")
    assert (await alice.finish())[0] == 0
    impostor = await JsonClient.start("alice", server_proc.port, tmp_path / "other-home")
    try:
        # Refused by check_name before any key is made (issue 14, item 4), on stdout as at sign-in.
        error = await impostor.wait_event("error", code="name_taken")
        assert error["fatal"] is True
        status, stderr = await impostor.finish()
        assert status == 1 and "Traceback" not in stderr
        assert "alice" in stderr and not (tmp_path / "other-home" / "alice").exists(), stderr
    finally:
        impostor.kill()
