"""The membership log of a room: entries, their signed bytes and heads, and the rules (docs/protocol.md 11.2, 11.3).

Pure: no keys, no I/O. :func:`parse_entry` reads an entry from the wire;
:func:`apply` turns a state (None before the first entry) and an entry into the
next state, or raises :class:`~securechat.errors.RoomRefused` whose ``code`` is
the error of section 11.8. The server and every client call the same
:func:`apply`; signatures are checked by the caller with
:func:`securechat.rooms.sealing.verify_entry` and the signer's key.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..encoding import b64decode, b64encode, lp
from ..envelope import is_timestamp
from ..errors import RoomRefused
from ..names import is_valid_name, is_valid_room

MAX_ROOM_MEMBERS: Final = 256
MAX_ROOM_LOG: Final = 16_384
MAX_MEMBER_ROOMS: Final = 256
ENTRY_LABEL: Final = b"securechat-room-v1"
HEAD_LABEL: Final = b"securechat-room-head-v1"
HEAD_SIZE: Final = 32
ZERO_HEAD: Final = bytes(HEAD_SIZE)
OPS: Final = ("create", "add", "remove", "join", "leave", "admin")
KINDS: Final = ("invite", "open")
# What each op did, as the conversation and the --json `room` event say it.
CHANGES: Final = {
    "create": "created", "add": "added", "remove": "removed", "join": "joined", "leave": "left", "admin": "admin",
}
_HEX_HEAD: Final = re.compile(r"[0-9a-f]{64}")
# A generous bound on an entry's signature (a 16,384-bit key signs 2,048 bytes).
MAX_SIG_B64: Final = 4096


def is_head(value: object) -> bool:
    """True for a head on the wire: 64 lowercase hex digits."""
    return isinstance(value, str) and _HEX_HEAD.fullmatch(value) is not None


def is_seq(value: object) -> bool:
    """True for a ``seq``: an integer (not a boolean) with ``0 <= seq < 2**53``."""
    return is_timestamp(value)


@dataclass(frozen=True, slots=True)
class RoomEntry:
    """One change of a room's membership, as signed by ``by``."""

    room: str
    seq: int
    prev: bytes
    op: str
    by: str
    name: str
    kind: str  # "" for every op but create
    ts: int
    sig: bytes

    def signed_bytes(self) -> bytes:
        """What ``by`` signs (section 11.2)."""
        return entry_signed_bytes(self.room, self.seq, self.prev, self.op, self.by, self.name, self.kind, self.ts)

    def head(self) -> bytes:
        """SHA-256 over the label, the signed bytes and the signature: the chain's link."""
        return hashlib.sha256(lp(HEAD_LABEL) + self.signed_bytes() + lp(self.sig)).digest()

    def to_json(self) -> dict[str, Any]:
        """The entry as it travels and is stored: exactly the fields of section 11.2."""
        out: dict[str, Any] = {
            "room": self.room, "seq": self.seq, "prev": self.prev.hex(), "op": self.op, "by": self.by,
            "name": self.name,
        }
        if self.op == "create":
            out["kind"] = self.kind
        out["ts"] = self.ts
        out["sig"] = b64encode(self.sig)
        return out


def entry_signed_bytes(room: str, seq: int, prev: bytes, op: str, by: str, name: str, kind: str, ts: int) -> bytes:
    return lp(ENTRY_LABEL, room, str(seq), prev, op, by, name, kind, str(ts))


def _bad(detail: str) -> RoomRefused:
    return RoomRefused(detail, code="bad_entry")


def _signature(sig: object) -> bytes:
    try:
        if not isinstance(sig, str) or len(sig) > MAX_SIG_B64:
            raise ValueError("not a string of bounded length")
        return b64decode(sig)
    except ValueError:
        raise _bad("entry 'sig' must be canonical base64") from None


def parse_entry(obj: object) -> RoomEntry:
    """An entry from the wire, every field checked (not the signature, not the rules); else ``bad_entry``."""
    if not isinstance(obj, Mapping):
        raise _bad("an entry must be a JSON object")
    room, seq, prev, op = obj.get("room"), obj.get("seq"), obj.get("prev"), obj.get("op")
    if not is_valid_room(room):
        raise _bad("entry 'room' is not a room name")
    if not is_seq(seq):
        raise _bad("entry 'seq' must be an integer from 0 to 2**53 - 1")
    if not is_head(prev):
        raise _bad("entry 'prev' must be 64 lowercase hex digits")
    if op not in OPS:
        raise _bad(f"entry 'op' must be one of {', '.join(OPS)}")
    for key in ("by", "name"):
        if not is_valid_name(obj.get(key)):
            raise _bad(f"entry '{key}' is not a valid name")
    kind = obj.get("kind", "")
    if op == "create" and kind not in KINDS:
        raise _bad("a create entry's 'kind' must be 'invite' or 'open'")
    if op != "create" and "kind" in obj:
        raise _bad("only a create entry has a 'kind'")
    if not is_timestamp(obj.get("ts")):
        raise _bad("entry 'ts' must be an integer from 0 to 2**53 - 1")
    raw_sig = _signature(obj.get("sig"))
    assert isinstance(room, str) and isinstance(seq, int) and isinstance(prev, str) and isinstance(op, str)
    return RoomEntry(room, seq, bytes.fromhex(prev), op, obj["by"], obj["name"], str(kind), obj["ts"], raw_sig)


