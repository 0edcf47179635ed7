"""Room logs for tests: keys per member and a helper that signs entries on a chain."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import rsa

from securechat.rooms.log import ZERO_HEAD, RoomEntry, RoomState, apply
from securechat.rooms.sealing import sign_entry
from tests.support.rawclient import identity_key

T0 = 1_767_225_600_000


def key_of(name: str) -> rsa.RSAPrivateKey:
    """A 2048-bit key per name, made once per test run: the one RawClient logs in with."""
    return identity_key(name)


@dataclass
class Chain:
    """A room's log as its members build it: each entry signed by its signer, applied with the real rules."""

    room: str = "#ops"
    entries: list[RoomEntry] = field(default_factory=list)
    state: RoomState | None = None

    def make(self, op: str, by: str, name: str | None = None, kind: str = "", *, seq: int | None = None,
             prev: bytes | None = None, signer: str | None = None) -> RoomEntry:
        """An entry on the current head (or at ``seq``/``prev``), signed by ``signer`` (default ``by``); not applied."""
        state = self.state
        seq = seq if seq is not None else (state.seq + 1 if state else 0)
        prev = prev if prev is not None else (state.head if state else ZERO_HEAD)
        return sign_entry(key_of(signer or by), self.room, seq, prev, op, by, name or by, kind, T0 + seq)

    def add(self, op: str, by: str, name: str | None = None, kind: str = "") -> RoomEntry:
        """Make the entry and apply it (the rules must allow it)."""
        entry = self.make(op, by, name, kind)
        self.state = apply(self.state, entry)
        self.entries.append(entry)
        return entry


def chain(*changes: tuple[str, ...], room: str = "#ops", kind: str = "invite") -> Chain:
    """A chain created by the first change's signer, then each (op, by[, name]) applied in order."""
    made = Chain(room)
    creator = changes[0][1] if changes and changes[0][0] == "create" else "alice"
    made.add("create", creator, creator, kind)
    for change in changes[1:] if changes and changes[0][0] == "create" else changes:
        made.add(*change)
    return made
