"""Hypothesis fuzzing of the server's input path: FrameDecoder -> state table -> validate_client_frame.

Runs with the active hypothesis profile: the default ``ci`` profile keeps it
quick; ``HYPOTHESIS_PROFILE=fuzz`` runs 10,000 examples per test.

The invariant everywhere: whatever bytes arrive, the only exceptions are
:class:`ProtocolError` subclasses (which the server turns into ``error``
frames), framing errors are fatal, and valid frames come out unchanged.
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from securechat.errors import BadFrame, FrameError, FrameTooLarge, ProtocolError
from securechat.protocol import (
    FATAL_CODES,
    NONFATAL_CODES,
    FrameDecoder,
    encode_frame,
    validate_client_frame,
)
from securechat.server.phases import Phase, check_transition
from tests.support.strategies import client_frames

MAX_FRAME = 4096

def serve(frames: list[dict[str, Any]]) -> None:
    """What the server does with decoded frames; only ProtocolError may escape each step."""
    state = Phase.AWAIT_HELLO
    for frame in frames:
        try:
            validate_client_frame(frame)
            state = check_transition(state, frame["type"])
        except ProtocolError as exc:
            assert exc.code in FATAL_CODES | NONFATAL_CODES
            if exc.fatal:
                state = Phase.CLOSED
                return


def feed_in_pieces(dec: FrameDecoder, data: bytes, cuts: list[int]) -> tuple[list[dict[str, Any]], ProtocolError | None]:
    out: list[dict[str, Any]] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        try:
            out += dec.feed(data[start:cut])
        except ProtocolError as exc:
            return out, exc
        start = cut
    return out, None


@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=10), st.integers(1, MAX_FRAME))
def test_random_bytes_only_give_frames_or_fatal_frame_errors(data: bytes, cuts: list[int], max_frame: int) -> None:
    dec = FrameDecoder(max_frame=max_frame)
    frames, error = feed_in_pieces(dec, data, [min(c, len(data)) for c in cuts])
    if error is not None:
        assert isinstance(error, FrameError) and error.fatal
        assert error.code in ("bad_frame", "frame_too_large")
        assert dec.buffered == 0
    assert dec.buffered <= max(len(data), 0)
    serve(frames)


@given(st.lists(client_frames, max_size=6), st.data())
def test_random_client_frames_survive_any_split_and_the_server_path(
    frames: list[dict[str, Any]], data: st.DataObject
) -> None:
    stream = b"".join(encode_frame(f) for f in frames)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    dec = FrameDecoder()
    out, error = feed_in_pieces(dec, stream, cuts)
    assert error is None
    assert out == frames
    serve(out)


bad_tails = st.one_of(
    st.builds(lambda n: struct.pack(">I", n), st.integers(MAX_FRAME + 1, 2**32 - 1)),
    st.just(b"\x00\x00\x00\x00"),
    # A well-sized frame whose body is random bytes (usually not a typed JSON object).
    st.builds(lambda body: struct.pack(">I", len(body)) + body, st.binary(min_size=1, max_size=100)),
)


@given(st.lists(client_frames, max_size=4), bad_tails, st.binary(max_size=30), st.data())
def test_valid_prefix_then_garbage(
    frames: list[dict[str, Any]], tail: bytes, after: bytes, data: st.DataObject
) -> None:
    stream = b"".join(encode_frame(f) for f in frames)
    whole = stream + tail + after
    cuts = data.draw(st.lists(st.integers(0, len(whole)), max_size=8))
    dec = FrameDecoder(max_frame=MAX_FRAME)
    out, error = feed_in_pieces(dec, whole, cuts)
    # Every good frame before the damage comes out exactly once, in order.
    assert out[: len(frames)] == frames
    if error is not None:
        assert isinstance(error, (BadFrame, FrameTooLarge)) and error.fatal
        # Failed for good: later bytes never produce frames.
        for probe in (b"", encode_frame({"type": "ping"})):
            try:
                dec.feed(probe)
            except ProtocolError as again:
                assert again is error
            else:
                raise AssertionError("decoder accepted input after a fatal error")
    serve(out)


@given(client_frames, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4))
def test_mutated_frames_only_give_frames_or_protocol_errors(
    frame: dict[str, Any], mutations: list[tuple[int, int]]
) -> None:
    wire = bytearray(encode_frame(frame))
    for pos, value in mutations:
        wire[pos % len(wire)] = value
    dec = FrameDecoder(max_frame=MAX_FRAME)
    try:
        out = dec.feed(bytes(wire))
    except ProtocolError as exc:
        assert exc.fatal
        return
    serve(out)
