"""The client library's rooms (securechat/client/rooms.py, docs/protocol.md 11.7) with a real server.

Real sessions in this process against a real ChatServer: changes signed and
verified on every member's side, messages sealed to the verified members and
opened by each, acks per member, sync after a reconnect, and the local checks
that keep a refused change from ever being sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from securechat.errors import RoomRefused, ServerErrorReply
from securechat.events import Acked, MessageReceived, RoomChanged, RoomRejected, RoomsListed
from securechat.server import ChatServer
from tests.support.rawclient import running_server
from tests.support.sessions import Client, online

pytestmark = pytest.mark.timeout(60)

MakeClient = Callable[..., Client]


async def in_room(client: Client, room: str, change: str, name: str) -> RoomChanged:
    event: RoomChanged = await client.rec.wait_kind(RoomChanged, room=room, change=change, name=name)
    return event


async def room_of_three(server: ChatServer, make_client: MakeClient) -> tuple[Client, Client, Client]:
    alice, bob, carol = [await online(make_client(n, server.port)) for n in ("alice", "bob", "carol")]
    await alice.session.rooms.create("#ops", open_room=False)
    await alice.session.rooms.add("#ops", "bob")
    await alice.session.rooms.add("#ops", "carol")
    for member in (bob, carol):
        await in_room(member, "#ops", "added", "carol")
    return alice, bob, carol


async def test_three_members_verify_every_change(server: ChatServer, make_client: MakeClient) -> None:
    alice, bob, carol = await room_of_three(server, make_client)
    for member in (alice, bob, carol):
        state = member.session.rooms.state("#ops")
        assert state is not None and state.members == {"alice", "bob", "carol"} and state.admins == {"alice"}
        assert state.seq == 2
    changes = [(e.change, e.name, e.by) for e in bob.rec.of(RoomChanged) if e.change != "state"]
    assert changes == [("created", "alice", "alice"), ("added", "bob", "alice"), ("added", "carol", "alice")]
    event = (await in_room(carol, "#ops", "added", "carol"))
    assert event.members == ("alice", "bob", "carol") and event.admins == ("alice",) and event.kind == "invite"
    for client in (alice, bob, carol):
        await client.stop()


async def test_a_message_to_the_room_reaches_each_member_with_acks(server: ChatServer, make_client: MakeClient) -> None:
    alice, bob, carol = await room_of_three(server, make_client)
    msg_id = await alice.session.send("#ops", "standup in 5")
    for member in (bob, carol):
        got: MessageReceived = await member.rec.wait_kind(MessageReceived, msg_id=msg_id)
        assert (got.room, got.sender, got.text, got.readers_gone) == ("#ops", "alice", "standup in 5", ())
        entry = member.session.history("#ops")[-1]
        assert (entry.peer, entry.sender, entry.text, entry.direction) == ("#ops", "alice", "standup in 5", "in")
    acks = [await alice.rec.wait_kind(Acked, msg_id=msg_id, member=m, status="delivered") for m in ("bob", "carol")]
    assert max(a.delivered for a in acks) == 2 and {a.total for a in acks} == {2} and acks[0].to == "#ops"
    assert await alice.session.wait_idle(5)
    assert alice.session.history("#ops")[-1].status == "delivered 2/2"
    for client in (alice, bob, carol):
        await client.stop()


async def test_a_message_to_a_room_of_one_settles_with_nobody_to_wait_for(server: ChatServer, make_client: MakeClient) -> None:
    """Found by hand: the only member's message stayed 'sending' for good in the UI, with no event at all in --json."""
    alice = await online(make_client("alice", server.port))
    await alice.session.rooms.create("#solo", open_room=False)
    msg_id = await alice.session.send("#solo", "notes to self")
    ack: Acked = await alice.rec.wait_kind(Acked, msg_id=msg_id)
    assert (ack.to, ack.status, ack.member, ack.delivered, ack.total) == ("#solo", "delivered", "", 0, 0)
    assert await alice.session.wait_idle(5)
    assert alice.session.history("#solo")[-1].status == "no other members"
    await alice.stop()


