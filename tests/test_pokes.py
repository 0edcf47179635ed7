"""Reading the pokes the nodes publish to each other (securechat/server/pokes.py): what reads, what is garbled.

A node acts on what it reads and writes parts of it to clients, so anything another node
(another version, a buggy one) publishes either reads whole or raises ``ValueError``
(:class:`GarbledPoke`, or the split of a push): never another exception, never half a poke.
The nodes' end of it, with real processes, is tests/test_nodes_pokes.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securechat.server.pokes import GarbledPoke, ack_poke, acks, new_messages, room_push
from securechat.server.sessionbox import push_body
from tests.support.rawclient import msg_id, raw_frame

FRAME = raw_frame(b'{"type":"message"}')
M_TWO = b"M2\n3 alice %s 17 %d \"r 1\"\n4 carol %s 18 %d \n%s%s" % (
    msg_id(1).encode(), len(FRAME), msg_id(2).encode(), len(FRAME), FRAME, FRAME
)
A_TWO = ack_poke(b"queued", msg_id(1).encode(), b"bob", b'"r"') + b"\ndelivered\n" + msg_id(2).encode() + b"\nbob\n"


def test_well_formed_pokes_read() -> None:
    assert new_messages(M_TWO) == [
        (3, b"alice", msg_id(1).encode(), b"17", b'"r 1"', FRAME),
        (4, b"carol", msg_id(2).encode(), b"18", b"", FRAME),
    ]
    assert acks(A_TWO) == [(b"queued", msg_id(1).encode(), b"bob", b'"r"'), (b"delivered", msg_id(2).encode(), b"bob", b"")]
    assert room_push(push_body("#ops", 7, FRAME)) == ("#ops", 7, FRAME)


@pytest.mark.parametrize(
    "data",
    [
        b"M", b"Mx\n", b"M-1\n", b"M3" + M_TWO[2:], M_TWO[:-1], M_TWO + b"x",
        M_TWO.replace(b"alice", b"Alice"), M_TWO.replace(b" 17 ", b" 1x "),
        M_TWO.replace(msg_id(1).encode(), b"x" * 32), M_TWO.replace(FRAME, b"\x00\x00\x00\x63" + FRAME[4:], 1),
    ],
)  # fmt: skip
def test_garbled_m_pokes_are_refused_whole(data: bytes) -> None:
    with pytest.raises(GarbledPoke):
        new_messages(data)


@pytest.mark.parametrize(
    "data",
    [
        b"A", b"A\nqueued", A_TWO.replace(b"delivered", b"lost"), A_TWO.replace(b"bob", b"Bob Smith", 1),
        A_TWO.replace(msg_id(2).encode(), b'x","status":"delivered'), b"B" + A_TWO[1:], A_TWO + b"\nqueued",
    ],
)  # fmt: skip
def test_garbled_a_pokes_are_refused_whole(data: bytes) -> None:
    with pytest.raises(GarbledPoke):
        acks(data)


@pytest.mark.parametrize("data", [b"Pops 7\n" + FRAME, b"P#ops x\n" + FRAME, b"P#ops 7\n" + FRAME[:-1]])
def test_garbled_room_pushes_are_refused(data: bytes) -> None:
    with pytest.raises(GarbledPoke):
        room_push(data)


@given(st.binary(max_size=200), st.sampled_from([M_TWO, A_TWO, push_body("#ops", 7, FRAME)]), st.integers(0, 400))
def test_any_bytes_read_whole_or_raise_value_error(noise: bytes, poke: bytes, at: int) -> None:
    """Random bytes, and a good poke with bytes spliced in: each reader returns or raises ValueError."""
    for data in (poke[:1] + noise, poke[:at] + noise + poke[at:]):
        for read in (new_messages, acks, room_push):
            try:
                read(data)
            except ValueError:
                pass
