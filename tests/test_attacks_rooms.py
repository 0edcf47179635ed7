"""A malicious server against a real client's rooms (issue 10; docs/protocol.md 11.9).

``HostileServer`` (tests/support/hostile.py) does the handshake for real, then
lists rooms and serves room logs as each test scripts them, and pushes changes
and room messages. The room ``#ops`` is bob's: bob created it and added alice
(the client under attack); every genuine entry and message is signed with
bob's key, which the server's ``lookup`` serves. Each attack must be refused
with its documented reason and shown (a ``RoomRejected`` or ``MessageRejected``
event, which every front end prints), the view alice holds must not move, and
the session must go on (a genuine message still arrives).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from securechat import crypto
from securechat.client import roomchains
from securechat.client.decrypting import open_pasted
from securechat.client.roomchains import MAX_FORMER_ROOMS
from securechat.client.state import ClientStore
from securechat.errors import UnknownState
from securechat.events import (
    Acked,
    MessageReceived,
    MessageRejected,
    MessageSent,
    Ready,
    RoomChanged,
    RoomRejected,
)
from securechat.rooms.envelope import parse_room_envelope
from securechat.rooms.log import RoomState, apply
from securechat.rooms.sealing import open_room_parsed, seal_room
from tests.support.hostile import HostileServer, client_of, next_frame
from tests.support.rawclient import identity_key
from tests.support.rooms import Chain
from tests.support.sessions import Client

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0
ROOM = "#ops"


@pytest.fixture
async def alice(tmp_path: Path, hostile: HostileServer, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Client]:
    caplog.set_level(logging.INFO)
    for name in ("carol", "dave", "mallory"):
        hostile.keys[name] = crypto.public_key_pem(identity_key(name).public_key())
    async with client_of(hostile, tmp_path / "home", caplog) as client:
        yield client


def serve(srv: HostileServer, chain: Chain) -> None:
    """What an honest server would list and serve for ``chain``: alice is a member at its head."""
    assert chain.state is not None
    srv.room_logs[ROOM] = [entry.to_json() for entry in chain.entries]
    srv.room_listing = [{"room": ROOM, "kind": chain.state.kind, "member": True,
                         "members": len(chain.state.members), "seq": chain.state.seq, "head": chain.state.head.hex()}]


async def joined(client: Client, srv: HostileServer, chain: Chain) -> RoomState:
    """Start alice against a server that serves ``chain``; the state she verified."""
    serve(srv, chain)
    client.start()
    await client.rec.wait_kind(Ready)
    assert chain.state is not None
    await client.rec.wait_for(lambda e: isinstance(e, RoomChanged) and e.room == ROOM and e.seq == chain.state.seq)
    state = client.session.rooms.state(ROOM)
    assert state == chain.state, (state, chain.state)
    return state


def room_of(*others: str) -> Chain:
    """bob's room with alice and ``others`` in it."""
    made = Chain(ROOM)
    made.add("create", "bob", "bob", "invite")
    made.add("add", "bob", "alice")
    for name in others:
        made.add("add", "bob", name)
    return made


def sealed(srv: HostileServer, state: RoomState, sender: str = "bob", text: str = "hi",
           signer: str | None = None) -> dict[str, Any]:
    """A room message from ``sender`` sealed for the members of ``state`` (alice's key is the one she logged in with)."""
    assert srv.client_key is not None
    keys = {name: srv.client_key if name == "alice" else identity_key(name).public_key() for name in state.members}
    return seal_room(identity_key(signer or sender), keys, state, sender, text)


async def still_talking(client: Client, srv: HostileServer, state: RoomState, text: str = "still fine") -> None:
    """The session goes on: a genuine message from bob, sealed for the members alice holds, is shown."""
    env = sealed(srv, state, text=text)
    srv.room_message("bob", env)
    got = await client.rec.wait_kind(MessageReceived, msg_id=env["id"])
    assert (got.room, got.sender, got.text) == (ROOM, "bob", text)


async def rejected_room(client: Client, reason: str) -> RoomRejected:
    event: RoomRejected = await client.rec.wait_kind(RoomRejected, room=ROOM, reason=reason)
    return event


async def rejected_message(client: Client, msg_id: str) -> MessageRejected:
    event: MessageRejected = await client.rec.wait_kind(MessageRejected, msg_id=msg_id)
    assert event.room == ROOM, event
    return event


# --- changes the members did not make -------------------------------------------------------------


