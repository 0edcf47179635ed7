"""Opening a room message, another checkout's code against this one's, in the same repetitions (a measurement).

The ``rooms`` section of ``python -m securechat.bench`` compares open with its primitives in one
checkout; this loads an older tree's :mod:`securechat.rooms` beside this checkout's (as the package
``securechat_base``) and calls the opens and their raw primitives (one PSS verify over the signed
bytes built beforehand, one OAEP unwrap, GCM) in turn, call by call, in CPU time, as the bench does
(``rooms_bench._alternating``): this checkout's open of a version 2 envelope (the wrapped keys
signed as text, docs/protocol.md 11.5) and of the old form (version 1), and the older tree's open
of the old form, each against the primitives of its own form. With ``--parts`` it also times pieces
of open beyond the primitives, each added to them in turn (the structure checks, the whole parse,
building the signed bytes); ``--frame`` the strict JSON parse of the ``message`` frame that
carries it (the client's step before open). Run from the repository root::

    mkdir /tmp/base && git archive 084335c | tar -x -C /tmp/base
    python tools/rooms_open_compare.py --base /tmp/base --frame --parts --reps 7
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


def operations(
    members: int, keys_made: list[Any], base: Rooms | None, parts: bool, frame: bool
) -> dict[str, Callable[[], object]]:
    sender, reader = keys_made[0], keys_made[1]
    others = [key.public_key() for key in keys_made[1:]]
    state = rooms_bench._state(members)
    names = sorted(state.members - {"alice"})
    keys = {name: others[i % len(others)] for i, name in enumerate(names)} | {"alice": sender.public_key()}
    me, pub = names[0], sender.public_key()

    def sealed(version: int) -> tuple[dict[str, Any], Callable[[], object]]:
        """An envelope of ``version`` and its raw open: verify (signed bytes built beforehand), unwrap, GCM."""
        env = this_sealing.seal_room_from_parts(
            sender, keys, state, "alice", TEXT, msg_id="0" * 32, ts=1, aes_key=bytes(32), nonce=bytes(12),
            version=version,
        )
        parsed = this_envelope.parse_room_envelope(env)
        header = this_sealing.room_header(rooms_bench.ROOM, "alice", parsed.msg_id, parsed.ts, state.seq, state.head, version)
        signed = this_sealing.signed_bytes_of(parsed, header)
        mine = parsed.wrapped_key(me)
        assert mine is not None

        def raw() -> object:
            crypto.pss_verify(pub, parsed.signature, signed)
            return crypto.gcm_open(crypto.oaep_unwrap(reader, mine), parsed.nonce, parsed.ciphertext, header)

        return env, raw

    def opener(rooms: Rooms, env: dict[str, Any]) -> Callable[[], object]:
        envelope, sealing = rooms

        def open_() -> object:
            e = envelope.parse_room_envelope(env)
            envelope.check_room_addressing(e, rooms_bench.ROOM, "alice")
            envelope.check_room_members(e, state.members, me)
            return sealing.open_room_parsed(reader, me, pub, e)

        return open_

    env, raw = sealed(2)
    env1, raw1 = sealed(1)  # the old form: what the code before version 2 sealed and opened
    this = (this_envelope, this_sealing)
    ops: dict[str, Callable[[], object]] = {
        "raw_open": raw, "open": opener(this, env), "raw_open_v1": raw1, "open_v1": opener(this, env1),
    }
    if base is not None:
        ops["base_open_v1"] = opener(base, env1)
    if parts:
        parsed = this_envelope.parse_room_envelope(env)
        header = this_sealing.room_header(rooms_bench.ROOM, "alice", parsed.msg_id, parsed.ts, state.seq, state.head)
        ops["+checks"] = lambda: (this_envelope.check_room_envelope(env), raw())
        ops["+parse"] = lambda: (this_envelope.parse_room_envelope(env), raw())
        ops["+signed_bytes"] = lambda: (
            this_sealing.signed_bytes_of(parsed, header), raw()
        )
    if frame:  # what the client does before it opens: parse the message frame, strict JSON
        body = message_frame("alice", 2**53 - 1, env, rooms_bench.ROOM)[HEADER_SIZE:]
        ops["frame_parse"] = lambda: jsoncodec.loads(body)
        if base is not None:
            base_codec = importlib.import_module("securechat_base.jsoncodec")
            ops["base_frame_parse"] = lambda: base_codec.loads(body)
    for name in ("open", "open_v1", "base_open_v1"):
        if name in ops:
            opened = ops[name]()
            assert getattr(opened, "text", None) == TEXT, name  # each opens the same text
    return ops


RAW_OF = {"open": "raw_open", "+checks": "raw_open", "+parse": "raw_open", "+signed_bytes": "raw_open",
          "open_v1": "raw_open_v1", "base_open_v1": "raw_open_v1"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="an older checkout's root (its securechat/ is compared)")
    parser.add_argument("--parts", action="store_true", help="also time each piece of open beyond the primitives")
    parser.add_argument("--frame", action="store_true", help="also time the strict JSON parse of the message frame")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=60, help="calls of each per repetition")
    args = parser.parse_args()
    base = load_base(args.base) if args.base else None
    keys_made = [crypto.generate_private_key(3072) for _ in range(1 + rooms_bench.DISTINCT_KEYS)]
    out: dict[str, Any] = {"load_average_start": os.getloadavg()}
    for members in (10, 100):
        us = rooms_bench._alternating(operations(members, keys_made, base, args.parts, args.frame), args.iterations, args.reps)
        result: dict[str, Any] = {name: summary(values, 1) for name, values in us.items()}
        for name in us:
            if name in RAW_OF:
                raw = us[RAW_OF[name]]
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
