"""What a client confirms (issue 13, item 5): only what it accepted, or rejected for a reason in the
envelope itself. A failure it can retry (a rate-limited or failed lookup, a lost connection, an
unanswered lookup) is retried and never confirmed with ``received``, which would make the server
delete the message and tell its sender ``delivered``; and a send whose first-contact lookup is cut
off waits in the outbox like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from securechat import crypto
from securechat.client import ClientSession
from securechat.client.state import ClientStore
from securechat.events import Acked, ErrorReported, MessageReceived, MessageRejected
from securechat.protocol import encode_frame
from securechat.server import ChatServer
from tests.support.hostile import HostileServer, next_frame
from tests.support.rawclient import RawClient, identity_key, running_server
from tests.support.sessions import BITS, WAIT, Client, Recorder, online

pytestmark = pytest.mark.timeout(90)

FLOOD = 40


@pytest.fixture
async def stingy_server(tmp_path: Path) -> AsyncIterator[ChatServer]:
    """A real server that allows one lookup a second per connection (the default is 20)."""
    async with running_server(tmp_path / "server.db", lookup_rate=1.0) as srv:
        yield srv


def public_key(client: Client) -> Any:
    return client.session.store.require_identity().private_key.public_key()


async def test_a_bad_signature_flood_cannot_make_a_genuine_first_contact_lost(
    stingy_server: ChatServer, make_client: Callable[..., Client]
) -> None:
    """Mallory, pinned by bob, floods bad signatures to spend bob's lookups; carol's first message
    must still be accepted, and carol told ``delivered`` only for a message bob accepted."""
    bob = await online(make_client("bob", stingy_server.port))
    carol = await online(make_client("carol", stingy_server.port))
    mallory = await RawClient.connect(stingy_server.port)
    try:
        await mallory.login("mallory", identity_key("mallory"))
        bob_key = public_key(bob)
        good = crypto.seal_envelope(identity_key("mallory"), bob_key, "mallory", "bob", "hi, pin me")
        await mallory.send_frame({"type": "send", "to": "bob", "envelope": good})
        await bob.rec.wait_kind(MessageReceived, msg_id=good["id"])  # mallory is pinned now
        forged = [
            crypto.seal_envelope(identity_key("other"), bob_key, "mallory", "bob", f"junk {i}")
            for i in range(FLOOD)
        ]
        for envelope in forged:
            mallory.writer.write(encode_frame({"type": "send", "to": "bob", "envelope": envelope}))
        await mallory.writer.drain()
        msg_id = await carol.session.send("bob", "genuine first contact")
        got = await bob.rec.wait_for(
            lambda e: isinstance(e, MessageReceived | MessageRejected) and e.msg_id == msg_id, 3 * WAIT
        )
        assert isinstance(got, MessageReceived), got  # not rejected as an unknown sender
        assert got.text == "genuine first contact"
        await carol.rec.wait_kind(Acked, msg_id=msg_id, status="delivered")
        # The flood itself is rejected for what it is, and confirmed (it can never be accepted).
        for envelope in forged:
            rejected = await bob.rec.wait_kind(MessageRejected, msg_id=envelope["id"])
            assert rejected.reason == "bad_signature"
    finally:
        await mallory.close()
        await bob.stop()
        await carol.stop()


# --- a server that refuses or drops lookups --------------------------------------------------


def alice_session(tmp_path: Path, port: int) -> Client:
    store = ClientStore.open(tmp_path / "home", "alice", bits=BITS)
    session = ClientSession(store, "127.0.0.1", port, backoff_initial=0.05, backoff_max=0.2, request_timeout=5.0)
    client = Client(session, Recorder())
    session.add_listener(client.rec)
    return client


@contextlib.asynccontextmanager
async def online_alice(tmp_path: Path, port: int) -> AsyncIterator[Client]:
    """alice's session, online; stopped and its state closed at the end."""
    alice = alice_session(tmp_path, port)
    try:
        alice.start()
        assert await alice.session.wait_online(WAIT)
        yield alice
    finally:
        await alice.stop()
        alice.session.store.close()


async def frames_until(srv: HostileServer, kind: str, count: int = 1) -> list[str]:
    """The types of the frames the client sends, up to its ``count``-th of ``kind``."""
    frames: list[str] = []
    while frames.count(kind) < count:
        frames.append((await asyncio.wait_for(srv.from_client.get(), WAIT))["type"])
    return frames


