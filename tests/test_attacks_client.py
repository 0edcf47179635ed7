"""A malicious server against a real client (issue #5).

``HostileServer`` speaks the handshake for real (it hands out a fresh
challenge, welcomes whoever answers, serves ``lookup`` from a table the test
controls) and then pushes whatever a test scripts. Each test checks that the
client rejects the hostile input with the documented reason, never replaces a
pin silently, keeps running (a later good message still arrives) and never
lets an exception escape to the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from securechat import crypto
from securechat.errors import KeyChanged
from securechat.events import (
    ConnectionChanged,
    ErrorReported,
    KeyChangedAlert,
    MessageReceived,
    MessageRejected,
    Ready,
)
from securechat.names import format_fingerprint
from securechat.protocol import encode_frame
from tests.support.hostile import HostileServer, client_of
from tests.support.jsonclient import JsonClient
from tests.support.rawclient import identity_key
from tests.support.sessions import Client

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0


@pytest.fixture
async def alice(
    tmp_path: Path, hostile: HostileServer, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Client]:
    caplog.set_level(logging.INFO)
    async with client_of(hostile, tmp_path / "home", caplog) as client:
        yield client
    assert client.task is not None and client.task.done()  # stopped by us, not crashed
    if not client.task.cancelled():
        assert client.task.exception() is None, client.task.exception()


def seal(
    sender: str,
    text: str,
    *,
    key: str | None = None,
    to: str = "alice",
    recipient: Any = None,
    srv: HostileServer,
) -> dict[str, Any]:
    recipient = recipient or srv.client_key
    return crypto.seal_envelope(identity_key(key or sender), recipient, sender, to, text)


async def start(client: Client) -> None:
    client.start()
    await client.rec.wait_kind(Ready)


async def good_message_arrives(client: Client, srv: HostileServer, text: str = "still fine") -> None:
    """The session survived: a genuine message from bob is shown."""
    env = seal("bob", text, srv=srv)
    srv.message("bob", env)
    got = await client.rec.wait_kind(MessageReceived, msg_id=env["id"])
    assert got.text == text


async def confirmed(srv: HostileServer, msg_id: str) -> None:
    async with asyncio.timeout(WAIT):
        while True:
            frame = await srv.from_client.get()
            if frame["type"] == "received" and frame["id"] == msg_id:
                return


# --- messages ----------------------------------------------------------------------------------


async def test_signature_by_another_key_is_bad_signature(hostile: HostileServer, alice: Client) -> None:
    await start(alice)
    await good_message_arrives(alice, hostile, "first")  # bob is now pinned
    forged = seal("bob", "I am bob, honest", key="mallory", srv=hostile)
    hostile.message("bob", forged)
    rejected = await alice.rec.wait_kind(MessageRejected, msg_id=forged["id"])
    assert rejected.reason == "bad_signature"
    assert not alice.rec.of(KeyChangedAlert)
    await confirmed(hostile, forged["id"])
    await good_message_arrives(alice, hostile)


async def test_forged_first_contact_signature(hostile: HostileServer, alice: Client) -> None:
    """Mallory signs as bob before alice ever pinned bob: the server's key for bob refutes it."""
    await start(alice)
    forged = seal("bob", "hello from bob", key="mallory", srv=hostile)
    hostile.message("bob", forged)
    assert (await alice.rec.wait_kind(MessageRejected, msg_id=forged["id"])).reason == "bad_signature"
    await good_message_arrives(alice, hostile)


async def test_envelope_for_another_recipient_is_bad_recipient(hostile: HostileServer, alice: Client) -> None:
    await start(alice)
    carol = identity_key("carol").public_key()
    forwarded = seal("bob", "for carol only", to="carol", recipient=carol, srv=hostile)
    hostile.message("bob", forwarded)
    assert (await alice.rec.wait_kind(MessageRejected, msg_id=forwarded["id"])).reason == "bad_recipient"
    await good_message_arrives(alice, hostile)


async def test_readdressed_forwarding_is_bad_signature(hostile: HostileServer, alice: Client) -> None:
    """Surreptitious forwarding with the clear ``to`` rewritten: the signature binds the recipient."""
    await start(alice)
    carol = identity_key("carol").public_key()
    forwarded = {**seal("bob", "for carol only", to="carol", recipient=carol, srv=hostile), "to": "alice"}
    hostile.message("bob", forwarded)
    assert (await alice.rec.wait_kind(MessageRejected, msg_id=forwarded["id"])).reason == "bad_signature"
    await good_message_arrives(alice, hostile)


async def test_replayed_message_is_shown_once_and_confirmed_again(
    hostile: HostileServer, alice: Client
) -> None:
    await start(alice)
    env = seal("bob", "once", srv=hostile)
    hostile.message("bob", env)
    await alice.rec.wait_kind(MessageReceived, msg_id=env["id"])
    await confirmed(hostile, env["id"])
    for _ in range(3):
        hostile.message("bob", env)
        await confirmed(hostile, env["id"])
    await good_message_arrives(alice, hostile)
    assert [e.msg_id for e in alice.rec.of(MessageReceived)].count(env["id"]) == 1
    assert not alice.rec.of(MessageRejected)


