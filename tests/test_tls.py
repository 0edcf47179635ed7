"""The TLS layer sans I/O (securechat/tls.py): channels in memory, padding, certificates, first bytes."""

from __future__ import annotations

import datetime
import ssl
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securechat.errors import BadServerCertificate, FrameTooLarge, NotTls, TlsFailed
from securechat.protocol import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame
from securechat.tls import (
    PAD_MIN,
    PAD_STEP,
    CertificateInfo,
    TlsChannel,
    check_validity,
    client_context,
    inspect_certificate,
    pad_last_frame,
    pad_write,
    padded_size,
    plaintext_frame,
    sni_name,
    starts_like_tls,
    tls_at_plaintext,
)
from tests.support.hostile import fake_identity


def _pair() -> tuple[TlsChannel, TlsChannel]:
    server = TlsChannel(fake_identity().context(), server_side=True)
    client = TlsChannel(client_context(), server_side=False)
    return client, server


def _shuttle(client: TlsChannel, server: TlsChannel) -> tuple[bytes, bytes]:
    """Move TLS bytes both ways until nothing moves; what each side received in clear."""
    to_client, to_server = bytearray(), bytearray()
    while True:
        up, down = client.data_to_send(), server.data_to_send()
        if not up and not down:
            return bytes(to_client), bytes(to_server)
        if up:
            to_server += server.receive(up)
        if down:
            to_client += client.receive(down)


def test_handshake_then_bytes_both_ways() -> None:
    client, server = _pair()
    client.send(b"sent before the handshake")  # waits for it
    assert _shuttle(client, server) == (b"", b"sent before the handshake")
    assert client.ready and server.ready and client.version() == "TLSv1.3"
    client.send(b"hello")
    server.send(b"world")
    assert _shuttle(client, server) == (b"world", b"hello")
    der = client.peer_certificate()
    assert der is not None and inspect_certificate(der, "test").identity == fake_identity().identity
    assert server.peer_certificate() is None  # no client certificates


def test_a_megabyte_goes_through_in_record_sized_slices() -> None:
    client, server = _pair()
    _shuttle(client, server)
    blob = bytes(range(256)) * 4096
    client.send(blob)
    wire = client.data_to_send()
    assert len(wire) > len(blob)
    assert server.receive(wire) == blob


def test_close_notify_marks_the_channel_closed_and_stops_sending() -> None:
    client, server = _pair()
    _shuttle(client, server)
    client.close()
    client.send(b"after close: dropped")
    assert server.receive(client.data_to_send()) == b""
    assert server.closed and client.closing


def test_a_plaintext_first_byte_at_a_server_is_not_tls() -> None:
    server = TlsChannel(fake_identity().context(), server_side=True)
    with pytest.raises(NotTls) as info:
        server.receive(encode_frame({"type": "hello"}))
    assert info.value.first_bytes.startswith(b"\x00\x00")


def test_garbage_after_a_tls_record_header_fails_and_keeps_the_first_bytes() -> None:
    client = TlsChannel(client_context(), server_side=False)
    reply = encode_frame({"type": "error", "code": "tls_unsupported", "message": "m", "fatal": True})
    with pytest.raises(TlsFailed) as info:
        client.receive(reply)
    assert info.value.first_bytes == reply
    frame = plaintext_frame(info.value.first_bytes)
    assert frame is not None and frame["code"] == "tls_unsupported"
    assert plaintext_frame(b"\x15\x03\x03\x00\x02\x02\x28") is None  # a TLS alert is not a frame


def test_tampered_records_fail() -> None:
    client, server = _pair()
    _shuttle(client, server)
    client.send(b"x" * 100)
    wire = bytearray(client.data_to_send())
    wire[-1] ^= 1
    with pytest.raises(TlsFailed):
        server.receive(bytes(wire))


def test_first_bytes_tell_the_transports_apart() -> None:
    assert starts_like_tls(b"\x16\x03\x01") and not starts_like_tls(b"\x00\x00\x01\x00{")
    assert not starts_like_tls(b"")
    # A plaintext server reads a ClientHello's record header as a huge length prefix.
    hello = TlsChannel(client_context(), server_side=False).data_to_send()
    (size,) = struct.unpack(">I", hello[:4])
    error = tls_at_plaintext(FrameTooLarge(size, DEFAULT_MAX_FRAME))
    assert error.code == "tls_unsupported" and error.fatal
    other = FrameTooLarge(2**31, DEFAULT_MAX_FRAME)
    assert tls_at_plaintext(other) is other


def test_sni_only_for_names() -> None:
    assert sni_name("chat.example.org") == "chat.example.org"
    assert sni_name("127.0.0.1") is None and sni_name("::1") is None


# --- certificates ---------------------------------------------------------------------------------


def test_validity_dates() -> None:
    day = datetime.timedelta(days=1)
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    info = CertificateInfo(b"\x00" * 32, now - day, now + day)
    check_validity(info, "s:1", now)
    with pytest.raises(BadServerCertificate, match="expired on 2030-01-02"):
        check_validity(info, "s:1", now + 2 * day)
    with pytest.raises(BadServerCertificate, match="not valid before .* clock"):
        check_validity(info, "s:1", now - 2 * day)


@pytest.mark.parametrize("der", [b"", b"\x30\x03\x02\x01\x00", b"not a certificate"])
def test_unreadable_certificates(der: bytes) -> None:
    with pytest.raises(BadServerCertificate, match="unreadable certificate"):
        inspect_certificate(der, "s:1")


# --- padding (docs/protocol.md section 2.2) --------------------------------------------------------


def test_buckets() -> None:
    assert [padded_size(n) for n in (1, 256, 257, 1000, 1024, 1025, 16384, 16385, 40000)] == [
        256, 256, 512, 1024, 1024, 2048, 16384, 32768, 49152,
    ]
    assert PAD_MIN == 256 and PAD_STEP == 16384


bodies = st.lists(
    st.dictionaries(st.sampled_from(["a", "b", "text"]), st.text(max_size=3000), max_size=3).map(
        lambda d: {"type": "ping", **d}
    ),
    min_size=1,
    max_size=6,
)


@given(frames=bodies)
def test_padding_keeps_the_frames_and_fills_the_bucket(frames: list[dict[str, str]]) -> None:
    write = b"".join(encode_frame(f) for f in frames)
    padded = pad_write(write)
    assert len(padded) == padded_size(len(write))
    assert FrameDecoder().feed(padded) == frames  # the strict decoder reads the padding as whitespace
    last = len(write) - len(encode_frame(frames[-1]))
    assert padded[:last] == write[:last]  # only the last frame changes


def test_padding_stops_at_the_largest_body_the_peer_takes() -> None:
    frame = encode_frame({"type": "ping", "x": "a" * 20_000})
    body = len(frame) - 4
    assert len(pad_last_frame(frame, 10_000, body + 100)) == len(frame) + 100
    assert pad_last_frame(frame, 10_000, body) == frame
    assert FrameDecoder(body + 100).feed(pad_write(frame, body + 100))[0]["x"] == "a" * 20_000


def test_padding_needs_whole_frames() -> None:
    frame = encode_frame({"type": "ping"})
    with pytest.raises(ValueError, match="whole frames"):
        pad_last_frame(frame[:-1], 10, 1000)
    assert pad_write(b"") == b""


def test_a_server_context_refuses_tls_12() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    old = TlsChannel(context, server_side=False)
    server = TlsChannel(fake_identity().context(), server_side=True)
    with pytest.raises(TlsFailed, match="unsupported protocol"):
        server.receive(old.data_to_send())
    assert server.data_to_send()[:1] == b"\x15"  # the alert it owes
