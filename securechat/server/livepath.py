"""The live path's rules, without I/O: which sends go live, and which live messages a session may take.

On several nodes a message to a recipient that some node holds goes there by
pub/sub alone (an ``L`` poke, :mod:`securechat.server.pokes`), and Redis
writes nothing for it: with ``appendfsync always`` it waits for no flush. Its
sender hears only ``delivered``, once the recipient's client confirmed it; until
then the sender's node keeps the frame, and anything not taken goes the store
path after all (stored, then ``queued``), so nothing acknowledged can be lost
and the sender's client keeps what is unacknowledged in its outbox, as always.
docs/deployment.md, "The live path", says what it changes and what the tests
show; :mod:`securechat.server.cluster_live` is its asyncio side.

**Sender's side** (:class:`LiveOut`, one per sender session): per recipient, a
*pair*. A live pair numbers its sends ``1, 2, 3...`` within an *epoch*, a
number no other epoch of the session has. When any of them is refused (an
``X`` from the recipient's node, nobody subscribed, no answer within
:data:`LIVE_DEADLINE`, a gap of the sender's own pokes, the session's end),
every send of the pair still unanswered is stored, oldest first, and the pair
goes the store path until the last send stored so has been delivered (or
:data:`STORE_MODE_MAX` seconds passed); then a new epoch begins, never while a
send of the pair is unanswered. A send that goes the store path for another
reason (its recipient looks offline, the node holds too much) stores those
first (:meth:`LiveOut.before_store`). A send that is delivered leaves the pair.

**Recipient's side** (:class:`LiveIn`, one per recipient session): a live
message is taken only if it is the next number of its sender's epoch (the
first of an epoch is 1) and the session can take it now: caught up with its
queue (no read under way, nothing it knows of waiting there) and room in its
window. Anything else is refused, and so is the rest of that epoch: refusals
are sticky.

**Why order holds** (each sender's messages reach a session in the order sent):

- A node submits its commands on one connection, and Redis hands one
  subscriber what it publishes in the order it ran it: a live message reaches
  the recipient's node before anything the sender's node stored after it.
- A session takes a live message only when caught up with its queue, so
  nothing the sender stored before it is still to come.
- The messages a session took of an epoch are its first ones, without a gap
  (numbers, sticky refusals); the sender stores every unanswered send of the
  epoch, oldest first, so the queue repeats the ones taken before the ones
  that follow, and a copy the session has already is not written again (the
  client drops one it accepted before, ``(from, id)``, if it is).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from .store import QueuedMessage

LIVE_DEADLINE: Final = 5.0  # seconds: a live send with no answer is stored
STORE_MODE_MAX: Final = 10.0  # seconds: a pair refused goes live again after this even without its `delivered`
PAIRS_KEPT: Final = 256  # recipients one sender session keeps a pair for (those with sends unanswered stay)
SENDERS_KEPT: Final = 1024  # sender sessions one recipient session remembers (one forgotten is refused mid-epoch)
# Live messages a recipient session remembers it confirmed: a copy its sender stored after all (every unanswered
# send of a refused epoch is) is deleted from the queue, not handed out again; one older than these is handed
# out again, and the client drops it (it drops a (from, id) it accepted before).
DONE_KEPT: Final = 256

Key = tuple[str, str]  # (sender, msg_id)


@dataclass(slots=True)
class LiveSend:
    """A send that went live: what the store path would store, should it come to that. Not the ``send`` itself:
    its envelope is in the frame already, and a live send is kept for a round trip (a second copy of every
    message's bytes held that long cost the sender's node ~4 % of its CPU per message)."""

    queued: QueuedMessage  # its recipient, id and frame
    rid: str | None
    n: int
    sent: float  # monotonic
    size: int = field(init=False)  # the frame's: read when it is answered, without reaching into the frame

    def __post_init__(self) -> None:
        self.size = len(self.queued.frame)


class _Pair:
    __slots__ = ("epoch", "last_stored", "live", "n", "stored_at", "unanswered")

    def __init__(self) -> None:
        self.live = False
        self.epoch = 0
        self.n = 0
        self.unanswered: dict[str, LiveSend] = {}  # msg_id -> live send, in send order
        self.last_stored: str | None = None  # the last send stored: once it is delivered, the pair may go live
        self.stored_at = 0.0


class LiveOut:
    """One sender session's pairs (see the module docstring)."""

    __slots__ = ("_epochs", "_pairs")

    def __init__(self) -> None:
        self._pairs: dict[str, _Pair] = {}
        self._epochs = 0

    def number(self, to: str, now: float) -> tuple[int, int] | None:
        """The epoch and number of a send to ``to`` that goes live now, or None: it goes the store path."""
        pair = self._pairs.get(to) or self._new_pair(to)
        if pair is None:
            return None
        if not pair.live:
            # A send of the last epoch still unanswered (its publish failed) must reach the queue first.
            if pair.unanswered or (pair.last_stored is not None and now - pair.stored_at < STORE_MODE_MAX):
                return None
            self._epochs += 1
            pair.live, pair.epoch, pair.n, pair.last_stored = True, self._epochs, 0, None
        pair.n += 1
        return pair.epoch, pair.n

    def _new_pair(self, to: str) -> _Pair | None:
        if len(self._pairs) >= PAIRS_KEPT:
            idle = next((name for name, p in self._pairs.items() if not p.unanswered), None)
            if idle is None:
                return None
            del self._pairs[idle]
        pair = self._pairs[to] = _Pair()
        return pair

    def sent(self, send: LiveSend) -> LiveSend | None:
        """``send`` went live (numbered by :meth:`number` just now); returns an unanswered send of the same id it
        replaces (the client sent it again), which is answered with it."""
        queued = send.queued
        unanswered = self._pairs[queued.recipient].unanswered
        replaced = unanswered.pop(queued.msg_id, None)
        unanswered[queued.msg_id] = send
        return replaced

    def before_store(self, to: str, now: float) -> list[LiveSend]:
        """A send to ``to`` goes the store path: the pair's sends still unanswered, oldest first, to store before it
        (else one refused later would reach the queue after it)."""
        pair = self._pairs.get(to)
        return self.refused(to, pair.epoch, now) if pair is not None else []

    def stored(self, to: str, msg_id: str, now: float) -> None:
        """A send to ``to`` goes the store path: the pair's next sends do too, until it is delivered."""
        pair = self._pairs.get(to)
        if pair is not None:
            pair.live, pair.last_stored, pair.stored_at = False, msg_id, now

    def delivered(self, to: str, msg_id: str) -> LiveSend | None:
        """``to`` confirmed ``msg_id``: the live send it was, if it was one still unanswered."""
        pair = self._pairs.get(to)
        if pair is None:
            return None
        if pair.last_stored == msg_id:
            pair.last_stored = None
        return pair.unanswered.pop(msg_id, None)

    def failed(self, to: str, msg_id: str) -> LiveSend | None:
        """Its publish failed (Redis out of reach): forgotten (the client sends it again); the pair stops going live."""
        pair = self._pairs.get(to)
        if pair is None:
            return None
        pair.live = False
        return pair.unanswered.pop(msg_id, None)

    def refused(self, to: str, epoch: int, now: float) -> list[LiveSend]:
        """``epoch`` of the pair with ``to`` was refused: every send unanswered, oldest first, to be stored
        (none if that epoch is over: whatever it sent was answered before the next one began)."""
        pair = self._pairs.get(to)
        if pair is None or pair.epoch != epoch:
            return []
        taken = list(pair.unanswered.values())
        pair.unanswered.clear()
        pair.live = False
        if taken:  # else they were stored already, and the last of them is still the one to wait for
            pair.last_stored, pair.stored_at = taken[-1].queued.msg_id, now
        return taken

    def overdue(self, sent_before: float, now: float) -> list[LiveSend]:
        """Refuse every pair whose oldest unanswered send went before ``sent_before``: their sends to store."""
        late = [to for to, p in self._pairs.items() if p.unanswered and next(iter(p.unanswered.values())).sent < sent_before]
        return [send for to in late for send in self.refused(to, self._pairs[to].epoch, now)]

    def take_all(self, now: float) -> list[LiveSend]:
        """Refuse every pair (a gap of this node's pokes, the session's end): every unanswered send, to store."""
        return [send for to, p in list(self._pairs.items()) for send in self.refused(to, p.epoch, now)]


