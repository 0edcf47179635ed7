"""LiveRoute: the live path's asyncio side on one node (the rules: :mod:`securechat.server.livepath`).

The sender's node publishes a send as an ``L`` poke on its recipient's channel
(the sends of one loop turn from one session to one recipient join one
publish) and keeps the frame until the recipient's node publishes its
``delivered``; what is refused, unheard or unanswered it hands back to the
cluster routing to store (:meth:`ClusterRouting._store_live`). The recipient's
node hands out what its session may take, refuses the rest with an ``X``, and
on a confirmation publishes ``delivered`` to the sender without touching
Redis's data; when the session ends holding live messages, it refuses their
epochs, so their senders store them.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .events import Send
from .livepath import LIVE_DEADLINE, Key, LiveSend
from .mailbox import InFlight
from .pokes import ack_line, acks_poke, live_messages, live_poke, refusal, refusal_poke
from .rids import rid_text
from .sessionbox import SessionBox

if TYPE_CHECKING:
    import asyncio

    from .config import ServerConfig
    from .nodewatch import NodeWatch
    from .presence import Presence
    from .redisstore import RedisStore
    from .sendorder import SendOrder
    from .store import QueuedMessage
    from .transport import Peer

log = logging.getLogger("securechat.server")

StoreSend = Callable[["Peer | None", SessionBox, LiveSend], None]


def _ack_lines(_: object, items: list[bytes]) -> bytes:
    return acks_poke(items)


def _live_lines(first: tuple[tuple[bytes, int, int], int], items: list[tuple[int, bytes, int, bytes, bytes]]) -> bytes:
    (sender, session, epoch), _ = first
    return live_poke(sender, session, epoch, items)


def _keys(sends: list[LiveSend]) -> list[Key]:
    return [(send.queued.recipient, send.queued.msg_id) for send in sends]


class LiveRoute:
    """The live sends of this node's sessions, both ways; ``held`` is the bytes of frames they keep."""

    def __init__(
        self,
        store: RedisStore,
        config: ServerConfig,
        watch: NodeWatch,
        presence: Presence,
        local: dict[str, Peer],
        store_send: StoreSend,
        tell: Callable[[str, bytes], None],
    ) -> None:
        self._store = store
        self._config = config
        self._watch = watch
        self._presence = presence
        self._local = local
        self._store_send = store_send
        self._tell = tell  # publish on a user's channel (ClusterRouting.tell)
        self.held = 0
        # The live sends of the publish being joined now (one sender session's to one recipient, one epoch).
        self._joining: tuple[asyncio.Future[int] | None, list[LiveSend]] = (None, [])
        self._acking: asyncio.Future[int] | None = None  # the publish of `delivered` acks being joined now

    # --- the sender's node -------------------------------------------------------------------

    def send(self, peer: Peer, box: SessionBox, message: Send, queued: QueuedMessage, order: SendOrder) -> bool:
        """Publish ``message`` live if it may go so (its recipient online somewhere, room in ``held``); else False
        (it goes the store path, and so do the pair's next sends until it is delivered)."""
        config = self._config
        if not config.live_path:
            return False
        to, now, frame = message.to, time.monotonic(), queued.frame
        size = len(frame)
        numbered = None
        if self._watch.reachable(to, now) and self.held + size <= config.max_unconfirmed_bytes:
            numbered = (live_out := box.live_out).number(to, now)
        if numbered is None:
            self.store_path(peer, box, to, message.msg_id)
            return False
        epoch, n = numbered
        send = LiveSend(queued, message.rid, n, now)
        replaced = live_out.sent(send)
        self.held += size if replaced is None else size - replaced.size
        joined = (message.sender.encode(), box.number, epoch)
        item = (n, message.msg_id.encode(), queued.server_ts, rid_text(message.rid).encode(), frame)
        published = self._store.publish_joined(
            self._store.channel(to), item, join=(joined, n), then=(joined, n + 1), size=size, compose=_live_lines
        )
        joining = self._joining
        if published is not joining[0]:  # a new publish: one answer for all the sends that join it
            self._presence.watch(peer, to)  # once for the sends that join it: the same name, at the same turn
            joining = self._joining = (published, [])
            published.add_done_callback(functools.partial(self._heard, peer, box, epoch, joining[1]))
            order.track_joined(functools.partial(_keys, joining[1]), published)
        joining[1].append(send)
        return True

    def _heard(self, peer: Peer, box: SessionBox, epoch: int, sends: list[LiveSend], published: asyncio.Future[int]) -> None:
        """A publish's answer: nobody heard it (stored, as if refused), or it failed (the client sends them again)."""
        if published.cancelled():
            return
        failure = published.exception()
        if isinstance(failure, Exception):  # the link fails its commands with Exceptions only
            for send in sends:
                if box.live_out.failed(send.queued.recipient, send.queued.msg_id) is not None:
                    self.held -= send.size
                peer.report(failure, Send.kind, send.rid)
        elif failure is None and not published.result():
            self.refused(peer, box, sends[0].queued.recipient, epoch)

    def store_path(self, peer: Peer, box: SessionBox, to: str, msg_id: str | None) -> None:
        """A send to ``to`` goes the store path (``msg_id``; None: a room's copy, which keeps the pair as it is): the
        pair's live sends still unanswered are stored before it, so the queue keeps the order sent."""
        if not box.sent_live():
            return
        now = time.monotonic()
        self._store_all(peer, box, box.live_out.before_store(to, now))
        if msg_id is not None:
            box.live_out.stored(to, msg_id, now)

    def refused(self, peer: Peer | None, box: SessionBox, to: str, epoch: int) -> None:
        """``to``'s node refused ``epoch`` of this session's live sends: store every one unanswered."""
        self._store_all(peer, box, box.live_out.refused(to, epoch, time.monotonic()))

    def delivered(self, box: SessionBox, to: str, msg_id: str) -> None:
        """A ``delivered`` for this session's send: a live one's frame is dropped."""
        send = box.live_out.delivered(to, msg_id) if box.sent_live() else None
        if send is not None:
            self.held -= send.size

    def overdue(self, sessions: Iterable[tuple[Peer, SessionBox]]) -> None:
        """Store the live sends unanswered for :data:`LIVE_DEADLINE` (their recipient's node died, or lost the poke)."""
        now = time.monotonic()
        for peer, box in sessions:
            if box.sent_live():
                self._store_all(peer, box, box.live_out.overdue(now - LIVE_DEADLINE, now))

    def store_unanswered(self, peer: Peer | None, box: SessionBox) -> None:
        """Store every live send of the session unanswered (a gap of this node's pokes, or the session ended)."""
        if box.sent_live():
            self._store_all(peer, box, box.live_out.take_all(time.monotonic()))

    def _store_all(self, peer: Peer | None, box: SessionBox, sends: list[LiveSend]) -> None:
        for send in sends:  # oldest first: the queue repeats them in order
            self.held -= send.size
            self._store_send(peer, box, send)

    # --- the recipient's node ------------------------------------------------------------------

    def on_live(self, name: str, data: bytes) -> None:
        """An ``L`` poke for ``name``: hand out what its session may take, refuse the rest of the epoch."""
        sender, session, epoch, first, messages, every_frame = live_messages(data)
        peer = self._local.get(name)
        box = peer.mailbox if peer is not None else None
        if peer is None or peer.closing or not isinstance(box, SessionBox) or box.replaced or not box.number:
            self.refuse(sender, name, epoch, session)
            return
        live_in, inflight, caught_up = box.live_in, box.inflight, box.pump is None and not box.told
        who, now, frames, refused = sender.decode(), time.time(), [], False
        for n, (msg_id, server_ts, rid, frame) in enumerate(messages, first):
            if not live_in.admit(sender, session, epoch, n, caught_up and box.fits(len(frame))):
                refused = True
                continue
            key = (who, msg_id.decode())
            live_in.handed(key, sender, session, epoch, rid)
            if key not in inflight:  # else it has it already: a resend, or the queue's copy
                box.hand_out(key, InFlight(who, key[1], int(server_ts), None, len(frame), now, False))
                frames.append(frame)
        if frames:
            self._presence.watch(peer, who)
            peer.write(every_frame if len(frames) == len(messages) else b"".join(frames))
        if refused:
            self.refuse(sender, name, epoch, session)

    def refuse(self, sender: bytes, recipient: str, epoch: int, session: int) -> None:
        self._tell(sender.decode(), refusal_poke(recipient.encode(), epoch, session))

    def on_refusal(self, name: str, data: bytes) -> None:
        """An ``X`` poke for the sender ``name``: if it is about its session here, store what that epoch left."""
        to, epoch, session = refusal(data)
        peer = self._local.get(name)
        if peer is not None and isinstance(box := peer.mailbox, SessionBox) and box.number == session:
            self.refused(peer, box, to, epoch)

    def confirmed(self, box: SessionBox, key: Key, entry: InFlight | None) -> bool:
        """``box``'s session confirmed ``key``: True if it was a live message, whose ``delivered`` is published here."""
        rid = box.live_in.confirmed(key) if box.took_live() else None
        if rid is None or entry is None or entry.stored:
            return False  # a stored copy: the confirm script deletes it and publishes the ack
        line = ack_line(b"delivered", key[1].encode(), box.name.encode(), rid)
        channel = self._store.channel(key[0])
        try:
            published = self._store.publish_joined(channel, line, join=b"A", then=b"A", compose=_ack_lines)
            if published is not self._acking:
                self._acking = published
                published.add_done_callback(unpublished)
        except RuntimeError:  # the store is closed (shutdown)
            pass
        return True

    def ended(self, box: SessionBox) -> None:
        """``box``'s session ended: refuse the epochs of the live messages it held unconfirmed."""
        for sender, session, epoch in box.live_in.unconfirmed() if box.took_live() else ():
            self.refuse(sender, box.name, epoch, session)


def unpublished(fut: asyncio.Future[Any]) -> None:
    """A publish's done callback: a failure is logged (the pokes' gaps are made good elsewhere)."""
    if not fut.cancelled() and fut.exception() is not None:
        log.debug("could not publish to the other nodes: %s", fut.exception())
