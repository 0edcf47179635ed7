"""Section 6: rooms (docs/protocol.md 11), seal/open per message against the raw primitives, and the wire size.

A room message is one AES-256-GCM encryption, one RSA-OAEP wrap per member and one
RSA-PSS signature over the header, every wrapped key, the nonce and the ciphertext;
opening it is one unwrap, one verify and GCM (plus the structure and member checks).
The targets of issue 10: seal within 1.2x of N wraps + one sign + GCM, open within
1.2x of one unwrap + one verify + GCM, and a 100-member message under 64 KiB on the
wire. Each repetition calls the operation and its primitives in turn, call by call,
and the ratio is taken within the repetition (a load that comes and goes on a shared
machine falls on both alike).

The members' public keys cycle through a few generated keys (an OAEP wrap costs
the same whichever key of a size it uses), so 100 members do not cost 100 key
generations; every member has its own name and its own wrapped key.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import rsa

from .. import crypto
from ..encoding import b64encode
from ..envelope import GCM_NONCE_SIZE
from ..protocol import message_frame
from ..rooms.envelope import check_room_addressing, check_room_members, parse_room_envelope
from ..rooms.log import RoomState
from ..rooms.sealing import open_room_parsed, room_header, room_signed_text, seal_room, signed_bytes_of
from .crypto_bench import TEXT
from .stats import summary

ROOM: Final = "#bench"
DISTINCT_KEYS: Final = 4
WIRE_LIMIT: Final = 64 * 1024
# Opening is a few ms at any size, sealing N wraps: open gets this many times the seal's calls.
OPEN_ITERATIONS: Final = 4


def _state(members: int) -> RoomState:
    names = frozenset({"alice"} | {f"m{i:03d}" for i in range(1, members)})
    return RoomState(ROOM, "invite", 7, bytes(range(32)), names, frozenset({"alice"}))


def _alternating(operations: dict[str, Callable[[], object]], iterations: int, reps: int) -> dict[str, list[float]]:
    """CPU µs per call of each operation, called in turn call by call (A, B, A, B...) and summed per repetition.

    CPU time of this process, not wall time: on a shared machine another process's
    load does not enter (wall time swung the 100-member open ratio from 1.1x to 1.7x
    between runs minutes apart), and what is left falls on both sides alike.
    """
    us: dict[str, list[float]] = {name: [] for name in operations}
    for _ in range(reps):
        spent = dict.fromkeys(operations, 0.0)
        for _ in range(iterations):
            for name, fn in operations.items():
                start = time.process_time()
                fn()
                spent[name] += time.process_time() - start
        for name in operations:
            us[name].append(spent[name] / iterations * 1e6)
    return us


def bench_members(members: int, keys_made: list[rsa.RSAPrivateKey], iterations: int, reps: int) -> dict[str, Any]:
    """Seal and open of one room message for ``members`` members (``keys_made``: the sender's, the reader's, more)."""
    sender, reader = keys_made[0], keys_made[1]
    others = [key.public_key() for key in keys_made[1:]]
    state = _state(members)
    names = sorted(state.members - {"alice"})
    keys = {name: others[i % len(others)] for i, name in enumerate(names)} | {"alice": sender.public_key()}
    me = names[0]  # holds reader's key
    envelope = seal_room(sender, keys, state, "alice", TEXT)
    parsed = parse_room_envelope(envelope)
    header = room_header(ROOM, "alice", parsed.msg_id, parsed.ts, state.seq, state.head)
    signed = signed_bytes_of(parsed, header)
    mine = parsed.wrapped_key(me)
    assert mine is not None
    plaintext = crypto.encode_plaintext(TEXT)
    sender_pub = sender.public_key()

    def seal() -> object:
        return seal_room(sender, keys, state, "alice", TEXT)

    def raw_seal() -> object:
        # At the least: a fresh key and nonce, GCM, one wrap per member, the signed bytes (over the
        # wrapped keys' base64, which the envelope needs anyway) and one signature.
        aes_key, nonce = os.urandom(crypto.AES_KEY_SIZE), os.urandom(GCM_NONCE_SIZE)
        ciphertext = crypto.gcm_seal(aes_key, nonce, plaintext, header)
        texts = {name: b64encode(crypto.oaep_wrap(key, aes_key)) for name, key in keys.items()}
        return crypto.pss_sign(sender, room_signed_text(header, texts, nonce, ciphertext))

    def open_() -> object:
        env = parse_room_envelope(envelope)
        check_room_addressing(env, ROOM, "alice")
        check_room_members(env, state.members, me)
        return open_room_parsed(reader, me, sender_pub, env)

    def raw_open() -> object:
        crypto.pss_verify(sender_pub, parsed.signature, signed)
        aes_key = crypto.oaep_unwrap(reader, mine)
        return crypto.gcm_open(aes_key, parsed.nonce, parsed.ciphertext, header)

    us = _alternating({"seal": seal, "raw_seal": raw_seal}, iterations, reps)
    us |= _alternating({"open": open_, "raw_open": raw_open}, iterations * OPEN_ITERATIONS, reps)
    wire = len(message_frame("alice", 2**53 - 1, envelope, ROOM))
    return {
        "members": members,
        "bits": sender.key_size,
        "iterations_per_rep": iterations,
        "seal_us": summary(us["seal"], 1),
        "raw_seal_us": summary(us["raw_seal"], 1),
        "seal_overhead": summary([a / b for a, b in zip(us["seal"], us["raw_seal"], strict=True)], 3),
        "open_us": summary(us["open"], 1),
        "raw_open_us": summary(us["raw_open"], 1),
        "open_overhead": summary([a / b for a, b in zip(us["open"], us["raw_open"], strict=True)], 3),
        "message_frame_bytes": wire,
        "under_64_kib": wire < WIRE_LIMIT,
    }


def run(*, quick: bool) -> dict[str, Any]:
    reps = 3 if quick else 7
    keys_made = [crypto.generate_private_key(3072) for _ in range(1 + DISTINCT_KEYS)]
    out: dict[str, Any] = {}
    for members in (10, 100):
        iterations = (3 if quick else 40) if members == 10 else (1 if quick else 5)
        out[f"members{members}"] = bench_members(members, keys_made, iterations, reps)
    return out
