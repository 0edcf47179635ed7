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
_NAME_RE: Final = NAME_PATTERN.pattern.encode()
_ID_RE: Final = MESSAGE_ID_PATTERN.pattern.encode()
# One match for an A poke, one for an M poke's lines (every cross-node message is read so: the cost matters).
_ACKS: Final = re.compile(rb"A(?:\n(?:%s)\n%s\n%s\n[^\n]*)+" % (b"|".join(ACK_STATUSES), _ID_RE, _NAME_RE)).fullmatch
_M_LINES: Final = re.compile(rb"M\d+(?:\n\d+ %s %s \d+ \d+ [^\n]*)*\n" % (_NAME_RE, _ID_RE)).fullmatch
_LENGTH: Final = HEADER.unpack_from
_ROOM: Final = re.compile(ROOM_PATTERN.pattern.encode()).fullmatch


class GarbledPoke(ValueError):
    """A poke that does not read as its kind says (the reason is the text)."""


def new_messages(data: bytes) -> list[NewMessage]:
    """The messages of an ``M`` poke, in queue order."""
    count = int(head) if (head := data[1 : data.find(b"\n")]).isdigit() else -1
    parts = data.split(b"\n", count + 1) if count >= 0 else [b""]
    frames, at = parts[-1], 0
    out: list[NewMessage] = []
    if count < 0 or _M_LINES(data, 0, len(data) - len(frames)) is None:
        raise GarbledPoke(f"M: not a count and lines of a seq, sender, id, time, size and rid: {data[:120]!r}")
    for line in parts[1:-1]:
        seq, sender, msg_id, server_ts, size, rid = line.split(b" ", 5)
        end = at + int(size)
        if end - at < HEADER_SIZE or end > len(frames) or _LENGTH(frames, at)[0] != end - at - HEADER_SIZE:
            raise GarbledPoke(f"M: message {len(out) + 1}: {end - at} bytes that are not one frame")
        out.append((int(seq), sender, msg_id, server_ts, rid, frames[at:end]))
        at = end
    if len(out) != count or at != len(frames):
        raise GarbledPoke(f"M: {count} messages announced, {len(out)} lines, {len(frames) - at} bytes left over")
    return out


def acks(data: bytes) -> list[Ack]:
    """The acks of an ``A`` poke, in order."""
    if _ACKS(data) is None:
        raise GarbledPoke(f"A: not lines of a status, id, recipient and rid: {data[:120]!r}")
    parts = data.split(b"\n")
    return [(parts[i], parts[i + 1], parts[i + 2], parts[i + 3]) for i in range(1, len(parts), 4)]


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
