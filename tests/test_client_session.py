"""ClientSession against a real in-process ChatServer (and a hostile fake one)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from securechat import crypto
from securechat.client.state import ClientStore
from securechat.errors import KeyChanged, ServerErrorReply, SessionClosed
from securechat.events import (
    Acked,
    ConnectionChanged,
    ContactPinned,
    ErrorReported,
    KeyChangedAlert,
    MessageReceived,
    MessageRejected,
    MessageSent,
    Ready,
    UsersListed,
)
from securechat.names import format_fingerprint
from securechat.protocol import FrameDecoder, encode_frame
from securechat.server import ChatServer, ServerConfig
from tests.support.hostile import fake_identity
from tests.support.rawclient import RawClient, running_server
from tests.support.redisproc import RedisProcess
from tests.support.sessions import BITS, WAIT, Client, online

pytestmark = pytest.mark.timeout(60)



async def test_send_receive_ack_delivered(server: ChatServer, make_client: Callable[..., Client]) -> None:
    alice = await online(make_client("alice", server.port))
    bob = await online(make_client("bob", server.port))
    msg_id = await alice.session.send(" Bob ", "hello bob")
    sent = await alice.rec.wait_kind(MessageSent)
    assert (sent.msg_id, sent.to, sent.text) == (msg_id, "bob", "hello bob")
    pinned = await alice.rec.wait_kind(ContactPinned, name="bob")
    assert pinned.fingerprint == bob.session.fingerprint
    got = await bob.rec.wait_kind(MessageReceived)
    assert (got.sender, got.msg_id, got.text) == ("alice", msg_id, "hello bob")
    assert crypto.decode_payload(got.payload)["id"] == msg_id
    assert got.server_ts is not None
    await alice.rec.wait_kind(Acked, msg_id=msg_id, status="delivered")
    assert await alice.session.wait_idle(WAIT)
    assert [(h.direction, h.text, h.status) for h in alice.session.history("bob")] == [
        ("out", "hello bob", "delivered")
    ]
    assert [(h.direction, h.text) for h in bob.session.history("alice")] == [("in", "hello bob")]
    await bob.rec.wait_kind(ContactPinned, name="alice")
    await alice.session.list_users()
    listed = await alice.rec.wait_kind(UsersListed)
    assert {(u.name, u.online) for u in listed.users} >= {("alice", True), ("bob", True)}
    await alice.stop()
    await bob.stop()
    assert alice.rec.events[-1] == ConnectionChanged("offline")


async def test_offline_recipient_queued_then_delivered(
    server: ChatServer, make_client: Callable[..., Client]
) -> None:
    bob = await online(make_client("bob", server.port))
    await bob.stop()
    alice = await online(make_client("alice", server.port))
    msg_id = await alice.session.send("bob", "while you were out")
    await alice.rec.wait_kind(Acked, msg_id=msg_id, status="queued")
    assert len(alice.session.store.outbox) == 0
    bob2 = await online(make_client("bob", server.port))
    got = await bob2.rec.wait_kind(MessageReceived)
    assert (got.msg_id, got.text) == (msg_id, "while you were out")
    await alice.rec.wait_kind(Acked, msg_id=msg_id, status="delivered")
    assert alice.session.history("bob")[-1].status == "delivered"
    await alice.stop()
    await bob2.stop()


async def test_replay_confirmed_not_shown_twice(
    server: ChatServer, make_client: Callable[..., Client]
) -> None:
    bob = await online(make_client("bob", server.port))
    alice_store = ClientStore.open(bob.session.store.directory.parent, "alice", bits=BITS)
    alice_key = alice_store.require_identity().private_key
    alice_store.close()
    raw = await RawClient.connect(server.port)
    try:
        await raw.login("alice", alice_key)
        env = crypto.seal_envelope(alice_key, bob.session.store.public_key, "alice", "bob", "once only")
        for _ in range(3):
            await raw.send_frame({"type": "send", "to": "bob", "envelope": env})
            ack = await raw.recv_type("ack")
            # "delivered" means bob answered "received" every time, also for the replays.
            assert (ack["id"], ack["status"]) == (env["id"], "delivered")
    finally:
        await raw.close()
    assert [e.msg_id for e in bob.rec.of(MessageReceived)] == [env["id"]]
    assert len(bob.session.history("alice")) == 1
    await bob.stop()


async def test_replay_across_restart_not_shown(
    server: ChatServer, make_client: Callable[..., Client], tmp_path: Path
) -> None:
    home = tmp_path / "bobhome"
    bob = await online(make_client("bob", server.port, home=home))
    alice = await online(make_client("alice", server.port))
    msg_id = await alice.session.send("bob", "remember me")
    await bob.rec.wait_kind(MessageReceived, msg_id=msg_id)
    await bob.stop()
    bob.session.store.close()
    # The same envelope again, now queued for a restarted bob: confirmed, not shown.
    payload = bob.rec.of(MessageReceived)[0].payload
    raw = await RawClient.connect(server.port)
    try:
        await raw.login("alice", alice.session.store.require_identity().private_key)
        await raw.send_frame({"type": "send", "to": "bob", "envelope": crypto.decode_payload(payload)})
        assert (await raw.recv_type("ack"))["status"] == "queued"
        bob2 = await online(make_client("bob", server.port, home=home))
        ack = await raw.recv_type("ack")
        assert (ack["id"], ack["status"]) == (msg_id, "delivered")
    finally:
        await raw.close()
    assert bob2.rec.of(MessageReceived) == []
    await alice.stop()
    await bob2.stop()


async def test_reconnect_after_server_restart_resends_outbox(
    tmp_path: Path, make_client: Callable[..., Client]
) -> None:
    db = tmp_path / "server.db"
    srv = ChatServer(ServerConfig(port=0, db_path=db))
    await srv.start()
    port = srv.port
    bob = await online(make_client("bob", port))
    alice = await online(make_client("alice", port))
    await alice.session.lookup("bob")  # pinned, so sending needs no server
    await bob.stop()
    await srv.close()
    await alice.rec.wait_kind(ConnectionChanged, state="reconnecting")
    msg_id = await alice.session.send("bob", "sent while the server was down")
    assert [e.msg_id for e in alice.session.store.outbox.entries()] == [msg_id]
    srv2 = ChatServer(ServerConfig(port=port, db_path=db))
    await srv2.start()
    try:
        await alice.rec.wait_for(lambda e: isinstance(e, Ready) and len(alice.rec.of(Ready)) == 2)
        await alice.rec.wait_kind(Acked, msg_id=msg_id, status="queued")
        assert await alice.session.wait_idle(WAIT)
        bob2 = await online(make_client("bob", port))
        got = await bob2.rec.wait_kind(MessageReceived)
        assert (got.msg_id, got.text) == (msg_id, "sent while the server was down")
        await alice.stop()
        await bob2.stop()
    finally:
        await srv2.close()


async def test_outbox_survives_client_restart(
    server: ChatServer, make_client: Callable[..., Client], tmp_path: Path
) -> None:
    home = tmp_path / "alicehome"
    bob = await online(make_client("bob", server.port))
    first = await online(make_client("alice", server.port, home=home))
    await first.session.lookup("bob")
    await first.stop()
    # Sealed while offline, then the process "exits" before any ack.
    msg_id = await first.session.send("bob", "from the outbox")
    first.session.store.close()
    again = await online(make_client("alice", server.port, home=home))
    await again.rec.wait_kind(Acked, msg_id=msg_id, status="delivered")
    got = await bob.rec.wait_kind(MessageReceived)
    assert got.msg_id == msg_id
    await again.stop()
    await bob.stop()


async def test_key_change_alert_and_refusal(tmp_path: Path, make_client: Callable[..., Client]) -> None:
    srv = ChatServer(ServerConfig(port=0, db_path=tmp_path / "one.db"))
    await srv.start()
    bob = await online(make_client("bob", srv.port, home=tmp_path / "bob-old"))
    alice = await online(make_client("alice", srv.port))
    await alice.session.lookup("bob")
    old_fp = bob.session.fingerprint
    await alice.stop()
    await bob.stop()
    await srv.close()
    # Another server (or a lying one) now maps "bob" to a different key.
    srv2 = ChatServer(ServerConfig(port=0, db_path=tmp_path / "two.db"))
    await srv2.start()
    try:
        alice2 = await online(make_client("alice", srv2.port))
        new_bob = await online(make_client("bob", srv2.port, home=tmp_path / "bob-new"))
        await new_bob.session.send("alice", "it is me, with a new key")
        rejected = await alice2.rec.wait_kind(MessageRejected)
        assert rejected.reason == "key_changed" and rejected.sender == "bob"
        alert = await alice2.rec.wait_kind(KeyChangedAlert)
        assert (alert.old, alert.new) == (old_fp, new_bob.session.fingerprint)
        assert not alice2.rec.of(MessageReceived)
        await new_bob.rec.wait_kind(Acked, status="delivered")  # rejected ones are confirmed too
        with pytest.raises(KeyChanged):
            await alice2.session.send("bob", "refused")
        assert alice2.session.contact("bob").trust == "changed"
        assert len(alice2.session.store.outbox) == 0
        alice2.session.trust("bob")
        await alice2.rec.wait_kind(ContactPinned, name="bob", fingerprint=new_bob.session.fingerprint)
        msg_id = await alice2.session.send("bob", "welcome back")
        got = await new_bob.rec.wait_kind(MessageReceived)
        assert (got.msg_id, got.text) == (msg_id, "welcome back")
        assert alice2.session.verify("bob", format_fingerprint(new_bob.session.fingerprint))
        assert alice2.session.contact("bob").trust == "verified"
        await alice2.stop()
        await new_bob.stop()
    finally:
        await srv2.close()


async def test_send_to_unknown_user_and_offline(
    server: ChatServer, make_client: Callable[..., Client]
) -> None:
    alice = await online(make_client("alice", server.port))
    with pytest.raises(ServerErrorReply) as info:
        await alice.session.send("nobody", "hi")
    assert info.value.code == "unknown_user"
    await alice.stop()
    with pytest.raises(SessionClosed):
        await alice.session.send("carol", "no key and no server")


# --- a hostile server ------------------------------------------------------------------------


async def test_hostile_server_frames_never_crash(make_client: Callable[..., Client]) -> None:
    connections = 0
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.read(65536)  # hello
        writer.write(encode_frame({"type": "challenge", "server_id": "AAAA", "nonce": "AAAA"}))
        await reader.read(65536)  # auth
        writer.write(encode_frame({"type": "welcome", "name": "alice", "fingerprint": "x", "new": False}))
        for frame in (
            {"type": "users", "users": "everyone"},
            {"type": "ack", "id": "not-hex", "to": "bob", "status": "delivered"},
            {"type": "ack", "id": "f" * 32, "to": "bob", "status": "delivered"},
            {"type": "message", "from": "bob", "envelope": {"v": 1}},
            {"type": "presence", "name": "BOB", "online": True},
            {"type": "from-the-future", "x": 1},
            {"type": "error", "code": 7},
        ):
            writer.write(encode_frame(frame))
        writer.write(struct.pack(">I", 9) + b"not json!")  # framing error: fatal, reconnect
        await writer.drain()
        if connections >= 2:
            done.set()
        with contextlib.suppress(ConnectionError):
            await reader.read()
        writer.close()

    fake = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=fake_identity().context())
    port = fake.sockets[0].getsockname()[1]
    alice = make_client("alice", port)
    alice.start()
    try:
        await alice.rec.wait_kind(ConnectionChanged, state="reconnecting")
        await asyncio.wait_for(done.wait(), WAIT)
        errors = alice.rec.of(ErrorReported)
        assert sum(e.code == "bad_server_frame" for e in errors) >= 5
        assert any(e.code == "bad_frame" and e.fatal for e in errors)
        assert not alice.rec.of(Acked) and not alice.rec.of(MessageReceived)
        assert alice.task is not None and not alice.task.done()
    finally:
        await alice.stop()
        fake.close()
        await fake.wait_closed()


async def test_permanent_refusal_stops_run(
    server: ChatServer, make_client: Callable[..., Client], tmp_path: Path
) -> None:
    first = await online(make_client("alice", server.port, home=tmp_path / "a1"))
    await first.stop()
    impostor = make_client("alice", server.port, home=tmp_path / "a2")
    with pytest.raises(ServerErrorReply) as info:
        await asyncio.wait_for(impostor.session.run(), WAIT)
    assert info.value.code == "name_taken"
    assert impostor.rec.of(ConnectionChanged)[-1].state == "offline"


FrameHandler = Callable[[dict[str, Any], asyncio.StreamWriter], "bool | None"]


@contextlib.asynccontextmanager
async def fake_server(on_frame: FrameHandler) -> AsyncIterator[int]:
    """A fake server on 127.0.0.1 that accepts any ``auth`` and hands every client frame
    (``auth`` included, after its ``welcome``) to ``on_frame``; a true result ends that
    connection's handling. Yields the port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder()
        writer.write(encode_frame({"type": "challenge", "server_id": "AAAA", "nonce": "AAAA"}))
        while data := await reader.read(65536):
            for frame in decoder.feed(data):
                if frame["type"] == "auth":
                    writer.write(encode_frame({"type": "welcome", "name": "alice", "fingerprint": "x"}))
                if on_frame(frame, writer):
                    return

    fake = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=fake_identity().context())
    try:
        yield fake.sockets[0].getsockname()[1]
    finally:
        fake.close()
        await fake.wait_closed()


