"""Own messages that wait for their recipient's key (docs/security.md, "What a client confirms").

A message typed to someone not pinned yet needs their key before it can be
sealed. When the first-contact lookup cannot finish for now (the connection
goes while it is in flight, or the server refuses it for the moment), the
message is kept like any other unsent one: its text in the history row (sealed
at rest, status ``sending``) and its id here, written in one transaction by
``History.add(entry, awaiting_key=True)``. After the next ``welcome`` the outbox
looks the key up, seals the message with the id and time it was typed with, and
moves it into the outbox proper (``PendingSends.add(..., awaiting=True)``, again
one transaction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .state import ClientStore


@dataclass(frozen=True, slots=True)
class Awaiting:
    """A message typed to ``recipient`` that is not sealed yet."""

    msg_id: str
    recipient: str


class AwaitingKey:
    """The rows of ``outbox_awaiting_key``, oldest first."""

    def __init__(self, store: ClientStore) -> None:
        self._store = store

    def entries(self) -> list[Awaiting]:
        rows = self._store.query("SELECT msg_id, recipient FROM outbox_awaiting_key ORDER BY seq")
        return [Awaiting(str(msg_id), str(recipient)) for msg_id, recipient in rows]

    def remove(self, msg_id: str) -> None:
        with self._store.transaction() as db:
            db.execute("DELETE FROM outbox_awaiting_key WHERE msg_id = ?", (msg_id,))

    def __len__(self) -> int:
        return int(self._store.query("SELECT COUNT(*) FROM outbox_awaiting_key")[0][0])
