"""The server's rooms (docs/protocol.md 11.6) against a real ChatServer on 127.0.0.1.

Raw clients log in with real keys and sign real entries; every refusal of the
rules comes back as its code with the request's ``rid``, and nothing else
breaks: the session stays, the room stays as it was. Every test runs on both
backends (``backend``: one node on SQLite, and a node on a real redis-server
with the cluster routing).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from securechat.server import ChatServer
from tests.support.acks import delivered_acks
from tests.support.rawclient import RawClient, clients, msg_id, running_server
from tests.support.roomserver import Room, answer_to, change, next_of, room_envelope, send

pytestmark = pytest.mark.timeout(60)


async def refused(client: RawClient, room: Room, op: str, name: str | None, code: str) -> None:
    answer = await change(client, room, op, name, refusal=True)
    assert (answer["type"], answer.get("code"), answer.get("fatal"), answer.get("rid")) == ("error", code, False, "r1")


@pytest.fixture
async def ops(any_server: ChatServer) -> Room:
    return Room()


async def test_create_add_and_the_push(any_server: ChatServer, ops: Room) -> None:
    async with clients(any_server.port, "alice", "bob", "carol") as (alice, bob, carol):
        answer = await change(alice, ops, "create")
        assert answer["keys"].keys() == {"alice"} and answer["more"] is False
        answer = await change(alice, ops, "add", "bob")
        assert set(answer["keys"]) == {"alice", "bob"}
        push = await bob.recv_type("room_update")
        assert "rid" not in push and push["entries"] == answer["entries"]
        await carol.expect_silence(0.3)  # not a member: hears nothing
        await alice.send_frame({"type": "rooms", "rid": "l"})
        listed = await alice.recv_type("room_list")
        assert listed["rooms"] == [{"room": "#ops", "kind": "invite", "member": True, "members": 2, "seq": 1,
                                    "head": ops.state.head.hex()}] and listed["more"] is False
        await carol.send_frame({"type": "rooms"})
        assert (await carol.recv_type("room_list"))["rooms"] == []  # an invite room is not listed to others


async def test_every_rule_is_refused_with_its_code_and_nothing_changes(any_server: ChatServer, ops: Room) -> None:
    async with clients(any_server.port, "alice", "bob", "carol") as (alice, bob, carol):
        await change(alice, ops, "create")
        await change(alice, ops, "add", "bob")
        await refused(bob, ops, "add", "carol", "not_allowed")  # not an admin
        await refused(carol, ops, "join", None, "not_allowed")  # an invite room
        await refused(bob, ops, "remove", "alice", "not_allowed")
        await change(alice, ops, "admin", "bob")
        await refused(alice, ops, "remove", "bob", "not_allowed")  # an admin only leaves by themselves
        await refused(alice, ops, "remove", "carol", "not_member")
        await refused(alice, ops, "add", "bob", "bad_entry")  # a member already
        await refused(alice, ops, "add", "nobody", "unknown_user")
        await refused(alice, ops, "create", None, "room_exists")
        head = ops.state.head.hex()
        await alice.send_frame({"type": "room_log", "room": "#ops", "rid": "x"})
        log = await answer_to(alice, "x")
        assert [e["seq"] for e in log["entries"]] == [0, 1, 2] and log["entries"][-1]["sig"]
        assert ops.state.head.hex() == head
        await alice.send_frame({"type": "ping"})
        await alice.recv_type("pong")  # the session goes on


async def test_forged_and_stale_entries(any_server: ChatServer, ops: Room) -> None:
    async with clients(any_server.port, "alice", "bob", "mallory") as (alice, _bob, mallory):
        await change(alice, ops, "create")
        # An entry signed by alice, sent by mallory: the server takes entries only from their signer.
        entry = ops.entry("add", "alice", "mallory")
        await mallory.send_frame({"type": "room_append", "entry": entry.to_json(), "rid": "m"})
        assert (await mallory.expect_error("bad_entry"))["rid"] == "m"
        # An entry claiming alice, signed with mallory's key, sent as alice would: bad signature.
        forged = ops.chain.make("add", "alice", "mallory", signer="mallory")
        await alice.send_frame({"type": "room_append", "entry": forged.to_json(), "rid": "f"})
        assert (await alice.expect_error("bad_entry"))["rid"] == "f"
        # A stale seq and a wrong prev.
        stale = ops.chain.make("add", "alice", "bob", seq=0)
        await alice.send_frame({"type": "room_append", "entry": stale.to_json(), "rid": "s"})
        await alice.expect_error("bad_entry")  # seq 0 is room_create's
        wrong = ops.chain.make("add", "alice", "bob", prev=bytes(32))
        await alice.send_frame({"type": "room_append", "entry": wrong.to_json(), "rid": "w"})
        await alice.expect_error("stale_state")
        unknown = Room("#nowhere").chain.make("add", "alice", "bob", seq=1, prev=bytes(32))
        await alice.send_frame({"type": "room_append", "entry": unknown.to_json()})
        await alice.expect_error("unknown_room")


async def test_two_admins_racing_for_one_seq_one_wins(any_server: ChatServer, ops: Room) -> None:
    async with clients(any_server.port, "alice", "bob", "carol", "dave") as (alice, bob, _carol, _dave):
        await change(alice, ops, "create")
        await change(alice, ops, "add", "bob")
        await change(alice, ops, "admin", "bob")
        await next_of(bob, "room_update")
        await next_of(bob, "room_update")
        one, two = ops.entry("add", "alice", "carol"), ops.entry("add", "bob", "dave")
        await asyncio.gather(
            alice.send_frame({"type": "room_append", "entry": one.to_json(), "rid": "a"}),
            bob.send_frame({"type": "room_append", "entry": two.to_json(), "rid": "b"}),
        )
        answers = [await answer_to(alice, "a"), await answer_to(bob, "b")]
        assert sorted(a["type"] if a["type"] == "room_update" else a["code"] for a in answers) == [
            "room_update", "stale_state"]


async def test_room_caps(tmp_path: Path, backend_options: dict[str, Any]) -> None:
    options = {"max_room_members": 2, "max_rooms": 1}
    async with running_server(tmp_path / "s.db", **options, **backend_options) as srv, clients(srv.port, "alice", "bob", "carol") as (
        alice, bob, carol
    ):
        ops = Room()
        await change(alice, ops, "create", kind="open")
        await change(bob, ops, "join")
        await refused(carol, ops, "join", None, "room_full")
        await refused(alice, ops, "add", "carol", "room_full")
        answer = await change(carol, Room("#dev"), "create", refusal=True)
        assert answer.get("code") == "too_many_rooms"


async def test_reading_the_log(any_server: ChatServer, ops: Room) -> None:
    async with clients(any_server.port, "alice", "bob", "carol") as (alice, bob, carol):
        await change(alice, ops, "create")
        await change(alice, ops, "add", "bob")
        await change(alice, ops, "remove", "bob")
        await change(alice, ops, "add", "carol")
        await carol.send_frame({"type": "room_log", "room": "#ops", "since": 1, "rid": "c"})
        page = await answer_to(carol, "c")
        assert [e["seq"] for e in page["entries"]] == [1, 2, 3]
        assert set(page["keys"]) == {"alice", "bob", "carol"}
        # bob was removed at seq 2: he may read up to it (to learn why he is out), not beyond.
        await bob.send_frame({"type": "room_log", "room": "#ops", "rid": "b"})
        page = await answer_to(bob, "b")
        assert [e["seq"] for e in page["entries"]] == [0, 1, 2] and page["more"] is False
        async with clients(any_server.port, "dave") as (dave,):
            await dave.send_frame({"type": "room_log", "room": "#ops", "rid": "d"})
            assert (await dave.expect_error("not_member"))["rid"] == "d"
            await dave.send_frame({"type": "room_log", "room": "#nope"})
            await dave.expect_error("unknown_room")


async def test_the_log_is_paged(any_server: ChatServer) -> None:
    room = Room("#big")
    async with clients(any_server.port, "alice") as (alice,):
        await change(alice, room, "create", kind="open")
    for _ in range(7):  # 140 more entries, more than one page of 128; 20 per connection (its change rate)
        async with clients(any_server.port, "bob") as (bob,):
            for _ in range(10):
                await change(bob, room, "join")
                await change(bob, room, "leave")
    async with clients(any_server.port, "bob") as (bob,):
        seen: list[int] = []
        pages = 0
        since = 0
        while True:
            await bob.send_frame({"type": "room_log", "room": "#big", "since": since, "rid": "p"})
            page = await answer_to(bob, "p")
            seen += [e["seq"] for e in page["entries"]]
            pages += 1
            if not page["more"]:
                break
            since = seen[-1] + 1
        assert seen == list(range(141)) and pages == 2


async def test_room_changes_have_their_own_rate(any_server: ChatServer) -> None:
    """room_create and room_append: 10 a second, a burst of 20, per connection (each is a signature check)."""
    room = Room("#rate")
    async with clients(any_server.port, "alice", "bob") as (alice, bob):
        await change(alice, room, "create", kind="open")
        codes = []
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(40):
            op = "leave" if "bob" in room.state.members else "join"
            codes.append((await change(bob, room, op, refusal=None)).get("code"))
        elapsed = loop.time() - start
        # The burst passes; then the bucket refills at 10 a second while we keep asking, never faster.
        assert codes[:20] == [None] * 20 and set(codes) == {None, "rate_limited"}, codes
        assert codes.count(None) <= 20 + int(elapsed * 10) + 1, (codes, elapsed)
        await bob.send_frame({"type": "rooms", "rid": "l"})
        assert (await bob.recv_type("room_list"))["rid"] == "l"  # other frames are not held back


async def test_open_rooms_are_listed_to_everyone_with_paging(tmp_path: Path, backend_options: dict[str, Any]) -> None:
    async with running_server(tmp_path / "s.db", **backend_options) as srv, clients(srv.port, "alice", "bob") as (alice, bob):
        for i in range(3):
            await change(alice, Room(f"#open{i}"), "create", kind="open")
        await change(alice, Room("#secret"), "create")
        await bob.send_frame({"type": "rooms"})
        listed = await bob.recv_type("room_list")
        assert [(r["room"], r["member"]) for r in listed["rooms"]] == [(f"#open{i}", False) for i in range(3)]
        await bob.send_frame({"type": "rooms", "after": "#open0"})
        assert [r["room"] for r in (await bob.recv_type("room_list"))["rooms"]] == ["#open1", "#open2"]


async def test_room_messages_reach_the_members_with_acks(any_server: ChatServer, ops: Room) -> None:
    async with clients(any_server.port, "alice", "bob", "carol") as (alice, bob, carol):
        await change(alice, ops, "create")
        await change(alice, ops, "add", "bob")
        await change(alice, ops, "add", "carol")
        await send(alice, ops, 1)
        sent = await alice.recv_type("room_sent")
        assert sent == {"type": "room_sent", "room": "#ops", "id": msg_id(1), "members": ["bob", "carol"],
                        "seq": 2, "rid": msg_id(1)}
        for member in (bob, carol):
            message = await member.recv_type("message")
            assert message["room"] == "#ops" and message["from"] == "alice" and message["envelope"]["id"] == msg_id(1)
            await member.send_frame({"type": "received", "id": msg_id(1), "from": "alice"})
        acks = await delivered_acks(alice, 2)  # on Redis a `queued` may come first (tests/support/acks.py)
        assert sorted((a["member"], a["status"], a["to"]) for a in acks) == [
            ("bob", "delivered", "#ops"), ("carol", "delivered", "#ops")]


async def test_offline_members_get_it_stored_and_queued_acks(any_server: ChatServer, ops: Room) -> None:
    async with clients(any_server.port, "alice", "bob") as (alice, bob):
        await change(alice, ops, "create")
        await change(alice, ops, "add", "bob")
        await bob.close()
        for n in range(1, 4):
            await send(alice, ops, n)
            assert (await alice.recv_type("room_sent"))["members"] == ["bob"]
            ack = await alice.recv_type("ack")
            assert (ack["to"], ack["member"], ack["status"], ack["id"]) == ("#ops", "bob", "queued", msg_id(n))
        async with clients(any_server.port, "bob") as (bob2,):
            for n in range(1, 4):  # in order, from the store
                message = await bob2.recv_type("message")
                assert message["envelope"]["id"] == msg_id(n) and message["room"] == "#ops"
                await bob2.send_frame({"type": "received", "id": msg_id(n), "from": "alice"})
                ack = await alice.recv_type("ack")
                assert (ack["member"], ack["status"]) == ("bob", "delivered")


async def test_a_dropped_member_gets_it_back_from_the_store(any_server: ChatServer, ops: Room) -> None:
    async with clients(any_server.port, "alice", "bob") as (alice, bob):
        await change(alice, ops, "create")
        await change(alice, ops, "add", "bob")
        await send(alice, ops, 7)
        await bob.recv_type("message")
        await bob.close()  # never confirmed: back to the store, and alice hears `queued`
        ack = await alice.recv_type("ack")
        assert (ack["to"], ack["member"], ack["status"]) == ("#ops", "bob", "queued")
        async with clients(any_server.port, "bob") as (bob2,):
            assert (await bob2.recv_type("message"))["room"] == "#ops"


async def test_who_gets_a_message(any_server: ChatServer, ops: Room) -> None:
    async with clients(any_server.port, "alice", "bob", "carol", "dave") as (alice, bob, carol, dave):
        await change(alice, ops, "create")
        await change(alice, ops, "add", "bob")
        await change(alice, ops, "add", "carol")
        sealed_before = room_envelope(ops, "alice", 9)  # sealed for alice, bob, carol
        await change(alice, ops, "remove", "carol")
        await change(alice, ops, "add", "dave")
        await alice.send_frame({"type": "room_send", "room": "#ops", "envelope": sealed_before, "rid": "x"})
        sent = await alice.recv_type("room_sent")
        assert sent["members"] == ["bob"]  # carol was removed since; dave has no key in it
        assert (await bob.recv_type("message"))["envelope"]["id"] == msg_id(9)
        await carol.expect_silence(0.3, ignore=("presence", "room_update"))
        await dave.expect_silence(0.3, ignore=("presence", "room_update"))


async def test_sending_is_refused_to_non_members_and_for_unknown_states(any_server: ChatServer, ops: Room) -> None:
    async with clients(any_server.port, "alice", "bob", "mallory") as (alice, _bob, mallory):
        await change(alice, ops, "create")
        await change(alice, ops, "add", "bob")
        env = room_envelope(ops, "mallory", 1, {"alice", "bob", "mallory"})
        await mallory.send_frame({"type": "room_send", "room": "#ops", "envelope": env, "rid": "m"})
        assert (await mallory.expect_error("not_member"))["rid"] == "m"
        env = {**room_envelope(ops, "alice", 2), "head": "ab" * 32}
        await alice.send_frame({"type": "room_send", "room": "#ops", "envelope": env, "rid": "h"})
        await alice.expect_error("stale_state")
        env = {**room_envelope(ops, "alice", 3), "seq": 9}
        await alice.send_frame({"type": "room_send", "room": "#ops", "envelope": env})
        await alice.expect_error("stale_state")
        old = room_envelope(ops, "alice", 4)
        old["seq"], old["head"] = 0, ops.chain.entries[0].head().hex()
        await alice.send_frame({"type": "room_send", "room": "#ops", "envelope": old})
        assert (await alice.recv_type("room_sent"))["members"] == ["bob"]  # an older state of the log is fine
        env = room_envelope(ops, "bob", 5)
        await alice.send_frame({"type": "room_send", "room": "#ops", "envelope": env})
        await alice.expect_error("bad_request")  # not her envelope
        env = {**room_envelope(ops, "alice", 6), "room": "#dev"}
        await alice.send_frame({"type": "room_send", "room": "#dev", "envelope": env})
        await alice.expect_error("unknown_room")
        await alice.send_frame({"type": "room_send", "room": "ops", "envelope": env})
        await alice.expect_error("invalid_name")  # fatal, like a bad name
        await alice.expect_closed()


async def test_a_big_room_message_costs_more_frames(tmp_path: Path, backend_options: dict[str, Any]) -> None:
    names = [f"m{i:02d}" for i in range(40)]
    async with running_server(tmp_path / "s.db", rate=1.0, burst=6, **backend_options) as srv:
        room = Room("#big")
        async with clients(srv.port, "alice") as (alice,):
            await change(alice, room, "create", kind="open")
        for name in names:  # each joins over its own connection (the rate is per connection)
            async with clients(srv.port, name) as (member,):
                await change(member, room, "join")
        async with clients(srv.port, "alice") as (alice,):
            await send(alice, room, 1)  # 40 recipients: 3 tokens, the bucket holds 6
            assert len((await alice.recv_type("room_sent"))["members"]) == 40
            await send(alice, room, 2)  # 3 more: the bucket is short now
            await alice.expect_error("rate_limited")


async def test_rooms_survive_a_restart(tmp_path: Path, backend_options: dict[str, Any]) -> None:
    ops = Room()
    async with running_server(tmp_path / "s.db", **backend_options) as srv, clients(srv.port, "alice", "bob") as (alice, _bob):
        await change(alice, ops, "create")
        await change(alice, ops, "add", "bob")
    async with running_server(tmp_path / "s.db", **backend_options) as srv, clients(srv.port, "alice", "bob") as (alice, bob):
        await change(alice, ops, "admin", "bob")
        await bob.send_frame({"type": "room_log", "room": "#ops", "rid": "b"})
        assert [e["op"] for e in (await answer_to(bob, "b"))["entries"]] == ["create", "add", "admin"]
