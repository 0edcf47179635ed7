"""One session's mailbox: what it was handed and not yet confirmed, and its window (docs/protocol.md, "Delivery").

The server keeps few messages per session in memory. A session may hold at most
its *window* of unconfirmed messages (``--window`` messages and
``--window-bytes`` bytes, one message always); what does not fit waits in the
store and is read back as confirmations free room. A message forwarded straight
to an online session is held in memory (its frame exists nowhere else) until it
is confirmed; one handed out from the store is held only as its key.

Order: while the session reads its backlog (``stored``), or while messages
stored for it because its window was full wait to be read back (``pending``),
new messages go to the store too, behind them; once both are done they go to
the session at once again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

Key = tuple[str, str]  # (sender, msg_id)


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