async def test_a_ghost_member_added_by_the_server_is_refused(hostile: HostileServer, alice: Client) -> None:
    """The server cannot sign as an admin: an `add mallory` under bob's name but not bob's key is refused."""
    chain = room_of("carol")
    state = await joined(alice, hostile, chain)
    ghost = chain.make("add", "bob", "mallory", signer="mallory")  # claims bob, signed by another key
    hostile.room_update(ROOM, [ghost.to_json()])
    refused = await rejected_room(alice, "bad_signature")
    assert refused.seq == state.seq + 1, refused
    assert alice.session.rooms.state(ROOM) == state  # mallory is not a member here
    # A message that wraps a key for the ghost, under a state alice holds, lists members she did not accept.
    ghosted = sealed(hostile, dataclasses.replace(state, members=state.members | {"mallory"}))
    hostile.room_message("bob", ghosted)
    assert (await rejected_message(alice, ghosted["id"])).reason == "member_mismatch"
    await still_talking(alice, hostile, state)


async def test_a_change_signed_by_a_non_admin_is_refused(hostile: HostileServer, alice: Client) -> None:
    chain = room_of("carol")
    state = await joined(alice, hostile, chain)
    forged = chain.make("add", "carol", "mallory")  # carol signs it truly, but only admins add
    hostile.room_update(ROOM, [forged.to_json()])
    assert (await rejected_room(alice, "not_allowed")).seq == state.seq + 1
    assert alice.session.rooms.state(ROOM) == state
    await still_talking(alice, hostile, state)


async def test_a_withheld_removal_is_seen_when_a_message_names_the_newer_state(
    hostile: HostileServer, alice: Client
) -> None:
    """bob removed carol; the server keeps that entry from alice. bob's next message names the state after the
    removal, which alice cannot fetch: rejected as unknown_state, never opened under the old member list."""
    chain = room_of("carol")
    before = await joined(alice, hostile, chain)
    withheld = Chain(ROOM, list(chain.entries), chain.state)
    withheld.add("remove", "bob", "carol")
    assert withheld.state is not None
    env = sealed(hostile, withheld.state, text="carol is out")
    hostile.room_message("bob", env)  # the log served still ends before the removal
    refused = await rejected_message(alice, env["id"])
    assert refused.reason == "unknown_state" and "withheld" in refused.detail, refused
    assert alice.session.rooms.state(ROOM) == before
    # Once the server serves the removal, the same kind of message opens.
    serve(hostile, withheld)
    await still_talking(alice, hostile, withheld.state, "after the removal")
    assert alice.session.rooms.state(ROOM) == withheld.state


async def test_a_server_that_lists_us_out_without_a_signed_removal_is_told(
    hostile: HostileServer, alice: Client
) -> None:
    chain = room_of("carol")
    state = await joined(alice, hostile, chain)
    hostile.room_listing = []  # the server says alice is in no room, and its log shows no removal
    assert hostile.writer is not None
    hostile.writer.transport.abort()  # alice reconnects and syncs again
    refused = await rejected_room(alice, "withheld")
    assert "no signed change" in refused.detail
    assert alice.session.rooms.state(ROOM) == state


async def test_a_replayed_older_state_never_moves_the_view_back(hostile: HostileServer, alice: Client) -> None:
    chain = room_of("carol")
    chain.add("remove", "bob", "carol")
    state = await joined(alice, hostile, chain)
    assert "carol" not in state.members
    # The server replays the entries up to the state where carol was a member, and lists that state.
    old = chain.entries[:3]
    hostile.room_update(ROOM, [entry.to_json() for entry in old])
    hostile.room_listing[0].update(seq=old[-1].seq, head=old[-1].head().hex(), members=3)
    await still_talking(alice, hostile, state, "after the replay")
    assert alice.session.rooms.state(ROOM) == state
    # A replayed message is confirmed again and never shown twice (also after a reconnect).
    again = sealed(hostile, state, text="once")
    for _ in range(2):
        hostile.room_message("bob", again)
    await still_talking(alice, hostile, state, "after the message replay")
    assert [e.text for e in alice.rec.of(MessageReceived)].count("once") == 1
    # A different entry at a seq alice holds is a fork: refused, loudly, the first view kept.
    fork = chain.make("add", "bob", "dave", seq=2, prev=chain.entries[1].head())
    hostile.room_update(ROOM, [fork.to_json()])
    assert (await rejected_room(alice, "fork")).seq == 2
    assert alice.session.rooms.state(ROOM) == state
    # What alice sends is sealed for the members she holds: carol gets no key.
    await alice.session.send(ROOM, "for the current members")
    async with asyncio.timeout(WAIT):
        while (frame := await hostile.from_client.get())["type"] != "room_send":
            pass
    assert sorted(frame["envelope"]["keys"]) == ["alice", "bob"], frame["envelope"]["keys"]
    assert frame["envelope"]["seq"] == state.seq


