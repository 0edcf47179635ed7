"""The live path's pokes (securechat/server/pokes.py): ``L`` and ``X`` read back what was written, and anything
garbled raises :class:`GarbledPoke` whole; ``M``, moved onto the shared ``_frames`` with them, still refuses what
it refused. Another node (another version, a buggy one) writes them: a node acts on what it reads and writes
the frames to a client as they are, so a lie in a count, a size or a length prefix must not read.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securechat.server.pokes import GarbledPoke, live_messages, live_poke, new_messages, refusal, refusal_poke
from tests.support.rawclient import msg_id, raw_frame

FRAME = raw_frame(b'{"type":"message"}')
ITEMS = [
    (4, msg_id(1).encode(), 17, b'"r 1"', FRAME),
    (5, msg_id(2).encode(), 18, b'["#ops", "a b c"]', raw_frame(b"x" * 300)),
    (6, msg_id(3).encode(), 19, b"", raw_frame(b"")),
]
L_THREE = live_poke(b"alice", 7, 3, ITEMS)


def test_one_live_message_reads_back() -> None:
    poke = live_poke(b"alice", 1, 1, [(1, msg_id(9).encode(), 1700, b'"r"', FRAME)])
    assert poke == b'Lalice 1 1 1 1\n%s 1700 %d "r"\n%s' % (msg_id(9).encode(), len(FRAME), FRAME)
    assert live_messages(poke) == (b"alice", 1, 1, 1, [(msg_id(9).encode(), b"1700", b'"r"', FRAME)], FRAME)


def test_many_live_messages_read_back_in_order_with_rids_of_spaces() -> None:
    every_frame = b"".join(i[4] for i in ITEMS)
    assert live_messages(L_THREE) == (b"alice", 7, 3, 4, [(i[1], b"%d" % i[2], i[3], i[4]) for i in ITEMS], every_frame)


@given(
    st.lists(st.tuples(st.binary(max_size=2000), st.binary(max_size=40).map(lambda b: b.replace(b"\n", b""))),
             min_size=1, max_size=8),
    st.integers(1, 10**18 - 1), st.integers(1, 10**18 - 1), st.integers(1, 10**12),
)  # fmt: skip
def test_live_pokes_of_any_frames_and_rids_read_back(bodies: list[tuple[bytes, bytes]], session: int, epoch: int, first: int) -> None:
    """Frames of any size and bytes (newlines too), rids of any bytes but a newline: what was written reads back."""
    items = [(first + i, msg_id(i).encode(), 1000 + i, rid, raw_frame(body)) for i, (body, rid) in enumerate(bodies)]
    sender, got_session, got_epoch, got_first, messages, every_frame = live_messages(live_poke(b"bob-2_x", session, epoch, items))
    assert (sender, got_session, got_epoch, got_first) == (b"bob-2_x", session, epoch, first)
    assert messages == [(i[1], b"%d" % i[2], i[3], i[4]) for i in items]
    assert every_frame == b"".join(i[4] for i in items)


def test_a_refusal_reads_back() -> None:
    assert refusal_poke(b"bob", 12, 345) == b"Xbob 12 345"
    assert refusal(refusal_poke(b"bob", 12, 345)) == ("bob", 12, 345)
    assert refusal(refusal_poke(b"a" * 32, 10**18 - 1, 1)) == ("a" * 32, 10**18 - 1, 1)


def _lie_in_line(n: int, old: bytes, new: bytes) -> bytes:
    """L_THREE with ``old`` replaced by ``new`` in its line ``n`` (0: the head)."""
    lines = L_THREE.split(b"\n", 4)
    lines[n] = lines[n].replace(old, new, 1)
    assert lines[n] != L_THREE.split(b"\n", 4)[n]
    return b"\n".join(lines)


LINE2 = L_THREE.split(b"\n")[2]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(L_THREE.replace(b" 4 3\n", b" 4 2\n", 1), id="count-fewer"),
        pytest.param(L_THREE.replace(b" 4 3\n", b" 4 4\n", 1), id="count-more"),
        pytest.param(L_THREE.replace(b" 4 3\n", b" 4 0\n", 1), id="count-zero"),
        pytest.param(L_THREE.replace(b" 4 3\n", b" 4 x\n", 1), id="count-no-number"),
        pytest.param(_lie_in_line(1, b" %d " % len(FRAME), b" %d " % (len(FRAME) + 1)), id="size-more"),
        pytest.param(_lie_in_line(1, b" %d " % len(FRAME), b" %d " % (len(FRAME) - 1)), id="size-fewer"),
        pytest.param(_lie_in_line(3, b" 4 ", b" 3 "), id="size-below-a-header"),
        pytest.param(_lie_in_line(1, b" %d " % len(FRAME), b" x "), id="size-no-number"),
        pytest.param(L_THREE.replace(FRAME, b"\x00\x00\x00\x63" + FRAME[4:], 1), id="prefix-lies"),
        pytest.param(L_THREE + b"x", id="bytes-left-over"),
        pytest.param(L_THREE[:-1], id="bytes-missing"),
        pytest.param(L_THREE.replace(b"Lalice", b"LAlice", 1), id="sender-capital"),
        pytest.param(L_THREE.replace(b"Lalice", b"Lal ice", 1), id="sender-space"),
        pytest.param(L_THREE.replace(b"Lalice", b"L", 1), id="sender-empty"),
        pytest.param(L_THREE.replace(b"Lalice", b"L#ops", 1), id="sender-a-room"),
        pytest.param(L_THREE.replace(msg_id(2).encode(), b"x" * 32, 1), id="id-not-hex"),
        pytest.param(L_THREE.replace(msg_id(2).encode(), msg_id(2).encode()[:-1], 1), id="id-short"),
        pytest.param(L_THREE.replace(b"\n" + LINE2, b"", 1), id="line-missing"),
        pytest.param(L_THREE.replace(b"Lalice 7 3 4", b"Lalice 7 3", 1), id="head-field-missing"),
        pytest.param(L_THREE.replace(b"Lalice 7 3 4", b"Lalice 7 x 4", 1), id="epoch-no-number"),
        pytest.param(L_THREE.replace(b"Lalice 7 3 4", b"Lalice 7 -3 4", 1), id="epoch-negative"),
        pytest.param(L_THREE.replace(b"Lalice 7 3 4", b"Lalice 7 1234567890123456789 4", 1), id="epoch-19-digits"),
        pytest.param(L_THREE.replace(b"Lalice 7 3 4", b"Lalice x 3 4", 1), id="session-no-number"),
        pytest.param(L_THREE.replace(b"Lalice 7 3 4", b"Lalice 7 3 x", 1), id="first-no-number"),
        pytest.param(_lie_in_line(1, b" 17 ", b" 1x "), id="time-no-number"),
        pytest.param(b"L", id="bare"),
        pytest.param(L_THREE.split(b"\n", 1)[0], id="head-only"),
        pytest.param(L_THREE.replace(b"\n", b"\r\n", 1), id="head-crlf"),
    ],
)  # fmt: skip
def test_garbled_l_pokes_are_refused_whole(data: bytes) -> None:
    assert data != L_THREE
    with pytest.raises(GarbledPoke):
        live_messages(data)


@pytest.mark.parametrize(
    "data",
    [
        b"X", b"Xbob", b"Xbob 12", b"Xbob 12 345 6", b"Xbob 12 345\n", b"XBob 12 345", b"Xbo b 12 345",
        b"X#ops 12 345", b"Xbob x 345", b"Xbob 12 x", b"Xbob -1 345", b"Xbob 1234567890123456789 345",
        b"Xbob 12  345", b"Ybob 12 345", b"X%s 1 1" % (b"a" * 33),
    ],
)  # fmt: skip
def test_garbled_x_pokes_are_refused_whole(data: bytes) -> None:
    with pytest.raises(GarbledPoke):
        refusal(data)


M_TWO = b"M2\n3 alice %s 17 %d \"r 1\"\n4 carol %s 18 %d \n%s%s" % (
    msg_id(1).encode(), len(FRAME), msg_id(2).encode(), len(FRAME), FRAME, FRAME
)


def test_an_m_poke_still_reads() -> None:
    assert new_messages(M_TWO) == [
        (3, b"alice", msg_id(1).encode(), b"17", b'"r 1"', FRAME),
        (4, b"carol", msg_id(2).encode(), b"18", b"", FRAME),
    ]
    assert new_messages(b"M0\n") == []


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"M1" + M_TWO[2:], id="count-fewer"),
        pytest.param(b"M3" + M_TWO[2:], id="count-more"),
        pytest.param(M_TWO.replace(b" 17 %d " % len(FRAME), b" 17 %d " % (len(FRAME) + 1), 1), id="size-more"),
        pytest.param(M_TWO.replace(b" 17 %d " % len(FRAME), b" 17 %d " % (len(FRAME) - 1), 1), id="size-fewer"),
        pytest.param(M_TWO.replace(b" 17 %d " % len(FRAME), b" 17 3 ", 1), id="size-below-a-header"),
        pytest.param(M_TWO.replace(FRAME, b"\x00\x00\x00\x63" + FRAME[4:], 1), id="prefix-lies"),
        pytest.param(M_TWO + b"x", id="bytes-left-over"),
        pytest.param(M_TWO[:-1], id="bytes-missing"),
        pytest.param(M_TWO.replace(b"alice", b"Alice"), id="sender-capital"),
        pytest.param(M_TWO.replace(msg_id(1).encode(), b"x" * 32), id="id-not-hex"),
        pytest.param(M_TWO.replace(b"4 carol %s 18 %d \n" % (msg_id(2).encode(), len(FRAME)), b"", 1), id="line-missing"),
        pytest.param(M_TWO.replace(b"3 alice", b"x alice", 1), id="seq-no-number"),
        pytest.param(b"M", id="bare"),
        pytest.param(b"M-1\n", id="count-negative"),
    ],
)  # fmt: skip
def test_garbled_m_pokes_are_still_refused_whole(data: bytes) -> None:
    with pytest.raises(GarbledPoke):
        new_messages(data)


@given(st.binary(max_size=200), st.integers(0, 400), st.sampled_from([L_THREE, refusal_poke(b"bob", 3, 7)]))
def test_any_bytes_read_whole_or_raise_garbled_poke(noise: bytes, at: int, poke: bytes) -> None:
    """Random bytes, and a good poke with bytes spliced in: each reader returns or raises GarbledPoke, never
    another exception (an IndexError or a struct.error would end the node's reading of its channel)."""
    for data in (poke[:1] + noise, poke[:at] + noise + poke[at:]):
        for read in (live_messages, refusal):
            try:
                read(data)
            except GarbledPoke:
                pass
