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
