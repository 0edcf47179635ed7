"""What a session shares with its incoming and outgoing policies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..events import EventListener
from ..records import ContactInfo
from .contacts import Contacts
from .home import Identity
from .state import ClientStore

# The session's ``lookup``: ask the server for a key, pin it on first sight.
Lookup = Callable[[str], Awaitable[ContactInfo]]


@dataclass(frozen=True, slots=True)
class SessionParts:
    """One identity's storage, its contacts, the session's event sink and its ``lookup``."""

    store: ClientStore
    identity: Identity
    contacts: Contacts
    emit: EventListener
    lookup: Lookup
