"""Rooms end to end (issue 10), with real processes: ``securechat-server`` and ``securechat-client --json``.

Every member is its own client process with its own home, driving the room
commands and events exactly as a script would (docs/protocol.md section 11 and
the ``--json`` names in README.md). One test kills the server with ``kill -9``
in the middle of a stream to an offline member.
"""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from securechat.client.home import STATE_FILE
from tests.support.cli import client_command, client_env
from tests.support.jsonclient import JsonClientProcess
from tests.support.nodes import start_restartable
from tests.support.roomclients import WAIT, acks_for, all_sent_ids, change, make_room, room_messages, sent_ids
from tests.support.serverproc import ServerProcess, server_process
from tests.support.streams import FAST, LONG, check_exactly_once, client_homes, texts

pytestmark = pytest.mark.timeout(600)

Spawn = Callable[..., JsonClientProcess]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """``securechat-client --json`` processes, each in its own home; all killed at the end."""
    started: list[JsonClientProcess] = []
    roots = client_homes(tmp_path)
    root = next(roots)

    def make(name: str, port: int, label: str = "") -> JsonClientProcess:
        client = JsonClientProcess(name, port, root / name, label=label)
        started.append(client)
        client.wait_event("ready", WAIT, name=name)
        return client

    yield make
    for client in started:
        client.close()
    roots.close()