# --- messages the members did not send as they are ------------------------------------------------


async def test_a_message_from_a_non_member_is_refused(hostile: HostileServer, alice: Client) -> None:
    chain = room_of("carol")
    state = await joined(alice, hostile, chain)
    intruder = dataclasses.replace(state, members=state.members | {"dave"})
    env = sealed(hostile, intruder, sender="dave", text="let me in")
    hostile.room_message("dave", env)
    assert (await rejected_message(alice, env["id"])).reason == "not_member"
    await still_talking(alice, hostile, state)


async def test_a_stripped_or_swapped_wrapped_key_is_refused(hostile: HostileServer, alice: Client) -> None:
    chain = room_of("carol")
    state = await joined(alice, hostile, chain)
    stripped = sealed(hostile, state, text="no key for alice")
    stripped["keys"] = {k: v for k, v in stripped["keys"].items() if k != "alice"}
    hostile.room_message("bob", stripped)
    assert (await rejected_message(alice, stripped["id"])).reason == "member_mismatch"
    swapped = sealed(hostile, state, text="carol's key in alice's place")
    swapped["keys"] = {**swapped["keys"], "alice": swapped["keys"]["carol"]}
    hostile.room_message("bob", swapped)
    assert (await rejected_message(alice, swapped["id"])).reason == "bad_signature"
    await still_talking(alice, hostile, state)
    received = [e.text for e in alice.rec.of(MessageReceived)]
    assert received == ["still fine"], received


# --- what a client keeps of rooms it is not in ----------------------------------------------------------


async def test_messages_naming_open_rooms_we_are_not_in_leave_nothing_held(
    hostile: HostileServer, alice: Client
) -> None:
    """A server that sends messages naming open rooms alice never joined makes her fetch each room's log
    (the message might be for a room she was just added to); she keeps none of them: a non-member holds no
    room's log, so a server cannot fill her state with the logs of every open room."""
    chain = room_of("carol")
    state = await joined(alice, hostile, chain)
    for n in range(3):
        lobby = Chain(f"#lobby{n}")
        lobby.add("create", "bob", "bob", "open")
        lobby.add("join", "carol")
        assert lobby.state is not None
        hostile.room_logs[lobby.room] = [entry.to_json() for entry in lobby.entries]
        env = seal_room(identity_key("bob"), {name: identity_key(name).public_key() for name in lobby.state.members},
                        lobby.state, "bob", "not for alice")
        hostile.room_message("bob", env)
        rejected = await alice.rec.wait_kind(MessageRejected, msg_id=env["id"])
        assert rejected.reason in ("unknown_state", "bad_recipient"), rejected
        assert alice.session.rooms.state(lobby.room) is None, f"alice keeps the log of {lobby.room}"
    assert [held.room for held in alice.session.rooms.held()] == [ROOM]
    assert alice.session.store.query("SELECT DISTINCT room FROM room_chain") == [(ROOM,)]
    await still_talking(alice, hostile, state)


async def test_a_message_whose_state_cannot_be_read_for_now_is_not_confirmed(
    hostile: HostileServer, alice: Client
) -> None:
    """A message names a newer state; the client asks for the log and gets no answer (the connection is stuck):
    a failure that may pass, so the message is neither rejected nor confirmed, and opens when it comes again.
    Before: unknown_state, confirmed with `received`, lost."""
    chain = room_of("carol")
    state = await joined(alice, hostile, chain)
    newer = Chain(ROOM, list(chain.entries), chain.state)
    newer.add("add", "bob", "dave")
    assert newer.state is not None
    hostile.hang_room_logs = True
    env = sealed(hostile, newer.state, text="under the newer state")
    hostile.room_message("bob", env)
    await next_frame(hostile, "room_log")
    later = sealed(hostile, state, text="after it")  # the inbox takes one message at a time: this one comes after
    hostile.room_message("bob", later)
    await alice.rec.wait_kind(MessageReceived, msg_id=later["id"])
    confirmed = []
    while (frame := await next_frame(hostile, "received"))["id"] != later["id"]:
        confirmed.append(frame["id"])
    assert env["id"] not in confirmed
    assert not [e for e in alice.rec.of(MessageRejected) if e.msg_id == env["id"]]
    hostile.hang_room_logs = False
    serve(hostile, newer)
    hostile.room_message("bob", env)  # as a server redelivers what was not confirmed
    got = await alice.rec.wait_kind(MessageReceived, msg_id=env["id"])
    assert got.text == "under the newer state"


