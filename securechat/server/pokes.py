"""What the nodes publish to each other on a user's channel, read in one place (redis_lua.py's key table).

The scripts of :mod:`securechat.server.redis_lua` write them; :mod:`securechat.server.cluster` reads them.
Two carry many at once, so that the sends of one loop turn cost one publish and one read, not one each:

- ``M`` (the ``enqueue`` script): the messages just stored in the user's queue, in queue order:
  ``M<n>``, then ``n`` lines ``<seq> <sender> <id> <server_ts> <size> <rid>`` (the rid as stored, JSON,
  last: it may hold spaces, never a newline), then the ``n`` frames back to back, ``size`` bytes each.
- ``A`` (the ``confirm`` script, and a node telling a sender ``queued``): acks for the user as a sender,
  in order: ``A``, then four lines per ack: ``<status>``, ``<id>``, ``<recipient>``, ``<rid>``.

``P`` (a room's change for a member, :func:`securechat.server.sessionbox.push_body`) is read here too.

Other nodes write them (another version, maybe a buggy one), so reading one checks what a node
acts on or writes to a client unescaped: counts and sizes, numbers, names, ids, an ack's status, and
that a frame is one whole frame (a length prefix that lied would make the client's stream slip).
A poke that fails is :class:`GarbledPoke` (a ``ValueError``), whole: nothing of it is acted on.
"""

from __future__ import annotations

import re
from typing import Final

from ..envelope import MESSAGE_ID_PATTERN
from ..names import NAME_PATTERN, ROOM_PATTERN
from ..protocol import HEADER, HEADER_SIZE

# seq, sender, id, server_ts, the stored rid, the frame
NewMessage = tuple[int, bytes, bytes, bytes, bytes, bytes]
# status, id, recipient, the stored rid
Ack = tuple[bytes, bytes, bytes, bytes]

ACK_STATUSES: Final = (b"queued", b"delivered")
_NAME: Final = re.compile(NAME_PATTERN.pattern.encode()).fullmatch
_ID: Final = re.compile(MESSAGE_ID_PATTERN.pattern.encode()).fullmatch
_ROOM: Final = re.compile(ROOM_PATTERN.pattern.encode()).fullmatch


class GarbledPoke(ValueError):
    """A poke that does not read as its kind says (the reason is the text)."""


def new_messages(data: bytes) -> list[NewMessage]:
    """The messages of an ``M`` poke, in queue order."""
    try:
        count = int(data[1 : data.index(b"\n")])
        parts = data.split(b"\n", count + 1)
        frames, at, out = parts[-1], 0, list[NewMessage]()
        for line in parts[1:-1]:
            seq, sender, msg_id, server_ts, size, rid = line.split(b" ", 5)
            end = at + int(size)
            if not (_NAME(sender) and _ID(msg_id) and server_ts.isdigit() and whole_frame(frames[at:end])):
                raise GarbledPoke(f"message {len(out) + 1}: not a sender, id, time and frame: {line[:120]!r}")
            out.append((int(seq), sender, msg_id, server_ts, rid, frames[at:end]))
            at = end
    except GarbledPoke:
        raise
    except ValueError as exc:  # a count, seq or size that is not a number, a line of too few fields
        raise GarbledPoke(f"M: {exc}") from None
    if len(out) != count or at != len(frames):
        raise GarbledPoke(f"M: {count} messages announced, {len(out)} lines, {len(frames) - at} bytes left over")
    return out


def acks(data: bytes) -> list[Ack]:
    """The acks of an ``A`` poke, in order."""
    parts = data.split(b"\n")
    if parts[0] != b"A" or len(parts) % 4 != 1:
        raise GarbledPoke(f"A: {len(parts) - 1} lines after {parts[0][:20]!r}")
    out = [(parts[i], parts[i + 1], parts[i + 2], parts[i + 3]) for i in range(1, len(parts), 4)]
    for status, msg_id, recipient, _ in out:
        if status not in ACK_STATUSES or not _ID(msg_id) or not _NAME(recipient):
            raise GarbledPoke(f"A: not a status, id and recipient: {status[:20]!r} {msg_id[:40]!r} {recipient[:40]!r}")
    return out


def room_push(data: bytes) -> tuple[str, int, bytes]:
    """A ``P`` poke: the room, its entry's seq, the frame to write."""
    head, frame = data[1:].split(b"\n", 1)
    room, seq = head.rsplit(b" ", 1)
    if not (_ROOM(room) and seq.isdigit() and whole_frame(frame)):
        raise GarbledPoke(f"P: not a room, seq and frame: {head[:80]!r}, {len(frame)} bytes")
    return room.decode(), int(seq), frame


def whole_frame(frame: bytes) -> bool:
    """True if ``frame`` is one frame: its length prefix counts the rest exactly."""
    return len(frame) >= HEADER_SIZE and HEADER.unpack_from(frame)[0] == len(frame) - HEADER_SIZE


def ack_poke(status: bytes, msg_id: bytes, recipient: bytes, rid: bytes) -> bytes:
    """An ``A`` poke of one ack."""
    return b"A\n%s\n%s\n%s\n%s" % (status, msg_id, recipient, rid)