@pytest.mark.parametrize("field", ["sig", "key", "nonce", "ct"])
async def test_truncated_base64_is_malformed(hostile: HostileServer, alice: Client, field: str) -> None:
    await start(alice)
    await good_message_arrives(alice, hostile, "pin bob first")
    env = seal("bob", "x", srv=hostile)
    env[field] = env[field][:-3]  # no longer a multiple of four characters
    hostile.message("bob", env)
    assert (await alice.rec.wait_kind(MessageRejected, msg_id=env["id"])).reason == "malformed"
    await good_message_arrives(alice, hostile)


# --- keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize("verified", [False, True])
async def test_changed_key_frame_raises_key_changed_and_never_repins(
    hostile: HostileServer, alice: Client, verified: bool
) -> None:
    await start(alice)
    session = alice.session
    info = await session.lookup("bob")
    original = info.fingerprint
    if verified:
        assert session.verify("bob", format_fingerprint(original or ""))
    hostile.keys["bob"] = crypto.public_key_pem(identity_key("mallory").public_key())
    changed = await session.lookup("bob")
    alert = await alice.rec.wait_kind(KeyChangedAlert, name="bob")
    mallory_fp = crypto.fingerprint(identity_key("mallory").public_key())
    assert (alert.old, alert.new) == (original, mallory_fp)
    assert changed.trust == "changed" and changed.fingerprint == original
    pin = session.store.pins.get("bob")
    assert pin is not None and pin.fingerprint == original  # the old key still rules
    with pytest.raises(KeyChanged):
        await session.send("bob", "must not be encrypted to mallory")
    assert not [f for f in _drain(hostile) if f["type"] == "send"]
    # A message signed by the substituted key is refused as key_changed, not shown.
    env = seal("bob", "trust me", key="mallory", srv=hostile)
    hostile.message("bob", env)
    assert (await alice.rec.wait_kind(MessageRejected, msg_id=env["id"])).reason == "key_changed"
    # Still running; and the same lookup again does not silently accept the new key.
    await session.lookup("bob")
    assert session.contact("bob").trust == "changed"
    assert session.store.pins.get("bob").fingerprint == original  # type: ignore[union-attr]


def _drain(srv: HostileServer) -> list[dict[str, Any]]:
    out = []
    while not srv.from_client.empty():
        out.append(srv.from_client.get_nowait())
    return out


@pytest.mark.parametrize(
    "pem",
    [
        "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----\n",
        "truncated",
    ],
    ids=["truncated-base64-pem", "not-pem"],
)
async def test_unusable_key_for_a_first_contact(hostile: HostileServer, alice: Client, pem: str) -> None:
    await start(alice)
    env = seal("bob", "hi", srv=hostile)
    hostile.keys["bob"] = pem
    hostile.message("bob", env)
    assert (await alice.rec.wait_kind(MessageRejected, msg_id=env["id"])).reason == "unknown_sender"
    assert alice.session.store.pins.get("bob") is None
    hostile.keys["bob"] = crypto.public_key_pem(identity_key("bob").public_key())
    await good_message_arrives(alice, hostile)


# --- framing from the server -------------------------------------------------------------------


async def _then_good(srv: HostileServer, client: Client) -> None:
    """The hostile first connection is dropped; the session reconnects and still works."""
    await client.rec.wait_kind(ConnectionChanged, state="reconnecting")
    async with asyncio.timeout(WAIT):
        while srv.connections < 2 or not client.session.online:
            await client.rec.wait_for(lambda e: isinstance(e, Ready) and srv.connections >= 2)
    await good_message_arrives(client, srv)


@pytest.mark.parametrize("prefix", [2**32 - 1, 2**31, 0])
async def test_oversized_or_empty_frame_from_the_server(
    hostile: HostileServer, alice: Client, prefix: int
) -> None:
    async def script(srv: HostileServer, writer: asyncio.StreamWriter) -> None:
        writer.write(struct.pack(">I", prefix) + b"{" * 64)

    hostile.scripts.append(script)
    await start(alice)
    code = "bad_frame" if prefix == 0 else "frame_too_large"
    err = await alice.rec.wait_kind(ErrorReported, code=code)
    assert err.fatal
    await _then_good(hostile, alice)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x00\x00\x05hello",
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x00\x00\x00\x02{}",
        b"\x00\x00\x00\x03\xff\xfe\xfd",
    ],
    ids=["not-json", "http", "no-type", "invalid-utf8"],
)
async def test_garbage_after_welcome(hostile: HostileServer, alice: Client, garbage: bytes) -> None:
    async def script(srv: HostileServer, writer: asyncio.StreamWriter) -> None:
        writer.write(garbage)

    hostile.scripts.append(script)
    alice.start()
    err = await alice.rec.wait_for(lambda e: isinstance(e, ErrorReported) and e.fatal)
    assert err.code in ("bad_frame", "frame_too_large"), err
    await _then_good(hostile, alice)