async def test_bad_envelopes_rejected_in_order_and_confirmed(make_client: Callable[..., Client]) -> None:
    """Checks that need no key run before any lookup; every rejection is confirmed."""
    from_client: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    other = crypto.generate_private_key(BITS)
    sent_messages = False

    def on_frame(frame: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        nonlocal sent_messages
        from_client.put_nowait(frame)
        if frame["type"] == "auth" and not sent_messages:
            sent_messages = True
            good = crypto.seal_envelope(other, alice.session.store.public_key, "bob", "alice", "hi")
            for envelope in (
                {"v": 1, "id": "a" * 32},  # malformed
                {**good, "id": "b" * 32, "v": 2},  # bad version
                {**good, "id": "c" * 32, "to": "carol"},  # not for us
                {**good, "id": "d" * 32, "from": "mallory"},  # frame says bob
            ):
                writer.write(encode_frame({"type": "message", "from": "bob", "envelope": envelope}))

    async with fake_server(on_frame) as port:
        alice = make_client("alice", port)
        alice.start()
        try:
            await alice.rec.wait_for(lambda e: len(alice.rec.of(MessageRejected)) >= 4)
            reasons = [(e.msg_id, e.reason) for e in alice.rec.of(MessageRejected)]
            assert reasons == [
                ("a" * 32, "malformed"),
                ("b" * 32, "bad_version"),
                ("c" * 32, "bad_recipient"),
                ("d" * 32, "sender_mismatch"),
            ]
            confirmed: list[str] = []
            async with asyncio.timeout(WAIT):
                while len(confirmed) < 4:
                    frame = await from_client.get()
                    assert frame["type"] != "lookup"  # no key was needed to reject these
                    if frame["type"] == "received":
                        confirmed.append(frame["id"])
            assert confirmed == ["a" * 32, "b" * 32, "c" * 32, "d" * 32]
        finally:
            await alice.stop()


async def test_pings_and_silent_server_is_dropped(make_client: Callable[..., Client]) -> None:
    pings = 0
    two_pings = asyncio.Event()

    def on_frame(frame: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        nonlocal pings
        if frame["type"] == "ping":  # never answered
            pings += 1
            if pings >= 2:
                two_pings.set()

    async with fake_server(on_frame) as port:
        alice = make_client("alice", port, ping_interval=0.05, silence_timeout=0.5)
        alice.start()
        try:
            await asyncio.wait_for(two_pings.wait(), WAIT)
            dropped = await alice.rec.wait_kind(ConnectionChanged, state="reconnecting")
            assert "nothing heard" in dropped.detail
        finally:
            await alice.stop()


async def test_send_to_pinned_but_unregistered_name_fails_cleanly(
    server: ChatServer, make_client: Callable[..., Client]
) -> None:
    alice = await online(make_client("alice", server.port))
    ghost = crypto.generate_private_key(BITS)
    alice.session.store.pins.pin("ghost", crypto.public_key_pem(ghost.public_key()))
    msg_id = await alice.session.send("ghost", "anyone there?")
    error = await alice.rec.wait_kind(ErrorReported, code="unknown_user")
    assert error.msg_id == msg_id and not error.fatal and not error.retried
    assert await alice.session.wait_idle(WAIT)  # dropped from the outbox: it can never be delivered
    assert alice.session.history("ghost")[-1].status == "failed"
    await alice.stop()


async def test_rate_limited_send_is_retried_with_the_same_id(make_client: Callable[..., Client]) -> None:
    sends: list[dict[str, Any]] = []

    def on_frame(frame: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        if frame["type"] != "send":
            return
        sends.append(frame)
        if len(sends) == 1:
            reply = {"type": "error", "code": "rate_limited", "message": "slow down"}
            writer.write(encode_frame({**reply, "fatal": False, "rid": frame["rid"]}))
        else:
            env = frame["envelope"]
            writer.write(encode_frame({"type": "ack", "id": env["id"], "to": "bob", "status": "queued"}))

    async with fake_server(on_frame) as port:
        alice = make_client("alice", port)
        bob = crypto.generate_private_key(BITS)
        alice.session.store.pins.pin("bob", crypto.public_key_pem(bob.public_key()))
        alice.start()
        try:
            await alice.rec.wait_kind(Ready)
            msg_id = await alice.session.send("bob", "patience")
            limited = await alice.rec.wait_kind(ErrorReported, code="rate_limited")
            assert limited.msg_id == msg_id and limited.retried  # the front ends say "retrying", not "failed"
            await alice.rec.wait_kind(Acked, msg_id=msg_id, status="queued")
            assert [s["envelope"]["id"] for s in sends] == [msg_id, msg_id]
            assert sends[0]["envelope"] == sends[1]["envelope"]  # byte-for-byte the same envelope
        finally:
            await alice.stop()


async def test_unacked_send_is_resent_after_the_connection_drops(make_client: Callable[..., Client]) -> None:
    """A server that dies between receiving a send and acking it loses nothing."""
    sends: list[dict[str, Any]] = []

    def on_frame(frame: dict[str, Any], writer: asyncio.StreamWriter) -> bool:
        if frame["type"] != "send":
            return False
        sends.append(frame)
        if len(sends) == 1:
            writer.transport.abort()  # "crash" before the ack
            return True
        ack = {"type": "ack", "id": frame["envelope"]["id"], "to": "bob", "status": "queued"}
        writer.write(encode_frame(ack))
        return False

    async with fake_server(on_frame) as port:
        alice = make_client("alice", port)
        bob = crypto.generate_private_key(BITS)
        alice.session.store.pins.pin("bob", crypto.public_key_pem(bob.public_key()))
        alice.start()
        try:
            await alice.rec.wait_kind(Ready)
            msg_id = await alice.session.send("bob", "do not lose me")
            await alice.rec.wait_kind(ConnectionChanged, state="reconnecting")
            await alice.rec.wait_kind(Acked, msg_id=msg_id, status="queued")
            assert [s["envelope"] for s in sends] == [sends[0]["envelope"]] * 2
            assert sends[0]["envelope"]["id"] == msg_id
            assert await alice.session.wait_idle(WAIT)
        finally:
            await alice.stop()


async def test_a_failing_listener_logs_no_plaintext(
    server: ChatServer, make_client: Callable[..., Client], caplog: pytest.LogCaptureFixture
) -> None:
    """A front end that fails on an event must not put the message's text into the log (issue 13, item 7)."""
    alice = await online(make_client("alice", server.port))
    bob = await online(make_client("bob", server.port))

    def fail() -> None:
        raise ValueError("year 287396 is out of range")

    def broken(event: object) -> None:
        if isinstance(event, MessageReceived):
            fail()

    bob.session.add_listener(broken)
    msg_id = await alice.session.send("bob", "the secret plaintext")
    await bob.rec.wait_kind(MessageReceived, msg_id=msg_id)
    await alice.rec.wait_kind(Acked, msg_id=msg_id, status="delivered")
    logged = [record for record in caplog.records if "listener failed" in record.getMessage()]
    assert logged, "the failure is logged"
    assert not any("secret plaintext" in record.getMessage() for record in caplog.records)
    await alice.stop()
    await bob.stop()


async def test_the_nodes_of_one_server_are_tried_in_turn(
    tmp_path: Path, make_client: Callable[..., Client], redis_server: RedisProcess
) -> None:
    """``--server dead,a,b``: a refused node is skipped, a lost connection moves on to the next node."""
    nodes = {"redis_url": redis_server.url, "redis_prefix": f"turns-{id(tmp_path)}:"}
    async with running_server(tmp_path / "a.db", **nodes) as a, running_server(tmp_path / "b.db", **nodes) as b:
        with socket.socket() as probe:  # a port nothing listens on
            probe.bind(("127.0.0.1", 0))
            dead = probe.getsockname()[1]
        alice = make_client("alice", dead, more_servers=[("127.0.0.1", a.port), ("127.0.0.1", b.port)])
        await online(alice)
        assert alice.session.port == a.port
        bob = await online(make_client("bob", b.port))
        await a.close()  # alice's node goes away: she moves on to b, the next in her list
        await alice.rec.wait_for(lambda e: isinstance(e, Ready) and len(alice.rec.of(Ready)) == 2)
        assert alice.session.port == b.port
        msg_id = await alice.session.send("bob", "through the next node")
        await alice.rec.wait_kind(Acked, msg_id=msg_id, status="delivered")
        assert (await bob.rec.wait_kind(MessageReceived)).msg_id == msg_id
        await alice.stop()
        await bob.stop()
