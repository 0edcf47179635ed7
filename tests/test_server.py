"""The relay against a real ChatServer on 127.0.0.1 and an ephemeral port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from securechat.crypto import public_key_pem, sign_auth
from securechat.encoding import b64decode, b64encode
from securechat.protocol import FATAL_CODES, encode_frame
from securechat.relayframes import ack_frame
from securechat.server import ChatServer, ServerConfig
from securechat.server.app import open_store
from securechat.server.sqlite import SqliteStore
from securechat.server.store import QueuedMessage, Registration
from tests.support.acks import delivered_acks
from tests.support.rawclient import (
    RawClient,
    clients,
    envelope,
    identity_key,
    json_frame,
    msg_id,
    raw_frame,
    running_server,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def server(tmp_path: Path, backend_options: dict[str, Any]) -> AsyncIterator[ChatServer]:
    """Every test here that takes ``server`` runs twice: SQLite on one node, and Redis with the cluster routing."""
    async with running_server(tmp_path / "server.db", **backend_options) as srv:
        assert srv.store_kind == ("redis" if backend_options else "sqlite")
        yield srv


def send(to: str, n: int, sender: str = "alice", rid: str | None = None, **env: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "send", "to": to, "envelope": {**envelope(sender, to, msg_id(n)), **env}}
    if rid is not None:
        frame["rid"] = rid
    return frame


async def fatal(client: RawClient, code: str) -> dict[str, Any]:
    """The next frame (presence aside) is the fatal error ``code`` and the server then closes."""
    frame = await client.recv()
    while frame["type"] == "presence":
        frame = await client.recv()
    assert frame["type"] == "error" and frame["code"] == code and frame["fatal"] is True, frame
    assert "Traceback" not in frame["message"]
    assert [f for f in await client.expect_closed() if f["type"] != "presence"] == []
    return frame


async def nonfatal(client: RawClient, code: str) -> dict[str, Any]:
    frame = await client.recv_type("error")
    assert frame["code"] == code and frame["fatal"] is False, frame
    return frame


async def still_open(client: RawClient) -> None:
    await client.send_frame({"type": "ping", "rid": "alive"})
    assert await client.recv_type("pong") == {"type": "pong", "rid": "alive"}


async def connect(server: ChatServer) -> RawClient:
    return await RawClient.connect(server.port)


# --- framing (section 1) ------------------------------------------------------------


async def test_oversized_length_prefix_is_refused_before_the_body(tmp_path: Path) -> None:
    async with running_server(tmp_path / "s.db", max_frame=1024) as srv:
        c = await connect(srv)
        # Announce 100 MiB and send none of it: the answer must not wait for the body.
        await c.send_raw(struct.pack(">I", 100 * 2**20))
        frame = await fatal(c, "frame_too_large")
        assert "1024" in frame["message"]


async def test_oversized_length_prefix_after_auth(server: ChatServer) -> None:
    async with clients(server.port, "alice") as (a,):
        await a.send_raw(struct.pack(">I", 0xFFFFFFFF) + b"x" * 1000)
        await fatal(a, "frame_too_large")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(struct.pack(">I", 0), id="zero-length"),
        pytest.param(raw_frame(b'{"type":"ping","x":"\xff\xfe"}'), id="invalid-utf8"),
        pytest.param(raw_frame(b'{"type":"ping"'), id="invalid-json"),
        pytest.param(raw_frame(b'["ping"]'), id="not-an-object"),
        pytest.param(json_frame({"kind": "ping"}), id="missing-type"),
        pytest.param(json_frame({"type": 7}), id="non-string-type"),
    ],
)
async def test_bad_frames_are_fatal(server: ChatServer, data: bytes) -> None:
    c = await connect(server)
    await c.send_raw(data)
    await fatal(c, "bad_frame")


async def test_bad_frame_after_a_good_one_in_the_same_packet(server: ChatServer) -> None:
    async with clients(server.port, "alice") as (a,):
        await a.send_raw(json_frame({"type": "ping", "rid": "1"}) + raw_frame(b"nope"))
        assert await a.recv() == {"type": "pong", "rid": "1"}
        await fatal(a, "bad_frame")


async def test_unknown_fields_are_ignored(server: ChatServer) -> None:
    async with clients(server.port, "alice") as (a,):
        await a.send_frame({"type": "ping", "future": {"x": [1, 2]}})
        assert await a.recv() == {"type": "pong"}


# --- session start (section 3) --------------------------------------------------------


async def test_frames_before_hello_are_not_authenticated(server: ChatServer) -> None:
    c = await connect(server)
    await c.send_frame({"type": "list", "rid": "early"})
    frame = await fatal(c, "not_authenticated")
    assert frame["rid"] == "early"


async def test_frames_between_hello_and_auth_are_not_authenticated(server: ChatServer) -> None:
    c = await connect(server)
    assert (await c.hello("alice", identity_key("alice")))["type"] == "challenge"
    await c.send_frame({"type": "send", "to": "bob", "envelope": envelope("alice", "bob", msg_id(1))})
    await fatal(c, "not_authenticated")


async def test_unknown_type_before_auth_is_not_authenticated(server: ChatServer) -> None:
    c = await connect(server)
    await c.send_frame({"type": "frobnicate"})
    await fatal(c, "not_authenticated")


async def test_welcome_registers_and_reports_new(server: ChatServer) -> None:
    c = await connect(server)
    welcome = await c.login("alice", identity_key("alice"))
    assert welcome["name"] == "alice" and welcome["new"] is True
    assert len(welcome["fingerprint"]) == 64
    await c.close()
    c = await connect(server)
    assert (await c.login("alice", identity_key("alice")))["new"] is False
    await c.close()


async def test_challenge_has_16_byte_server_id_and_fresh_32_byte_nonce(server: ChatServer) -> None:
    nonces = set()
    for _ in range(2):
        c = await connect(server)
        ch = await c.hello("alice", identity_key("alice"))
        assert len(b64decode(ch["server_id"])) == 16
        nonce = b64decode(ch["nonce"])
        assert len(nonce) == 32
        nonces.add(nonce)
        await c.close()
    assert len(nonces) == 2


async def test_wrong_key_for_a_taken_name(server: ChatServer) -> None:
    async with clients(server.port, "alice"):
        pass
    c = await connect(server)
    ch = await c.hello("alice", identity_key("bob"))
    sig = sign_auth(identity_key("bob"), b64decode(ch["server_id"]), "alice", b64decode(ch["nonce"]), c.server_identity)
    await c.send_frame({"type": "auth", "signature": b64encode(sig), "rid": "a"})
    assert (await fatal(c, "name_taken"))["rid"] == "a"
    # The original key still works.
    async with clients(server.port, "alice"):
        pass


async def test_bad_auth_signature(server: ChatServer) -> None:
    c = await connect(server)
    ch = await c.hello("alice", identity_key("alice"))
    # Signed with another key than the one presented.
    sig = sign_auth(identity_key("bob"), b64decode(ch["server_id"]), "alice", b64decode(ch["nonce"]), c.server_identity)
    await c.send_frame({"type": "auth", "signature": b64encode(sig)})
    await fatal(c, "auth_failed")


async def test_auth_signature_not_base64(server: ChatServer) -> None:
    c = await connect(server)
    await c.hello("alice", identity_key("alice"))
    await c.send_frame({"type": "auth", "signature": "***"})
    await fatal(c, "auth_failed")


async def test_replayed_auth_signature_from_an_earlier_session(server: ChatServer) -> None:
    first = await connect(server)
    ch = await first.hello("alice", identity_key("alice"))
    sig = b64encode(sign_auth(identity_key("alice"), b64decode(ch["server_id"]), "alice", b64decode(ch["nonce"]), first.server_identity))
    await first.send_frame({"type": "auth", "signature": sig})
    assert (await first.recv())["type"] == "welcome"
    await first.close()
    second = await connect(server)
    await second.hello("alice", identity_key("alice"))
    await second.send_frame({"type": "auth", "signature": sig})
    await fatal(second, "auth_failed")


async def test_version_unsupported(server: ChatServer) -> None:
    c = await connect(server)
    await c.send_frame({"type": "hello", "version": 2, "name": "alice", "pubkey": public_key_pem(identity_key("alice").public_key())})
    await fatal(c, "version_unsupported")


@pytest.mark.parametrize("name", ["Alice", "-alice", "", "a" * 33, "al ice", 7])
async def test_invalid_name(server: ChatServer, name: object) -> None:
    c = await connect(server)
    await c.send_frame({"type": "hello", "version": 1, "name": name, "pubkey": public_key_pem(identity_key("alice").public_key())})
    await fatal(c, "invalid_name")


@pytest.fixture(scope="module")
def small_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


@pytest.mark.parametrize("kind", ["small-modulus", "garbage", "two-blocks"])
async def test_bad_key(server: ChatServer, small_key: rsa.RSAPrivateKey, kind: str) -> None:
    good = public_key_pem(identity_key("alice").public_key())
    pem = {
        "small-modulus": public_key_pem(small_key.public_key()),
        "garbage": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n",
        "two-blocks": good + good,
    }[kind]
    c = await connect(server)
    await c.send_frame({"type": "hello", "version": 1, "name": "alice", "pubkey": pem})
    await fatal(c, "bad_key")


async def test_handshake_timeout(tmp_path: Path) -> None:
    async with running_server(tmp_path / "s.db", handshake_timeout=0.3) as srv:
        c = await connect(srv)
        await c.hello("alice", identity_key("alice"))  # and never authenticate
        await fatal(c, "timeout")


async def test_idle_timeout(tmp_path: Path) -> None:
    async with running_server(tmp_path / "s.db", idle_timeout=0.3) as srv, clients(srv.port, "alice") as (a,):
        await fatal(a, "timeout")


async def test_frames_keep_an_idle_connection_open(tmp_path: Path) -> None:
    async with running_server(tmp_path / "s.db", idle_timeout=0.3) as srv, clients(srv.port, "alice") as (a,):
        loop = asyncio.get_running_loop()
        end = loop.time() + 0.7  # over twice the idle timeout, pinging all along
        while loop.time() < end:
            await still_open(a)
            with pytest.raises(TimeoutError):
                await a.recv(0.1)


async def test_new_session_replaces_the_old(server: ChatServer) -> None:
    async with clients(server.port, "alice", "bob") as (a, b):
        await a.send_frame({"type": "lookup", "name": "bob"})  # presence goes to sessions interested in bob
        await a.recv_type("key")
        newer = await connect(server)
        await newer.login("bob", identity_key("bob"))
        await fatal(b, "replaced")
        await still_open(newer)
        # Bob never went offline: alice saw no offline presence for him.
        frame = await a.recv_type("presence")
        assert frame == {"type": "presence", "name": "bob", "online": True}
        await a.send_frame(send("bob", 1))
        assert (await newer.recv_type("message"))["envelope"]["id"] == msg_id(1)
        await newer.close()


async def test_hello_after_welcome_is_a_nonfatal_bad_request(server: ChatServer) -> None:
    async with clients(server.port, "alice") as (a,):
        await a.send_frame({"type": "hello", "version": 1, "name": "alice", "pubkey": "x", "rid": "h"})
        assert (await nonfatal(a, "bad_request"))["rid"] == "h"
        await a.send_frame({"type": "auth", "signature": "AAAA"})
        await nonfatal(a, "bad_request")
        await still_open(a)


async def test_unknown_type_after_auth(server: ChatServer) -> None:
    async with clients(server.port, "alice") as (a,):
        await a.send_frame({"type": "frobnicate", "rid": "u"})
        frame = await nonfatal(a, "unknown_type")
        assert frame["rid"] == "u"
        await still_open(a)


async def test_rid_is_echoed_on_every_response(server: ChatServer) -> None:
    c = await connect(server)
    key = identity_key("alice")
    await c.send_frame({"type": "hello", "version": 1, "name": "alice", "pubkey": public_key_pem(key.public_key()), "rid": "r1"})
    ch = await c.recv()
    assert ch["type"] == "challenge" and ch["rid"] == "r1"
    sig = sign_auth(key, b64decode(ch["server_id"]), "alice", b64decode(ch["nonce"]), c.server_identity)
    await c.send_frame({"type": "auth", "signature": b64encode(sig), "rid": "r2"})
    assert (await c.recv())["rid"] == "r2"
    for frame, expected in [
        ({"type": "ping", "rid": "r3"}, "pong"),
        ({"type": "list", "rid": "r4"}, "users"),
        ({"type": "lookup", "name": "alice", "rid": "r5"}, "key"),
        ({"type": "lookup", "name": "nobody", "rid": "r6"}, "error"),
        ({"type": "received", "id": "bad", "from": "bob", "rid": "r7"}, "error"),
    ]:
        await c.send_frame(frame)
        reply = await c.recv()
        assert reply["type"] == expected and reply["rid"] == frame["rid"], reply
    # A rid that is not a string of at most 64 characters is not echoed.
    await c.send_frame({"type": "ping", "rid": "x" * 65})
    assert await c.recv() == {"type": "pong"}
    await c.close()


# --- directory (section 4) ------------------------------------------------------------


async def test_lookup_and_list_and_presence(server: ChatServer) -> None:
    async with clients(server.port, "alice", "dave") as (a, d):
        await a.send_frame({"type": "lookup", "name": "bob"})
        await nonfatal(a, "unknown_user")
        await a.send_frame({"type": "list"})  # alice hears about the names on this page: dave
        assert (await a.recv_type("users"))["users"] == [{"name": "alice", "online": True}, {"name": "dave", "online": True}]
        async with clients(server.port, "carol", "bob") as (_, b):
            await d.send_frame({"type": "lookup", "name": "bob"})  # dave is the witness of bob's batches
            key = await d.recv_type("key")
            assert key["name"] == "bob"
            assert key["pubkey"] == public_key_pem(identity_key("bob").public_key())
            await b.close()
            while await d.recv_type("presence") != {"type": "presence", "name": "bob", "online": False}:
                pass  # bob's login may share a batch
            await d.close()
            # Bob and carol registered after alice's page: none of their presence reached her.
            while (frame := await a.recv()) != {"type": "presence", "name": "dave", "online": False}:
                assert frame == {"type": "presence", "name": "dave", "online": True}  # his login's batch
            await a.send_frame({"type": "ping"})
            assert await a.recv() == {"type": "pong"}
            await a.send_frame({"type": "list"})
            users = (await a.recv_type("users"))["users"]
            assert users == [
                {"name": "alice", "online": True},
                {"name": "bob", "online": False},
                {"name": "carol", "online": True},
                {"name": "dave", "online": False},
            ]
        # carol, now on alice's page, leaves: that is pushed to alice.
        assert await a.recv() == {"type": "presence", "name": "carol", "online": False}


async def test_lookup_rate_limit(tmp_path: Path) -> None:
    async with running_server(tmp_path / "s.db", lookup_rate=2.0) as srv, clients(srv.port, "alice") as (a,):
        for _ in range(5):
            await a.send_frame({"type": "lookup", "name": "alice"})
        kinds = [(await a.recv())["type"] for _ in range(5)]
        assert kinds.count("key") == 2
        assert kinds.count("error") == 3
        await still_open(a)


# --- messages (section 5) -------------------------------------------------------------


async def test_message_goes_to_the_one_recipient_only(server: ChatServer) -> None:
    async with clients(server.port, "alice", "bob", "carol") as (a, b, c):
        await a.send_frame(send("bob", 1, rid="s1"))
        message = await b.recv_type("message")
        assert message["from"] == "alice"
        assert message["envelope"] == envelope("alice", "bob", msg_id(1))
        assert isinstance(message["server_ts"], int)
        await b.send_frame({"type": "received", "id": msg_id(1), "from": "alice"})
        # On Redis a `queued` may come first: bob's backlog may still be read (tests/support/acks.py).
        acks = await delivered_acks(a, 1)
        assert acks == [{"type": "ack", "id": msg_id(1), "to": "bob", "status": "delivered", "rid": "s1"}], acks
        # carol saw presence frames only.
        while True:
            try:
                frame = await c.recv(0.2)
            except TimeoutError:
                break
            assert frame["type"] == "presence", frame


async def test_forged_envelope_from(server: ChatServer) -> None:
    async with clients(server.port, "alice", "bob", "carol") as (a, b, _):
        await a.send_frame(send("bob", 1, sender="carol", rid="f"))
        assert (await nonfatal(a, "bad_request"))["rid"] == "f"
        await still_open(a)
        await b.send_frame({"type": "ping"})
        assert (await b.recv_type("pong")) == {"type": "pong"}
        assert not [f for f in b.frames if f["type"] == "message"]


async def test_to_and_envelope_to_mismatch(server: ChatServer) -> None:
    async with clients(server.port, "alice", "bob", "carol") as (a, _, _):
        frame = send("bob", 1)
        frame["to"] = "carol"
        await a.send_frame(frame)
        await nonfatal(a, "bad_request")
        await still_open(a)


async def test_malformed_envelope_is_a_bad_request(server: ChatServer) -> None:
    async with clients(server.port, "alice", "bob") as (a, _):
        await a.send_frame(send("bob", 1, id="not-hex"))
        await nonfatal(a, "bad_request")
        await still_open(a)


async def test_unknown_recipient(server: ChatServer) -> None:
    async with clients(server.port, "alice") as (a,):
        await a.send_frame(send("nobody", 1, rid="u"))
        assert (await nonfatal(a, "unknown_user"))["rid"] == "u"
        await still_open(a)


async def test_send_to_self_is_a_bad_request(server: ChatServer) -> None:
    async with clients(server.port, "alice") as (a,):
        await a.send_frame(send("alice", 1))
        await nonfatal(a, "bad_request")
        await still_open(a)


async def test_offline_queue_delivered_after_welcome_oldest_first_and_kept_until_received(server: ChatServer) -> None:
    async with clients(server.port, "bob"):
        pass
    async with clients(server.port, "alice") as (a,):
        for n in range(1, 6):
            await a.send_frame(send("bob", n, rid=f"q{n}"))
            assert await a.recv_type("ack") == {"type": "ack", "id": msg_id(n), "to": "bob", "status": "queued", "rid": f"q{n}"}
        # First session: read, confirm only the first two, drop.
        b = await connect(server)
        await b.login("bob", identity_key("bob"))
        ids = [(await b.recv_type("message"))["envelope"]["id"] for _ in range(5)]
        assert ids == [msg_id(n) for n in range(1, 6)]
        for n in (1, 2):
            await b.send_frame({"type": "received", "id": msg_id(n), "from": "alice"})
            ack = await a.recv_type("ack")
            assert ack["status"] == "delivered" and ack["id"] == msg_id(n)
        await still_open(b)  # the received frames were processed
        await b.close()
        # Second session: only the unconfirmed three, still oldest first; on probation after a session
        # that ended holding some (docs/protocol.md, "Delivery": set aside), one at a time until it confirms one.
        b = await connect(server)
        await b.login("bob", identity_key("bob"))
        ids = []
        for _ in range(3):
            ids.append((await b.recv_type("message"))["envelope"]["id"])
            await b.send_frame({"type": "received", "id": ids[-1], "from": "alice"})
        assert ids == [msg_id(n) for n in range(3, 6)]
        await still_open(b)
        await b.close()
    async with clients(server.port, "bob") as (b,):
        await b.expect_silence()


async def test_resend_of_a_queued_message_is_not_stored_twice(server: ChatServer) -> None:
    async with clients(server.port, "bob"):
        pass
    async with clients(server.port, "alice") as (a,):
        for _ in range(2):
            await a.send_frame(send("bob", 1))
            assert (await a.recv_type("ack"))["status"] == "queued"
    async with clients(server.port, "bob") as (b,):
        assert (await b.recv_type("message"))["envelope"]["id"] == msg_id(1)
        await b.expect_silence()


async def test_unconfirmed_in_flight_goes_back_to_the_queue_on_drop(server: ChatServer) -> None:
    async with clients(server.port, "alice", "bob") as (a, b):
        await a.send_frame(send("bob", 1, rid="x"))
        assert (await b.recv_type("message"))["envelope"]["id"] == msg_id(1)
        await b.close()  # without confirming
        ack = await a.recv_type("ack")
        assert ack == {"type": "ack", "id": msg_id(1), "to": "bob", "status": "queued", "rid": "x"}
        b2 = await connect(server)
        await b2.login("bob", identity_key("bob"))
        assert (await b2.recv_type("message"))["envelope"]["id"] == msg_id(1)
        await b2.send_frame({"type": "received", "id": msg_id(1), "from": "alice"})
        assert (await a.recv_type("ack"))["status"] == "delivered"
        await b2.close()


async def test_replaced_session_hands_its_in_flight_messages_to_the_new_one(server: ChatServer) -> None:
    async with clients(server.port, "alice", "bob") as (a, b):
        await a.send_frame(send("bob", 1))
        await b.recv_type("message")
        newer = await connect(server)
        await newer.login("bob", identity_key("bob"))
        assert (await newer.recv_type("message"))["envelope"]["id"] == msg_id(1)
        await newer.close()


async def prefill(db: Path, count: int, options: dict[str, Any]) -> None:
    """Register alice and bob and queue ``count`` messages from alice to bob, straight into the store."""
    async with running_server(db, **options) as srv, clients(srv.port, "alice", "bob"):
        pass
    store = open_store(ServerConfig(db_path=db, **options))
    await store.requeue([
        QueuedMessage("bob", "alice", msg_id(n), n, json_frame(
            {"type": "message", "from": "alice", "server_ts": n, "envelope": envelope("alice", "bob", msg_id(n))}
        ), time.time())
        for n in range(count)
    ])
    await store.close()


async def test_messages_arriving_during_the_backlog_go_after_it(tmp_path: Path, backend_options: dict[str, Any]) -> None:
    db = tmp_path / "s.db"
    backlog = 2000
    await prefill(db, backlog, backend_options)
    async with running_server(db, **backend_options) as srv, clients(srv.port, "alice", "carol") as (a, c):
        b = await connect(srv)
        await b.login("bob", identity_key("bob"))
        await a.send_frame(send("bob", backlog))  # while the backlog streams
        # Others are not held up by bob's backlog.
        await still_open(c)
        ids = []
        for _ in range(backlog + 1):  # confirmed as read: the server hands out a window at a time
            frame = await b.recv_type("message")
            ids.append(frame["envelope"]["id"])
            await b.send_frame({"type": "received", "id": ids[-1], "from": frame["from"]})
        assert ids == [msg_id(n) for n in range(backlog + 1)]
        await b.close()


async def test_registrations_and_queue_survive_a_restart(tmp_path: Path, backend_options: dict[str, Any]) -> None:
    db = tmp_path / "s.db"
    async with running_server(db, **backend_options) as srv, clients(srv.port, "alice", "bob") as (a, b):
        await b.close()
        await a.send_frame(send("bob", 7))
        assert (await a.recv_type("ack"))["status"] == "queued"
        server_id = a.server_id
    async with running_server(db, **backend_options) as srv:
        c = await connect(srv)
        ch = await c.hello("bob", identity_key("mallory"))
        assert b64decode(ch["server_id"]) == server_id
        await c.close()
        b = await connect(srv)
        assert (await b.login("bob", identity_key("bob")))["new"] is False
        assert (await b.recv_type("message"))["envelope"]["id"] == msg_id(7)
        await b.close()
        c = await connect(srv)
        nonce = b64decode((await c.hello("bob", identity_key("mallory")))["nonce"])
        sig = sign_auth(identity_key("mallory"), b64decode(ch["server_id"]), "bob", nonce, c.server_identity)
        await c.send_frame({"type": "auth", "signature": b64encode(sig)})
        await fatal(c, "name_taken")


async def test_queue_full_drops_nothing(tmp_path: Path, backend_options: dict[str, Any]) -> None:
    async with running_server(tmp_path / "s.db", queue_limit=3, sender_share=1, **backend_options) as srv:
        async with clients(srv.port, "bob"):
            pass
        async with clients(srv.port, "alice") as (a,):
            for n in range(3):
                await a.send_frame(send("bob", n))
                assert (await a.recv_type("ack"))["status"] == "queued"
            await a.send_frame(send("bob", 3, rid="full"))
            assert (await nonfatal(a, "queue_full"))["rid"] == "full"
            # A resend of something already queued is still acked.
            await a.send_frame(send("bob", 0))
            assert (await a.recv_type("ack"))["status"] == "queued"
        async with clients(srv.port, "bob") as (b,):
            ids = [(await b.recv_type("message"))["envelope"]["id"] for _ in range(3)]
            assert ids == [msg_id(n) for n in range(3)]
            await b.expect_silence()


async def test_rate_limited_keeps_the_connection(tmp_path: Path) -> None:
    async with running_server(tmp_path / "s.db", rate=20.0, burst=5) as srv, clients(srv.port, "alice") as (a,):
        await a.send_raw(b"".join(json_frame({"type": "ping", "rid": str(i)}) for i in range(20)))
        replies = [await a.recv() for _ in range(20)]
        pongs = [r for r in replies if r["type"] == "pong"]
        limited = [r for r in replies if r["type"] == "error"]
        assert 1 <= len(pongs) <= 6  # the burst (less what the login spent), maybe one refill
        assert limited and all(r["code"] == "rate_limited" and r["fatal"] is False for r in limited)
        # The bucket refills and the same connection is served again.
        async with asyncio.timeout(5):
            while True:
                await a.send_frame({"type": "ping", "rid": "again"})
                if (await a.recv())["type"] == "pong":
                    break


async def test_server_busy_over_max_connections(tmp_path: Path) -> None:
    async with running_server(tmp_path / "s.db", max_connections=2) as srv:
        first, second = await connect(srv), await connect(srv)
        third = await connect(srv)
        frame = await fatal(third, "server_busy")
        assert frame["fatal"] is True
        await first.close()
        await first.expect_closed()
        # Once a slot is free, a new connection is served (retry until the close is seen).
        async with asyncio.timeout(5):
            while True:
                c = await connect(srv)
                await c.send_frame({"type": "hello", "version": 1, "name": "alice",
                                    "pubkey": public_key_pem(identity_key("alice").public_key())})
                if (await c.recv())["type"] == "challenge":
                    break
                await c.close()
        await c.close()
        await second.close()


async def test_server_busy_over_max_per_ip(tmp_path: Path) -> None:
    async with running_server(tmp_path / "s.db", max_per_ip=1) as srv:
        first = await connect(srv)
        second = await connect(srv)
        await fatal(second, "server_busy")
        await first.close()


async def test_a_non_reading_recipient_is_dropped_and_its_messages_kept(tmp_path: Path, backend_options: dict[str, Any]) -> None:
    async with (
        running_server(tmp_path / "s.db", max_outgoing_buffer=256 * 1024, **backend_options) as srv,
        clients(srv.port, "alice", "bob", "carol") as (a, b, c),
    ):
        big = "A" * (200 * 1024)
        count = 80  # 16 MB: far more than the kernel buffers plus the bound
        for n in range(count):
            await a.send_frame(send("bob", n, ct=big))
        # Bob never reads: he is handed one window (2 MiB, ten of these) and the rest waits in the
        # store (acked `queued`); when his connection ends, what he held is queued too.
        acks = set()
        for total in (count - 10, count):
            async with asyncio.timeout(15):
                while len(acks) < total:
                    ack = await a.recv_type("ack", timeout=15)
                    assert ack["status"] == "queued"
                    acks.add(ack["id"])
            b.writer.transport.abort()
        await still_open(a)
        await still_open(c)
        b2 = await RawClient.connect(srv.port)
        b2.decoder = b2.decoder.__class__(1 << 22)
        await b2.login("bob", identity_key("bob"))
        ids = []
        for _ in range(count):  # confirmed as read: the server hands out a window at a time
            ids.append((await b2.recv_type("message"))["envelope"]["id"])
            await b2.send_frame({"type": "received", "id": ids[-1], "from": "alice"})
        assert ids == [msg_id(n) for n in range(count)]
        await b2.close()


async def test_internal_errors_are_generic_and_nonfatal(server: ChatServer, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any) -> Any:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(server._store, "names_page", broken)
    async with clients(server.port, "alice") as (a,):
        await a.send_frame({"type": "list", "rid": "i"})
        frame = await nonfatal(a, "internal")
        assert frame["rid"] == "i"
        assert "secret" not in frame["message"] and "Traceback" not in frame["message"]
        await still_open(a)


async def test_close_is_clean_with_connections_open(tmp_path: Path) -> None:
    srv = ChatServer(ServerConfig(port=0, db_path=tmp_path / "s.db"))
    await srv.start()
    assert srv.port != 0
    c = await connect(srv)
    await c.login("alice", identity_key("alice"))
    await srv.close()
    await c.expect_closed()


async def test_confirming_a_large_backlog_is_not_rate_limited(tmp_path: Path, backend_options: dict[str, Any]) -> None:
    db = tmp_path / "s.db"
    count = 300
    await prefill(db, count, backend_options)
    async with running_server(db, rate=20.0, burst=10, **backend_options) as srv:
        async with clients(srv.port, "bob") as (b,):
            for _ in range(count):
                m = await b.recv_type("message")
                b.writer.write(json_frame({"type": "received", "id": m["envelope"]["id"], "from": "alice"}))
            # Unmatched or malformed confirmations are still charged (and never crash the server).
            await b.send_raw(json_frame({"type": "received", "id": [1], "from": {"x": 1}}))
            await nonfatal(b, "bad_request")
        assert await srv._store.queue_size("bob") == (0, 0)


async def test_received_for_an_unknown_message_is_harmless(server: ChatServer) -> None:
    async with clients(server.port, "alice", "bob") as (a, b):
        await b.send_frame({"type": "received", "id": msg_id(99), "from": "alice"})
        await still_open(b)
        await a.send_frame({"type": "ping"})
        assert await a.recv_type("pong") == {"type": "pong"}  # no stray ack before it


async def test_presence_only_reaches_authenticated_connections(server: ChatServer) -> None:
    async with clients(server.port, "bob"):
        pass  # registered, so on alice's page
    pending = await connect(server)
    await pending.hello("carol", identity_key("carol"))
    async with clients(server.port, "alice") as (a,):
        await a.send_frame({"type": "list"})  # alice hears about bob from now on
        await a.recv_type("users")
        async with clients(server.port, "bob"):
            while await a.recv_type("presence") != {"type": "presence", "name": "bob", "online": True}:
                pass  # his first logout's batch may still have been pending
        assert await a.recv_type("presence") == {"type": "presence", "name": "bob", "online": False}
    # Both batches went out while carol was mid-handshake: nothing of them reached her.
    await pending.expect_silence(ignore=())
    await pending.close()


async def test_start_failure_leaves_nothing_running(server: ChatServer, tmp_path: Path) -> None:
    second = ChatServer(ServerConfig(port=server.port, db_path=tmp_path / "other.db"))
    with pytest.raises(OSError):
        await second.start()
    await second.close()


# --- whatever a client sends, the server answers or closes and stays up ----------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_frames = st.fixed_dictionaries(
    {"type": st.sampled_from(["send", "received", "lookup", "list", "ping", "hello", "auth", "x"])},
    optional={
        "to": st.sampled_from(["bob", "alice", "Bob", ""]) | _json,
        "name": st.sampled_from(["bob", "nobody"]) | _json,
        "id": st.just(msg_id(1)) | _json,
        "from": st.sampled_from(["bob", "alice"]) | _json,
        "envelope": st.just(envelope("alice", "bob", msg_id(1))) | _json,
        "rid": _json,
    },
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(_frames, min_size=1, max_size=5))
def test_arbitrary_frames_never_break_the_server(tmp_path: Path, frames: list[dict[str, Any]]) -> None:
    async def scenario() -> None:
        async with running_server(tmp_path / "fuzz.db") as srv, clients(srv.port, "alice", "bob") as (a, _):
            for frame in frames:
                await a.send_frame(frame)
            await a.send_frame({"type": "ping", "rid": "end"})
            while True:
                reply = await a.recv()
                assert reply["type"] != "error" or reply["code"] != "internal", reply
                if reply["type"] == "error" and reply["fatal"]:
                    # A fatal answer (e.g. invalid_name) is allowed; then the server closes.
                    assert reply["code"] in FATAL_CODES, reply
                    await a.expect_closed()
                    break
                if reply == {"type": "pong", "rid": "end"}:
                    break
            # Another session is unaffected.
            async with clients(srv.port, "carol") as (c,):
                await still_open(c)

    asyncio.run(scenario())


async def test_presence_is_batched_and_never_about_oneself(server: ChatServer) -> None:
    async with clients(server.port, "bob", "carol"):
        pass  # registered, so on the pages listed below
    async with clients(server.port, "alice") as (a,):
        await a.send_frame({"type": "list"})
        await a.recv_type("users")
        async with clients(server.port, "bob", "carol") as (b, c):
            for client in (b, c):  # right after welcome, usually before their own batch went out
                await client.send_frame({"type": "list"})
                await client.recv_type("users")
            seen: set[str] = set()
            while seen != {"bob", "carol"}:  # their first logouts' batch may still have been pending
                frame = await a.recv_type("presence")
                if frame["online"]:
                    seen.add(frame["name"])
            for client, me in ((b, "bob"), (c, "carol")):
                frames = []
                with contextlib.suppress(TimeoutError):
                    while True:  # batches go out within 50 ms; collect until a quiet spell
                        frames.append(await client.recv(0.15))
                assert all(f["type"] == "presence" and f["name"] != me for f in frames), (me, frames)


async def test_presence_goes_only_to_interested_sessions(server: ChatServer) -> None:
    async with clients(server.port, "carol"):
        pass  # registered, now offline
    async with clients(server.port, "alice", "bob", "dave", "erin") as (a, b, d, e):
        await a.send_frame({"type": "lookup", "name": "carol"})
        await a.recv_type("key")
        await d.send_frame({"type": "list"})
        await d.recv_type("users")
        await e.send_frame(send("carol", 1, sender="erin"))  # writing to carol (queued) is interest too
        assert (await e.recv_type("ack"))["status"] == "queued"
        for client in (a, d, e):  # b drains the logins' presence it never asked for: there is none
            await client.send_frame({"type": "ping", "rid": "sync"})
            await client.recv_type("pong")
        async with clients(server.port, "carol") as (c,):
            for client in (a, d, e):
                # Carol's earlier logout may still be in a pending batch: her login comes after it.
                while await client.recv_type("presence") != {"type": "presence", "name": "carol", "online": True}:
                    pass
            await b.send_frame({"type": "ping"})
            assert await b.recv() == {"type": "pong"}  # the batch went out before: bob got nothing
            # carol received from erin in this session: she hears when erin leaves.
            assert (await c.recv_type("message"))["from"] == "erin"
            await e.close()
            while (frame := await c.recv_type("presence")) != {"type": "presence", "name": "erin", "online": False}:
                assert frame["name"] == "erin", frame  # erin's login may share carol's first batch


async def test_unconfirmed_messages_past_the_window_wait_in_the_store(tmp_path: Path, backend_options: dict[str, Any]) -> None:
    async with running_server(tmp_path / "s.db", window=2, **backend_options) as srv, clients(srv.port, "alice", "bob") as (a, b):
        for n in range(2):
            await a.send_frame(send("bob", n))
            await b.recv_type("message")
        await a.send_frame(send("bob", 2, rid="past"))
        if backend_options:  # nodes on Redis: every message is in the store already; the third waits there
            while (ack := await a.recv_type("ack"))["id"] != msg_id(2):
                assert ack["status"] == "queued", ack  # one published while bob's session still read its queue
            assert ack == {"type": "ack", "id": msg_id(2), "to": "bob", "status": "queued", "rid": "past"}
        else:  # one node: the two held in memory go to the store first (their senders hear `queued`), then the third
            acks = [await a.recv_type("ack") for _ in range(3)]
            assert sorted((x["id"], x["status"], x.get("rid")) for x in acks) == [
                (msg_id(0), "queued", None), (msg_id(1), "queued", None), (msg_id(2), "queued", "past")
            ]
        await b.expect_silence(0.2)
        await b.send_frame({"type": "received", "id": msg_id(0), "from": "alice"})
        assert (await b.recv_type("message"))["envelope"]["id"] == msg_id(2)


async def test_a_message_that_waited_for_the_window_is_told_queued_once(
    tmp_path: Path, backend_options: dict[str, Any]
) -> None:
    """It waited (in the tail on one node, in the queue on nodes over Redis), was handed out, and the
    session ended without confirming it: its sender hears `queued` once, then `delivered`. On Redis
    the node said `queued` when the message had to wait and said it again at the session's end."""
    async with running_server(tmp_path / "s.db", window=1, **backend_options) as srv, clients(srv.port, "alice", "bob") as (a, b):
        await a.send_frame(send("bob", 1))
        assert (await b.recv_type("message"))["envelope"]["id"] == msg_id(1)
        await a.send_frame(send("bob", 2, rid="second"))  # bob's window of one is full: it waits
        await b.send_frame({"type": "received", "id": msg_id(1), "from": "alice"})
        assert (await b.recv_type("message"))["envelope"]["id"] == msg_id(2)
        await b.close()  # without confirming the second
        b2 = await connect(srv)
        await b2.login("bob", identity_key("bob"))
        assert (await b2.recv_type("message"))["envelope"]["id"] == msg_id(2)
        await b2.send_frame({"type": "received", "id": msg_id(2), "from": "alice"})
        statuses = []
        while not statuses or statuses[-1] != "delivered":
            ack = await a.recv_type("ack")
            if ack["id"] == msg_id(2):
                statuses.append(ack["status"])
        assert statuses == ["queued", "delivered"], statuses
        await b2.close()