@dataclass(frozen=True, slots=True)
class RoomState:
    """A room after entry ``seq``: who is in it, who may change it."""

    room: str
    kind: str
    seq: int
    head: bytes
    members: frozenset[str]
    admins: frozenset[str] = field(default_factory=frozenset)

    def sorted_members(self) -> list[str]:
        return sorted(self.members)


def check_change(  # noqa: C901 - the rules of section 11.3, one branch per op
    state: RoomState | None,
    op: str,
    by: str,
    name: str,
    kind: str = "",
    *,
    max_members: int = MAX_ROOM_MEMBERS,
) -> tuple[frozenset[str], frozenset[str]]:
    """The members and admins after ``by`` applies ``op`` to ``name``; raise :class:`RoomRefused` if the rules refuse.

    Only the rules of section 11.3 (the chain fields are :func:`apply`'s).
    """
    cap = min(max_members, MAX_ROOM_MEMBERS)
    if op == "create":
        if state is not None:
            raise RoomRefused("the room exists already", code="room_exists")
        if name != by or kind not in KINDS:
            raise _bad("a create entry names its signer and a kind")
        return frozenset({by}), frozenset({by})
    if state is None:
        raise RoomRefused("the room does not exist", code="unknown_room")
    members, admins = state.members, state.admins
    if op in ("join", "leave") and by != name:
        raise RoomRefused(f"only {name} can {op} for themselves", code="not_allowed")
    if op in ("add", "remove", "admin") and by not in admins:
        raise RoomRefused(f"{by} is not an admin of {state.room}", code="not_allowed")
    if op in ("add", "join"):
        if name in members:  # first: a member who asks to join hears that, not the room's kind
            raise _bad(f"{name} is a member of {state.room} already")
        if op == "join" and state.kind != "open":
            raise RoomRefused(f"{state.room} is an invite room: an admin must add you", code="not_allowed")
        if len(members) >= cap:
            raise RoomRefused(f"{state.room} is full ({cap} members)", code="room_full")
        return members | {name}, admins
    if name not in members:
        raise RoomRefused(f"{name} is not a member of {state.room}", code="not_member")
    if op == "admin":
        if name in admins:
            raise _bad(f"{name} is an admin already")
        return members, admins | {name}
    if op == "remove" and name in admins:
        raise RoomRefused(f"{name} is an admin: an admin can only leave by themselves", code="not_allowed")
    return members - {name}, admins - {name}


def apply(state: RoomState | None, entry: RoomEntry, *, max_members: int = MAX_ROOM_MEMBERS) -> RoomState:
    """The state after ``entry``; raise :class:`RoomRefused` (the chain, the caps, the rules). No signature check."""
    if state is None:
        if entry.seq != 0 or entry.prev != ZERO_HEAD:
            if entry.op == "create":
                raise _bad("a create entry has seq 0 and a zero prev")
            raise RoomRefused(f"{entry.room} does not exist", code="unknown_room")
    else:
        if entry.room != state.room:
            raise _bad(f"the entry is for {entry.room}, not {state.room}")
        if entry.seq != state.seq + 1 or entry.prev != state.head:
            raise RoomRefused(
                f"the entry does not follow seq {state.seq} of {state.room}", code="stale_state"
            )
        if entry.seq >= MAX_ROOM_LOG:
            raise RoomRefused(f"the log of {state.room} is full ({MAX_ROOM_LOG} entries)", code="room_full")
    members, admins = check_change(state, entry.op, entry.by, entry.name, entry.kind, max_members=max_members)
    kind = entry.kind if state is None else state.kind
    return RoomState(entry.room, kind, entry.seq, entry.head(), members, admins)


def replay(entries: list[RoomEntry], *, upto: int | None = None) -> RoomState | None:
    """The state after the entries (already verified, in order) up to ``seq`` ``upto``."""
    state: RoomState | None = None
    for entry in entries:
        if upto is not None and entry.seq > upto:
            break
        state = apply(state, entry)
    return state