async def test_challenge_with_truncated_base64(hostile: HostileServer, alice: Client) -> None:
    original = hostile._handle

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if hostile.connections == 0:
            hostile.connections += 1
            await reader.read(65536)
            writer.write(
                encode_frame({"type": "challenge", "server_id": "AAAAAAAAAAAAAAAAAAAAAA=", "nonce": "AAA"})
            )
            await writer.drain()
            with contextlib.suppress(ConnectionError):
                await reader.read()
            writer.close()
            return
        await original(reader, writer)

    hostile._handle = handle  # type: ignore[method-assign]
    assert hostile._server is not None
    hostile._server.close()
    await hostile._server.wait_closed()
    hostile._server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=hostile.tls)
    alice.session.port = hostile.port
    alice.start()
    err = await alice.rec.wait_kind(ErrorReported, code="bad_server_frame")
    assert "base64" in err.message
    await alice.rec.wait_kind(Ready)
    await good_message_arrives(alice, hostile)


# --- the real --json process -------------------------------------------------------------------


async def test_json_client_process_against_a_hostile_server(hostile: HostileServer, tmp_path: Path) -> None:
    proc = await JsonClient.start("alice", hostile.port, tmp_path / "jhome")
    try:
        await proc.wait_event("ready", timeout=30)
        forged = seal("bob", "forged", key="mallory", srv=hostile)
        hostile.message("bob", forged)
        rejected = await proc.wait_event("rejected", id=forged["id"])
        assert rejected["reason"] == "bad_signature" and rejected["from"] == "bob"
        good = seal("bob", "genuine", srv=hostile)
        hostile.message("bob", good)
        assert (await proc.wait_event("message", id=good["id"]))["text"] == "genuine"
        await proc.command({"cmd": "whois", "name": "bob"})
        assert (await proc.wait_event("contact", name="bob"))["trust"] == "unverified"
        # The server now lies about bob's key.
        hostile.keys["bob"] = crypto.public_key_pem(identity_key("mallory").public_key())
        await proc.command({"cmd": "whois", "name": "bob"})
        changed = await proc.wait(lambda e: e["event"] == "contact" and e["trust"] == "changed")
        mallory_fp = crypto.fingerprint(identity_key("mallory").public_key())
        assert changed["pending_fingerprint"] == mallory_fp and changed["fingerprint"] != mallory_fp
        assert (await proc.wait_event("key_changed", name="bob"))["new"] == mallory_fp
        await proc.command({"cmd": "send", "to": "bob", "text": "nope"})
        refused = await proc.wait(lambda e: e["event"] == "error" and e.get("cmd") == "send")
        assert refused["code"] == "key_changed", refused
        # garbage on the wire: the process survives and reconnects
        assert hostile.writer is not None
        hostile.writer.write(b"\x00\x00\x00\x05hello")
        await proc.wait(lambda e: e["event"] == "error" and e.get("code") == "bad_frame")
        await proc.wait(
            lambda e: e["event"] == "ready" and sum(x["event"] == "ready" for x in proc.events) >= 2,
            timeout=30,
        )
        # Reconnected, and still refusing bob until the user decides: the alarm outlives the connection.
        again = seal("bob", "after the garbage", srv=hostile)
        hostile.message("bob", again)
        assert (await proc.wait_event("rejected", id=again["id"]))["reason"] == "key_changed"
        await proc.command({"cmd": "quit"})
        status, stderr = await proc.finish()
        assert status == 0, stderr
        assert "Traceback" not in stderr, stderr
    finally:
        proc.kill()
        await proc.proc.wait()


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.slow
async def test_a_flood_of_megabyte_messages_does_not_grow_the_client_without_bound(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """The server may flood big envelopes while the client is busy: held ones are bounded in bytes."""
    mib = 2**20
    proc = await JsonClient.start("alice", hostile.port, tmp_path / "jhome")
    try:
        await proc.wait_event("ready", timeout=30)
        hostile.hang_lookups = True  # the first message's lookup never returns: nothing is consumed
        template = seal("bob", "x", srv=hostile)
        before = _rss(proc.proc.pid)
        big = "A" * (mib - 4096)
        assert hostile.writer is not None
        for n in range(300):
            hostile.message("carol", {**template, "from": "carol", "id": f"{n:032x}", "ct": big})
            await hostile.writer.drain()
        # The client is still responsive: a command it answers itself, without the server.
        await asyncio.wait_for(proc.command({"cmd": "no-such-command"}), 5)
        await proc.wait_event("error", code="bad_command")
        after = _rss(proc.proc.pid)
        growth = after - before
        report = (
            f"client RSS {before / mib:.0f} -> {after / mib:.0f} MiB ({growth / mib:+.0f}) for 300 MiB sent"
        )
        print(report)
        assert growth < 100 * mib, report
    finally:
        proc.kill()
        await proc.proc.wait()
