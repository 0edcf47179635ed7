"""Hypothesis strategies for frames and envelopes, shared by the decoder and server fuzz targets."""

from __future__ import annotations

import base64

from hypothesis import strategies as st

from securechat.protocol import CLIENT_TYPES

# from_regex is slow to draw from; building valid values directly keeps the ci profile quick.
names = st.one_of(
    st.sampled_from(["alice", "bob", "carol", "0", "a-b_c", "z" * 32]), st.text(max_size=40)
)
hex_ids = st.one_of(st.binary(min_size=16, max_size=16).map(bytes.hex), st.text(max_size=34))
b64ish = st.one_of(st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode()), st.text(max_size=10))
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(
    st.characters(exclude_categories=["Cs"]), max_size=12
)
anything = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)

envelopes = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 2, 0, True, "1"]),
        "from": names,
        "to": names,
        "id": hex_ids,
        "ts": st.one_of(st.integers(min_value=-5, max_value=2**54), anything),
        "key": b64ish,
        "nonce": b64ish,
        "ct": b64ish,
        "sig": b64ish,
    },
)

# Frames shaped like the real client types, with each field sometimes right, sometimes anything.
client_frames = st.builds(
    lambda kind, fields, extra: {**extra, **fields, "type": kind},
    st.sampled_from(sorted(CLIENT_TYPES)) | st.text(max_size=10),
    st.fixed_dictionaries(
        {},
        optional={
            "version": st.sampled_from([1, 2, "1", None, True]),
            "name": names,
            "pubkey": st.text(max_size=30) | st.just("-----BEGIN PUBLIC KEY-----\n"),
            "signature": b64ish | anything,
            "to": names,
            "from": names,
            "id": hex_ids,
            "envelope": envelopes | anything,
            "rid": st.text(max_size=70) | anything,
        },
    ),
    st.dictionaries(st.text(max_size=6), anything, max_size=2),
)

# --- rooms (docs/protocol.md section 11) ---------------------------------------------------------

rooms = st.one_of(st.sampled_from(["#ops", "#dev", "#" + "z" * 32]), names, names.map(lambda n: "#" + n))
heads = st.one_of(st.binary(min_size=32, max_size=32).map(bytes.hex), st.text(max_size=66))
seqs = st.one_of(st.integers(min_value=-2, max_value=2**53 + 1), anything)
entries = st.fixed_dictionaries(
    {},
    optional={
        "room": rooms,
        "seq": seqs,
        "prev": heads,
        "op": st.sampled_from(["create", "add", "remove", "join", "leave", "admin", "ban"]) | anything,
        "by": names,
        "name": names,
        "kind": st.sampled_from(["invite", "open", "", "x"]) | anything,
        "ts": st.one_of(st.integers(min_value=-5, max_value=2**54), anything),
        "sig": b64ish,
    },
)
room_envelopes = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 2, True]),
        "room": rooms,
        "from": names,
        "id": hex_ids,
        "ts": st.integers(min_value=-5, max_value=2**54) | anything,
        "seq": seqs,
        "head": heads,
        "keys": st.dictionaries(names, b64ish | anything, max_size=4) | anything,
        "nonce": b64ish,
        "ct": b64ish,
        "sig": b64ish,
    },
)
room_frames = st.builds(
    lambda kind, fields, extra: {**extra, **fields, "type": kind},
    st.sampled_from(["room_create", "room_append", "room_log", "room_send", "rooms"]),
    st.fixed_dictionaries(
        {},
        optional={
            "entry": entries | anything,
            "room": rooms | anything,
            "since": seqs,
            "after": rooms | anything,
            "envelope": room_envelopes | anything,
            "rid": st.text(max_size=70) | anything,
        },
    ),
    st.dictionaries(st.text(max_size=6), anything, max_size=2),
)
room_server_frames = st.builds(
    lambda kind, fields: {**fields, "type": kind},
    st.sampled_from(["room_update", "room_sent", "room_list", "message", "ack"]),
    st.fixed_dictionaries(
        {},
        optional={
            "room": rooms | anything,
            "entries": st.lists(entries, max_size=3) | anything,
            "keys": st.dictionaries(names, st.text(max_size=20), max_size=3) | anything,
            "more": st.booleans() | anything,
            "id": hex_ids,
            "members": st.lists(names, max_size=3) | anything,
            "seq": seqs,
            "rooms": st.lists(
                st.fixed_dictionaries({"room": rooms, "kind": st.sampled_from(["invite", "open", "x"]),
                                       "member": st.booleans() | anything, "members": seqs,
                                       "seq": seqs, "head": heads}),
                max_size=3,
            ) | anything,
            "from": names,
            "envelope": room_envelopes | envelopes | anything,
            "to": rooms | names,
            "member": names | anything,
            "status": st.sampled_from(["queued", "delivered", "lost"]),
        },
    ),
)

# Every client frame type, the room ones with their own fields too (the live-server fuzz target draws from this).
any_client_frames = client_frames | room_frames
