"""RedisStore: the :class:`~securechat.server.store.ServerStore` in Redis, shared by every node.

Each call submits its commands on one :class:`~securechat.server.resp.RedisLink`
at once, so work is applied in call order, as the interface requires; what
two nodes must agree on is one Lua script (:mod:`securechat.server.redis_lua`
has the key layout). Durability is Redis's: with ``appendonly yes`` and
``appendfsync always`` a reply means the change is on disk
(docs/deployment.md).

Beyond the interface, the cluster routing (:mod:`securechat.server.cluster`)
uses :meth:`RedisStore.route` (store and tell whoever holds the recipient, in
one step), :meth:`RedisStore.confirm` (delete and ack the sender),
:meth:`RedisStore.claim`, :meth:`RedisStore.fetch_routed`,
:meth:`RedisStore.online` and :meth:`RedisStore.sent_status`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..crypto import SERVER_ID_SIZE
from ..errors import QueueFull, RegistrationRefused
from . import redis_lua as lua
from .futures import then as _then
from .redis_names import REGISTER_NEW
from .redis_rooms import ROOM_SCRIPTS, RedisRooms
from .registration import NewName, RegistrationLimits, name_bounds
from .replicas import ReplicaWait
from .resp import RedisAddress, RedisLink
from .rids import rid_about, rid_text
from .roomstore import DEFAULT_MAX_ROOMS
from .store import (
    DEFAULT_QUEUE_BYTES,
    DEFAULT_QUEUE_LIMIT,
    DEFAULT_QUEUE_TTL,
    DEFAULT_SENDER_SHARE,
    DEFAULT_STORE_BYTES,
    QueuedMessage,
    Registration,
    SetAside,
    sender_caps,
)

DEFAULT_PREFIX: Final = "sc:"
# A confirmed message's (sender, id) is remembered this long, so a sender that resends it (its
# node died before the ack reached it) is answered `delivered` instead of storing it again.
DEDUPE_TTL: Final = 600.0
FETCH_BATCH_MAX: Final = 1000

STORED: Final = 1
ALREADY_QUEUED: Final = 0
ALREADY_CONFIRMED: Final = 2
OVER_CAPS: Final = -1
KEYS_KEPT: Final = 4096  # recipients whose queue key names are kept (all forgotten at once past it)
CAPS: Final = {1: "store", 2: "queue", 3: "sender_share"}  # OVER_CAPS's second value: which (QueueFull.cap)

# A confirmation as :meth:`RedisStore.confirm` takes it: sender, id, ack the sender, the send's rid, its room.
Confirmed = tuple[str, str, bool, str | None, str | None]


@dataclass(frozen=True, slots=True)
class Routed:
    """A stored message as the cluster routing hands it out: the message, its send's rid, whether ``queued`` went."""

    message: QueuedMessage
    rid: str | None
    told_queued: bool


def _entry(recipient: str, entry: list[Any]) -> Routed:
    raw = entry[1]
    fields = {raw[i]: raw[i + 1] for i in range(0, len(raw), 2)}
    seq = int(entry[0].split(b"-", 1)[1])
    rid, room = rid_about(fields[b"r"])
    message = QueuedMessage(
        recipient,
        fields[b"s"].decode(),
        fields[b"i"].decode(),
        int(fields[b"t"]),
        fields[b"f"],
        float(fields[b"e"]),
        seq,
        room,
    )
    return Routed(message, rid, fields[b"q"] == b"1")


