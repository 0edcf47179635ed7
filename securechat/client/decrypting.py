"""What ``securechat-client decrypt`` does with one pasted payload (docs/protocol.md sections 8 and 11.7).

Offline, with the local identity and state only: a one-to-one payload goes
through the checks of section 7 but check 3; a room payload (it has a
``room``) through checks 0, 1 and 4 to 12 of section 11.7 against the room's
chain as this client holds it verified. The checks that need no key come
first, so a payload that could never be accepted is refused for what it is,
not for a missing key. Every refusal is an
:class:`~securechat.errors.EnvelopeRejected` whose text says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from .. import crypto
from ..errors import UnknownSender, UnknownState
from ..names import is_valid_name
from ..rooms.envelope import (
    ParsedRoomEnvelope,
    check_room_addressing,
    check_room_members,
    is_room_envelope,
    parse_room_envelope,
)
from ..rooms.log import RoomState
from ..rooms.sealing import open_room_parsed
from .home import Identity
from .inbox import precheck_envelope
from .roomchains import MAX_FORMER_ROOMS
from .state import ClientStore

_TRUST_NOTES: Final = {
    "verified": "verified by you",
    "unverified": "not verified yet: compare fingerprints, then securechat-client verify",
    "changed": "the server now presents another key: /whois in the chat",
}


@dataclass(frozen=True, slots=True)
class PastedMessage:
    """A pasted payload that passed every check, and what the reader should know about it."""

    opened: crypto.OpenedMessage
    source: str  # whose key verified the signature, as a phrase
    state: RoomState | None = None  # a room message: the state it was sealed under


def open_pasted(
    store: ClientStore, identity: Identity, payload: str, explicit: crypto.PublicKey | None
) -> PastedMessage:
    """Decode ``payload`` and open it as ``identity``; ``explicit`` is the ``--sender-key``, if given."""
    envelope = crypto.decode_payload(payload)
    if is_room_envelope(envelope):
        return _open_room(store, identity, envelope, explicit)
    parsed = precheck_envelope(envelope, identity.name)  # checks that need no key come first
    key, source = _sender_key(store, parsed.sender, explicit)
    return PastedMessage(crypto.open_parsed(identity.private_key, key, parsed), source)


def _open_room(
    store: ClientStore, identity: Identity, envelope: dict[str, Any], explicit: crypto.PublicKey | None
) -> PastedMessage:
    me = identity.name
    env = parse_room_envelope(envelope)  # check 0
    check_room_addressing(env, None, None)  # check 1 (no frame: checks 2 and 3 do not apply)
    state = store.rooms.state_at(env.room, env.seq, env.head)  # check 4, against what we hold
    if state is None:
        raise UnknownState(_unknown_state(store, env, me))
    check_room_members(env, state.members, me)  # checks 5 to 7
    if explicit is None and env.sender == me:
        key, source = identity.private_key.public_key(), "your own key"
    else:
        key, source = _sender_key(store, env.sender, explicit)  # check 8
    return PastedMessage(open_room_parsed(identity.private_key, me, key, env), source, state)  # checks 9 to 12


def _unknown_state(store: ClientStore, env: ParsedRoomEnvelope, me: str) -> str:
    held = store.rooms.state(env.room)
    if held is None:
        return (
            f"{me} holds no room {env.room}: only a member's client can open its messages "
            "(if you were added, start the chat once to fetch the room; of the rooms you left, "
            f"only the {MAX_FORMER_ROOMS} most recent are kept)"
        )
    if env.seq > held.seq:
        return (
            f"it was sent under seq {env.seq} of {env.room}'s log and {me} holds it up to seq {held.seq}: "
            "start the chat once to fetch the rest, then decrypt again"
        )
    return (
        f"seq {env.seq} of {env.room} in it is not the one in {me}'s verified log: the state it names "
        "was forged, or the server showed its members different logs"
    )


def _sender_key(store: ClientStore, sender: str, explicit: crypto.PublicKey | None) -> tuple[crypto.PublicKey, str]:
    """Check 8: the key that must have signed it, and how to say whose it is."""
    if explicit is not None:
        return explicit, "the key from --sender-key"
    pin = store.pins.get(sender) if is_valid_name(sender) else None
    if pin is None:
        raise UnknownSender(f"no key pinned for {sender!r}; pass --sender-key FILE to verify the signature")
    note = _TRUST_NOTES.get(pin.trust, pin.trust)
    return pin.public_key(), f"the key pinned for {pin.name} ({note})"
