"""Hostile input against the server's queues (issue 13, items 1, 4 and 8).

Each test is an attack that worked against the server before its fix: a message the
recipient must refuse blocking its whole inbox, one message that kills its recipient
on every hand-out, unconfirmed messages pinning the server's memory, one sender
filling another user's queue. Real servers on 127.0.0.1, real client sessions where
the recipient's own behaviour matters, raw clients where the attacker's does.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from securechat import crypto
from securechat.bench.unconfirmed import Reader, answers, padded_send, pin_memory, register
from securechat.errors import MessageTooLong
from securechat.events import Acked, ConnectionChanged, MessageReceived
from securechat.protocol import DEFAULT_MAX_FRAME, HEADER_SIZE, encode_frame, message_frame
from securechat.server import ChatServer
from tests.support.docvector import doc_example
from tests.support.rawclient import (
    RawClient,
    caught_up,
    clients,
    envelope,
    identity_key,
    msg_id,
    running_server,
)
from tests.support.roomserver import Room, change
from tests.support.roomserver import send as room_send
from tests.support.serverproc import server_process
from tests.support.sessions import WAIT, Client, online

pytestmark = pytest.mark.timeout(90)

LONG_NAME = "mallory-has-a-long-name-32-chars"
assert len(LONG_NAME) == 32


def send_at_the_limit(sender: str, to: str, n: int, limit: int = DEFAULT_MAX_FRAME) -> dict[str, Any]:
    """A well-shaped ``send`` whose body is exactly ``limit`` bytes (the server reads it whole)."""
    frame: dict[str, Any] = {"type": "send", "to": to, "envelope": envelope(sender, to, msg_id(n)), "rid": f"big{n}"}
    frame["envelope"]["ct"] = ""
    frame["envelope"]["ct"] = "A" * (limit - (len(encode_frame(frame)) - HEADER_SIZE))
    assert len(encode_frame(frame)) - HEADER_SIZE == limit
    return frame


async def no_reconnects(client: Client) -> None:
    assert not [e for e in client.rec.of(ConnectionChanged) if e.state == "reconnecting"], client.rec.events


# --- item 1: the server never produces a frame its peer must refuse -------------------------------


@pytest.mark.parametrize("sender", ["mal", LONG_NAME], ids=["name-as-long-as-the-recipients", "longer-name"])
async def test_a_send_at_the_frame_limit_is_refused_and_does_not_block_the_inbox(
    any_server: ChatServer, make_client: Callable[..., Client], sender: str
) -> None:
    """A send of exactly max_frame bytes becomes a `message` frame past the recipient's limit (the
    server adds `from` and `server_ts`): before the fix bob's client refused it as fatal on every
    reconnect and carol's later message never arrived. On one node and on nodes sharing Redis."""
    server = any_server
    bob = await online(make_client("bob", server.port))
    carol = await online(make_client("carol", server.port))
    m = await RawClient.connect(server.port)
    await m.login(sender, identity_key(sender))
    await m.send_frame(send_at_the_limit(sender, "bob", 1))
    await carol.session.send("bob", "after the big one")
    got = await bob.rec.wait_kind(MessageReceived, sender="carol")  # before the fix: never
    assert got.text == "after the big one"
    await no_reconnects(bob)
    refused = await m.recv_type("error", timeout=WAIT)
    assert (refused["code"], refused["fatal"], refused["rid"]) == ("message_too_large", False, "big1"), refused
    assert str(DEFAULT_MAX_FRAME) in refused["message"]
    if sender == "mal":  # the worked example in docs/protocol.md, byte for byte
        assert refused == json.loads(doc_example("message-too-large"))
    await m.send_frame({"type": "ping", "rid": "alive"})  # the sender's connection was kept
    assert (await m.recv_type("pong"))["rid"] == "alive"
    await m.close()