async def test_an_offline_member_catches_up_and_gets_the_message(server: ChatServer, make_client: MakeClient) -> None:
    alice, bob, carol = await room_of_three(server, make_client)
    await carol.stop()
    await alice.session.rooms.admin("#ops", "bob")
    msg_id = await alice.session.send("#ops", "while you were out")
    await alice.rec.wait_kind(Acked, msg_id=msg_id, member="carol", status="queued")
    back = await online(make_client("carol", server.port))  # a new session on carol's home
    got = await back.rec.wait_kind(MessageReceived, msg_id=msg_id)
    assert got.room == "#ops" and got.text == "while you were out"
    await back.rec.wait_kind(RoomChanged, room="#ops", change="admin", name="bob")
    state = back.session.rooms.state("#ops")
    assert state is not None and state.admins == {"alice", "bob"}
    await alice.rec.wait_kind(Acked, msg_id=msg_id, member="carol", status="delivered")
    for client in (alice, bob, back):
        await client.stop()


async def test_a_removed_member_gets_nothing_after_the_removal(server: ChatServer, make_client: MakeClient) -> None:
    alice, bob, carol = await room_of_three(server, make_client)
    await alice.session.rooms.remove("#ops", "carol")
    await in_room(carol, "#ops", "removed", "carol")
    msg_id = await alice.session.send("#ops", "just us now")
    await bob.rec.wait_kind(MessageReceived, msg_id=msg_id)
    assert await alice.session.wait_idle(5)
    assert not [e for e in carol.rec.of(MessageReceived) if e.msg_id == msg_id]
    with pytest.raises(RoomRefused) as info:  # carol's own client refuses to post: she is not a member
        await carol.session.send("#ops", "let me back")
    assert info.value.code == "not_member"
    for client in (alice, bob, carol):
        await client.stop()


async def test_local_checks_refuse_before_anything_is_sent(server: ChatServer, make_client: MakeClient) -> None:
    alice, bob, carol = await room_of_three(server, make_client)
    refusals = {
        "not_allowed": lambda: bob.session.rooms.add("#ops", "dave"),
        "bad_entry": lambda: alice.session.rooms.add("#ops", "bob"),
        "not_member": lambda: alice.session.rooms.remove("#ops", "dave"),
        "room_exists": lambda: alice.session.rooms.create("#ops", open_room=True),
        "unknown_room": lambda: bob.session.rooms.leave("#nowhere"),
    }
    for code, attempt in refusals.items():
        with pytest.raises(RoomRefused) as info:
            await attempt()
        assert info.value.code == code
    # A room name mistyped in a send says so (it said only "you are not a member of #osp").
    with pytest.raises(RoomRefused) as typo:
        await alice.session.send("#osp", "typo")
    assert typo.value.code == "not_member" and "no such room is held here: /rooms lists them" in str(typo.value)
    await carol.session.rooms.create("#taken", open_room=False)
    with pytest.raises(ServerErrorReply) as server_info:  # a name alice does not hold: only the server knows
        await alice.session.rooms.create("#taken", open_room=False)
    assert server_info.value.code == "room_exists"
    assert alice.session.rooms.state("#taken") is None
    for client in (alice, bob, carol):
        await client.stop()


async def test_joining_an_invite_room_says_it_is_one(server: ChatServer, make_client: MakeClient) -> None:
    # Found as a new user: /join #ops (an invite room) answered "not_member: you are not a member of #ops".
    alice, dave = [await online(make_client(n, server.port)) for n in ("alice", "dave")]
    await alice.session.rooms.create("#ops", open_room=False)
    with pytest.raises(RoomRefused) as info:
        await dave.session.rooms.join("#ops")
    assert info.value.code == "not_member"  # the code --json scripts read, as before
    assert str(info.value) == "not_member: #ops is an invite room: its admins add members (/join is for open rooms)"
    assert dave.session.rooms.state("#ops") is None
    await alice.stop()
    await dave.stop()


