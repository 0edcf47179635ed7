"""The outbox: sealed messages waiting for their ``ack`` (docs/security.md, "What a client confirms").

A row of the ``outbox`` table of :mod:`securechat.client.state` holds the envelope
as sent, resent with the same id after a reconnect; a row that is not the
envelope its columns name is set aside, never sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .. import jsoncodec
from ..clock import now_ms
from ..envelope import check_envelope
from ..errors import MalformedEnvelope
from ..names import is_room
from ..rooms.envelope import check_room_envelope

if TYPE_CHECKING:
    from .state import ClientStore


@dataclass(frozen=True, slots=True)
class SetAside:
    """An outbox row that could not be sent as it is, moved to ``outbox_set_aside``."""

    msg_id: str
    recipient: str
    reason: str


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A sealed message the server has not acknowledged yet."""

    msg_id: str
    recipient: str
    envelope: dict[str, Any]
    created: int


class PendingSends:
    """The outbox: sealed messages waiting for their ``ack``, resent with the same id after a reconnect.

    A row that is not the sealed envelope its columns name (a damaged or edited
    file) is never handed out: it is moved to ``outbox_set_aside``, kept for
    whoever wants to look at it, and reported once by :meth:`take_set_aside`.
    """

    def __init__(self, store: ClientStore) -> None:
        self._store = store
        self._set_aside: list[SetAside] = []

    def add(self, recipient: str, envelope: dict[str, Any], *, awaiting: bool = False) -> None:
        """Keep a sealed message until its ``ack``; ``awaiting``: it waited for the key (one transaction)."""
        with self._store.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO outbox (msg_id, recipient, envelope, created) VALUES (?, ?, ?, ?)",
                (envelope["id"], recipient, json.dumps(envelope, separators=(",", ":")), now_ms()),
            )
            if awaiting:
                db.execute("DELETE FROM outbox_awaiting_key WHERE msg_id = ?", (envelope["id"],))

    def remove(self, msg_id: str) -> OutboxEntry | None:
        entry = self.get(msg_id)
        if entry is not None:
            with self._store.transaction() as db:
                db.execute("DELETE FROM outbox WHERE msg_id = ?", (msg_id,))
        return entry

    def discard(self, msg_id: str) -> bool:
        """Drop a message whose fate is settled, unread (a room message's row is ~54 KB of JSON); True if it was held."""
        with self._store.transaction() as db:
            return db.execute("DELETE FROM outbox WHERE msg_id = ?", (msg_id,)).rowcount > 0

    def __contains__(self, msg_id: object) -> bool:
        """True if a message with this id waits here (its row is not read: see :meth:`get` for that)."""
        return bool(self._store.query("SELECT 1 FROM outbox WHERE msg_id = ?", (msg_id,)))

    def get(self, msg_id: str) -> OutboxEntry | None:
        rows = self._store.query(f"{_OUTBOX_ROWS} WHERE msg_id = ?", (msg_id,))
        return self._entry(rows[0]) if rows else None

    def entries(self) -> list[OutboxEntry]:
        rows = self._store.query(f"{_OUTBOX_ROWS} ORDER BY seq")
        return [entry for entry in map(self._entry, rows) if entry is not None]

    def take_set_aside(self) -> list[SetAside]:
        """The rows set aside since the last call (each is reported once)."""
        taken, self._set_aside = self._set_aside, []
        return taken

    def __len__(self) -> int:
        return int(self._store.query("SELECT COUNT(*) FROM outbox")[0][0])

    def _entry(self, row: tuple[Any, ...]) -> OutboxEntry | None:
        seq, msg_id, recipient, text, created = row
        try:
            envelope = _outbox_envelope(self._store.name, msg_id, recipient, text)
        except ValueError as exc:
            with self._store.transaction() as db:
                db.execute(
                    "INSERT INTO outbox_set_aside (msg_id, recipient, envelope, created, reason, at) "
                    "SELECT msg_id, recipient, envelope, created, ?, ? FROM outbox WHERE seq = ?",
                    (str(exc), now_ms(), seq),
                )
                db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            self._set_aside.append(SetAside(str(msg_id), str(recipient), str(exc)))
            return None
        return OutboxEntry(msg_id, recipient, envelope, created)


_OUTBOX_ROWS: Final = "SELECT seq, msg_id, recipient, envelope, created FROM outbox"


def _outbox_envelope(sender: str, msg_id: object, recipient: object, text: object) -> dict[str, Any]:
    """The envelope of an outbox row, if it is the one its columns name; else ValueError saying why."""
    try:
        envelope = jsoncodec.loads(text.encode("utf-8") if isinstance(text, str) else b"")
    except (jsoncodec.JSONRejected, UnicodeEncodeError):
        raise ValueError("the row is not JSON") from None
    room = isinstance(recipient, str) and is_room(recipient)
    try:
        check_room_envelope(envelope) if room else check_envelope(envelope)
    except MalformedEnvelope as exc:
        raise ValueError(f"the row is not an envelope ({exc})") from None
    if (envelope["id"], envelope["room" if room else "to"], envelope["from"]) != (msg_id, recipient, sender):
        raise ValueError("the envelope is not the message its row names")
    return dict(envelope)
