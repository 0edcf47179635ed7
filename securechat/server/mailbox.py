"""One session's mailbox: what it was handed and not yet confirmed, and its window (docs/protocol.md, "Delivery").

The server keeps few messages per session in memory. A session may hold at most
its *window* of unconfirmed messages (``--window`` messages and
``--window-bytes`` bytes, one message always); what does not fit waits in the
store and is read back as confirmations free room. A message forwarded straight
to an online session is held in memory (its frame exists nowhere else) until it
is confirmed; one handed out from the store is held only as its key.

A message that arrives while the window is full, for a session that has
nothing waiting in the store, waits in the session's *tail* instead: held in
memory, in order, unacknowledged, and written as confirmations free the window
(at most ``TAIL_WINDOWS`` windows of messages and bytes, for at most
``TAIL_WAIT`` seconds). A recipient that keeps up with many senders (fan-in) thus never
sends its messages through the store. When the tail is full, or its oldest
message has waited too long, the tail goes to the store like everything after it.

Order: while the session reads its backlog (``stored``), or while messages
stored for it because its window was full wait to be read back (``pending``),
new messages go to the store too, behind them; once both are done they go to
the session at once again.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

Key = tuple[str, str]  # (sender, msg_id)

# The longest a message waits in a session's tail before the tail goes to the store (senders hear `queued`).
TAIL_WAIT: Final = 1.0
# A tail holds up to this many windows (messages and bytes): a burst of many senders to one reader
# that keeps up (1,000 senders with 8 messages each in flight is about 10 MB) stays in memory. Only a
# reader that confirms within TAIL_WAIT keeps one, and all frames held obey --max-unconfirmed-bytes.
TAIL_WINDOWS: Final = 4


@dataclass(slots=True)
class InFlight:
    """A message handed to a session and not yet confirmed."""

    sender: str
    msg_id: str
    server_ts: int
    frame: bytes | None  # held while the store has no copy (forwarded live)
    size: int
    created: float
    stored: bool  # the store has a copy: handed out from it (or a resend stored meanwhile)
    rid: str | None = None
    room: str | None = None  # a room message: acks name the room and the member
    told: bool = False  # on a cluster: its sender has heard ``queued`` (a drop need not tell it again)


class Mailbox:
    """Routing's state for one session: the unconfirmed messages, the window and the store position."""

    __slots__ = (
        "after",
        "confirmed",
        "fresh",
        "held_bytes",
        "inflight",
        "max_bytes",
        "name",
        "next_size",
        "pending",
        "pumping",
        "room",
        "stored",
        "tail",
        "tail_bytes",
        "tail_timer",
        "unconfirmed_bytes",
        "window",
    )

    def __init__(self, name: str, window: int, max_bytes: int) -> None:
        self.name = name
        self.inflight: dict[Key, InFlight] = {}  # in hand-out order
        self.unconfirmed_bytes = 0  # sizes of everything in flight (the window's bytes)
        self.held_bytes = 0  # frames held in memory (live, not yet in the store)
        self.window = window
        self.max_bytes = max_bytes
        # The store may hold messages for this session not handed out yet: while it does, new
        # messages go to the store too (order), and the pump reads them back as room frees.
        self.stored = True
        self.fresh = False  # something was stored for this name since the pump's last fetch
        self.pending = 0  # stored for it after its backlog (window full) and not read back yet
        self.after = 0  # the store position: the last seq handed out
        self.next_size = 0  # the size of the stored message after it, if it did not fit the window
        self.pumping = False
        self.room = asyncio.Event()  # set when a confirmation frees room
        self.confirmed: set[Key] = set()  # stored and confirmed since the last fetch (its delete may trail)
        # Arrived while the window was full and nothing waited in the store: not handed out, frames held.
        self.tail: OrderedDict[Key, InFlight] = OrderedDict()
        self.tail_bytes = 0
        self.tail_timer: asyncio.TimerHandle | None = None

    def live(self) -> bool:
        """Nothing of this session waits in the store: a message may go to it at once."""
        return not self.stored and self.pending == 0

    def not_new(self, really: bool) -> None:
        """If ``really``: one message counted in ``pending`` was read back, or never stored (a resend, refused)."""
        if really and self.pending:
            self.pending -= 1

    def fits(self, size: int) -> bool:
        """May a message of ``size`` bytes be handed out now?"""
        if not self.inflight:
            return True
        return len(self.inflight) < self.window and self.unconfirmed_bytes + size <= self.max_bytes

    def tail_fits(self, size: int) -> bool:
        """May a message of ``size`` bytes wait in the tail (``TAIL_WINDOWS`` windows, by count and by bytes)?"""
        return len(self.tail) < self.window * TAIL_WINDOWS and self.tail_bytes + size <= self.max_bytes * TAIL_WINDOWS

    def wait(self, key: Key, entry: InFlight) -> int:
        """``entry`` waits in the tail (a resend of one waiting there is dropped); returns the change in held bytes."""
        if key in self.tail or entry.frame is None:
            return 0
        self.tail[key] = entry
        self.tail_bytes += entry.size
        self.held_bytes += entry.size
        return entry.size

    def next_waiting(self) -> InFlight | None:
        """The oldest message of the tail, handed out, if the window has room for it now (its frame stays held)."""
        if not self.tail:
            return None
        key, entry = next(iter(self.tail.items()))
        if not self.fits(entry.size):
            return None
        del self.tail[key]
        self.tail_bytes -= entry.size
        self.held_bytes -= entry.size
        self.hand_out(key, entry)  # held again, as handed out: no change in held bytes
        return entry

    def take_waiting(self) -> tuple[list[InFlight], int]:
        """Empty the tail: its messages in order, and the change in held bytes."""
        entries, change = list(self.tail.values()), -self.tail_bytes
        self.tail.clear()
        self.held_bytes += change
        self.tail_bytes = 0
        if self.tail_timer is not None:
            self.tail_timer.cancel()
            self.tail_timer = None
        return entries, change

    def room_left(self) -> tuple[int, int]:
        """How many messages, and bytes, may be handed out now (a first message fits whatever its size)."""
        return self.window - len(self.inflight), self.max_bytes - self.unconfirmed_bytes

    def has_room(self) -> bool:
        """Is there room worth a read of the store: a quarter of the window, and the next message if seen?

        Reading as soon as one confirmation frees one place would cost a read
        of the store per message while a recipient catches up.
        """
        if not self.inflight:
            return True
        count, size = self.room_left()
        return count >= max(1, self.window // 4) and size >= max(self.next_size, self.max_bytes // 4, 1)

    def hand_out(self, key: Key, entry: InFlight) -> int:
        """Remember ``entry`` as handed out until it is confirmed; returns the change in held bytes."""
        change = self._drop(key)
        self.inflight[key] = entry
        self.unconfirmed_bytes += entry.size
        if entry.frame is not None:
            self.held_bytes += entry.size
            change += entry.size
        return change

    def confirm(self, key: Key) -> tuple[InFlight | None, int]:
        """The session confirmed ``key``: the entry (if it was handed out here) and the change in held bytes."""
        entry = self.inflight.get(key)
        if entry is None:
            return None, 0
        change = self._drop(key)
        if entry.stored:
            self.confirmed.add(key)
        self.room.set()
        return entry, change

    def release(self, entry: InFlight) -> int:
        """``entry`` is stored now (a resend): its frame leaves memory. Returns the change in held bytes."""
        if entry.frame is None:
            return 0
        entry.frame = None
        self.held_bytes -= entry.size
        return -entry.size

    def _drop(self, key: Key) -> int:
        old = self.inflight.pop(key, None)
        if old is None:
            return 0
        self.unconfirmed_bytes -= old.size
        if old.frame is not None:
            self.held_bytes -= old.size
            return -old.size
        return 0
