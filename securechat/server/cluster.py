"""ClusterRouting: the :class:`~securechat.server.routing.Routing` of several nodes that share Redis.

The durable store is the truth and pub/sub only a poke (docs/deployment.md):

- A message to a recipient online on some node goes there by pub/sub alone (the *live path*), unless that
  node cannot take it now (:mod:`securechat.server.livepath`, :mod:`securechat.server.cluster_live`); its sender
  hears ``delivered`` once the recipient confirms it. Any other message goes into its recipient's queue in
  Redis, wherever the recipient is, and the same
  script publishes it on the recipient's channel (:meth:`RedisStore.route`). The number of nodes that
  heard it says whether the recipient is online: nobody means the sender gets ``queued`` at once, as on
  one node. A message leaves the queue only when its recipient confirms it (:meth:`RedisStore.confirm`),
  and the same script publishes ``delivered`` on the sender's channel. After a send failed for want of
  Redis, later ones wait for its resend (:mod:`securechat.server.sendorder`).
- The node holding a session subscribes to its user's channel and reads the session's queue from its
  *position* (:mod:`securechat.server.cluster_queue`): in queue order, each message once per session.
- A login is numbered by a script that also publishes the number on the
  user's channel: every older session, on any node, ends with ``replaced``.
- Presence changes go out on one channel to every node, carrying the session number so that an old
  session's late "offline" cannot undo a newer "online".
- Acks that come from another node travel by pub/sub too, so each session
  keeps the sends whose ack is still to come and, after a gap, asks the
  store for their fate (:mod:`securechat.server.awaited`).

Rooms ride on the same queues (:mod:`securechat.server.cluster_rooms`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Container, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Final

from ..clock import now_ms
from ..errors import QueueFull
from ..relayframes import ack_frame
from .awaited import recover_acks, sweep_overdue
from .cluster_live import LiveRoute, unpublished
from .cluster_queue import QueueReader
from .confirms import Confirmations
from .delivery import ack_for, deliverable_frame
from .events import Deferred, Handled, Received, Send
from .handouts import tell_set_aside
from .livepath import LiveSend
from .nodewatch import CUT_OFF_AFTER, NodeWatch
from .pokes import ack_poke, acks, new_messages
from .redisbus import RedisBus
from .redisstore import ALREADY_CONFIRMED, CAPS, OVER_CAPS, RedisStore
from .resp import RedisReplyError, RedisUnavailable
from .rids import rid_about, rid_text
from .seam import RoutingCore
from .sendorder import HELD, SendOrder
from .sessionbox import SessionBox
from .store import QueuedMessage

if TYPE_CHECKING:
    from .transport import Peer

log = logging.getLogger("securechat.server")

CLAIM_TIMEOUT: Final = 5.0  # a login waits this long for its subscription and its number


class ClusterRouting(RoutingCore[RedisStore]):
    """:class:`Routing` between server nodes over one Redis (see the module docstring)."""

    def _own_state(self) -> None:
        self.node = os.urandom(6).hex()
        self._watch = NodeWatch(self.node)  # presence: who holds each name, with which session, heard from?
        self._local: dict[str, Peer] = {}  # the newest session of each name on this node
        self._claiming: dict[str, int] = {}  # names with a claim under way -> highest number seen
        self._confirms = Confirmations(self._store.confirm)
        self._queue = QueueReader(self._store, self._presence, self._confirms, self._spawn, self._tell_queued)
        self._bus: RedisBus | None = None
        self._live = LiveRoute(self._store, self._config, self._watch, self._presence, self._local, self._store_live, self.tell)
        self._sweep: asyncio.Task[None] | None = None  # looks up the sends whose ack is late (awaited.py)
        # Set by the rooms (:mod:`securechat.server.cluster_rooms`): a session's catch-up after a gap of the pokes.
        self.after_gap: Callable[[Peer, SessionBox], Coroutine[Any, Any, None]] | None = None

    @property
    def bus(self) -> RedisBus:
        assert self._bus is not None, "ClusterRouting.start() was not awaited"
        return self._bus

    async def start(self) -> None:
        self._bus = RedisBus(self._store.address, self._on_message, self._resync, client_name=f"securechat-bus-{self.node}")
        await self._bus.start()
        await asyncio.wait_for(self._bus.subscribe(self._store.presence_channel), CLAIM_TIMEOUT)
        def boxes() -> list[tuple[Peer, SessionBox]]:
            return [(p, box) for p in self._local.values() if isinstance(box := p.mailbox, SessionBox)]

        def beat() -> None:
            self._publish(self._store.presence_channel, self._watch.beat())
            self._live.overdue(boxes())
            self._shed_if_cut()

        self._sweep = asyncio.get_running_loop().create_task(sweep_overdue(self._store, boxes, self._spawn, self._watch.lost, beat))
        log.info("node %s routes through Redis at %s", self.node, self._store.address)

    async def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        if self._bus is not None:
            await self._bus.close()

    # --- sessions ------------------------------------------------------------------------

    async def claim(self, peer: Peer, name: str) -> None:
        box = SessionBox(name, self._config.window, self._config.window_bytes)
        peer.set_mailbox(box)  # from now on detach() undoes what follows
        subscribed = self.bus.subscribe(self._store.channel(name))
        self._claiming[name] = self._claiming.get(name, 0)
        try:
            # Subscribed before numbered: a newer login's number cannot pass us by.
            await asyncio.wait_for(asyncio.shield(subscribed), CLAIM_TIMEOUT)
            number = await asyncio.wait_for(self._store.claim(name), CLAIM_TIMEOUT)
        except (TimeoutError, RedisReplyError) as exc:
            raise RedisUnavailable(f"Redis did not number the session: {exc or 'timeout'}") from None
        finally:
            newer = self._claiming.pop(name, 0)
        box.number = number
        if newer > number:  # a newer login elsewhere was numbered before our answer came
            box.replaced = True
            peer.fail("replaced", "a new session for this name started elsewhere")

    def attach(self, peer: Peer) -> None:
        box = peer.mailbox
        assert isinstance(box, SessionBox)
        name = box.name
        old = self._local.get(name)
        self._local[name] = peer
        if old is not None and old is not peer:
            old_box = old.mailbox
            if isinstance(old_box, SessionBox):
                old_box.replaced = True
            old.fail("replaced", "a new session for this name started elsewhere")
        self._note_presence(name, True, box.number, publish=True)
        self._probation.start(box, peer)
        self._queue.pump_soon(peer, box)  # the backlog: the whole queue, oldest first

    def detach(self, peer: Peer) -> None:
        box = peer.mailbox
        if not isinstance(box, SessionBox):
            return
        peer.set_mailbox(None)
        name = box.name
        self.bus.unsubscribe(self._store.channel(name))
        if self._local.get(name) is peer:
            del self._local[name]
            if not box.replaced and box.number:
                self._note_presence(name, False, box.number, publish=True)
        # The messages stay queued; their senders learn that, unless they heard it already. Its live
        # messages' senders store them; so does this node its own session's live sends.
        for entry in box.inflight.values():
            if not entry.told and entry.stored:
                self._tell_queued(entry.sender.encode(), entry.msg_id.encode(), name, rid_text(entry.rid, entry.room).encode())
        self._live.ended(box)
        self._live.store_unanswered(None, box)
        self._probation.ended(box, list(box.inflight.values()), lambda to: self.tell(to, b"U"), own=not box.replaced)
        box.inflight.clear()
        box.unconfirmed_bytes = 0
        box.room.set()  # a pump waiting for room sees the session has ended

    async def online(self, names: Sequence[str]) -> Container[str]:
        return await self._store.online(names)

    @property
    def held_bytes(self) -> int:
        return self._live.held  # the frames of live sends not yet delivered (a stored message's are in Redis)

    def caught_up(self, name: str) -> bool:
        peer = self._local.get(name)
        return peer is not None and isinstance(peer.mailbox, SessionBox) and peer.mailbox.pump is None

    def _shed_if_cut(self) -> None:
        """Cut off from Redis for ``--shed-after`` seconds: end every session here ``unavailable``, so that their
        clients move to a node that can serve them (docs/deployment.md, "A node cut off from Redis")."""
        after = self._config.shed_after
        if not after or not self._watch.cut_off(time.monotonic(), after):
            return  # the usual case, each second: no list of the sessions made
        if peers := [p for p in self._local.values() if not p.closing]:
            log.warning("cut off from Redis for %g s: ending its sessions (%d) so that they move", after, len(peers))
            for peer in peers:
                peer.fail("unavailable", "this node lost the state the nodes share: reconnect, to another node")

    def trouble(self) -> str | None:
        if self._watch.cut_off(time.monotonic()):
            return f"cut off from Redis: its own heartbeat not heard back for {CUT_OFF_AFTER:.0f} s"
        return None

    # --- messages ------------------------------------------------------------------------

    def send(self, peer: Peer, message: Send) -> Handled:
        server_ts = now_ms()
        frame = deliverable_frame(peer, message, server_ts, self._config)
        if frame is None:
            return None
        queued = QueuedMessage(message.to, message.sender, message.msg_id, server_ts, frame, time.time())
        order = box.order if isinstance(box := peer.mailbox, SessionBox) else SendOrder()
        if not order.admit(key := (message.to, message.msg_id)):
            peer.error(*HELD, message.rid)
            return None
        if self._directory.knows(message.to):
            if isinstance(box, SessionBox) and self._live.send(peer, box, message, queued, order):
                return None  # its ack, `delivered`, comes with the recipient's confirmation
            return Deferred(self._answer(peer, message.to, message.msg_id, message.rid, order.track(key, self._store.route(queued, message.rid))))
        if isinstance(box, SessionBox):
            self._live.store_path(peer, box, message.to, message.msg_id)
        return self._send_unknown(peer, message, queued, order)

    def store_path(self, peer: Peer, name: str) -> None:
        """A room's copy for ``name`` goes to its queue: ``peer``'s live sends to it still unanswered go first."""
        if isinstance(box := peer.mailbox, SessionBox):
            self._live.store_path(peer, box, name, None)

    def _store_live(self, peer: Peer | None, box: SessionBox, send: LiveSend) -> None:
        """Store a live send after all (refused, unheard or unanswered), answering it as a send (``queued``...)."""
        queued = send.queued
        try:
            routed = self._store.route(queued, send.rid)
        except RuntimeError:  # the store is closed (shutdown): the client still holds it, unacknowledged
            return
        if peer is None or peer.closing:  # its session ended: stored for its recipient, acked to nobody
            routed.add_done_callback(unpublished)
            return
        box.order.track((queued.recipient, queued.msg_id), routed)
        self._spawn(self._answer_later(peer, queued.recipient, queued.msg_id, send.rid, routed))

    async def _answer_later(self, peer: Peer, to: str, msg_id: str, rid: str | None, routed: asyncio.Future[list[int]]) -> None:
        try:
            await self._answer(peer, to, msg_id, rid, routed)
        except Exception as exc:  # noqa: BLE001 - answered as a send's failure is (the client sends it again)
            peer.report(exc, Send.kind, rid)

    async def _send_unknown(self, peer: Peer, message: Send, queued: QueuedMessage, order: SendOrder) -> None:
        """A send to a name not known here: awaited by the session's pipeline before its next request
        (transport.py), so a later send, routed at once once the name is known, cannot pass it."""
        try:
            known = await self._directory.registration(message.to)
        except ConnectionError:
            order.failed((message.to, message.msg_id))
            raise
        if known is None:
            peer.error("unknown_user", f"no user named '{message.to}'", message.rid)
        elif not peer.closing:
            routed = order.track((message.to, message.msg_id), self._store.route(queued, message.rid))
            await self._answer(peer, message.to, message.msg_id, message.rid, routed)

    async def _answer(self, peer: Peer, to: str, msg_id: str, rid: str | None, routed: asyncio.Future[list[int]]) -> None:
        """Answer the send ``msg_id`` to ``to`` (request ``rid``) once the store has it."""
        status, seq_or_count, receivers = await routed
        if status == OVER_CAPS:
            peer.error("queue_full", str(QueueFull(to, CAPS[seq_or_count])), rid)  # which cap is not said
            return
        self._presence.watch(peer, to)
        if isinstance(box := peer.mailbox, SessionBox):
            box.order.settled((to, msg_id))  # stored: a failed copy of it need not come again
        if status == ALREADY_CONFIRMED:
            peer.write(ack_frame(msg_id, to, "delivered", rid))
            return
        if not receivers:  # nobody holds the recipient: stored for later, as on one node
            peer.write(ack_frame(msg_id, to, "queued", rid))
        if isinstance(box, SessionBox):  # its ack(s) to come by pub/sub; a gap is recovered (awaited.py)
            box.awaited.routed(to, msg_id, rid, None, receivers)

    def received(self, peer: Peer, confirmation: Received) -> None:
        box = peer.mailbox
        assert box is not None
        key = (confirmation.sender, confirmation.msg_id)
        entry, _ = box.confirm(key)  # frees room: a waiting pump goes on
        self._probation.confirmed(box, entry)
        if isinstance(box, SessionBox) and self._live.confirmed(box, key, entry):
            return  # a live message: nothing of it is in Redis, its ack is published
        # A confirmation of something this session was not handed deletes any stored copy, acks nobody.
        rid, room = (entry.rid, entry.room) if entry is not None else (None, None)
        self._confirms.add(box.name, (confirmation.sender, confirmation.msg_id, entry is not None, rid, room))

    def flush_deletes(self) -> None:
        self._confirms.flush()

    # --- what the other nodes say ----------------------------------------------------------

    def _on_message(self, channel: bytes, data: bytes) -> None:
        try:
            self._on_poke(channel, data)
        except (ValueError, LookupError, TypeError) as exc:  # another node's bug or version (pokes.py): dropped,
            # and its session catches up from the store, as after a gap of the pokes.
            where, kind = channel.decode(errors="replace"), type(exc).__name__  # not GarbledPoke: a field read later
            log.warning("dropped a garbled poke on %s (%d bytes, %r...): %s: %s", where, len(data), data[:1], kind, exc)
            peer = self._local.get(self._store.name_of(channel)) if channel != self._store.presence_channel else None
            if peer is not None and isinstance(peer.mailbox, SessionBox):
                self._catch_up(peer, peer.mailbox)

    def _on_poke(self, channel: bytes, data: bytes) -> None:
        if channel == self._store.presence_channel:
            self._on_presence(data)
            return
        name = self._store.name_of(channel)
        kind = data[:1]
        if kind == b"M":
            for new in new_messages(data):  # the sends of a loop turn on the sender's node, in queue order
                self._queue.on_new_message(name, self._local.get(name), new)
        elif kind == b"L":
            self._live.on_live(name, data)
        elif kind == b"A" and (peer := self._local.get(name)) is not None and not peer.closing:
            self._on_acks(peer, data)
        elif kind == b"X":
            self._live.on_refusal(name, data)
        elif kind == b"R":
            self._on_claim(name, int(data[2:]))
        elif kind == b"P":
            self._on_push(name, data)
        elif kind == b"U" and (peer := self._local.get(name)) is not None:  # its messages set aside: tell it
            self._spawn(tell_set_aside(self._store, peer, name))
        elif kind == b"G" and (peer := self._local.get(name)) is not None and isinstance(peer.mailbox, SessionBox):
            self._queue.pump_soon(peer, peer.mailbox)

    def _on_acks(self, peer: Peer, data: bytes) -> None:
        read = [(status, msg_id.decode(), to.decode(), rid_about(tagged)) for status, msg_id, to, tagged in acks(data)]  # all or none
        if not isinstance(box := peer.mailbox, SessionBox):
            peer.write(b"".join([ack_for(msg_id, to, status.decode(), *about) for status, msg_id, to, about in read]))
            return
        frames = []
        for status, msg_id, to, (rid, room) in read:
            box.order.settled(key := (to, msg_id))  # applied after all: no resend comes
            if status != b"queued":
                self._live.delivered(box, to, msg_id)
                if not box.awaited.deliver(to, msg_id):
                    continue  # written already: read from the store after a gap, or a poke twice
            elif key in box.awaited and not box.awaited.tell_queued(to, msg_id):
                continue  # said already (recovered after a gap); its `delivered` is still awaited
            frames.append(ack_for(msg_id, to, status.decode(), rid, room))
        if frames:
            peer.write(b"".join(frames))

    def _on_push(self, name: str, data: bytes) -> None:
        """A room's change for ``name`` (docs/deployment.md, "Rooms on Redis"): written, and noted for a catch-up."""
        peer = self._local.get(name)
        if peer is not None and not peer.closing and isinstance(box := peer.mailbox, SessionBox):
            peer.write(box.pushed(data))

    def _on_claim(self, name: str, number: int) -> None:
        if name in self._claiming:
            self._claiming[name] = max(self._claiming[name], number)
        peer = self._local.get(name)
        box = peer.mailbox if peer is not None else None
        if peer is not None and isinstance(box, SessionBox) and 0 < box.number < number:
            box.replaced = True
            peer.fail("replaced", "a new session for this name started elsewhere")

    def _on_presence(self, data: bytes) -> None:
        name, online, number, node = self._watch.read(data)
        if name and node != self.node:  # a heartbeat has no name; this node noted its own changes already
            self._note_presence(name, online, number, publish=False)

    def _note_presence(self, name: str, online: bool, number: int, *, publish: bool) -> None:
        if self._watch.newest(name, online, number):
            self._presence.note(name, online)
        if publish:
            self._publish(self._store.presence_channel, self._watch.announce(name, online, number))

    def _tell_queued(self, sender: bytes, msg_id: bytes, recipient: str, tagged: bytes) -> None:
        """Tell ``sender`` its message to ``recipient`` waits in the queue (``tagged``: its stored rid)."""
        self.tell(sender.decode(), ack_poke(b"queued", msg_id, recipient.encode(), tagged))

    def tell(self, name: str, data: bytes) -> None:
        """Publish ``data`` on ``name``'s channel (an ack, a room's push): the node holding ``name`` acts on it."""
        self._publish(self._store.channel(name), data)

    def _publish(self, channel: bytes, data: bytes) -> None:
        try:
            self._store.publish(channel, data).add_done_callback(unpublished)
        except RuntimeError:  # the store is closed (shutdown): acks to senders are never kept anyway
            pass

    def _resync(self) -> None:
        """The subscriber was away: each session reads its queue, recovers its acks, catches up on its rooms."""
        for peer in list(self._local.values()):
            if isinstance(peer.mailbox, SessionBox):
                self._live.store_unanswered(peer, peer.mailbox)  # their answers may have been lost
                self._catch_up(peer, peer.mailbox)

    def _catch_up(self, peer: Peer, box: SessionBox) -> None:
        """What a poke may have said, read from the store: the queue, the awaited acks, the rooms."""
        self._queue.pump_soon(peer, box)
        if box.awaited:
            self._spawn(recover_acks(self._store, peer, box))
        if self.after_gap is not None:
            self._spawn(self.after_gap(peer, box))

