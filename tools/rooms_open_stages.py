"""Opening a room message step by step, each open timed right after an RSA operation (a measurement).

The ``rooms`` bench section calls open and its primitives in turn, so every open starts after
an OAEP unwrap (the last call's) with the caches as the RSA work and the neighbours left them;
so does a client, which opens one message after another. This tool times open's steps in that
state: before each open it runs one OAEP unwrap, then the steps of
:func:`securechat.rooms.sealing.open_room_envelope` one after another (the unwrap itself replaced
by its result, so that what is timed is what open adds around the RSA work), and the raw side
(verify over the signed bytes built beforehand, then GCM) the same way. Wall time per step,
medians over ``--calls`` opens, in µs::

    python tools/rooms_open_stages.py --calls 150

Timed warm (in a tight loop) the same steps cost 2-4 times less; which of two ways of writing
a step is cheaper can differ between the two (docs/performance.md section 7).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from securechat import crypto, jsoncodec
from securechat.bench import rooms_bench
from securechat.bench.crypto_bench import TEXT
from securechat.rooms.envelope import check_room_addressing, check_room_members, parse_room_envelope
from securechat.rooms.sealing import room_header, seal_room, signed_bytes_of

STEPS = ("parse", "addressing", "members", "header", "signed_bytes", "verify", "own_key", "gcm", "plaintext_json",
         "result")


def stepper(members: int, keys_made: list[Any]) -> tuple[Callable[[], list[int]], Callable[[], list[int]], Callable[[], object]]:
    """(open in steps, raw open in steps, one OAEP unwrap) for a message to ``members`` members."""
    sender, reader = keys_made[0], keys_made[1]
    state = rooms_bench._state(members)
    names = sorted(state.members - {"alice"})
    pub = sender.public_key()
    member_keys = {n: keys_made[1 + i % rooms_bench.DISTINCT_KEYS].public_key() for i, n in enumerate(names)}
    envelope = seal_room(sender, member_keys | {"alice": pub}, state, "alice", TEXT)
    me = names[0]
    parsed = parse_room_envelope(envelope)
    header0 = room_header(parsed.room, parsed.sender, parsed.msg_id, parsed.ts, parsed.seq, parsed.head)
    signed0 = signed_bytes_of(parsed, header0)
    mine = parsed.wrapped_key(me)
    assert mine is not None
    aes_key = crypto.oaep_unwrap(reader, mine)
    clock = time.perf_counter_ns

    def opened() -> list[int]:
        t = [clock()]
        env = parse_room_envelope(envelope)
        t.append(clock())
        check_room_addressing(env, rooms_bench.ROOM, "alice")
        t.append(clock())
        check_room_members(env, state.members, me)
        t.append(clock())
        header = room_header(env.room, env.sender, env.msg_id, env.ts, env.seq, env.head, env.version)
        t.append(clock())
        signed = signed_bytes_of(env, header)
        t.append(clock())
        assert crypto.pss_verify(pub, env.signature, signed)
        t.append(clock())
        assert env.wrapped_key(me) is not None  # then the unwrap, left out: its result is aes_key
        t.append(clock())
        plaintext = crypto.gcm_open(aes_key, env.nonce, env.ciphertext, header)
        t.append(clock())
        body = jsoncodec.loads(plaintext)
        t.append(clock())
        crypto.OpenedMessage(env.sender, env.room, env.msg_id, env.ts, body["text"], body)
        t.append(clock())
        return [b - a for a, b in itertools.pairwise(t)]

    def raw() -> list[int]:
        t = [clock()]
        assert crypto.pss_verify(pub, parsed.signature, signed0)
        t.append(clock())
        crypto.gcm_open(aes_key, parsed.nonce, parsed.ciphertext, header0)
        t.append(clock())
        return [b - a for a, b in itertools.pairwise(t)]

    return opened, raw, lambda: crypto.oaep_unwrap(reader, mine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=150)
    args = parser.parse_args()
    keys_made = [crypto.generate_private_key(3072) for _ in range(1 + rooms_bench.DISTINCT_KEYS)]
    out: dict[str, Any] = {"load_average_start": os.getloadavg()}
    for members in (10, 100):
        opened, raw, unwrap = stepper(members, keys_made)
        rows: list[list[int]] = []
        raws: list[list[int]] = []
        for _ in range(args.calls):
            unwrap()
            rows.append(opened())
            unwrap()
            raws.append(raw())
        steps = {name: round(statistics.median(r[i] for r in rows) / 1000, 1) for i, name in enumerate(STEPS)}
        whole = statistics.median(sum(r) for r in rows) / 1000
        raw_whole = statistics.median(sum(r) for r in raws) / 1000
        out[f"members{members}"] = {
            "steps_us": steps, "open_without_unwrap_us": round(whole, 1),
            "raw_verify_gcm_us": round(raw_whole, 1), "beyond_raw_us": round(whole - raw_whole, 1),
        }
    out["load_average_end"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