async def test_a_room_send_whose_member_lookup_is_cut_off_waits_unsealed_and_goes_once_after_reconnect(
    hostile: HostileServer, alice: Client
) -> None:
    """alice holds no key for carol; the lookup is in flight when the connection goes. The message waits
    unsealed (history `sending`, no payload, nothing sent, nothing acked), and after the reconnect it is
    sealed for the members with the id and time it was typed with and sent once."""
    chain = room_of("carol")
    await joined(alice, hostile, chain)
    assert alice.session.store.pins.get("carol") is None
    hostile.hang_lookups = True
    while not hostile.from_client.empty():  # what the client sent so far (bob's lookup among it)
        hostile.from_client.get_nowait()
    sending = asyncio.create_task(alice.session.send(ROOM, "typed during the lookup"))
    assert (await next_frame(hostile, "lookup"))["name"] == "carol"
    assert hostile.writer is not None
    hostile.writer.transport.abort()  # the connection goes while the lookup is unanswered
    msg_id = await asyncio.wait_for(sending, WAIT)  # kept, not "offline"
    typed = await alice.rec.wait_kind(MessageSent, msg_id=msg_id)
    assert typed.payload == ""  # not sealed yet
    (entry,) = alice.session.history(ROOM)
    assert (entry.msg_id, entry.text, entry.status) == (msg_id, "typed during the lookup", "sending")
    assert alice.session.unacknowledged() == 1

    hostile.hang_lookups = False  # the client reconnects by itself; this time carol's key comes
    frame = await next_frame(hostile, "room_send")
    envelope = frame["envelope"]
    assert (frame["room"], frame["rid"], envelope["id"], envelope["ts"]) == (ROOM, msg_id, msg_id, typed.ts)
    assert not alice.rec.of(Acked), "confirmed before the server had it"
    assert alice.session.history(ROOM)[0].status == "sending"
    assert hostile.client_key is not None
    for member in ("bob", "carol"):
        env = parse_room_envelope(envelope)
        opened = open_room_parsed(identity_key(member), member, hostile.client_key, env)
        assert (opened.sender, opened.text) == ("alice", "typed during the lookup")
    # Sent once: a message sent after it on the same connection is the next room_send.
    after = await alice.session.send(ROOM, "after it")
    assert (await next_frame(hostile, "room_send"))["rid"] == after
    assert alice.session.unacknowledged() == 2


# --- rooms we left: kept to open old messages, bounded summed over rooms ------------------------------


def in_and_out(room: str, *more: str) -> Chain:
    """mallory's room: created, alice added, ``more`` added, alice removed."""
    made = Chain(room)
    made.add("create", "mallory", "mallory", "invite")
    made.add("add", "mallory", "alice")
    for name in more:
        made.add("add", "mallory", name)
    made.add("remove", "mallory", "alice")
    return made


async def added_and_removed(client: Client, srv: HostileServer, chains: list[Chain]) -> None:
    """The server pushes each room's whole story at once (alice is added, so she fetches it) and waits
    until alice has verified her removal from every one."""
    for made in chains:
        srv.room_logs[made.room] = [entry.to_json() for entry in made.entries]
        srv.room_update(made.room, srv.room_logs[made.room])
    for made in chains:
        await client.rec.wait_for(
            lambda e, room=made.room: isinstance(e, RoomChanged) and e.room == room and e.change == "removed"
        )


def pasted(client: Client, srv: HostileServer, made: Chain) -> str:
    """What mallory sealed to ``made`` while alice was in it, opened by alice's ``decrypt``."""
    state = apply_upto(made, 1)  # created, alice added
    env = seal_room(identity_key("mallory"), {"mallory": identity_key("mallory").public_key(),
                                              "alice": srv.client_key}, state, "mallory", f"in {made.room}")
    store = client.session.store
    return open_pasted(store, store.require_identity(), crypto.encode_payload(env), None).opened.text


def apply_upto(made: Chain, seq: int) -> RoomState:
    state = None
    for entry in made.entries[: seq + 1]:
        state = apply(state, entry)
    assert state is not None
    return state