def decrypt(client: JsonClientProcess, payload: str) -> tuple[int, str, str]:
    """``securechat-client decrypt`` in ``client``'s home (the client has finished): (status, stdout, stderr)."""
    done = subprocess.run(
        [*client_command(), "decrypt", "--name", client.name, "--home", str(client.home), payload],
        check=False, input="", capture_output=True, text=True, env=client_env(COLUMNS="1000"), timeout=60,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr.strip()


# --- three members ------------------------------------------------------------------------------


def test_three_members_talk_and_every_member_acks(tmp_path: Path, spawn: Spawn) -> None:
    with server_process(tmp_path / "server.db", FAST) as server:
        alice, bob, carol = (spawn(name, server.port) for name in ("alice", "bob", "carol"))
        make_room(alice, "#ops", [bob, carol])
        state = change(carol, "#ops", "added", "carol")
        assert state["members"] == ["alice", "bob", "carol"] and state["admins"] == ["alice"], state
        assert state["by"] == "alice", state
        for speaker in (alice, bob, carol):
            speaker.command({"cmd": "send", "to": "#ops", "text": f"hello from {speaker.name}"})
        for reader in (alice, bob, carol):
            others = {c.name for c in (alice, bob, carol)} - {reader.name}
            reader.wait_until(
                lambda events, others=others: {e["from"] for e in events if e["event"] == "message"} >= others,
                WAIT, what="a message from each other member",
            )
            got = {e["from"]: e["text"] for e in room_messages(reader, "#ops")}
            assert got == {name: f"hello from {name}" for name in others}, got
        # One ack per member and message, naming the room: alice's message reached bob and carol.
        (msg_id,) = sent_ids(alice, "#ops")
        alice.wait_until(lambda events: len(acks_for(alice, {msg_id}, "carol", "delivered")) == 1, WAIT)
        alice.wait_until(lambda events: len(acks_for(alice, {msg_id}, "bob", "delivered")) == 1, WAIT)
        assert all(e["to"] == "#ops" for e in alice.of_kind("ack", id=msg_id)), alice.of_kind("ack", id=msg_id)
        assert not alice.of_kind("ack", id=msg_id, member="alice"), "the sender is never routed its own message"
        for client in (alice, bob, carol):
            assert client.finish() == 0, client.stderr_tail()
            assert not client.bad_lines, client.bad_lines


# --- an offline member across a server kill -9 ------------------------------------------------------


@pytest.mark.slow
def test_offline_member_gets_300_in_order_once_across_a_server_kill9(tmp_path: Path, spawn: Spawn) -> None:
    n = 300
    db = tmp_path / "server.db"
    first = start_restartable(db)
    second: ServerProcess | None = None
    try:
        port = first.port
        alice, bob, carol = (spawn(name, port) for name in ("alice", "bob", "carol"))
        make_room(alice, "#ops", [bob, carol])
        assert carol.finish() == 0, carol.stderr_tail()  # carol goes offline
        sent = texts(n, "r")
        alice.send_in_background("#ops", sent)
        bob.count_until("message", n // 3, LONG)
        assert first.kill() == -9
        alice.wait_event("connection", WAIT, state="reconnecting")
        second = ServerProcess(db, FAST, port=port)
        assert second.wait_listening() == port
        bob.count_until("message", n, LONG)
        ids = all_sent_ids(alice, "#ops", n)
        # Every message is stored for carol before alice's outbox lets it go.
        alice.wait_until(lambda events: len(acks_for(alice, ids, "carol", "queued")) == n, LONG,
                         what=f"{n} queued acks for carol")
        assert alice.finish() == 0, alice.stderr_tail()
        late = spawn("carol", port, "-late")
        late.count_until("message", n, LONG)
        assert late.finish() == 0, late.stderr_tail()
        check_exactly_once(room_messages(late, "#ops", "alice"), sent, "carol offline across a kill -9")
        check_exactly_once(room_messages(bob, "#ops", "alice"), sent, "bob online across a kill -9", ordered=False)
        assert bob.finish() == 0, bob.stderr_tail()
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.kill()


# --- removal, non-members, open rooms, late joiners --------------------------------------------------


def test_a_removed_member_gets_nothing_after_the_removal(tmp_path: Path, spawn: Spawn) -> None:
    with server_process(tmp_path / "server.db", FAST) as server:
        alice, bob, carol = (spawn(name, server.port) for name in ("alice", "bob", "carol"))
        make_room(alice, "#ops", [bob, carol])
        alice.command({"cmd": "send", "to": "#ops", "text": "before"})
        carol.wait_event("message", WAIT, room="#ops", text="before")
        alice.command({"cmd": "room_remove", "room": "#ops", "name": "carol"})
        removed = change(carol, "#ops", "removed", "carol")  # the removed member is told, signed by alice
        assert removed["by"] == "alice" and "carol" not in removed["members"], removed
        change(bob, "#ops", "removed", "carol")
        after = texts(20, "after")
        alice.send_in_background("#ops", after)
        bob.count_until("message", 1 + len(after), WAIT)
        ids = all_sent_ids(alice, "#ops", len(after), skip=1)
        alice.wait_until(lambda events: len(acks_for(alice, ids, "bob", "delivered")) == len(after), WAIT)
        assert not acks_for(alice, ids, "carol", "delivered") | acks_for(alice, ids, "carol", "queued")
        carol.command({"cmd": "send", "to": "#ops", "text": "still here?"})
        refused = carol.wait_event("error", WAIT, cmd="send")
        assert refused["code"] == "not_member", refused
        for client in (alice, bob):
            assert client.finish() == 0, client.stderr_tail()
        assert carol.finish() == 0, carol.stderr_tail()
        assert [e["text"] for e in room_messages(carol, "#ops")] == ["before"]
        assert "still here?" not in [e["text"] for e in room_messages(bob, "#ops")]
        # The payloads as /raw shows them, opened offline: carol still reads what was wrapped for her,
        # not what was sent after her removal (her client holds the signed removal).
        (before,) = room_messages(carol, "#ops")
        status, out, err = decrypt(carol, before["payload"])
        assert status == 0 and "from alice in #ops (sent under seq 2 of its log: 3 members)" in out, (out, err)
        assert out.splitlines()[-1] == "    before", out
        later = room_messages(bob, "#ops")[-1]
        status, out, err = decrypt(carol, later["payload"])
        assert (status, out) == (1, ""), out
        assert err == "rejected: bad_recipient: we are not a member of #ops at seq 3", err
        status, out, err = decrypt(alice, later["payload"])  # the sender: wrapped for itself too
        assert status == 0 and "signed with your own key" in out and later["text"] in out, (out, err)


def test_a_non_member_can_neither_post_nor_read_nor_join_an_invite_room(tmp_path: Path, spawn: Spawn) -> None:
    with server_process(tmp_path / "server.db", FAST) as server:
        alice, bob, dave = (spawn(name, server.port) for name in ("alice", "bob", "dave"))
        make_room(alice, "#ops", [bob])
        dave.command({"cmd": "send", "to": "#ops", "text": "let me in"})
        assert dave.wait_event("error", WAIT, cmd="send")["code"] == "not_member"
        dave.command({"cmd": "room_join", "room": "#ops"})
        assert dave.wait_event("error", WAIT, cmd="room_join")["code"] in ("not_member", "not_allowed")
        dave.command({"cmd": "room_members", "room": "#ops"})
        assert dave.wait_event("error", WAIT, cmd="room_members")["code"] == "unknown_room"
        alice.command({"cmd": "send", "to": "#ops", "text": "members only"})
        bob.wait_event("message", WAIT, room="#ops", text="members only")
        (msg_id,) = sent_ids(alice, "#ops")
        alice.wait_event("ack", WAIT, id=msg_id, member="bob", status="delivered")
        for client in (alice, bob, dave):
            assert client.finish() == 0, client.stderr_tail()
        assert not dave.of_kind("message"), dave.of_kind("message")
        assert not dave.of_kind("room"), "dave never held a state of #ops"
        # A payload dave got hold of (pasted to him) does not open: he holds no state of #ops.
        (payload,) = [e["payload"] for e in room_messages(bob, "#ops")]
        status, out, err = decrypt(dave, payload)
        assert status == 1 and "members only" not in out + err, (out, err)
        assert err.startswith("rejected: unknown_state: dave holds no room #ops: only a member's client"), err
        status, out, err = decrypt(bob, payload)
        assert status == 0 and "from alice in #ops" in out and "the key pinned for alice" in out, (out, err)
        assert not [e for e in alice.of_kind("ack", id=msg_id) if e.get("member") == "dave"]


def test_an_open_room_join_and_leave(tmp_path: Path, spawn: Spawn) -> None:
    with server_process(tmp_path / "server.db", FAST) as server:
        alice, bob = (spawn(name, server.port) for name in ("alice", "bob"))
        alice.command({"cmd": "room_create", "room": "#lobby", "open": True})
        change(alice, "#lobby", "created", "alice")
        bob.command({"cmd": "rooms"})
        listed = bob.wait_event("rooms", WAIT)["rooms"]
        assert {"room": "#lobby", "kind": "open", "member": False, "members": 1} in listed, listed
        bob.command({"cmd": "room_join", "room": "#lobby"})
        joined = change(alice, "#lobby", "joined", "bob")
        assert joined["by"] == "bob" and joined["members"] == ["alice", "bob"], joined
        alice.command({"cmd": "send", "to": "#lobby", "text": "welcome"})
        bob.wait_event("message", WAIT, room="#lobby", text="welcome")
        bob.command({"cmd": "room_leave", "room": "#lobby"})
        change(alice, "#lobby", "left", "bob")
        alice.command({"cmd": "send", "to": "#lobby", "text": "gone?"})
        alice.wait_until(lambda events: len(sent_ids(alice, "#lobby")) == 2, WAIT)
        bob.command({"cmd": "room_members", "room": "#lobby"})
        state = bob.wait_event("room", WAIT, room="#lobby", change="state")
        assert state["members"] == ["alice"], state
        for client in (alice, bob):
            assert client.finish() == 0, client.stderr_tail()
        assert [e["text"] for e in room_messages(bob, "#lobby")] == ["welcome"]


def test_a_late_joiner_gets_nothing_from_before(tmp_path: Path, spawn: Spawn) -> None:
    with server_process(tmp_path / "server.db", FAST) as server:
        alice, bob, carol = (spawn(name, server.port) for name in ("alice", "bob", "carol"))
        make_room(alice, "#ops", [bob])
        early = texts(5, "early")
        alice.send_in_background("#ops", early)
        bob.count_until("message", len(early), WAIT)
        alice.command({"cmd": "room_add", "room": "#ops", "name": "carol"})
        change(carol, "#ops", "added", "carol")
        alice.command({"cmd": "send", "to": "#ops", "text": "now with carol"})
        carol.wait_event("message", WAIT, room="#ops", text="now with carol")
        bob.wait_event("message", WAIT, room="#ops", text="now with carol")
        for client in (alice, bob, carol):
            assert client.finish() == 0, client.stderr_tail()
        assert [e["text"] for e in room_messages(carol, "#ops")] == ["now with carol"]
        assert [e["text"] for e in room_messages(bob, "#ops")] == [*early, "now with carol"]


# --- a member's first lookup refused for now (issue 13 item 5, for rooms) -------------------------


def forget_pins(client: JsonClientProcess, *names: str) -> None:
    """Drop ``names``' pins from ``client``'s state (the client has finished), as in a client that holds the
    room from a server that bundled no keys with its log (docs/protocol.md 11.4 lets it)."""
    db = sqlite3.connect(client.home / client.name / STATE_FILE)
    try:
        with db:
            db.executemany("DELETE FROM contacts WHERE name = ?", [(name,) for name in names])
    finally:
        db.close()


def test_a_room_message_waits_while_a_members_first_lookup_is_rate_limited(tmp_path: Path, spawn: Spawn) -> None:
    """alice does not hold carol's and dave's keys; the server allows one lookup per 4 s per connection, so
    the second is refused ``rate_limited``: the message waits (never failed, never confirmed), is sealed
    once the lookup goes through, and reaches every member once."""
    with server_process(tmp_path / "server.db", [*FAST, "--lookup-rate", "0.25"]) as server:
        alice, bob, carol, dave = (spawn(name, server.port) for name in ("alice", "bob", "carol", "dave"))
        make_room(alice, "#ops", [bob, carol, dave])
        assert alice.finish() == 0, alice.stderr_tail()
        forget_pins(alice, "carol", "dave")
        again = spawn("alice", server.port, "-again")
        again.command({"cmd": "send", "to": "#ops", "text": "waits for a key"})
        again.wait_until(lambda events: bool(sent_ids(again, "#ops") or again.of_kind("error")), WAIT)
        assert not again.of_kind("error"), again.of_kind("error")
        (sent,) = sent_ids(again, "#ops")
        for member in (bob, carol, dave):
            member.wait_event("message", WAIT, room="#ops", text="waits for a key")
            again.wait_event("ack", WAIT, id=sent, member=member.name, status="delivered")
        assert not again.of_kind("error"), again.of_kind("error")
        assert again.finish() == 0, again.stderr_tail()
        for member in (bob, carol, dave):
            assert member.finish() == 0, member.stderr_tail()
            assert [e["text"] for e in room_messages(member, "#ops")] == ["waits for a key"]
