"""Routing: which session holds each name, what it was handed, its backlog, requeue and acks.

Delivery model (docs/protocol.md, "Server behaviour details": Delivery). A
message for a connected recipient is serialised once, written at once and
remembered as *in flight* in the recipient's :class:`Mailbox` until the
recipient confirms it with ``received``; then its sender, if online, gets
``ack`` ``delivered``. A message for an offline recipient goes to the store
first and is acked ``queued``; offline sends of one loop iteration share one
commit, and the connection keeps reading meanwhile. When a session starts, its
backlog is streamed from the store oldest first, in batches paced to the
reader; messages arriving meanwhile are held and written after the backlog, so
order is kept. Whatever is in flight and unconfirmed when a session ends goes
back to the store (backlog messages never left it) and the senders hear
``queued``. The online path touches no database.

The seam (:mod:`securechat.server.seam`): :class:`LocalRouting` routes within this process,
:class:`~securechat.server.cluster.ClusterRouting` between nodes that share Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Container, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ..clock import now_ms
from ..errors import QueueFull
from ..protocol import HEADER_SIZE, message_frame
from ..relayframes import ack_frame
from .config import ServerConfig
from .directory import Directory
from .events import Deferred, Handled, Received, Send
from .presence import Presence
from .store import MessageStore, QueuedMessage

if TYPE_CHECKING:
    from .transport import Peer

log = logging.getLogger("securechat.server")

BACKLOG_BATCH: Final = 500
# After each backlog batch, wait for the reader while more than this is unsent.
BACKLOG_DRAIN_ABOVE: Final = 64 * 1024

Key = tuple[str, str]  # (sender, msg_id)


def deliverable_frame(peer: Peer, message: Send, server_ts: int, config: ServerConfig) -> bytes | None:
    """The ``message`` frame for ``message``, or None after refusing the sender with ``message_too_large``.

    The server never makes a frame its recipient would have to refuse (docs/protocol.md, "Delivery"),
    on one node or several.
    """
    body = message_frame(message.sender, server_ts, message.envelope)
    size, limit = len(body) - HEADER_SIZE, config.deliverable_frame
    if size > limit:
        peer.error("message_too_large", f"as a 'message' frame this would be {size} bytes; the limit is {limit}", message.rid)
        return None
    return body


@dataclass(slots=True)
class InFlight:
    """A message handed to a recipient session and not yet confirmed."""

    sender: str
    msg_id: str
    server_ts: int
    frame: bytes
    created: float
    from_store: bool
    rid: str | None = None
    room: str | None = None  # a room message: acks name the room and the member


class Mailbox:
    """Routing's state for one session: what it was handed, and what waits for its backlog."""

    __slots__ = ("held", "inflight", "inflight_bytes", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.inflight: dict[Key, InFlight] = {}
        self.inflight_bytes = 0
        self.held: list[Key] | None = []  # routed while the backlog streams; None once it is done

    def hand_out(self, key: Key, entry: InFlight) -> None:
        """Remember ``entry`` as handed to this session until it is confirmed."""
        old = self.inflight.get(key)
        if old is not None:
            self.inflight_bytes -= len(old.frame)
        self.inflight[key] = entry
        self.inflight_bytes += len(entry.frame)

    def confirm(self, key: Key) -> InFlight | None:
        entry = self.inflight.pop(key, None)
        if entry is not None:
            self.inflight_bytes -= len(entry.frame)
        return entry


class LocalRouting:
    """:class:`Routing` within one server process."""

    def __init__(
        self,
        config: ServerConfig,
        store: MessageStore,
        directory: Directory,
        presence: Presence,
        spawn: Callable[[Coroutine[Any, Any, None]], object],
    ) -> None:
        self._config = config
        self._store = store
        self._directory = directory
        self._presence = presence
        self._spawn = spawn
        self._online: dict[str, Peer] = {}
        self._deletes: list[tuple[str, str, str]] = []

    # --- sessions ------------------------------------------------------------------------

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def claim(self, peer: Peer, name: str) -> None:
        return None  # one process: attach() takes the name over at once

    def attach(self, peer: Peer) -> None:
        name = peer.name
        assert name is not None
        old = self._online.get(name)
        peer.set_mailbox(Mailbox(name))  # holding what arrives until the backlog is out
        self._online[name] = peer  # before anything can be routed here
        if old is not None:
            old.fail("replaced", "a new session for this name started elsewhere")
        self._presence.note(name, True)
        self.deliver_backlog(peer)

    def detach(self, peer: Peer) -> None:
        """Synchronous on purpose: the requeue is submitted before anything else can route to the name."""
        box = peer.mailbox
        if box is None:
            return
        peer.set_mailbox(None)
        name = box.name
        if self._online.get(name) is peer:  # not when a newer session replaced it: it never went offline
            del self._online[name]
            self._presence.note(name, False)
        back = [
            QueuedMessage(name, e.sender, e.msg_id, e.server_ts, e.frame, e.created, room=e.room)
            for e in box.inflight.values()
            if not e.from_store
        ]
        rids = {(e.sender, e.msg_id): e.rid for e in box.inflight.values() if not e.from_store}
        box.inflight.clear()
        box.inflight_bytes = 0
        box.held = None
        if back:
            try:
                fut = self._store.requeue(back)
            except RuntimeError:  # the store is already closed: nothing more can be kept
                log.error("store closed: %d unconfirmed messages for %s not requeued", len(back), name)
                return
            fut.add_done_callback(lambda f: self._requeued(f, name, back, rids))

    def _requeued(self, fut: asyncio.Future[int], recipient: str, back: list[QueuedMessage], rids: dict[Key, str | None]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            log.error("could not requeue %d messages for %s", len(back), recipient, exc_info=fut.exception())
            return
        # The senders learn the message is now safely queued.
        for m in back:
            sender = self._online.get(m.sender)
            if sender is not None:
                rid = rids.get((m.sender, m.msg_id))
                sender.write(_ack(m.msg_id, recipient, "queued", rid, m.room))

    async def online(self, names: Sequence[str]) -> Container[str]:
        return self._online

    # --- messages ------------------------------------------------------------------------

    def send(self, peer: Peer, message: Send) -> Handled:
        server_ts = now_ms()
        body = deliverable_frame(peer, message, server_ts, self._config)
        if body is None:
            return None
        target = self._online.get(message.to)
        if target is not None:
            self._forward(peer, target, message, server_ts, body)
            return None
        if self._directory.knows(message.to):
            # The common case needs no lookup: store without waiting, so the next frames of
            # this connection are read meanwhile and their enqueues share one commit.
            stored = self._store_for_later(peer, message, server_ts, body)
            return Deferred(self._ack_queued(peer, stored, message))
        return self._send_offline(peer, message, server_ts, body)

    def _forward(self, peer: Peer, target: Peer, message: Send, server_ts: int, body: bytes) -> None:
        """Hand a message to its online recipient; held as unconfirmed until ``received``."""
        if not self.hand(target, InFlight(message.sender, message.msg_id, server_ts, body, time.time(),
                                          False, message.rid)):
            peer.error("queue_full", f"too many unconfirmed messages for '{message.to}'", message.rid)
            return
        self._presence.watch(peer, message.to)
        self._presence.watch(target, message.sender)

    def hand(self, target: Peer, entry: InFlight) -> bool:
        """Write a message frame to an online session, held unconfirmed until ``received``; False over its caps."""
        box = target.mailbox
        assert box is not None
        # Unconfirmed messages held for one recipient obey the same caps as its stored queue.
        if len(box.inflight) >= self._config.queue_limit or box.inflight_bytes + len(entry.frame) > self._config.queue_bytes:
            return False
        key = (entry.sender, entry.msg_id)
        box.hand_out(key, entry)
        if box.held is not None:
            box.held.append(key)
        else:
            target.write(entry.frame)
        return True

    def session(self, name: str) -> Peer | None:
        """The session routed to for ``name`` on this node, if any."""
        return self._online.get(name)

    def _store_for_later(self, peer: Peer, message: Send, server_ts: int, body: bytes) -> asyncio.Future[bool]:
        self._presence.watch(peer, message.to)
        return self._store.enqueue(QueuedMessage(message.to, message.sender, message.msg_id, server_ts, body, time.time()))

    async def _ack_queued(self, peer: Peer, stored: asyncio.Future[bool], message: Send) -> None:
        try:
            await stored
        except QueueFull as exc:
            peer.error("queue_full", str(exc), message.rid)
            return
        peer.write(ack_frame(message.msg_id, message.to, "queued", message.rid))

    async def _send_offline(self, peer: Peer, message: Send, server_ts: int, body: bytes) -> None:
        if await self._directory.registration(message.to) is None:
            peer.error("unknown_user", f"no user named '{message.to}'", message.rid)
            return
        if peer.closing:
            return
        # The recipient may have logged in while we looked it up; its backlog fetch
        # is already under way, so storing now would strand the message until its
        # next session.
        target = self._online.get(message.to)
        if target is not None:
            self._forward(peer, target, message, server_ts, body)
            return
        await self._ack_queued(peer, self._store_for_later(peer, message, server_ts, body), message)

    def received(self, peer: Peer, confirmation: Received) -> None:
        box = peer.mailbox
        assert box is not None
        sender, msg_id = confirmation.sender, confirmation.msg_id
        entry = box.confirm((sender, msg_id))
        if entry is None or entry.from_store:
            # Confirmed from the backlog (or from an earlier session): batch the deletes.
            if not self._deletes:
                asyncio.get_running_loop().call_soon(self.flush_deletes)
            self._deletes.append((box.name, sender, msg_id))
        if entry is None:
            return
        target = self._online.get(sender)
        if target is not None:
            target.write(_ack(msg_id, box.name, "delivered", entry.rid, entry.room))

    def flush_deletes(self) -> None:
        if not self._deletes:
            return
        keys, self._deletes = self._deletes, []
        self._store.delete(keys).add_done_callback(_deleted)

    # --- backlog -------------------------------------------------------------------------

    def deliver_backlog(self, peer: Peer) -> None:
        """Stream ``peer``'s stored messages, then what arrived meanwhile."""
        box = peer.mailbox
        assert box is not None
        self._spawn(self._stream_backlog(peer, box))

    async def _stream_backlog(self, peer: Peer, box: Mailbox) -> None:
        """Stream the stored queue oldest first, then what arrived meanwhile."""
        after = 0
        try:
            while not peer.closing:
                batch = await self._store.fetch(box.name, after, BACKLOG_BATCH)
                if peer.closing or not batch:
                    break
                after = batch[-1].seq
                if not await self._write_batch(peer, box, batch):
                    return
        except (ConnectionError, OSError):
            return
        except Exception:  # e.g. the store failed: the session cannot keep its order
            log.exception("backlog delivery to %s failed", box.name)
            peer.end("backlog delivery failed", abort=True)
            return
        if peer.closing:
            return
        held, box.held = box.held, None
        for key in held or ():
            entry = box.inflight.get(key)
            if entry is not None:
                peer.write(entry.frame)

    async def _write_batch(self, peer: Peer, box: Mailbox, batch: list[QueuedMessage]) -> bool:
        """Hand out one batch, waiting for the reader instead of tripping the outgoing bound; False once gone."""
        for m in batch:
            key = (m.sender, m.msg_id)
            held = box.inflight.get(key)
            if held is not None:  # a resend already waiting in memory: it is stored too
                held.from_store = True
                continue
            box.hand_out(key, InFlight(m.sender, m.msg_id, m.server_ts, m.frame, m.enqueued_at, True, room=m.room))
            self._presence.watch(peer, m.sender)
            if not await make_room(peer, len(m.frame)):
                return False
            peer.write(m.frame)
            if peer.closing:
                return False
        await end_batch(peer)
        return True


async def make_room(peer: Peer, size: int) -> bool:
    """Before writing ``size`` more bytes of a backlog: wait for the reader rather than trip its bound.

    False once the connection is gone.
    """
    buffered = peer.buffered()
    if buffered and buffered + size > peer.max_out:
        peer.flush()
        await peer.drain()
    return not peer.closing


async def end_batch(peer: Peer) -> None:
    """After a backlog batch: send it, and wait for the reader while much of it is unsent."""
    peer.flush()
    if peer.buffered() > BACKLOG_DRAIN_ABOVE:
        await peer.drain()


def _ack(msg_id: str, recipient: str, status: str, rid: str | None, room: str | None) -> bytes:
    """The ack for ``recipient``'s copy: a room's names the room and the member."""
    if room is None:
        return ack_frame(msg_id, recipient, status, rid)
    return ack_frame(msg_id, room, status, rid, member=recipient)


def _deleted(fut: asyncio.Future[int]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("could not delete confirmed messages", exc_info=fut.exception())
