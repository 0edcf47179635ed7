"""The parts of :class:`~securechat.events.SessionAPI` answered from local state alone: contacts, history."""

from __future__ import annotations

from ..names import parse_typed_name, parse_typed_target
from ..records import ContactInfo, HistoryEntry
from .contacts import Contacts
from .state import ClientStore


class LocalQueries:
    """Contacts and history, without the server (a base of :class:`~securechat.client.session.ClientSession`)."""

    _contacts: Contacts
    _store: ClientStore

    def contact(self, name: str) -> ContactInfo:
        return self._contacts.info(parse_typed_name(name))

    def trust(self, name: str) -> None:
        """Accept the pending changed key of ``name`` (after a :class:`KeyChangedAlert`)."""
        self._contacts.trust(parse_typed_name(name))

    def verify(self, name: str, fingerprint: str) -> bool:
        """Mark ``name`` verified if ``fingerprint`` matches the pinned key; False if not."""
        return self._contacts.verify(parse_typed_name(name), fingerprint)

    def history(self, peer: str, limit: int = 200) -> list[HistoryEntry]:
        """The last ``limit`` entries of the conversation with ``peer``, oldest first."""
        return self._store.history.recent(parse_typed_target(peer), limit)
