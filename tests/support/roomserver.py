"""Room frames from raw clients against a server in this process (the server room tests and the attacks on them)."""

from __future__ import annotations

from typing import Any

from securechat.rooms.log import RoomEntry, RoomState, apply
from tests.support.rawclient import RawClient, msg_id
from tests.support.rooms import Chain


class Room:
    """A room as its members see it through a raw connection: a chain of real entries."""

    def __init__(self, name: str = "#ops") -> None:
        self.chain = Chain(name)

    @property
    def state(self) -> RoomState:
        assert self.chain.state is not None
        return self.chain.state

    def entry(self, op: str, by: str, name: str | None = None, kind: str = "invite") -> RoomEntry:
        if op == "create":  # always the first entry, even of a room that exists (room_exists)
            return self.chain.make(op, by, name, kind, seq=0, prev=bytes(32))
        return self.chain.make(op, by, name)

    def accept(self, entry: RoomEntry) -> None:
        self.chain.state = apply(self.chain.state, entry)
        self.chain.entries.append(entry)


async def change(client: RawClient, room: Room, op: str, name: str | None = None, kind: str = "invite",
                 rid: str = "r1", *, refusal: bool | None = False) -> dict[str, Any]:
    """Send an entry and return the answer: a room_update (the room then accepts the entry), or, with
    ``refusal``, an error (None: either)."""
    assert client.name is not None
    entry = room.entry(op, client.name, name, kind)
    kind_of = "room_create" if op == "create" else "room_append"
    await client.send_frame({"type": kind_of, "entry": entry.to_json(), "rid": rid})
    answer = await answer_to(client, rid)
    assert refusal is None or (answer["type"] == "error") == refusal, answer
    if answer["type"] == "room_update":
        assert answer["entries"] == [entry.to_json()]
        room.accept(entry)
    return answer


async def answer_to(client: RawClient, rid: str) -> dict[str, Any]:
    """The room_update or error that answers ``rid`` (pushes of other members' changes are skipped)."""
    while True:
        frame = await client.recv()
        if frame["type"] in ("room_update", "error") and frame.get("rid") == rid:
            return frame


async def next_of(client: RawClient, *kinds: str) -> dict[str, Any]:
    while True:
        frame = await client.recv()
        if frame["type"] in kinds:
            return frame


def room_envelope(room: Room, sender: str, n: int, keys: set[str] | None = None) -> dict[str, Any]:
    """A well-shaped room envelope (the server never opens one) sealed 'for' ``keys``."""
    state = room.state
    return {
        "v": 1, "room": state.room, "from": sender, "id": msg_id(n), "ts": 1, "seq": state.seq,
        "head": state.head.hex(), "keys": {name: "AAAA" for name in sorted(keys or state.members)},
        "nonce": "AAAAAAAAAAAAAAAA", "ct": "AAAAAAAAAAAAAAAAAAAAAA==", "sig": "AAAA",
    }


async def send(client: RawClient, room: Room, n: int, keys: set[str] | None = None) -> None:
    assert client.name is not None
    env = room_envelope(room, client.name, n, keys)
    await client.send_frame({"type": "room_send", "room": room.state.room, "envelope": env, "rid": env["id"]})