def text_whose_message_frame_is_too_large(sender: crypto.PrivateKey, name: str, to: str, key: Any, limit: int) -> str:
    """A text whose `send` frame fits ``limit`` but whose `message` frame does not."""
    n = limit * 3 // 4 - 2000  # base64 makes 4 bytes of 3; the keys and signature take the rest
    while True:
        text = "x" * n
        env = crypto.seal_envelope(sender, key, name, to, text)
        send = len(encode_frame({"type": "send", "to": to, "envelope": env, "rid": env["id"]})) - HEADER_SIZE
        message = len(message_frame(name, crypto_now_bound(), env)) - HEADER_SIZE
        if send <= limit < message:
            return text
        assert send <= limit, "no text size fits the gap: the test's arithmetic is wrong"
        n += 3 * max(1, (limit - send) // 4 - 4)  # base64 quanta still free, less a margin


def crypto_now_bound() -> int:
    """A server time with as many digits as today's (13)."""
    return 1_767_225_600_000


async def test_an_honest_long_text_from_a_longer_name_is_refused_at_the_sender_and_blocks_nothing(
    server: ChatServer, make_client: Callable[..., Client]
) -> None:
    """Before the fix the client checked only its own `send` frame: this text went out, and its
    `message` frame (a 32-character `from` instead of bob's 3-character `to`) was refused by bob's
    client on every reconnect, ahead of everything sent after it."""
    bob = await online(make_client("bob", server.port))
    alice = await online(make_client(LONG_NAME, server.port))
    info = await alice.session.lookup("bob")
    identity = alice.session.store.require_identity()
    pin = alice.session.store.pins.get("bob")
    assert pin is not None and info.fingerprint == pin.fingerprint
    text = text_whose_message_frame_is_too_large(identity.private_key, LONG_NAME, "bob", pin.public_key(), DEFAULT_MAX_FRAME)
    refused: MessageTooLong | None = None
    try:
        await alice.session.send("bob", text)
    except MessageTooLong as exc:
        refused = exc
    await alice.session.send("bob", "the next one")
    got = await bob.rec.wait_kind(MessageReceived, sender=LONG_NAME)  # before the fix: never
    assert got.text == "the next one"
    await no_reconnects(bob)
    assert refused is not None, "the client sent a message whose `message` frame its recipient must refuse"
    assert await alice.session.wait_idle(WAIT)


async def test_a_send_the_server_refuses_as_too_large_is_failed_not_retried(
    tmp_path: Any, make_client: Callable[..., Client]
) -> None:
    """The client's own check cannot know a server's smaller --max-frame: the server's
    `message_too_large` marks the message failed (history and outbox), never resent."""
    limit = 4096
    async with running_server(tmp_path / "s.db", max_frame=limit) as srv:
        bob = await online(make_client("bob", srv.port))
        alice = await online(make_client(LONG_NAME, srv.port))
        await alice.session.lookup("bob")
        identity = alice.session.store.require_identity()
        pin = alice.session.store.pins.get("bob")
        assert pin is not None
        text = text_whose_message_frame_is_too_large(identity.private_key, LONG_NAME, "bob", pin.public_key(), limit)
        msg = await alice.session.send("bob", text)
        assert await alice.session.wait_idle(WAIT), "the refused message stayed in the outbox"
        entry = alice.session.store.history.get("bob", "out", msg)
        assert entry is not None and entry.status == "failed"
        await alice.session.send("bob", "short")
        got = await bob.rec.wait_kind(MessageReceived, sender=LONG_NAME)
        assert got.text == "short"
        await alice.rec.wait_kind(Acked, status="delivered")
        assert not [e for e in alice.rec.of(Acked) if e.msg_id == msg]
        await no_reconnects(bob)


# --- item 4: unconfirmed messages do not pin server memory ------------------------------------


def _window_of_four(limit: str) -> dict[str, int]:
    """Server options whose window holds four of the test's messages: by count, or by bytes."""
    frame = len(message_frame("alice", 10**12, padded_send("alice", "bob", 0, 1000)["envelope"]))
    return {"window": 4} if limit == "messages" else {"window_bytes": 4 * frame + frame // 2}



@pytest.mark.parametrize("limit", ["messages", "bytes"])
@pytest.mark.parametrize("path", ["live", "backlog"])
async def test_a_recipient_that_never_confirms_holds_only_its_window(tmp_path: Path, path: str, limit: str) -> None:
    """Before the fix every unconfirmed message stayed in server memory up to the queue caps
    (10,000 / 64 MiB): bob got all ten at once. Now he holds at most his window of four (by
    `--window` or by `--window-bytes`), whether they reach him live or from his stored backlog;
    the rest waits in the store (every send is acked `queued`, nothing stays in memory) and
    follows, in order, as he confirms."""
    async with running_server(tmp_path / "s.db", **_window_of_four(limit)) as srv, clients(srv.port, "alice") as (a,):
        if path == "live":  # bob is online and caught up: his first messages reach him live
            bob = await Reader.login(srv.port, "bob")
            await caught_up(srv, "bob", WAIT)
        else:
            await register(srv.port, "bob")
        for n in range(10):
            await a.send_frame(padded_send("alice", "bob", n, 1000))
        sent = [msg_id(n) for n in range(10)]
        got = await answers(a, len(sent))  # live ones too: moved to the store when the window filled
        assert sorted((f["type"], f.get("status"), f["id"]) for f in got) == [("ack", "queued", m) for m in sent], got
        if path == "backlog":
            bob = await Reader.login(srv.port, "bob")
        await bob.quiet(0.3, WAIT)
        assert len(bob.ids) == 4 and srv.held_bytes() == 0, (bob.ids, srv.held_bytes())
        for m in list(bob.ids):
            await bob.confirm(m)
        await bob.wait_count(8)
        await bob.quiet(0.3, WAIT)
        assert len(bob.ids) == 8
        for m in bob.ids[4:]:
            await bob.confirm(m)
        await bob.wait_count(len(sent))
        assert bob.ids == sent
        await bob.close()


async def test_frames_held_for_all_sessions_stay_under_the_server_wide_bound(tmp_path: Path, backend_options: dict[str, Any]) -> None:
    """Three recipients that never confirm, each within its own window: the frames the server holds
    in memory for them together stay under --max-unconfirmed-bytes; past it messages are stored
    (acked `queued`) and still arrive, in order, read back from the store as they are confirmed.
    Before the fix all 30 were held in memory and none was stored. On Redis the frames held are the
    live path's, kept by the sender's node until `delivered` (a node over Redis is also its own peer)."""
    size = 32 * 1024
    bound = 256 * 1024
    async with (
        running_server(tmp_path / "s.db", window_bytes=2**20, max_unconfirmed_bytes=bound, **backend_options) as srv,
        clients(srv.port, "alice") as (a,),
    ):
        readers = [await Reader.login(srv.port, name) for name in ("bob", "carol", "dave")]
        for name in ("bob", "carol", "dave"):
            await caught_up(srv, name, WAIT)
        held = []
        for n in range(30):
            await a.send_frame(padded_send("alice", ("bob", "carol", "dave")[n % 3], n, size))
            await a.send_frame({"type": "ping", "rid": f"p{n}"})  # answered once the send was routed
            while (await a.recv())["type"] != "pong":
                pass
            held.append(srv.held_bytes())
        assert bound - 2 * size < max(held) <= bound, f"frames held in memory after each send: {held}, bound {bound}"
        for i, r in enumerate(readers):  # confirm everything; each gets its ten, in order
            mine = [msg_id(n) for n in range(i, 30, 3)]
            for k, m in enumerate(mine):
                await r.wait_count(k + 1)
                await r.confirm(m)
            assert r.ids == mine
            await r.close()


async def test_frames_held_are_let_go_when_delivered_so_the_bound_is_not_used_up(tmp_path: Path, backend_options: dict[str, Any]) -> None:
    """bob confirms each message as it comes: each is acked `delivered` alone, and once all were, the
    server holds no frame. Were a frame not let go on `delivered` (on Redis, a live send's on its sender's
    node), the first messages would use the bound up for good and every later one would go through the
    store: with LiveRoute.delivered's release taken out, 230,888 bytes (seven frames) stay held."""
    size = 32 * 1024
    bound = 256 * 1024
    async with (
        running_server(tmp_path / "s.db", window_bytes=2**20, max_unconfirmed_bytes=bound, **backend_options) as srv,
        clients(srv.port, "alice") as (a,),
    ):
        bob = await Reader.login(srv.port, "bob")
        await caught_up(srv, "bob", WAIT)
        for n in range(20):  # 640 KiB in all, each confirmed before the next
            await a.send_frame(padded_send("alice", "bob", n, size))
            await bob.wait_count(n + 1)
            await bob.confirm(msg_id(n))
            ack = await a.recv_type("ack", WAIT)
            assert (ack["id"], ack["status"]) == (msg_id(n), "delivered"), f"message {n}: {ack}"
        assert srv.held_bytes() == 0, f"{srv.held_bytes()} bytes still held once all 20 were delivered"
        assert bob.ids == [msg_id(n) for n in range(20)]
        await bob.close()


@pytest.mark.slow
async def test_four_recipients_that_read_everything_and_confirm_nothing_do_not_pin_memory(tmp_path: Path) -> None:
    """The issue's attack on a real server process with the default limits (tools/unconfirmed_rss.py
    prints the same figures): four names with full queues (64 MiB each) log in, read every message
    and never confirm. Before the fix the server grew by their queues, +257 MiB; now each is handed
    one window (2 MiB) and the server grows by a few MiB."""
    with server_process(tmp_path / "s.db", ["--rate", "100000", "--burst", "100000"]) as proc:
        result = await pin_memory(proc.port, proc.proc.pid)
        grew = result["rss_after"] - result["rss_flooded"]
        report = f"server RSS with the queues full {result['rss_flooded'] / 2**20:.1f} MiB, +{grew / 2**20:.1f} MiB for the readers; handed out {result['handed_out']}"
        print(report)
        assert max(result["handed_out"]) <= 32 and grew < 32 * 2**20, report
        assert "Traceback" not in proc.stderr and "ERROR" not in proc.stderr, proc.stderr


# --- item 8: queues cannot be filled ----------------------------------------------------------

GENERIC_FULL = "'bob' cannot take more messages from you now; try again later"


async def test_one_sender_cannot_fill_an_offline_users_queue(tmp_path: Path, backend_options: dict[str, Any]) -> None:
    """Before the fix mallory's 30 sends filled bob's queue of 20 and carol got `queue_full`, with
    the queue's size in the message, until bob logged in. Now mallory gets a quarter of it, every
    refusal says only that bob cannot take more from him, and carol's and dave's messages get in."""
    async with running_server(tmp_path / "s.db", queue_limit=20, **backend_options) as srv:
        await register(srv.port, "bob")
        async with clients(srv.port, "mallory", "carol", "dave") as (m, c, d):
            m.writer.write(b"".join(encode_frame(padded_send("mallory", "bob", n, 100)) for n in range(30)))
            got = {f["id"] if f["type"] == "ack" else msg_id(int(f["rid"])): f for f in await answers(m, 30)}
            queued = sorted(k for k, f in got.items() if f.get("status") == "queued")
            refused = [f for f in got.values() if f["type"] == "error"]
            assert queued == [msg_id(n) for n in range(5)], got
            assert {(f["code"], f["message"], f["fatal"]) for f in refused} == {("queue_full", GENERIC_FULL, False)}
            assert json.loads(doc_example("queue-full")) == {**refused[0], "rid": "m7"}  # the doc's example
            for client, name in ((c, "carol"), (d, "dave")):
                await client.send_frame(padded_send(name, "bob", 100, 100))
                assert (await client.recv_type("ack"))["status"] == "queued"  # before the fix: queue_full
        bob = await Reader.login(srv.port, "bob")
        await bob.wait_count(7)
        await bob.close()


async def test_queue_full_says_the_same_whatever_the_cap(tmp_path: Path, backend_options: dict[str, Any]) -> None:
    """A sender past its share and senders that find bob's whole queue full get one text that names
    no size (before: "the queue for 'bob' is full (4/4 messages, 1768/67108864 bytes)")."""
    async with running_server(tmp_path / "s.db", queue_limit=4, sender_share=2, **backend_options) as srv:
        await register(srv.port, "bob")
        async with clients(srv.port, "s0", "s1", "s2") as conns:
            refusals = []
            for n, (conn, count) in enumerate(zip(conns, (3, 3, 1), strict=True)):  # s0 past its share, then full
                for k in range(count):
                    await conn.send_frame(padded_send(f"s{n}", "bob", 10 * n + k, 100))
                    frame = (await answers(conn, 1))[0]
                    if frame["type"] == "error":
                        refusals.append((f"s{n}", frame["code"], frame["message"], frame["fatal"]))
        assert refusals == [(f"s{n}", "queue_full", GENERIC_FULL, False) for n in range(3)], refusals
        assert not re.search(r"\d", GENERIC_FULL)


async def test_names_that_never_log_in_cannot_grow_the_store_past_its_bound(
    tmp_path: Path, backend_options: dict[str, Any]
) -> None:
    """Queues for names that never log in grew without a global cap (64 MiB each for 30 days). With
    --max-store-bytes at three and a half messages, the fourth and fifth names' messages are
    refused, and taken once a recipient's confirmation frees room."""
    frame = len(message_frame("alice", 10**12, padded_send("alice", "r0", 0, 10_000)["envelope"]))
    options = {"max_store_bytes": 3 * frame + frame // 2, **backend_options}
    async with running_server(tmp_path / "s.db", **options) as srv:
        names = [f"r{n}" for n in range(5)]
        await register(srv.port, *names)
        async with clients(srv.port, "alice") as (a,):
            for n, name in enumerate(names):
                await a.send_frame(padded_send("alice", name, n, 10_000))
            got = await answers(a, 5)
            assert [f.get("status") or f["code"] for f in got] == ["queued"] * 3 + ["queue_full"] * 2, got
            assert got[3]["message"] == "'r3' cannot take more messages from you now; try again later"
            r0 = await Reader.login(srv.port, "r0")
            await r0.wait_count(1)
            await r0.confirm(msg_id(0))
            await r0.close()
            async with asyncio.timeout(WAIT):  # the delete is batched: retry as the client would
                while True:
                    await a.send_frame(padded_send("alice", "r3", 3, 10_000))
                    if (await answers(a, 1))[0]["type"] == "ack":
                        break


async def test_room_messages_count_against_their_senders_share(tmp_path: Path, backend_options: dict[str, Any]) -> None:
    """A room is another way to fill a member's queue: mallory's room messages to an offline bob take
    his share (bob listed in `room_sent.full` past it), his one-to-one sends are refused then too,
    and carol's still get in."""
    async with running_server(tmp_path / "s.db", queue_limit=8, **backend_options) as srv:
        room = Room()
        async with clients(srv.port, "mallory", "bob", "carol") as (m, bob, c):
            await change(m, room, "create")
            await change(m, room, "add", "bob")
            await bob.close()
            fulls = []
            for n in range(1, 5):
                await room_send(m, room, n)
                fulls.append((await m.recv_type("room_sent")).get("full", []))
            assert fulls == [[], [], ["bob"], ["bob"]], fulls  # mallory's share of 8 is 2
            await m.send_frame(padded_send("mallory", "bob", 9, 100))
            assert (await m.recv_type("error"))["code"] == "queue_full"
            await c.send_frame(padded_send("carol", "bob", 9, 100))
            assert (await c.recv_type("ack"))["status"] == "queued"


# --- item 1, second half: no single undeliverable message can block a queue ----------------------

POISON = msg_id(2)


async def session_that_dies_on(port: int, seen: list[str], last: str | None, poison: str = POISON) -> bool:
    """One session of a bob whose client drops the connection whenever it is handed ``poison`` (it
    refuses the frame, crashes, hangs up); it confirms everything else in order, as the real client
    does. True once it has confirmed ``last``."""
    bob = await RawClient.connect(port)
    await bob.login("bob", identity_key("bob"))
    try:
        while True:
            frame = await bob.recv_type("message", timeout=WAIT)
            seen.append(frame["envelope"]["id"])
            if seen[-1] == poison:
                return False
            await bob.send_frame({"type": "received", "id": seen[-1], "from": frame["from"]})
            if seen[-1] == last:
                return True
    finally:
        await bob.close()


@pytest.mark.parametrize("path", ["stored", "live"])
async def test_a_message_its_recipient_always_drops_on_is_set_aside_and_the_rest_arrive(
    tmp_path: Path, backend_options: dict[str, Any], path: str
) -> None:
    """Before the fix POISON was handed out first in every session of bob's and the messages behind
    it waited for its time to live (30 days): here eight sessions never got past it. Now it is set
    aside after its first session and --max-hand-outs (3) sessions on probation, alice is told
    `undeliverable` (the doc's example), and bob's next session gets the rest."""
    async with running_server(tmp_path / "s.db", **backend_options) as srv:
        await register(srv.port, "bob")
        seen: list[str] = []
        async with clients(srv.port, "alice") as (alice,):
            first = None
            if path == "live":  # bob's first session is online as they arrive
                first = asyncio.create_task(session_that_dies_on(srv.port, seen, msg_id(4)))
                await caught_up(srv, "bob", WAIT)
            for n in (1, 2, 3, 4):
                await alice.send_frame({"type": "send", "to": "bob", "envelope": envelope("alice", "bob", msg_id(n))})
            if first is not None:
                assert await first is False
            for _ in range(8):
                if await session_that_dies_on(srv.port, seen, msg_id(4)):
                    break
            else:
                pytest.fail(f"the messages after the poison never arrived: bob was handed {seen}")
            assert [m for m in seen if m != POISON] == [msg_id(1), msg_id(3), msg_id(4)], seen
            assert seen.count(POISON) == 1 + 3, seen  # its first session, then three on probation
            async with asyncio.timeout(WAIT):
                while (told := await alice.recv_type("ack"))["status"] != "undeliverable":
                    pass
            assert told == json.loads(doc_example("undeliverable")), told
        async with clients(srv.port, "bob") as (bob,):  # set aside: never handed out again
            await bob.expect_silence(0.3)


async def test_the_senders_real_client_marks_its_message_undeliverable(
    any_server: ChatServer, make_client: Callable[..., Client]
) -> None:
    """The sender's side with the real client: the set-aside message's `undeliverable` reaches it
    as an event and its history (before the fix the client refused the status as a bad frame)."""
    await register(any_server.port, "bob")
    alice = await online(make_client("alice", any_server.port))
    poison = await alice.session.send("bob", "the text bob's client chokes on")
    await alice.rec.wait_kind(Acked, msg_id=poison, status="queued")
    seen: list[str] = []
    for _ in range(1 + 3):  # its first session, then three on probation
        assert await session_that_dies_on(any_server.port, seen, None, poison) is False
    await alice.rec.wait_kind(Acked, msg_id=poison, status="undeliverable")
    row = alice.session.store.history.get("bob", "out", poison)
    assert row is not None and row.status == "undeliverable"
    await no_reconnects(alice)



async def test_a_room_message_a_member_always_drops_on_is_set_aside_and_its_sender_told(
    tmp_path: Path, backend_options: dict[str, Any]
) -> None:
    """The same for a room's copy: the ack names the room and the member (docs/protocol.md 11.4)."""
    async with running_server(tmp_path / "s.db", **backend_options) as srv:
        room = Room()
        async with clients(srv.port, "alice", "bob") as (alice, bob):
            await change(alice, room, "create")
            await change(alice, room, "add", "bob")
            await bob.close()
            for n in (1, 2, 3):
                await room_send(alice, room, n)
            seen: list[str] = []
            for _ in range(8):
                if await session_that_dies_on(srv.port, seen, msg_id(3)):
                    break
            assert [m for m in seen if m != POISON] == [msg_id(1), msg_id(3)], seen
            async with asyncio.timeout(WAIT):
                while (told := await alice.recv_type("ack"))["status"] != "undeliverable":
                    pass
            assert told.pop("rid", POISON) == POISON  # the send's rid where the store keeps it (Redis)
            assert told == {"type": "ack", "id": POISON, "to": "#ops", "member": "bob", "status": "undeliverable"}
