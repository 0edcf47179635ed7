"""Plain records the client keeps about contacts and conversations.

Shared by the client's storage and its session API; they import nothing of
either, so storage never depends on the events a user interface renders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TrustState = Literal["unverified", "verified", "changed"]


@dataclass(frozen=True, slots=True)
class ContactInfo:
    """What the client knows of a contact: for ``/whois``."""

    name: str
    fingerprint: str | None
    trust: TrustState | None
    pending_fingerprint: str | None = None


def room_ack_status(delivered: int, total: int, *, alone: bool = False) -> str:
    """A room message's delivery so far: ``delivered 3/5`` (of the members it was routed to), else ``queued``;
    ``alone``: routed to nobody, the sender being the room's only member."""
    if alone:
        return "no other members"
    if not delivered:
        return "queued"
    return f"delivered {delivered}/{total}" if total else f"delivered {delivered}"


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One line of a conversation's local history (persisted, encrypted at rest)."""

    peer: str
    direction: Literal["in", "out"]
    msg_id: str
    ts: int
    text: str
    status: str = ""  # for own messages: sending / queued / delivered (a room's: "delivered 3/5")
    server_ts: int | None = None  # incoming: the server's clock when it took the message, if it said
    sender: str = ""  # a room's incoming message: who wrote it (``peer`` is the room)
