"""The rooms of :class:`~securechat.server.redisstore.RedisStore` (:class:`~securechat.server.roomstore.RoomStore`).

A room's keys share the room's hash tag (``{#ops}``: one Redis Cluster slot),
so its log, heads and members change together in one script. Key layout
(``P`` is the store's prefix; docs/deployment.md, "Rooms on Redis"):

==========================  ======  ==========================================================
``P room:{#r}``             hash    ``kind``, ``seq`` (the last entry's), ``head``, ``created``
``P rlog:{#r}``             list    the entries' canonical JSON texts; index = ``seq``
``P rheads:{#r}``           list    the entries' heads (32 bytes); index = ``seq``
``P rmem:{#r}``             hash    current member -> ``1`` (admin) or ``0``
``P rleft:{#r}``            hash    former member -> the ``seq`` that ended the membership
``P rooms``                 zset    every room, score 0 (the server's room cap)
``P open_rooms``            zset    the open rooms, score 0 (listed to everyone)
``P myrooms:{name}``        zset    the rooms ``name`` is a member of (the per-member cap, lists)
==========================  ======  ==========================================================

The linearisation point is :data:`ROOM_APPEND`: it stores an entry only if
its ``seq`` follows the room's, so two nodes racing for one ``seq`` cannot
both win (the loser's client gets ``stale_state``). :data:`ROOM_CREATE` and
:data:`ROOM_APPEND` also touch ``P rooms`` and ``P myrooms:{name}``, which
live in other slots: one Redis (or a Sentinel group) runs them atomically; a
Cluster would need those counts kept apart (docs/deployment.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final, cast

from ..rooms.log import MAX_MEMBER_ROOMS, RoomState
from .futures import then as _then
from .rediscommands import Script
from .resp import RedisLink
from .roomstore import AppendResult, CreateResult, RoomListing, StoredEntry

# KEYS room rlog rheads rmem rooms open_rooms myrooms(creator);
# ARGV room kind head entry creator now max_rooms max_member_rooms. Returns ok, exists or too_many_rooms.
ROOM_CREATE: Final = Script("room_create", """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
if redis.call('ZCARD', KEYS[5]) >= tonumber(ARGV[7]) or redis.call('ZCARD', KEYS[7]) >= tonumber(ARGV[8]) then
  return 'too_many_rooms'
end
redis.call('HSET', KEYS[1], 'kind', ARGV[2], 'seq', 0, 'head', ARGV[3], 'created', ARGV[6])
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('RPUSH', KEYS[3], ARGV[3])
redis.call('HSET', KEYS[4], ARGV[5], '1')
redis.call('ZADD', KEYS[5], 0, ARGV[1])
if ARGV[2] == 'open' then redis.call('ZADD', KEYS[6], 0, ARGV[1]) end
redis.call('ZADD', KEYS[7], 0, ARGV[1])
return 'ok'
""")

# KEYS room rlog rheads rmem rleft myrooms(subject); ARGV room seq op subject head entry max_member_rooms.
# Compare and set on seq; the op changes the members in the same step. Returns ok, stale or too_many_rooms.
ROOM_APPEND: Final = Script("room_append", """
local seq = redis.call('HGET', KEYS[1], 'seq')
if not seq or tonumber(seq) + 1 ~= tonumber(ARGV[2]) then return 'stale' end
local op, who = ARGV[3], ARGV[4]
local joins = op == 'add' or op == 'join'
if joins and redis.call('ZCARD', KEYS[6]) >= tonumber(ARGV[7]) then return 'too_many_rooms' end
redis.call('RPUSH', KEYS[2], ARGV[6])
redis.call('RPUSH', KEYS[3], ARGV[5])
redis.call('HSET', KEYS[1], 'seq', ARGV[2], 'head', ARGV[5])
if joins then
  redis.call('HSET', KEYS[4], who, '0')
  redis.call('HDEL', KEYS[5], who)
  redis.call('ZADD', KEYS[6], 0, ARGV[1])
elseif op == 'remove' or op == 'leave' then
  redis.call('HDEL', KEYS[4], who)
  redis.call('HSET', KEYS[5], who, ARGV[2])
  redis.call('ZREM', KEYS[6], ARGV[1])
elseif op == 'admin' and redis.call('HEXISTS', KEYS[4], who) == 1 then
  redis.call('HSET', KEYS[4], who, '1')