class LiveIn:
    """One recipient session's view of its senders' epochs, and the live messages it holds unconfirmed."""

    __slots__ = ("_done", "_handed", "_senders")

    def __init__(self) -> None:
        # (sender, session) -> [epoch, last number taken, refusing (0 or 1)], the longest unheard first
        self._senders: OrderedDict[tuple[bytes, int], list[int]] = OrderedDict()
        # handed out live, unconfirmed: (sender, msg_id) -> (sender, its session, epoch, the rid as stored)
        self._handed: dict[Key, tuple[bytes, int, int, bytes]] = {}
        self._done: OrderedDict[Key, None] = OrderedDict()  # the last DONE_KEPT live messages confirmed, oldest first

    def admit(self, sender: bytes, session: int, epoch: int, n: int, can_take: bool) -> bool:
        """May the live message ``n`` of ``sender``'s ``session`` and ``epoch`` be handed out? ``can_take``: the
        session is caught up and has room for it. A refusal refuses the rest of the epoch."""
        key = (sender, session)
        state = self._senders.get(key)
        if state is not None:
            self._senders.move_to_end(key)
        if state is None or epoch > state[0]:
            ok = n == 1 and can_take
            self._senders[key] = [epoch, n if ok else 0, 0 if ok else 1]
            if state is None and len(self._senders) > SENDERS_KEPT:
                self._senders.popitem(last=False)
            return ok
        if epoch == state[0] and not state[2] and n == state[1] + 1 and can_take:
            state[1] = n
            return True
        if epoch == state[0]:
            state[2] = 1
        return False

    def handed(self, key: Key, sender: bytes, session: int, epoch: int, rid: bytes) -> None:
        """The live message ``key`` was handed out (or the session had it already)."""
        self._handed[key] = (sender, session, epoch, rid)

    def confirmed(self, key: Key) -> bytes | None:
        """The session confirmed ``key``: the rid as stored if it was a live message it held, else None."""
        held = self._handed.pop(key, None)
        if held is None:
            return None
        self._done[key] = None
        if len(self._done) > DONE_KEPT:
            self._done.popitem(last=False)
        return held[3]

    def done(self, key: Key) -> bool:
        """Was ``key`` handed out live and confirmed lately (its queue's copy need not be handed out)?"""
        return key in self._done

    def unconfirmed(self) -> set[tuple[bytes, int, int]]:
        """The (sender, session, epoch) of every live message held unconfirmed, and forget them (the session ends)."""
        left = {held[:3] for held in self._handed.values()}
        self._handed.clear()
        return left
