"""The PROXY header parser (securechat/server/proxyheader.py; docs/protocol.md 2.3), bytes in, no network."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securechat.errors import BadProxyHeader
from securechat.server.proxyheader import (
    MAX_HEADER,
    NEED_MORE,
    V1_MAX_LINE,
    V2_SIGNATURE,
    ProxyHeader,
    parse_networks,
    parse_proxy_header,
    trusted,
)

HELLO = b"\x16\x03\x01\x00\x05hello"  # the start of a TLS ClientHello, after the header
# docs/protocol.md 2.3's example: 127.0.0.2:40000 to 127.0.0.1:5000.
DOC_EXAMPLE = bytes.fromhex("0d0a0d0a000d0a515549540a 21 11 000c 7f000002 7f000001 9c40 1388")
V6 = V2_SIGNATURE + bytes([0x21, 0x21, 0, 36]) + bytes.fromhex("20010db8" + "00" * 11 + "07") + bytes(16) + b"\x00\x50\x13\x88"
LOCAL = V2_SIGNATURE + bytes([0x20, 0x00, 0, 0])


def v2(command: int = 0x21, family: int = 0x11, body: bytes = bytes(12)) -> bytes:
    return V2_SIGNATURE + bytes([command, family]) + len(body).to_bytes(2, "big") + body


def test_the_docs_v2_example_gives_the_clients_address_and_the_rest() -> None:
    assert len(DOC_EXAMPLE) == 28
    assert parse_proxy_header(DOC_EXAMPLE + HELLO) == ProxyHeader(("127.0.0.2", 40000), HELLO)


def test_v2_ipv6_and_tlvs_after_the_addresses() -> None:
    assert parse_proxy_header(V6 + HELLO) == ProxyHeader(("2001:db8::7", 80), HELLO)
    with_tlv = v2(body=bytes.fromhex("0a000009 7f000001 d431 1388") + b"\x04\x00\x01\x00")  # a NOOP TLV
    assert parse_proxy_header(with_tlv) == ProxyHeader(("10.0.0.9", 54321), b"")


def test_local_and_unspec_keep_the_balancers_address() -> None:
    assert parse_proxy_header(LOCAL + HELLO) == ProxyHeader(None, HELLO)
    assert parse_proxy_header(v2(family=0x00, body=b"") + HELLO) == ProxyHeader(None, HELLO)
    assert parse_proxy_header(v2(command=0x20, family=0x11) + HELLO) == ProxyHeader(None, HELLO)


def test_v1_lines() -> None:
    assert parse_proxy_header(b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 5000\r\n" + HELLO) == ProxyHeader(
        ("127.0.0.2", 40000), HELLO
    )
    assert parse_proxy_header(b"PROXY TCP6 2001:db8::7 ::1 80 5000\r\n") == ProxyHeader(("2001:db8::7", 80), b"")
    assert parse_proxy_header(b"PROXY UNKNOWN\r\n" + HELLO) == ProxyHeader(None, HELLO)


@pytest.mark.parametrize("whole", [DOC_EXAMPLE, V6, LOCAL, b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 5000\r\n"])
def test_every_truncation_of_a_header_asks_for_more(whole: bytes) -> None:
    for end in range(len(whole)):
        assert parse_proxy_header(whole[:end]) is NEED_MORE, end


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (HELLO, "no PROXY header"),
        (b"\r\n\r\n\x00\r\nQUIX\n" + bytes(4), "no PROXY header"),  # a garbled signature
        (b"GET / HTTP/1.1\r\n", "no PROXY header"),
        (v2(command=0x22), "version and command"),
        (v2(command=0x11), "version and command"),
        (V2_SIGNATURE + b"\x21\x11\x02\x01", "above 512"),  # 513 declared: refused before the body
        (V2_SIGNATURE + b"\x21\x11\xff\xff", "above 512"),
        (v2(family=0x31, body=bytes(216)), "family"),  # AF_UNIX
        (v2(family=0x12), "family"),  # UDP
        (v2(family=0x21, body=bytes(12)), "below 36"),
        (v2(family=0x11, body=bytes(8)), "below 12"),
        (b"PROXY " + b"A" * (V1_MAX_LINE - 6), "longer than 107"),
        (b"PROXY TCP4 127.0.0.2 127.0.0.1 40000\r\n", "is not"),
        (b"PROXY TCP5 127.0.0.2 127.0.0.1 40000 5000\r\n", "is not"),
        (b"PROXY TCP4 ::1 127.0.0.1 40000 5000\r\n", "is not IPv4"),
        (b"PROXY TCP6 127.0.0.2 ::1 40000 5000\r\n", "is not IPv6"),
        (b"PROXY TCP4 127.0.0.2 127.0.0.1 65536 5000\r\n", "port"),
        (b"PROXY TCP4 127.0.0.2 127.0.0.1 040000 5000\r\n", "port"),
        (b"PROXY TCP4 127.0.0.2 127.0.0.1 -1 5000\r\n", "port"),
        (b"PROXY TCP4 127.0.0.\xff 127.0.0.1 1 5000\r\n", "address"),
        (b"PROXY TCP4 127.0.0.2  127.0.0.1 1 5000\r\n", "is not"),
    ],
)
def test_refusals_say_why(data: bytes, why: str) -> None:
    with pytest.raises(BadProxyHeader, match=why):
        parse_proxy_header(data)


def test_networks_and_trust() -> None:
    networks = parse_networks(" 10.0.0.0/8, 127.0.0.1 ,fd00::/8,")
    assert [str(n) for n in networks] == ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8"]
    assert trusted("10.1.2.3", networks) and trusted("127.0.0.1", networks) and trusted("fd00::1", networks)
    assert not trusted("127.0.0.2", networks) and not trusted("::1", networks) and not trusted("?", networks)
    assert trusted("::ffff:10.0.0.10", networks), "an IPv4 balancer seen by a node listening on '::'"
    assert not trusted("::ffff:11.0.0.10", networks)
    assert parse_networks("") == ()
    with pytest.raises(ValueError, match="'10.0.0.0/33' is not"):
        parse_networks("10.0.0.0/33")


def _mutated(base: bytes) -> st.SearchStrategy[bytes]:
    return st.tuples(st.integers(0, len(base)), st.binary(max_size=40), st.binary(max_size=600)).map(
        lambda t: base[: t[0]] + t[1] + t[2]
    )


_V2_ANY_LENGTH = st.tuples(st.sampled_from([0x20, 0x21]), st.sampled_from([0x00, 0x11, 0x21]), st.integers(0, 800),
                           st.binary(min_size=500, max_size=900)).map(
    lambda t: V2_SIGNATURE + bytes(t[:2]) + t[2].to_bytes(2, "big") + t[3]
)  # fmt: skip
_V1_NO_END = st.binary(min_size=90, max_size=200).map(lambda b: b"PROXY " + b.replace(b"\r", b"."))


@given(st.one_of(st.binary(max_size=700), _mutated(DOC_EXAMPLE), _mutated(V6), _mutated(b"PROXY TCP4 1.2.3.4 "),
                 _V2_ANY_LENGTH, _V1_NO_END))  # fmt: skip
def test_any_bytes_give_a_header_more_or_its_own_error_within_the_bound(data: bytes) -> None:
    try:
        got = parse_proxy_header(data)
    except BadProxyHeader:
        return
    if got is NEED_MORE:
        bound = V1_MAX_LINE if data.startswith(b"P") else MAX_HEADER
        assert len(data) < bound, "asked for more past the bound"
        return
    assert isinstance(got, ProxyHeader)
    consumed = len(data) - len(got.rest)
    assert 0 < consumed <= MAX_HEADER and data[consumed:] == got.rest
    if got.source is not None:
        assert 0 <= got.source[1] <= 65535