@pytest.mark.parametrize("code", ["rate_limited", "internal"])
async def test_a_first_contact_whose_lookup_fails_for_now_is_retried_not_confirmed(
    hostile: HostileServer, tmp_path: Path, code: str
) -> None:
    hostile.lookup_errors = [code] * 3
    async with online_alice(tmp_path, hostile.port) as alice:
        envelope = crypto.seal_envelope(identity_key("bob"), hostile.client_key, "bob", "alice", "hi")
        hostile.message("bob", envelope)
        seen = await frames_until(hostile, "received")
        # Three refused lookups, a fourth answered, and only then the confirmation.
        assert [kind for kind in seen if kind in ("lookup", "received")] == ["lookup"] * 4 + ["received"]
        got = await alice.rec.wait_kind(MessageReceived, msg_id=envelope["id"])
        assert got.text == "hi"
        assert not alice.rec.of(MessageRejected)


async def send_during_an_unanswered_lookup(
    srv: HostileServer, tmp_path: Path, to: str, text: str
) -> tuple[Client, asyncio.Task[str]]:
    """alice online, sending ``text`` to ``to`` (not pinned), whose lookup the server has just received."""
    srv.hang_lookups = True
    alice = alice_session(tmp_path, srv.port)
    alice.start()
    assert await alice.session.wait_online(WAIT)
    sending = asyncio.create_task(alice.session.send(to, text))
    await next_frame(srv, "lookup")
    return alice, sending


async def test_a_send_whose_first_contact_lookup_is_cut_off_waits_in_the_outbox(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """The lookup for a new contact is in flight when the connection goes: the message is kept
    (outbox and history), survives a restart, and is sealed and sent once the key comes."""
    alice, sending = await send_during_an_unanswered_lookup(hostile, tmp_path, "bob", "typed during the lookup")
    await alice.stop()  # the connection goes while the lookup is unanswered
    msg_id = await asyncio.wait_for(sending, WAIT)  # kept, not "offline"
    assert alice.session.unacknowledged() == 1
    (entry,) = alice.session.history("bob")
    assert (entry.msg_id, entry.text, entry.status) == (msg_id, "typed during the lookup", "sending")
    alice.session.store.close()

    hostile.hang_lookups = False
    again = alice_session(tmp_path, hostile.port)  # a new process on the same state
    try:
        again.start()
        frame = await next_frame(hostile, "send")
        assert frame["rid"] == msg_id and frame["to"] == "bob"
        assert hostile.client_key is not None
        opened = crypto.open_envelope(identity_key("bob"), "bob", hostile.client_key, frame["envelope"])
        assert opened.text == "typed during the lookup"
    finally:
        await again.stop()
        again.session.store.close()


async def test_a_flood_of_bad_signatures_asks_about_the_key_once(hostile: HostileServer, tmp_path: Path) -> None:
    """Each bad signature from a pinned sender used to cost a lookup: now one per sender and minute."""
    async with online_alice(tmp_path, hostile.port) as alice:
        good = crypto.seal_envelope(identity_key("bob"), hostile.client_key, "bob", "alice", "pin me")
        hostile.message("bob", good)
        await alice.rec.wait_kind(MessageReceived, msg_id=good["id"])
        forged = [
            crypto.seal_envelope(identity_key("other"), hostile.client_key, "bob", "alice", f"junk {i}")
            for i in range(FLOOD)
        ]
        for envelope in forged:
            hostile.message("bob", envelope)
        for envelope in forged:
            assert (await alice.rec.wait_kind(MessageRejected, msg_id=envelope["id"])).reason == "bad_signature"
        frames = await frames_until(hostile, "received", FLOOD + 1)  # all confirmed: never acceptable
        assert frames.count("lookup") == 2  # bob's first contact, then one check for the whole flood


async def test_a_message_that_waited_for_the_key_of_a_name_that_does_not_exist_is_failed(
    hostile: HostileServer, tmp_path: Path
) -> None:
    alice, sending = await send_during_an_unanswered_lookup(hostile, tmp_path, "dave", "anyone there?")
    hostile.hang_lookups = False
    assert hostile.writer is not None
    hostile.writer.transport.abort()  # the connection goes; the client reconnects by itself
    msg_id = await asyncio.wait_for(sending, WAIT)
    try:
        failed = await alice.rec.wait_kind(ErrorReported, msg_id=msg_id)
        assert failed.code == "unknown_user"
        (entry,) = alice.session.history("dave")
        assert entry.status == "failed"
        assert alice.session.unacknowledged() == 0
    finally:
        await alice.stop()
        alice.session.store.close()