async def test_open_rooms_join_leave_and_the_list(server: ChatServer, make_client: MakeClient) -> None:
    alice, dave = [await online(make_client(n, server.port)) for n in ("alice", "dave")]
    await alice.session.rooms.create("#lobby", open_room=True)
    await dave.session.rooms.list_rooms()
    listed: RoomsListed = await dave.rec.wait_kind(RoomsListed)
    assert [(r.room, r.kind, r.member, r.members) for r in listed.rooms] == [("#lobby", "open", False, 1)]
    await dave.session.rooms.join("#lobby")
    await in_room(alice, "#lobby", "joined", "dave")
    msg_id = await dave.session.send("#lobby", "hello all")
    assert (await alice.rec.wait_kind(MessageReceived, msg_id=msg_id)).room == "#lobby"
    await dave.session.rooms.leave("#lobby")
    await in_room(alice, "#lobby", "left", "dave")
    state = alice.session.rooms.state("#lobby")
    assert state is not None and state.members == {"alice"}
    await alice.stop()
    await dave.stop()


async def test_a_late_joiner_gets_nothing_from_before(server: ChatServer, make_client: MakeClient) -> None:
    alice, bob = [await online(make_client(n, server.port)) for n in ("alice", "bob")]
    await alice.session.rooms.create("#lobby", open_room=True)
    early = await alice.session.send("#lobby", "before bob")
    assert await alice.session.wait_idle(5)
    await bob.session.rooms.join("#lobby")
    late = await alice.session.send("#lobby", "after bob")
    assert (await bob.rec.wait_kind(MessageReceived, msg_id=late)).text == "after bob"
    assert not [e for e in bob.rec.of(MessageReceived) if e.msg_id == early]
    await alice.stop()
    await bob.stop()


async def test_room_state_survives_a_restart_of_the_client(
    server: ChatServer, make_client: MakeClient, tmp_path: Any
) -> None:
    alice, bob, carol = await room_of_three(server, make_client)
    await carol.stop()
    again = await online(make_client("carol", server.port))
    state = again.session.rooms.state("#ops")
    assert state is not None and state.seq == 2
    told = await again.rec.wait_kind(RoomChanged, room="#ops", change="state")  # once per room at start
    assert told.members == ("alice", "bob", "carol")
    msg_id = await again.session.send("#ops", "back")
    await alice.rec.wait_kind(MessageReceived, msg_id=msg_id)
    for client in (alice, bob, again):
        await client.stop()


async def test_a_join_refused_leaves_nothing_of_the_room_held(tmp_path: Any, make_client: MakeClient) -> None:
    """To join an open room the client reads its log first; when the server refuses the join (the room is
    full here), the log is not kept: a client holds no room it is not in."""
    async with running_server(tmp_path / "full.db", max_room_members=2) as server:
        alice, bob, carol = [await online(make_client(n, server.port)) for n in ("alice", "bob", "carol")]
        await alice.session.rooms.create("#lobby", open_room=True)
        await bob.session.rooms.join("#lobby")
        with pytest.raises(ServerErrorReply) as info:
            await carol.session.rooms.join("#lobby")
        assert info.value.code == "room_full"
        assert carol.session.rooms.state("#lobby") is None
        assert carol.session.store.query("SELECT COUNT(*) FROM room_chain") == [(0,)]
        for client in (alice, bob, carol):
            await client.stop()


async def test_a_room_made_while_the_list_of_rooms_travels_is_not_called_withheld(
    server: ChatServer, make_client: MakeClient
) -> None:
    """Sign-in lists the rooms; a room created before that answer is read is not in it. Before, the
    client took that for the server listing it out of its own new room ("withheld")."""
    alice = await online(make_client("alice", server.port))
    rooms = alice.session.rooms
    real_list, answered, go = rooms._list_all, asyncio.Event(), asyncio.Event()

    async def list_then_wait() -> list[dict[str, Any]]:
        items = await real_list()  # the server's answer, from before the room exists
        answered.set()
        await go.wait()
        return items

    rooms._list_all = list_then_wait  # type: ignore[method-assign]
    sync = asyncio.create_task(rooms.sync())
    await asyncio.wait_for(answered.wait(), 10)
    await rooms.create("#ops", open_room=False)
    go.set()
    await asyncio.wait_for(sync, 10)
    assert not alice.rec.of(RoomRejected), alice.rec.of(RoomRejected)
    state = rooms.state("#ops")
    assert state is not None and state.members == {"alice"}
    await alice.stop()
