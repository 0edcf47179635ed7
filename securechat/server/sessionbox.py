"""SessionBox: a session's mailbox on a node of several (:mod:`securechat.server.cluster`)."""

from __future__ import annotations

from typing import Final

from ..rooms.log import MAX_MEMBER_ROOMS
from .awaited import AwaitedAcks
from .livepath import LiveIn, LiveOut
from .mailbox import Mailbox
from .pokes import room_push
from .sendorder import SendOrder

# The rooms a session's catch-up remembers: twice the rooms a member may be in (its former rooms too).
ROOMS_TOLD: Final = 2 * MAX_MEMBER_ROOMS


class SessionBox(Mailbox):
    """A session's mailbox on a node of a cluster: its number and its position in the queue.

    Its window bounds what it is handed (issue 13, item 4); an in-flight entry
    holds no frame (Redis has it), so a node holds none for its sessions.
    """

    __slots__ = ("_live_in", "_live_out", "again", "awaited", "number", "order", "position", "pump", "replaced", "rooms_told", "told")

    def __init__(self, name: str, window: int, window_bytes: int) -> None:
        super().__init__(name, window, window_bytes)
        self.number = 0  # this login's number (0 until the claim is answered)
        self.position = 0  # the last queue seq handed to this session
        self.pump: object | None = None  # the task reading the queue, while one runs
        self.again = False  # a poke came while the pump was reading: read once more
        self.replaced = False
        self.awaited = AwaitedAcks()  # this session's sends whose ack another node will publish
        self.order = SendOrder()  # after a failed send, the others wait for its resend
        # The live path (livepath.py), made on first use (an idle session holds neither): its sends that went live;
        # its senders' live epochs and the live messages it holds.
        self._live_out: LiveOut | None = None
        self._live_in: LiveIn | None = None
        self.told: set[int] = set()  # queue seqs whose senders heard `queued` from this node, not yet handed out
        # room -> the last entry's seq this session was sent (answers and pushes): after a gap of the pokes,
        # what follows it is sent again (docs/deployment.md, "Rooms on Redis")
        self.rooms_told: dict[str, int] = {}

    @property
    def live_out(self) -> LiveOut:
        if self._live_out is None:
            self._live_out = LiveOut()
        return self._live_out

    @property
    def live_in(self) -> LiveIn:
        if self._live_in is None:
            self._live_in = LiveIn()
        return self._live_in

    def sent_live(self) -> bool:
        """Did this session send anything by the live path (is there a :class:`LiveOut` to look at)?"""
        return self._live_out is not None

    def took_live(self) -> bool:
        """Was this session handed anything by the live path (is there a :class:`LiveIn` to look at)?"""
        return self._live_in is not None

    def told_room(self, room: str, seq: int) -> None:
        """This session was sent ``room``'s entries up to ``seq`` (at most ``ROOMS_TOLD`` rooms, the oldest
        forgotten first: a forgotten room the session is still in is caught up from the log's last page)."""
        told = self.rooms_told
        if room not in told and len(told) >= ROOMS_TOLD:
            del told[next(iter(told))]
        if seq > told.get(room, -1):
            told[room] = seq

    def pushed(self, data: bytes) -> bytes:
        """A room's change published for this session (:func:`push_body`): noted; the frame to write."""
        room, seq, frame = room_push(data)
        self.told_room(room, seq)
        return frame


def push_body(room: str, seq: int, frame: bytes) -> bytes:
    """What a member's channel carries for a room's change: ``P``, the room and the entry's seq, the frame."""
    return b"P%s %d\n%s" % (room.encode(), seq, frame)
