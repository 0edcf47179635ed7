"""The server's durable state: the :class:`ServerStore` interface and its records.

:class:`ServerStore` is what routing code sees: the server's id, registered
names and keys, and each recipient's offline queue. :class:`SqliteStore`
(:mod:`securechat.server.sqlite`) implements it on one SQLite file.

Every method submits its work at call time and work is applied in call order;
the server relies on that (for example, messages handed back to the queue when
a connection drops are stored before the next session's backlog is fetched).
A networked backend must keep the same ordering guarantee.

Changes to the interface, newest last (every backend implements each):

- issue 13, item 4: :meth:`ServerStore.fetch` takes ``max_bytes``: past the
  first message, at most that many bytes of frames, so a session's window of
  unconfirmed messages bounds what one fetch reads into memory.
- issue 13, item 8: ``enqueue`` also refuses (:class:`~securechat.errors.QueueFull`)
  a message past its sender's share of the recipient's queue (``sender_share``:
  at most 1/N of its messages and of its bytes; a sender's first message always
  fits) or past the frames stored for all recipients together (``store_bytes``);
  ``requeue`` still ignores every cap.
- issue 13, items 2 and 10: :meth:`ServerStore.register` takes ``asker`` (a new
  name spends registration tokens, or raises :class:`RegistrationRefused`), and
  :meth:`ServerStore.names_page` replaces ``list_names`` (one page, not every name).
- issue 13, item 1: :meth:`MessageStore.failed_hand_out` counts a failed
  hand-out of a stored message and, at a given count, *sets it aside*: out of
  the queue (and the caps), never fetched again, a notice kept for its sender
  until :meth:`MessageStore.take_set_aside` or the TTL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from .registration import NewName
from .roomstore import RoomStore

DEFAULT_QUEUE_LIMIT: Final = 10_000
DEFAULT_QUEUE_BYTES: Final = 64 * 2**20
DEFAULT_QUEUE_TTL: Final = 30 * 86_400.0
# One sender may fill at most 1/DEFAULT_SENDER_SHARE of a recipient's queue (its messages and bytes).
DEFAULT_SENDER_SHARE: Final = 4
# Frames stored for all recipients together.
DEFAULT_STORE_BYTES: Final = 4 * 2**30
# Failed hand-outs after which a stored message is set aside (docs/protocol.md, "Delivery").
DEFAULT_MAX_HAND_OUTS: Final = 3


def sender_caps(queue_limit: int, queue_bytes: int, sender_share: int) -> tuple[int, int]:
    """One sender's share of a queue: (messages, bytes); at least one of each, so a small queue takes one from each."""
    return max(1, queue_limit // sender_share), max(1, queue_bytes // sender_share)


@dataclass(frozen=True, slots=True)
class Registration:
    """A name bound to its key by the first successful ``auth``."""

    name: str
    pubkey_pem: str
    fingerprint: str
    created: float


@dataclass(slots=True)  # not frozen: nothing changes one, and a frozen one took ~2 µs to make, twice per cross-node message
class QueuedMessage:
    """One ``message`` frame waiting for its recipient; never changed once made.

    ``frame`` is the complete frame (length prefix included) as it goes on the
    wire; ``seq`` orders the queue (0 until stored).
    """

    recipient: str
    sender: str
    msg_id: str
    server_ts: int
    frame: bytes
    enqueued_at: float
    seq: int = 0
    room: str | None = None  # a room message: its ``delivered`` ack names the room and this member

    @property
    def size(self) -> int:
        return len(self.frame)


@dataclass(frozen=True, slots=True)
class SetAside:
    """A message set aside after failed hand-outs, as its sender is to be told (``ack`` ``undeliverable``)."""

    recipient: str
    msg_id: str
    room: str | None = None
    rid: str | None = None


class MessageStore(Protocol):
    """What the server needs to keep across restarts: names, keys, queues (rooms: :class:`ServerStore`).

    Each method submits its work when called and returns a future; work is
    applied in call order.
    """

    def server_id(self) -> asyncio.Future[bytes]:
        """The server's random id, generated on first use and kept."""
        ...

    def get_registration(self, name: str) -> asyncio.Future[Registration | None]: ...

    def register(
        self, name: str, pubkey_pem: str, fingerprint: str, asker: NewName | None = None
    ) -> asyncio.Future[tuple[Registration, bool]]:
        """Bind ``name`` unless it is bound already; returns the binding and whether it is new.

        A new name asked for by ``asker`` must fit the store's registration bounds
        (:mod:`~securechat.server.registration`), checked and spent in the same atomic
        step as the binding; else :class:`~securechat.errors.RegistrationRefused` and
        nothing changes. Without ``asker`` (tools, tests) no bound applies.
        """
        ...

    def names_page(self, after: str, prefix: str, limit: int) -> asyncio.Future[list[str]]:
        """Up to ``limit`` registered names above ``after`` that start with ``prefix`` (either may be ''), sorted."""
        ...

    def enqueue(self, message: QueuedMessage) -> asyncio.Future[bool]:
        """Store ``message``; False if (recipient, sender, msg_id) is already queued.

        Raises :class:`QueueFull` past the recipient's caps; nothing queued is dropped.
        """
        ...

    def requeue(self, messages: Sequence[QueuedMessage]) -> asyncio.Future[int]:
        """Put back messages that were handed out but never confirmed, ignoring the caps."""
        ...

    def fetch(
        self, recipient: str, after_seq: int = 0, limit: int = 500, max_bytes: int | None = None
    ) -> asyncio.Future[list[QueuedMessage]]:
        """Unexpired messages for ``recipient`` with ``seq > after_seq``, oldest first.

        At most ``limit`` messages and, past the first (which is returned whatever
        its size), at most ``max_bytes`` bytes of frames in all.
        """
        ...

    def delete(self, keys: Sequence[tuple[str, str, str]]) -> asyncio.Future[int]:
        """Delete confirmed messages by (recipient, sender, msg_id); returns how many went."""
        ...

    def expire(self) -> asyncio.Future[int]:
        """Drop messages older than the TTL; returns how many went."""
        ...

    def failed_hand_out(self, recipient: str, sender: str, msg_id: str, limit: int) -> asyncio.Future[bool]:
        """One more failed hand-out of a stored message; True if that made ``limit`` and it was set aside now."""
        ...

    def take_set_aside(self, sender: str) -> asyncio.Future[list[SetAside]]:
        """The notices of ``sender``'s messages set aside (within the TTL), removed as they are returned."""
        ...

    def queue_size(self, recipient: str) -> asyncio.Future[tuple[int, int]]:
        """(message count, bytes) queued for ``recipient``."""
        ...

    async def close(self) -> None:
        """Finish the work already submitted, then release the backend."""
        ...


class ServerStore(MessageStore, RoomStore, Protocol):
    """A store with rooms (:class:`~securechat.server.roomstore.RoomStore`): SQLite today; Redis keeps messages only."""