async def test_shutdown_keeps_unconfirmed_messages(tmp_path: Path, backend_options: dict[str, Any]) -> None:
    db = tmp_path / "s.db"
    async with running_server(db, **backend_options) as srv, clients(srv.port, "alice", "bob") as (a, b):
        await a.send_frame(send("bob", 1))
        await b.recv_type("message")  # and never confirmed before the server stops
    async with running_server(db, **backend_options) as srv, clients(srv.port, "bob") as (b,):
        assert (await b.recv_type("message"))["envelope"]["id"] == msg_id(1)


@given(rid=st.none() | st.text(max_size=64), status=st.sampled_from(["queued", "delivered"]), n=st.integers(0, 2**128 - 1))
def test_ack_frame_is_byte_identical_to_the_encoder(rid: str | None, status: str, n: int) -> None:
    expected: dict[str, Any] = {"type": "ack", "id": msg_id(n), "to": "bob-1_x", "status": status}
    if rid is not None:
        expected["rid"] = rid
    assert ack_frame(msg_id(n), "bob-1_x", status, rid) == encode_frame(expected)


async def test_a_failing_backlog_fetch_closes_only_that_session(server: ChatServer, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("disk on fire")

    async with clients(server.port, "alice"):
        for method in ("fetch", "fetch_routed"):  # the second is what the cluster routing reads with
            if hasattr(server._store, method):
                monkeypatch.setattr(server._store, method, broken)
        b = await connect(server)
        await b.login("bob", identity_key("bob"))
        await b.expect_closed()
        monkeypatch.undo()
        async with clients(server.port, "bob") as (b2,):
            await still_open(b2)


async def test_a_burst_of_offline_sends_is_acked_in_order_before_later_answers(tmp_path: Path, backend_options: dict[str, Any]) -> None:
    async with running_server(tmp_path / "s.db", queue_limit=4, sender_share=1, **backend_options) as srv:
        async with clients(srv.port, "bob"):
            pass
        async with clients(srv.port, "alice") as (a,):
            burst = b"".join(json_frame(send("bob", n, rid=f"b{n}")) for n in range(6))
            await a.send_raw(burst + json_frame({"type": "ping", "rid": "last"}))
            replies: list[dict[str, Any]] = []
            while len(replies) < 7:  # bob's going offline may reach alice once she watches him: not an answer
                if (reply := await a.recv())["type"] != "presence":
                    replies.append(reply)
            assert [r.get("rid") for r in replies] == [f"b{n}" for n in range(6)] + ["last"]
            assert [r["type"] for r in replies[:4]] == ["ack"] * 4
            assert [r.get("code") for r in replies[4:6]] == ["queue_full"] * 2
        async with clients(srv.port, "bob") as (b,):
            ids = [(await b.recv_type("message"))["envelope"]["id"] for _ in range(4)]
            assert ids == [msg_id(n) for n in range(4)]


class _GatedRegistrations(SqliteStore):
    """A store whose first lookup of ``gated`` waits until ``gate`` opens."""

    def __init__(self, path: Path, gated: str) -> None:
        super().__init__(path)
        self.gated = gated
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    def get_registration(self, name: str) -> asyncio.Future[Registration | None]:
        inner = super().get_registration(name)
        if name != self.gated or self.gate.is_set():
            return inner

        async def gated() -> Registration | None:
            self.waiting.set()
            await self.gate.wait()
            return await inner

        return asyncio.ensure_future(gated())


async def test_recipient_logging_in_during_the_send_lookup_still_gets_the_message(tmp_path: Path) -> None:
    """After a restart the server must look bob up before storing for him; if bob logs in
    during that lookup, his backlog fetch has already run, so the message must be
    forwarded to his new session, not stored until his next one."""
    db = tmp_path / "s.db"
    async with running_server(db) as srv, clients(srv.port, "alice", "bob"):
        pass  # both registered; the next server starts with no cached fingerprints
    store = _GatedRegistrations(db, gated="bob")
    server = ChatServer(ServerConfig(host="127.0.0.1", port=0, db_path=db), store=store)
    await server.start()
    try:
        async with clients(server.port, "alice") as (a,):
            await a.send_frame(send("bob", 7, rid="during-login"))
            await asyncio.wait_for(store.waiting.wait(), 10)  # the send is waiting on bob's lookup
            async with clients(server.port, "bob") as (b,):
                store.gate.set()
                message = await b.recv_type("message")
                assert message["envelope"]["id"] == msg_id(7)
                await b.send_frame({"type": "received", "id": msg_id(7), "from": "alice"})
                ack = await a.recv_type("ack")
                if ack["status"] == "queued":  # stored: bob's session was still reading its queue
                    ack = await a.recv_type("ack")
                assert (ack["id"], ack["status"]) == (msg_id(7), "delivered")
    finally:
        await server.close()


async def test_answers_are_not_lost_when_the_client_half_closes_while_a_request_waits(
    plain_server: ChatServer,
) -> None:
    """EOF arriving while a request waits on the store: every answer still goes out before the close.

    Plaintext: a TCP half-close, which asyncio's TLS cannot do (over TLS, close_notify plays that
    part: tests/test_tls.py).
    """
    async with clients(plain_server.port, "alice", tls=False) as (a,):
        pings = b"".join(json_frame({"type": "ping", "rid": str(n)}) for n in range(50))
        a.writer.write(json_frame({"type": "list", "rid": "l"}) + pings)
        a.writer.write_eof()
        seen = [f for f in await a.expect_closed() if f["type"] != "presence"]
        assert [f.get("rid") for f in seen] == ["l"] + [str(n) for n in range(50)], f"{len(seen)} of 51 answers"


async def test_a_fatal_error_after_a_send_being_stored_logs_no_error(
    server: ChatServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The ack of a send still being stored is not written after the fatal error (nor crashes the write)."""
    async with clients(server.port, "bob"):
        pass  # registered, now offline
    async with clients(server.port, "alice") as (a,):
        stored = json_frame(send("bob", 1))
        await a.send_raw(json_frame({"type": "list"}) + stored + struct.pack(">I", 0))
        seen = [f for f in await a.expect_closed() if f["type"] != "presence"]
        assert [(f["type"], f.get("code")) for f in seen] == [("users", None), ("error", "bad_frame")]
        # The store answers the send after the connection failed, while alice still lingers.
        assert (await server._store.queue_size("bob"))[0] == 1
        await asyncio.sleep(0.1)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    async with clients(server.port, "bob") as (b,):  # it was stored all the same
        assert (await b.recv_type("message"))["envelope"]["id"] == msg_id(1)
