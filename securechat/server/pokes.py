"""What the nodes publish to each other on a user's channel, read in one place (redis_lua.py's key table).

The scripts of :mod:`securechat.server.redis_lua` write them; :mod:`securechat.server.cluster` reads them.
Two carry many at once, so that the sends of one loop turn cost one publish and one read, not one each:

- ``M`` (the ``enqueue`` script): the messages just stored in the user's queue, in queue order:
  ``M<n>``, then ``n`` lines ``<seq> <sender> <id> <server_ts> <size> <rid>`` (the rid as stored, JSON,
  last: it may hold spaces, never a newline), then the ``n`` frames back to back, ``size`` bytes each.
- ``A`` (the ``confirm`` script, and a node telling a sender ``queued``): acks for the user as a sender,
  in order: ``A``, then four lines per ack: ``<status>``, ``<id>``, ``<recipient>``, ``<rid>``.
"""

from __future__ import annotations

# seq, sender, id, server_ts, the stored rid, the frame
NewMessage = tuple[int, bytes, bytes, bytes, bytes, bytes]
# status, id, recipient, the stored rid
Ack = tuple[bytes, bytes, bytes, bytes]


def new_messages(data: bytes) -> list[NewMessage]:
    """The messages of an ``M`` poke, in queue order."""
    count = int(data[1 : data.index(b"\n")])
    parts = data.split(b"\n", count + 1)
    frames, at, out = parts[-1], 0, []
    for line in parts[1:-1]:
        seq, sender, msg_id, server_ts, size, rid = line.split(b" ", 5)
        end = at + int(size)
        out.append((int(seq), sender, msg_id, server_ts, rid, frames[at:end]))
        at = end
    if len(out) != count or at != len(frames):
        raise ValueError(f"a garbled M poke: {count} messages announced, {len(out)} lines, {len(frames) - at} bytes left over")
    return out


def acks(data: bytes) -> list[Ack]:
    """The acks of an ``A`` poke, in order."""
    parts = data.split(b"\n")
    if len(parts) % 4 != 1:
        raise ValueError(f"a garbled A poke: {len(parts) - 1} lines")
    return [(parts[i], parts[i + 1], parts[i + 2], parts[i + 3]) for i in range(1, len(parts), 4)]


def ack_poke(status: bytes, msg_id: bytes, recipient: bytes, rid: bytes) -> bytes:
    """An ``A`` poke of one ack."""
    return b"A\n%s\n%s\n%s\n%s" % (status, msg_id, recipient, rid)
