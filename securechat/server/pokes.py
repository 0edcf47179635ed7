"""What the nodes publish to each other on a user's channel, read in one place (redis_lua.py's key table).

The scripts of :mod:`securechat.server.redis_lua` write them; :mod:`securechat.server.cluster` reads them.
Two carry many at once, so that the sends of one loop turn cost one publish and one read, not one each:

- ``M`` (the ``enqueue`` script): the messages just stored in the user's queue, in queue order:
  ``M<n>``, then ``n`` lines ``<seq> <sender> <id> <server_ts> <size> <rid>`` (the rid as stored, JSON,
  last: it may hold spaces, never a newline), then the ``n`` frames back to back, ``size`` bytes each.
- ``A`` (the ``confirm`` script, and a node telling a sender ``queued``): acks for the user as a sender,
  in order: ``A``, then four lines per ack: ``<status>``, ``<id>``, ``<recipient>``, ``<rid>``.

``P`` (a room's change for a member, :func:`securechat.server.sessionbox.push_body`) is read here too, and
the live path's two (:mod:`securechat.server.livepath`), which no script writes:

- ``L`` (on the recipient's channel): one sender session's live messages of one loop turn, numbered
  ``first``, ``first + 1``, ... within the sender's epoch: ``L<sender> <session> <epoch> <first> <n>``, then
  ``n`` lines ``<id> <server_ts> <size> <rid>``, then the ``n`` frames back to back.
- ``X`` (on the sender's channel): the recipient's node refuses the rest of that epoch:
  ``X<recipient> <epoch> <session>`` (the sender's session number).

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
# id, server_ts, the rid as stored, the frame (a view into the poke: not copied)
LiveMessage = tuple[bytes, bytes, bytes, memoryview]

ACK_STATUSES: Final = (b"queued", b"delivered")
_NAME_RE: Final = NAME_PATTERN.pattern.encode()
_ID_RE: Final = MESSAGE_ID_PATTERN.pattern.encode()
# One match for an A poke, one for an M poke's lines (every cross-node message is read so: the cost matters).
_ACKS: Final = re.compile(rb"A(?:\n(?:%s)\n%s\n%s\n[^\n]*)+" % (b"|".join(ACK_STATUSES), _ID_RE, _NAME_RE)).fullmatch
_M_LINES: Final = re.compile(rb"M\d+(?:\n\d+ %s %s \d+ \d+ [^\n]*)*\n" % (_NAME_RE, _ID_RE)).fullmatch
_L_LINES: Final = re.compile(rb"L%s \d{1,18} \d{1,18} \d{1,18} \d{1,4}(?:\n%s \d+ \d+ [^\n]*)*\n" % (_NAME_RE, _ID_RE)).fullmatch
_REFUSAL: Final = re.compile(rb"X(%s) (\d{1,18}) (\d{1,18})" % _NAME_RE).fullmatch
_LENGTH: Final = HEADER.unpack_from
_ROOM: Final = re.compile(ROOM_PATTERN.pattern.encode()).fullmatch


class GarbledPoke(ValueError):
    """A poke that does not read as its kind says (the reason is the text)."""


def new_messages(data: bytes) -> list[NewMessage]:
    """The messages of an ``M`` poke, in queue order."""
    count = int(head) if (head := data[1 : data.find(b"\n")]).isdigit() else -1
    parts = data.split(b"\n", count + 1) if count >= 0 else [b""]
    if count < 0 or _M_LINES(data, 0, len(data) - len(parts[-1])) is None:
        raise GarbledPoke(f"M: not a count and lines of a seq, sender, id, time, size and rid: {data[:120]!r}")
    if len(parts) != count + 2:
        raise GarbledPoke(f"M: {count} messages announced, {len(parts) - 2} lines")
    frames = parts[-1]
    read = _frames("M", parts[1:-1], frames)
    return [(int(f[0]), f[1], f[2], f[3], f[4], frames[at:end]) for f, at, end in read]


def _frames(kind: str, lines: list[bytes], frames: bytes) -> list[tuple[list[bytes], int, int]]:
    """Each line's fields but its size (the second last), with where in ``frames`` the frame it announces begins and
    ends; the frames must fill ``frames``."""
    out: list[tuple[list[bytes], int, int]] = []
    at = 0
    for line in lines:
        *fields, size, rid = line.split(b" ", 3 if kind == "L" else 5)
        end = at + int(size)
        if end - at < HEADER_SIZE or end > len(frames) or _LENGTH(frames, at)[0] != end - at - HEADER_SIZE:
            raise GarbledPoke(f"{kind}: message {len(out) + 1}: {end - at} bytes that are not one frame")
        out.append(([*fields, rid], at, end))
        at = end
    if at != len(frames):
        raise GarbledPoke(f"{kind}: {len(frames) - at} bytes left over after {len(out)} messages")
    return out


def live_messages(data: bytes) -> tuple[bytes, int, int, int, list[LiveMessage], bytes]:
    """An ``L`` poke: the sender, its session number, its epoch, the first message's number, the messages in order,
    and their frames back to back (what a session that takes them all is written: no frame copied one by one)."""
    head_end = data.find(b"\n")
    head = data[1:head_end].split(b" ")
    count = int(head[4]) if len(head) == 5 and head[4].isdigit() else -1
    parts = data.split(b"\n", count + 1) if count >= 0 else [b""]
    if count < 1 or len(parts) != count + 2 or _L_LINES(data, 0, len(data) - len(parts[-1])) is None:
        raise GarbledPoke(f"L: not a sender, session, epoch, number and count, and lines of an id, time, size and rid: {data[:120]!r}")
    frames = parts[-1]
    view = memoryview(frames)
    read = [(f[0], f[1], f[2], view[at:end]) for f, at, end in _frames("L", parts[1:-1], frames)]
    return head[0], int(head[1]), int(head[2]), int(head[3]), read, frames


def live_poke(sender: bytes, session: int, epoch: int, items: list[tuple[int, bytes, int, bytes, bytes]]) -> bytes:
    """The ``L`` poke of ``items`` (number, id, server_ts, rid as stored, frame), numbered consecutively from the first."""
    lines = b"".join([b"%s %d %d %s\n" % (i[1], i[2], len(i[4]), i[3]) for i in items])
    head = b"L%s %d %d %d %d\n" % (sender, session, epoch, items[0][0], len(items))
    return b"".join([head, lines, *[i[4] for i in items]])


def refusal(data: bytes) -> tuple[str, int, int]:
    """An ``X`` poke: the recipient, the epoch refused, the sender's session number."""
    match = _REFUSAL(data)
    if match is None:
        raise GarbledPoke(f"X: not a recipient, epoch and session: {data[:120]!r}")
    return match[1].decode(), int(match[2]), int(match[3])


def refusal_poke(recipient: bytes, epoch: int, session: int) -> bytes:
    """The ``X`` poke refusing the rest of ``epoch`` of the sender's session ``session``."""
    return b"X%s %d %d" % (recipient, epoch, session)


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
    return acks_poke([ack_line(status, msg_id, recipient, rid)])


def ack_line(status: bytes, msg_id: bytes, recipient: bytes, rid: bytes) -> bytes:
    """One ack of an ``A`` poke, as :func:`acks_poke` joins them."""
    return b"\n%s\n%s\n%s\n%s" % (status, msg_id, recipient, rid)


def acks_poke(lines: list[bytes]) -> bytes:
    """The ``A`` poke of the acks :func:`ack_line` made, in order."""
    return b"A" + b"".join(lines)