end
return 'ok'
""")

# KEYS room rmem. The room's kind, seq, head and members, read in one step (never half an append).
ROOM_READ: Final = Script("room_read", """
local r = redis.call('HMGET', KEYS[1], 'kind', 'seq', 'head')
if not r[1] then return false end
return {r[1], r[2], r[3], redis.call('HGETALL', KEYS[2])}
""")

ROOM_SCRIPTS: Final = (ROOM_CREATE, ROOM_APPEND, ROOM_READ)


def _state(room: str, got: list[Any] | None) -> RoomState | None:
    if got is None:
        return None
    kind, seq, head, flat = got
    members = {flat[i].decode(): flat[i + 1] == b"1" for i in range(0, len(flat), 2)}
    admins = frozenset(m for m, admin in members.items() if admin)
    return RoomState(room, kind.decode(), int(seq), bytes(head), frozenset(members), admins)


class RedisRooms:
    """The :class:`RoomStore` methods of :class:`RedisStore` (a mixin: it uses the store's link and prefix)."""

    prefix: str
    max_rooms: int
    _clock: Callable[[], float]
    # --redis-replicas: an entry is answered only once the replicas have it (securechat/server/replicas.py)
    _replicated: Callable[[asyncio.Future[Any]], asyncio.Future[Any]]

    @property
    def _link(self) -> RedisLink:  # the store's
        raise NotImplementedError

    def room_key(self, kind: str, room: str) -> str:
        """A per-room key: its hash tag is the room's name (``#`` included), so a room's keys share a slot."""
        return f"{self.prefix}{kind}:{{{room}}}"

    def _mine(self, name: str) -> str:
        return f"{self.prefix}myrooms:{{{name}}}"

    def room_create(self, entry: StoredEntry) -> asyncio.Future[CreateResult]:
        k = self.room_key
        keys = [k("room", entry.room), k("rlog", entry.room), k("rheads", entry.room), k("rmem", entry.room),
                self.prefix + "rooms", self.prefix + "open_rooms", self._mine(entry.name)]
        args = [entry.room, entry.kind, entry.head, entry.entry, entry.name, repr(self._clock()), self.max_rooms,
                MAX_MEMBER_ROOMS]
        return _then(self._replicated(self._link.script(ROOM_CREATE, keys, args)), lambda got: cast(CreateResult, got.decode()))

    def room_append(self, entry: StoredEntry) -> asyncio.Future[AppendResult]:
        k = self.room_key
        keys = [k("room", entry.room), k("rlog", entry.room), k("rheads", entry.room), k("rmem", entry.room),
                k("rleft", entry.room), self._mine(entry.name)]
        args = [entry.room, entry.seq, entry.op, entry.name, entry.head, entry.entry, MAX_MEMBER_ROOMS]
        return _then(self._replicated(self._link.script(ROOM_APPEND, keys, args)), lambda got: cast(AppendResult, got.decode()))

    def room(self, room: str) -> asyncio.Future[RoomState | None]:
        keys = [self.room_key("room", room), self.room_key("rmem", room)]
        return _then(self._link.script(ROOM_READ, keys, []), lambda got: _state(room, got))

    def room_seq(self, room: str) -> asyncio.Future[int | None]:
        """The room's last ``seq`` (a node checks its cached state against it), or None."""
        return _then(self._link.call("HGET", self.room_key("room", room), "seq"), lambda got: None if got is None else int(got))

    def room_log(self, room: str, since: int, until: int, limit: int) -> asyncio.Future[list[str]]:
        last = min(until, since + limit - 1)
        if last < since:
            return _then(self._link.call("PING"), lambda _: [])
        got = self._link.call("LRANGE", self.room_key("rlog", room), since, last)
        return _then(got, lambda texts: [t.decode() for t in texts])

    def room_head(self, room: str, seq: int) -> asyncio.Future[bytes | None]:
        got = self._link.call("LINDEX", self.room_key("rheads", room), seq)
        return _then(got, lambda head: None if head is None else bytes(head))

    def room_left(self, room: str, name: str) -> asyncio.Future[int | None]:
        got = self._link.call("HGET", self.room_key("rleft", room), name)
        return _then(got, lambda seq: None if seq is None else int(seq))

    def rooms_page(self, name: str, after: str, limit: int) -> asyncio.Future[list[RoomListing]]:
        return asyncio.ensure_future(self._rooms_page(name, after, limit))

    async def _rooms_page(self, name: str, after: str, limit: int) -> list[RoomListing]:
        start = f"({after}" if after else "-"
        opened = self._link.call("ZRANGEBYLEX", self.prefix + "open_rooms", start, "+", "LIMIT", 0, limit)
        mine = self._link.call("ZRANGEBYLEX", self._mine(name), start, "+", "LIMIT", 0, limit)
        names = sorted({r.decode() for r in [*await opened, *await mine]})[:limit]
        reads = [self.room(r) for r in names]  # submitted together: one round trip
        out: list[RoomListing] = []
        for state_of in reads:
            state = await state_of
            if state is not None:  # every room stays once made; this only guards a key deleted by hand
                member = name in state.members
                out.append(RoomListing(state.room, state.kind, member, len(state.members), state.seq, state.head))
        return out
