"""Opening a room message, another checkout's code against this one's, in the same repetitions (a measurement).

The ``rooms`` section of ``python -m securechat.bench`` compares open with its primitives in one
checkout; this loads an older tree's :mod:`securechat.rooms` beside this checkout's (as the package
``securechat_base``) and calls the two opens and the raw primitives (one PSS verify over the signed
bytes built beforehand, one OAEP unwrap, GCM) in turn, call by call, in CPU time, as the bench does
(``rooms_bench._alternating``). With ``--parts`` it also times what open does beyond the
primitives, each piece added to the primitives in turn (the structure checks, decoding the wrapped
keys, building the signed bytes, the plaintext's checks). With ``--proposal`` it also times a wire
change that is *not* made (docs/performance.md section 7): the signature covering each wrapped
key's base64 text as sent, so that a reader decodes only its own key, against its own primitives
(the verify then hashes the longer text). ``--frame`` times the strict JSON parse of the ``message``
frame that carries it (the client's step before open). Run from the repository root::

    mkdir /tmp/base && git archive 084335c | tar -x -C /tmp/base
    python tools/rooms_open_compare.py --base /tmp/base --frame --reps 7
    python tools/rooms_open_compare.py --parts --proposal --reps 7
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from securechat import crypto, jsoncodec
from securechat.bench import rooms_bench
from securechat.bench.crypto_bench import TEXT
from securechat.bench.stats import summary
from securechat.encoding import b64encode, lp, lp_pairs
from securechat.envelope import decode_field
from securechat.protocol import HEADER_SIZE, message_frame
from securechat.rooms import envelope as this_envelope
from securechat.rooms import sealing as this_sealing

Rooms = tuple[ModuleType, ModuleType]


def load_base(tree: Path) -> Rooms:
    """``tree``'s rooms.envelope and rooms.sealing, imported as the package ``securechat_base``."""
    package = tree / "securechat"
    spec = importlib.util.spec_from_file_location(
        "securechat_base", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["securechat_base"] = module
    spec.loader.exec_module(module)
    return importlib.import_module("securechat_base.rooms.envelope"), importlib.import_module("securechat_base.rooms.sealing")


def text_signed(header: bytes, texts: dict[str, str], nonce: bytes, ciphertext: bytes) -> bytes:
    """The proposal's signed bytes: as section 11.5's, with each wrapped key's base64 text in place of its bytes."""
    pairs = lp_pairs((name, texts[name].encode("ascii")) for name in sorted(texts))
    return b"".join((header, pairs, lp(nonce, ciphertext)))


def proposal(env: dict[str, Any], reader: Any, me: str, sender: Any, members: frozenset[str]) -> dict[str, Callable[[], object]]:
    """Open under the proposal (every check but the wrapped keys' decoding), and its primitives."""
    proposed = dict(env)
    parsed = this_envelope.parse_room_envelope(env)
    header = this_sealing.room_header(parsed.room, parsed.sender, parsed.msg_id, parsed.ts, parsed.seq, parsed.head)
    signed = text_signed(header, env["keys"], parsed.nonce, parsed.ciphertext)
    signature = crypto.pss_sign(sender, signed)
    proposed["sig"] = b64encode(signature)
    pub = sender.public_key()

    def open_proposed() -> object:
        f = this_envelope.check_room_envelope(proposed)
        nonce, ct = decode_field("nonce", proposed["nonce"]), decode_field("ct", proposed["ct"])
        sig = decode_field("sig", proposed["sig"])
        if f.sender not in members or me not in members or set(f.keys) != members:
            raise AssertionError("the members check")
        head = this_sealing.room_header(f.room, f.sender, f.msg_id, f.ts, f.seq, bytes.fromhex(f.head))
        if not crypto.pss_verify(pub, sig, text_signed(head, f.keys, nonce, ct)):
            raise AssertionError("the signature")
        return crypto.open_content(reader, decode_field("key", f.keys[me]), nonce, ct, head)

    def raw_proposed() -> object:
        crypto.pss_verify(pub, signature, signed)
        return crypto.gcm_open(crypto.oaep_unwrap(reader, parsed.keys[me]), parsed.nonce, parsed.ciphertext, header)

    return {"proposal_open": open_proposed, "proposal_raw_open": raw_proposed}


def operations(
    members: int, keys_made: list[Any], base: Rooms | None, parts: bool, proposed: bool, frame: bool
) -> dict[str, Callable[[], object]]:
    sender, reader = keys_made[0], keys_made[1]
    others = [key.public_key() for key in keys_made[1:]]
    state = rooms_bench._state(members)
    names = sorted(state.members - {"alice"})
    keys = {name: others[i % len(others)] for i, name in enumerate(names)} | {"alice": sender.public_key()}
    me, pub = names[0], sender.public_key()
    env = this_sealing.seal_room(sender, keys, state, "alice", TEXT)
    parsed = this_envelope.parse_room_envelope(env)
    header = this_sealing.room_header(rooms_bench.ROOM, "alice", parsed.msg_id, parsed.ts, state.seq, state.head)
    signed = this_sealing.room_signed_bytes(header, parsed.keys, parsed.nonce, parsed.ciphertext)

    def opener(rooms: Rooms) -> Callable[[], object]:
        envelope, sealing = rooms

        def open_() -> object:
            e = envelope.parse_room_envelope(env)
            envelope.check_room_addressing(e, rooms_bench.ROOM, "alice")
            envelope.check_room_members(e, state.members, me)
            return sealing.open_room_parsed(reader, me, pub, e)

        return open_

    def raw() -> object:
        crypto.pss_verify(pub, parsed.signature, signed)
        return crypto.gcm_open(crypto.oaep_unwrap(reader, parsed.keys[me]), parsed.nonce, parsed.ciphertext, header)

    ops: dict[str, Callable[[], object]] = {"raw_open": raw, "open": opener((this_envelope, this_sealing))}
    if base is not None:
        ops["base_open"] = opener(base)
    if parts:
        def with_raw(piece: Callable[[], object]) -> Callable[[], object]:
            return lambda: (piece(), raw())

        ops["+checks"] = with_raw(lambda: this_envelope.check_room_envelope(env))
        ops["+decode_keys"] = with_raw(lambda: this_envelope.parse_room_envelope(env))
        ops["+signed_bytes"] = with_raw(
            lambda: this_sealing.room_signed_bytes(header, parsed.keys, parsed.nonce, parsed.ciphertext)
        )
        ops["+plaintext"] = lambda: (
            crypto.pss_verify(pub, parsed.signature, signed),
            crypto.open_content(reader, parsed.keys[me], parsed.nonce, parsed.ciphertext, header),
        )
    if proposed:
        ops |= proposal(env, reader, me, sender, state.members)
    if frame:  # what the client does before it opens: parse the message frame, strict JSON
        body = message_frame("alice", 2**53 - 1, env, rooms_bench.ROOM)[HEADER_SIZE:]
        ops["frame_parse"] = lambda: jsoncodec.loads(body)
        if base is not None:
            base_codec = importlib.import_module("securechat_base.jsoncodec")
            ops["base_frame_parse"] = lambda: base_codec.loads(body)
    for name in ("open", "base_open", "proposal_open"):
        if name in ops:
            opened = ops[name]()
            text = opened["text"] if isinstance(opened, dict) else getattr(opened, "text", None)
            assert text == TEXT, name  # each opens the same text
    return ops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="an older checkout's root (its securechat/ is compared)")
    parser.add_argument("--parts", action="store_true", help="also time each piece of open beyond the primitives")
    parser.add_argument("--proposal", action="store_true", help="also time the wire change that is not made")
    parser.add_argument("--frame", action="store_true", help="also time the strict JSON parse of the message frame")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=60, help="calls of each per repetition")
    args = parser.parse_args()
    base = load_base(args.base) if args.base else None
    keys_made = [crypto.generate_private_key(3072) for _ in range(1 + rooms_bench.DISTINCT_KEYS)]
    out: dict[str, Any] = {"load_average_start": os.getloadavg()}
    for members in (10, 100):
        us = rooms_bench._alternating(operations(members, keys_made, base, args.parts, args.proposal, args.frame), args.iterations, args.reps)
        result: dict[str, Any] = {name: summary(values, 1) for name, values in us.items()}
        for name in us:
            if not name.endswith(("raw_open", "frame_parse")):
                raw = us["proposal_raw_open" if name == "proposal_open" else "raw_open"]
                ratios = [a / b for a, b in zip(us[name], raw, strict=True)]
                extra = [a - b for a, b in zip(us[name], raw, strict=True)]
                result[f"{name}/raw"] = summary(ratios, 3)
                result[f"{name}-raw_us"] = summary(extra, 1)
        out[f"members{members}"] = result
        print(f"{members} members: " + ", ".join(
            f"{name} {result[name]['median']:,.0f} us" + (f" ({result[f'{name}/raw']['median']:.3f}x)" if f"{name}/raw" in result else "")
            for name in us
        ), file=sys.stderr)
    out["load_average_end"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
