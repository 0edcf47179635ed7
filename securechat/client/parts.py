"""What a session shares with its incoming and outgoing policies."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from ..errors import RequestUnanswered, ServerErrorReply
from ..events import EventListener
from ..records import ContactInfo
from .contacts import Contacts
from .home import Identity
from .state import ClientStore

# The session's ``lookup``: ask the server for a key, pin it on first sight.
Lookup = Callable[[str], Awaitable[ContactInfo]]

# Lookup refusals that say "not now", not "no": asking again later may get the key.
LOOKUP_RETRY_CODES: Final = frozenset({"rate_limited", "internal"})


def backoff(attempt: int, initial: float, maximum: float, rng: random.Random) -> float:
    """The pause before try ``attempt + 1``: capped exponential, with jitter (half to full of the step)."""
    step: float = min(maximum, initial * 2.0 ** min(attempt, 30))
    return step * rng.uniform(0.5, 1.0)


def lookup_can_retry(exc: BaseException) -> bool:
    """True if a failed ``lookup`` may succeed later: unanswered (connection lost, timed out) or
    refused for now. What waits on it is kept and asked again, never confirmed or dropped."""
    if isinstance(exc, RequestUnanswered):
        return True
    return isinstance(exc, ServerErrorReply) and not exc.fatal and exc.code in LOOKUP_RETRY_CODES


@dataclass(frozen=True, slots=True)
class SessionParts:
    """One identity's storage, its contacts, the session's event sink and its ``lookup``."""

    store: ClientStore
    identity: Identity
    contacts: Contacts
    emit: EventListener
    lookup: Lookup
