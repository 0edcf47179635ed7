"""What the terminal front ends say about rooms (docs/protocol.md 11), worded once for both.

Like :mod:`securechat.commands.wording`, of which it is the rooms' part: plain text,
no colour or time; the front ends pass every line through the sanitiser.
"""

from __future__ import annotations

from securechat.events import RoomChanged, RoomListing, RoomRejected
from securechat.rooms.log import RoomState


def members_line(state: RoomState) -> str:
    """A room's members as verified here, admins marked."""
    names = [f"{name} (admin)" if name in state.admins else name for name in state.sorted_members()]
    count = len(names)
    who = ", ".join(names) if names else "nobody"
    return f"{state.room} ({state.kind}, {count} member{'s' if count != 1 else ''}, as verified here): {who}"


def not_a_member_line(state: RoomState) -> str:
    """``/to`` a room held here that you are no longer in: its history shows, nothing typed is sent."""
    back = f"/join {state.room} to come back" if state.kind == "open" else "an admin can add you again"
    return f"you are not a member of {state.room}: what you type here is not sent ({back})"


def remove_yourself(room: str) -> str:
    return f"that is you: /leave {room} leaves it (/remove is for another member)"


def last_admin_line(state: RoomState) -> str:
    """``/leave`` by the last admin of a room others are still in: said once, before it is done."""
    frozen = "anyone may still join, nobody can remove" if state.kind == "open" else "nobody can add or remove"
    return (
        f"you are the last admin of {state.room}: once you leave, {frozen} a member, for good. "
        f"Make another member an admin first (/admin {state.room} NAME), or /leave {state.room} again now to leave anyway"
    )


def room_change_line(event: RoomChanged) -> str:
    """One verified change, as both terminal front ends show it ("alice added carol to #ops")."""
    by, name, room = event.by or "?", event.name or "?", event.room
    match event.change:
        case "created":
            return f"{by} created {room} ({event.kind})"
        case "added":
            return f"{by} added {name} to {room}"
        case "removed":
            return f"{by} removed {name} from {room}"
        case "joined":
            return f"{name} joined {room}"
        case "left" if event.members and not event.admins:  # the last admin left (docs/protocol.md 11.1)
            frozen = "remove a member (anyone may still join)" if event.kind == "open" else "add or remove a member"
            return f"{name} left {room}, its last admin: nobody can {frozen} any more"
        case "left":
            return f"{name} left {room}"
        case "admin":
            return f"{by} made {name} an admin of {room}"
    count = len(event.members)
    return f"{room}: {count} member{'s' if count != 1 else ''}: {', '.join(event.members) or 'nobody'}"


def room_rejected_line(event: RoomRejected) -> str:
    at = f" at seq {event.seq}" if event.seq is not None else ""
    return f"{event.room}: refused a change{at}: {event.reason}" + (f" ({event.detail})" if event.detail else "")


def readers_gone_line(sender: str, room: str, gone: tuple[str, ...]) -> str:
    """A message sealed under an older state, also for people who are no longer members (the sender is behind)."""
    return (
        f"{sender}'s message was also readable by {', '.join(gone)}, no longer in {room}: "
        f"{sender}'s view of {room} is behind"
    )


def rooms_line(rooms: tuple[RoomListing, ...]) -> str:
    if not rooms:
        return "no rooms yet: /create #ROOM makes one"
    parts = [
        f"{r.room} ({r.kind}, {r.members} member{'' if r.members == 1 else 's'}{', including you' if r.member else ''})"
        for r in rooms
    ]
    return f"{len(rooms)} room{'s' if len(rooms) != 1 else ''}: " + ", ".join(parts)