class RedisStore(RedisRooms):
    """:class:`ServerStore` in Redis; every node of a cluster opens one on the same Redis."""

    def __init__(
        self,
        address: RedisAddress,
        *,
        prefix: str = DEFAULT_PREFIX,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        queue_ttl: float = DEFAULT_QUEUE_TTL,
        sender_share: int = DEFAULT_SENDER_SHARE,
        store_bytes: int = DEFAULT_STORE_BYTES,
        dedupe_ttl: float = DEDUPE_TTL,
        registration: RegistrationLimits | None = None,
        clock: Callable[[], float] = time.time,
        client_name: str = "securechat",
        max_rooms: int = DEFAULT_MAX_ROOMS,
        replicas: int = 0,
    ) -> None:
        if min(queue_limit, queue_bytes, sender_share, store_bytes) < 1 or queue_ttl <= 0 or dedupe_ttl <= 0:
            raise ValueError("queue_limit, queue_bytes, queue_ttl, sender_share, store_bytes and dedupe_ttl must be positive")
        self.address = address
        self.prefix = prefix
        self.queue_limit = queue_limit
        self.queue_bytes = queue_bytes
        self.queue_ttl = queue_ttl
        self.sender_limit, self.sender_bytes = sender_caps(queue_limit, queue_bytes, sender_share)
        self.store_bytes = store_bytes
        self.dedupe_ttl = dedupe_ttl
        self.max_rooms = max_rooms
        self.registration = registration or RegistrationLimits()
        self._clock = clock
        self._client_name = client_name
        self._link_: RedisLink | None = None  # made on first use: it needs the running loop
        self._keys: dict[str, tuple[str, ...]] = {}  # _queue_keys's
        # --redis-replicas: a write behind a `queued` counts once this many replicas have it (replicas.py)
        self._replicated = ReplicaWait(lambda *args: self._link.call(*args), replicas).after
        self._closed = False

    @property
    def _link(self) -> RedisLink:
        if self._closed:
            raise RuntimeError("store is closed")
        if self._link_ is None:
            self._link_ = RedisLink(self.address, scripts=(*lua.ALL, *ROOM_SCRIPTS, REGISTER_NEW), client_name=self._client_name)
        return self._link_

    # --- key names (docs: securechat/server/redis_lua.py) ------------------------------

    def key(self, kind: str, name: str) -> str:
        """A per-user key: its hash tag is the name, so one user's keys share a Cluster slot."""
        return f"{self.prefix}{kind}:{{{name}}}"

    def channel(self, name: str) -> bytes:
        """The user's pub/sub channel."""
        return f"{self.prefix}u:{{{name}}}".encode()

    def name_of(self, channel: bytes) -> str:
        """The user whose channel ``channel`` is."""
        return channel[len(self.prefix) + 3 : -1].decode()

    @property
    def presence_channel(self) -> bytes:
        return f"{self.prefix}presence".encode()

    def _queue_keys(self, recipient: str) -> tuple[str, ...]:
        """q qi qm seen qs stored qf (redis_lua's key table); kept for the names lately written to (every send
        names them, and the same tuple lets a send join the batch before it at a glance)."""
        keys = self._keys.get(recipient)
        if keys is None:
            if len(self._keys) >= KEYS_KEPT:
                self._keys.clear()
            keys = self._keys[recipient] = (
                self.key("q", recipient), self.key("qi", recipient), self.key("qm", recipient),
                self.key("seen", recipient), self.key("qs", recipient), self.prefix + "stored", self.key("qf", recipient),
            )  # fmt: skip
        return keys

    # --- ServerStore -------------------------------------------------------------------

    def server_id(self) -> asyncio.Future[bytes]:
        key = self.prefix + "server_id"
        self._link.call("SET", key, os.urandom(SERVER_ID_SIZE), "NX")
        return _then(self._link.call("GET", key), bytes)

    def get_registration(self, name: str) -> asyncio.Future[Registration | None]:
        def parse(got: list[bytes | None]) -> Registration | None:
            pem, fp, created = got
            if pem is None or fp is None or created is None:
                return None
            return Registration(name, pem.decode(), fp.decode(), float(created))

        return _then(self._link.call("HMGET", self.key("reg", name), "pem", "fp", "created"), parse)

    def register(
        self, name: str, pubkey_pem: str, fingerprint: str, asker: NewName | None = None
    ) -> asyncio.Future[tuple[Registration, bool]]:
        buckets = asker.buckets(self.registration) if asker is not None else []
        keys = [self.key("reg", name), self.prefix + "names", *(f"{self.prefix}rb:{b}" for b, _, _ in buckets)]
        now = repr(self._clock())
        args = [name, pubkey_pem, fingerprint, now, self.registration.max_users, *(burst for _, _, burst in buckets)]

        def parse(got: list[Any]) -> tuple[Registration, bool]:
            if got[0] == -1:
                raise RegistrationRefused(buckets[got[1] - 1][1] if got[1] > 0 else "full")
            return Registration(name, got[1].decode(), got[2].decode(), float(got[3])), got[0] == 1

        return _then(self._replicated(self._link.script(REGISTER_NEW, keys, args)), parse)

    def names_page(self, after: str, prefix: str, limit: int) -> asyncio.Future[list[str]]:
        low, inclusive, high = name_bounds(after, prefix)
        start = ("[" if inclusive else "(") + low
        got = self._link.call("ZRANGE", self.prefix + "names", start, "(" + high, "BYLEX", "LIMIT", 0, limit)
        return _then(got, lambda names: [n.decode() for n in names])

    def enqueue(self, message: QueuedMessage) -> asyncio.Future[bool]:
        def result(got: list[int]) -> bool:
            if got[0] == OVER_CAPS:
                raise QueueFull(message.recipient, CAPS[got[1]])
            return got[0] == STORED

        return _then(self._replicated(self._enqueue(message, None, caps=True)), result)

    def _enqueue(self, m: QueuedMessage, rid: str | None, *, caps: bool, route: bool = False) -> asyncio.Future[list[int]]:
        item = (m.sender, m.msg_id, m.server_ts, repr(m.enqueued_at), m.frame, rid_text(rid, m.room))
        keys = self._queue_keys(m.recipient)
        if not route:
            return self._link.script(lua.ENQUEUE, keys, (*self._enqueue_head(caps, b""), *item))
        # A route: the sends of one loop turn to one recipient go as one script (rediscommands.py's Batch),
        # whose settings are the first send's: the others do not make theirs.
        return self._link.script_batched(lua.ENQUEUE, keys, lambda: self._enqueue_head(True, self.channel(m.recipient)), item, join=keys, width=3)

    def _enqueue_head(self, caps: bool, channel: bytes) -> tuple[Any, ...]:
        """The ``enqueue`` script's settings (redis_lua's ARGV table), taken now."""
        return (
            self.queue_limit if caps else 0, self.queue_bytes, channel, repr(self._clock()), repr(self.dedupe_ttl),
            self.sender_limit, self.sender_bytes, self.store_bytes,
        )  # fmt: skip

    def requeue(self, messages: Sequence[QueuedMessage]) -> asyncio.Future[int]:
        calls = [self._enqueue(m, None, caps=False) for m in messages]
        if not calls:
            return _then(self._link.call("PING"), lambda _: 0)
        return _then(asyncio.gather(*calls), lambda got: sum(1 for g in got if g[0] == STORED))

    def fetch(
        self, recipient: str, after_seq: int = 0, limit: int = 500, max_bytes: int | None = None
    ) -> asyncio.Future[list[QueuedMessage]]:
        return _then(self.fetch_routed(recipient, after_seq, limit, max_bytes), lambda got: [r.message for r in got])

    def fetch_routed(
        self, recipient: str, after_seq: int = 0, limit: int = 500, max_bytes: int | None = None
    ) -> asyncio.Future[list[Routed]]:
        """Like :meth:`fetch`, with each send's rid and whether its sender heard ``queued``."""
        first = self._xrange(recipient, after_seq, limit, max_bytes)
        return asyncio.ensure_future(self._fetch_rest(recipient, after_seq, limit, max_bytes, first))

    def _xrange(self, recipient: str, after_seq: int, limit: int, max_bytes: int | None) -> asyncio.Future[Any]:
        count = min(max(limit, 1), FETCH_BATCH_MAX)
        if max_bytes is None:
            return self._link.call("XRANGE", self.key("q", recipient), f"(0-{after_seq}", "+", "COUNT", count)
        # Within a byte budget Redis walks the stream itself, so no more than the budget crosses over.
        return self._link.script(lua.FETCH, [self.key("q", recipient)], [f"(0-{after_seq}", count, max_bytes])

    async def _fetch_rest(
        self, recipient: str, after_seq: int, limit: int, max_bytes: int | None, pending: asyncio.Future[Any]
    ) -> list[Routed]:
        """Skip expired entries (never handed out) until ``limit`` are found, the budget is spent or the queue ends."""
        horizon = self._clock() - self.queue_ttl
        out: list[Routed] = []
        spent = 0
        while True:
            raw = await pending
            for entry in raw:
                routed = _entry(recipient, entry)
                if routed.message.enqueued_at < horizon:
                    continue
                spent += routed.message.size
                if out and max_bytes is not None and spent > max_bytes:
                    return out
                out.append(routed)
            if len(out) >= limit or len(raw) < min(max(limit, 1), FETCH_BATCH_MAX) or not raw:
                return out[:limit]
            last = int(raw[-1][0].split(b"-", 1)[1])
            if last <= after_seq:  # ids are 0-<seq>, always increasing: anything else is not our queue
                raise RuntimeError(f"the queue of {recipient!r} does not advance past {after_seq}")
            after_seq = last
            budget = None if max_bytes is None else max(1, max_bytes - spent)
            pending = self._xrange(recipient, last, limit - len(out), budget)

    def delete(self, keys: Iterable[tuple[str, str, str]]) -> asyncio.Future[int]:
        by_recipient: dict[str, list[Confirmed]] = {}
        for recipient, sender, msg_id in keys:
            by_recipient.setdefault(recipient, []).append((sender, msg_id, False, None, None))
        calls = [self.confirm(recipient, items) for recipient, items in by_recipient.items()]
        if not calls:
            return _then(self._link.call("PING"), lambda _: 0)
        return _then(asyncio.gather(*calls), sum)

    def expire(self) -> asyncio.Future[int]:
        return asyncio.ensure_future(self._expire())

    async def _expire(self) -> int:
        link = self._link
        horizon = repr(self._clock() - self.queue_ttl)
        removed, cursor = 0, b"0"
        match = self.prefix + "q:{*}"
        while True:
            cursor, keys = await link.call("SCAN", cursor, "MATCH", match, "COUNT", 1000, "TYPE", "stream")
            for key in keys:
                name = key.decode()[len(self.prefix) + 3 : -1]
                q, qi, qm, _, qs, stored, qf = self._queue_keys(name)
                qkeys = [q, qi, qm, qs, stored, qf]
                removed += await link.script(lua.EXPIRE, qkeys, [horizon])
            if cursor in (b"0", 0):
                return removed

    def failed_hand_out(self, recipient: str, sender: str, msg_id: str, limit: int) -> asyncio.Future[bool]:
        q, qi, qm, _, qs, stored, qf = self._queue_keys(recipient)
        keys = [q, qi, qm, qs, stored, qf, self.key("aside", sender)]
        args = [sender, msg_id, limit, recipient, int(self.queue_ttl * 1000)]
        return _then(self._link.script(lua.FAILED, keys, args), lambda got: got == 1)

    def take_set_aside(self, sender: str) -> asyncio.Future[list[SetAside]]:
        horizon = self._clock() - self.queue_ttl

        def parse(flat: list[bytes]) -> list[SetAside]:
            out: list[tuple[float, SetAside]] = []
            for field, value in zip(flat[::2], flat[1::2], strict=True):
                recipient, msg_id = field.decode().split(" ", 1)
                at, tagged = value.decode().split(" ", 1)
                rid, room = rid_about(tagged)  # a room message's notice names its room
                if float(at) >= horizon:
                    out.append((float(at), SetAside(recipient, msg_id, room, rid)))
            return [notice for _, notice in sorted(out, key=lambda pair: pair[0])]

        return _then(self._link.script(lua.TAKE, [self.key("aside", sender)], []), parse)

    def queue_size(self, recipient: str) -> asyncio.Future[tuple[int, int]]:
        count = self._link.call("HLEN", self.key("qi", recipient))
        size = self._link.call("HGET", self.key("qm", recipient), "b")
        return _then(asyncio.gather(count, size), lambda got: (int(got[0]), int(got[1] or 0)))

    async def close(self) -> None:
        """Wait for the answers to what was submitted, then close the connection. Idempotent."""
        if self._closed:
            return
        link, self._link_ = self._link_, None
        self._closed = True
        if link is not None:
            await link.close()

    # --- what the cluster routing adds -----------------------------------------------------

    def route(self, message: QueuedMessage, rid: str | None) -> asyncio.Future[list[int]]:
        """Store ``message`` and tell whoever holds its recipient, in one step.

        Returns ``[status, seq, receivers]``: status :data:`STORED`,
        :data:`ALREADY_QUEUED`, :data:`ALREADY_CONFIRMED` or :data:`OVER_CAPS`
        (then ``seq`` says which cap, a key of :data:`CAPS`, for the log only); ``receivers``
        is how many nodes hold a session of the recipient (0: offline).
        """
        return self._replicated(self._enqueue(message, rid, caps=True, route=True))

    def confirm(self, recipient: str, items: Sequence[Confirmed]) -> asyncio.Future[int]:
        """Delete confirmed messages ``(sender, id, ack, rid, room)``; ``ack``: publish ``delivered`` to the sender."""
        args: list[Any] = [repr(self._clock()), repr(self.dedupe_ttl), recipient, f"{self.prefix}u:{{"]
        for sender, msg_id, ack, rid, room in items:
            args += [sender, msg_id, "1" if ack else "0", rid_text(rid, room)]
        return self._link.script(lua.CONFIRM, self._queue_keys(recipient), args)

    def claim(self, name: str) -> asyncio.Future[int]:
        """Number a new session of ``name`` and tell the older ones (they end ``replaced``)."""
        return self._link.script(lua.CLAIM, [self.key("sess", name)], [self.channel(name)])

    def sent_status(self, recipient: str, sender: str, msg_ids: Sequence[str]) -> asyncio.Future[list[int]]:
        """Where each message of ``sender`` to ``recipient`` is (securechat/server/awaited.py's statuses)."""
        keys = [self.key("qi", recipient), self.key("seen", recipient)]
        return _then(self._link.script(lua.STATUS, keys, [sender, *msg_ids]), lambda got: [int(s) for s in got])

    def publish(self, channel: bytes, data: bytes) -> asyncio.Future[int]:
        return self._link.call("PUBLISH", channel, data)

    def publish_joined(
        self, channel: bytes, item: Any, *, join: Hashable, then: Hashable, compose: Callable[[Any, list[Any]], bytes],
        size: int = 0,
    ) -> asyncio.Future[int]:  # fmt: skip
        """A publish that joins the one just before it (:meth:`RedisLink.publish_batched`): the live path's pokes."""
        return self._link.publish_batched(channel, item, join=join, then=then, compose=compose, size=size)

    def online(self, names: Sequence[str]) -> asyncio.Future[set[str]]:
        """Which of ``names`` some node holds a session of (a subscriber on their channel)."""
        if not names:
            return _then(self._link.call("PING"), lambda _: set())
        chunks = [names[i : i + 1000] for i in range(0, len(names), 1000)]
        calls = [self._link.call("PUBSUB", "NUMSUB", *(self.channel(n) for n in chunk)) for chunk in chunks]

        def parse(replies: list[list[Any]]) -> set[str]:
            out: set[str] = set()
            for chunk, reply in zip(chunks, replies, strict=True):
                out.update(name for name, count in zip(chunk, reply[1::2], strict=True) if count)
            return out

        return _then(asyncio.gather(*calls), parse)