async def test_a_server_adding_and_removing_us_from_many_rooms_cannot_grow_what_we_hold(
    hostile: HostileServer, alice: Client
) -> None:
    """mallory (any user, or the server inventing one) adds alice to room after room and removes her. A former
    room is kept so its old messages still open, but only the MAX_FORMER_ROOMS most recent departures:
    before, every one was held for ever (its chain and state in the state file, its name in memory)."""
    alice.start()
    await alice.rec.wait_kind(Ready)
    chains = [in_and_out(f"#r{i:03d}") for i in range(MAX_FORMER_ROOMS + 8)]
    await added_and_removed(alice, hostile, chains)
    kept = [made.room for made in chains[-MAX_FORMER_ROOMS:]]
    assert sorted(state.room for state in alice.session.rooms.held()) == kept
    assert alice.session.store.rooms.former() == kept[::-1]
    store = alice.session.store
    assert store.query("SELECT COUNT(*) FROM room_chain") == [(3 * MAX_FORMER_ROOMS,)]
    assert store.query("SELECT COUNT(*) FROM room_left") == [(MAX_FORMER_ROOMS,)]
    assert len(alice.session.rooms._told) <= MAX_FORMER_ROOMS
    # What is kept is enough: a message from while alice was in the room opens; an evicted room's does not.
    assert pasted(alice, hostile, chains[-1]) == f"in {chains[-1].room}"
    with pytest.raises(UnknownState, match="holds no room .* of the rooms you left"):
        pasted(alice, hostile, chains[0])


async def test_former_rooms_are_bounded_by_their_entries_summed(
    hostile: HostileServer, alice: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A few long rooms instead of many short ones: the entries of the former rooms' chains, summed, stay
    within MAX_FORMER_ENTRIES (lowered here to 10: 16,384 signed entries would take minutes to make)."""
    monkeypatch.setattr(roomchains, "MAX_FORMER_ENTRIES", 10)
    alice.start()
    await alice.rec.wait_kind(Ready)
    chains = [in_and_out(f"#long{i}", "carol") for i in range(3)]  # 4 entries each
    await added_and_removed(alice, hostile, chains)
    assert alice.session.store.rooms.former() == ["#long2", "#long1"]
    assert alice.session.store.query("SELECT COUNT(*) FROM room_chain") == [(8,)]
    # A former room that the server goes on extending grows within the bound too.
    longer = Chain("#long2", list(chains[2].entries), chains[2].state)
    longer.add("add", "mallory", "dave")
    longer.add("add", "mallory", "bob")
    longer.add("add", "mallory", "erin")
    hostile.room_logs["#long2"] = [entry.to_json() for entry in longer.entries]
    hostile.room_update("#long2", hostile.room_logs["#long2"][-3:])
    await alice.rec.wait_for(lambda e: isinstance(e, RoomChanged) and e.room == "#long2" and e.name == "erin")
    assert alice.session.store.rooms.former() == ["#long2"]
    assert alice.session.store.query("SELECT COUNT(*) FROM room_chain") == [(7,)]


def test_former_rooms_held_by_a_state_file_from_before_are_bounded_when_it_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state file written before former rooms were bounded holds them with no departure time: opening
    it marks them oldest and keeps the bound (the highest-sorting names are the ones kept: same time)."""
    chains = [in_and_out(f"#old{i:03d}") for i in range(MAX_FORMER_ROOMS + 2)]
    monkeypatch.setattr(roomchains, "MAX_FORMER_ROOMS", 1000)
    with ClientStore.open(tmp_path, "alice", bits=2048) as store:
        for made in chains:
            assert made.state is not None
            store.rooms.extend(made.state, made.entries)
        with store.transaction() as db:
            db.execute("DELETE FROM room_left")  # as the old code left it
    monkeypatch.undo()
    with ClientStore.open(tmp_path, "alice") as store:
        assert len(store.rooms.states()) == MAX_FORMER_ROOMS
        assert len(store.rooms.former()) == MAX_FORMER_ROOMS


async def test_a_key_bundled_for_our_own_name_cannot_sign_changes_by_us(hostile: HostileServer, alice: Client) -> None:
    """The server bundles mallory's key as alice's with a `leave` "by alice" that mallory signed. Our own
    name's key is our own identity's: the leave is `bad_signature` and alice stays in. Before, the bundled
    key was pinned for alice's own name on first sight, and the forged leave took her out of the room
    (found by tests/test_fuzz_rooms.py's log parser target)."""
    chain = room_of("carol")
    state = await joined(alice, hostile, chain)
    forged = chain.make("leave", "alice", signer="mallory")
    hostile.push({"type": "room_update", "room": ROOM, "entries": [forged.to_json()],
                  "keys": {"alice": crypto.public_key_pem(identity_key("mallory").public_key())}, "more": False})
    assert (await rejected_room(alice, "bad_signature")).seq == forged.seq
    assert alice.session.rooms.state(ROOM) == state
    await still_talking(alice, hostile, state)
