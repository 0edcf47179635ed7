"""Rooms through real ``--json`` client processes (the end-to-end room tests, on one node and on several)."""

from __future__ import annotations

from tests.support.jsonclient import Event, JsonClientProcess

WAIT = 60.0


def room_messages(client: JsonClientProcess, room: str, sender: str | None = None) -> list[Event]:
    return [e for e in client.of_kind("message", room=room) if sender is None or e["from"] == sender]


def change(client: JsonClientProcess, room: str, kind: str, name: str) -> Event:
    """Wait for the verified change ``kind`` of ``name`` in ``room`` (a ``room`` event)."""
    return client.wait_event("room", WAIT, room=room, change=kind, name=name)


def make_room(admin: JsonClientProcess, room: str, members: list[JsonClientProcess], *, open_room: bool = False) -> None:
    """``admin`` creates ``room`` and adds ``members``; each member sees itself added."""
    admin.command({"cmd": "room_create", "room": room, "open": open_room})
    change(admin, room, "created", admin.name)
    for member in members:
        admin.command({"cmd": "room_add", "room": room, "name": member.name})
        change(admin, room, "added", member.name)
        change(member, room, "added", member.name)


def acks_for(client: JsonClientProcess, msg_ids: set[str], member: str, status: str) -> set[str]:
    return {e["id"] for e in client.of_kind("ack", member=member, status=status) if e["id"] in msg_ids}


def sent_ids(client: JsonClientProcess, room: str) -> list[str]:
    return [e["id"] for e in client.of_kind("sent", to=room)]


def all_sent_ids(client: JsonClientProcess, room: str, count: int, skip: int = 0) -> set[str]:
    """The ids of the ``count`` room messages after the first ``skip``, once ``client`` has said it sent each:
    its ``sent`` lines can be read after a member's ``message`` lines (two pipes, two reader threads)."""
    client.wait_until(lambda events: len(sent_ids(client, room)) >= skip + count, WAIT,
                      what=f"{skip + count} sent events for {room}")  # fmt: skip
    return set(sent_ids(client, room)[skip : skip + count])
