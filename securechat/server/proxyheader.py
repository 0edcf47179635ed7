"""The PROXY protocol header a trusted load balancer puts before the TLS bytes (docs/protocol.md 2.3).

Sans-I/O: :func:`parse_proxy_header` takes the bytes read so far and answers
:data:`NEED_MORE`, a :class:`ProxyHeader` (the client's address, or None to keep
the balancer's, and the bytes after the header), or raises
:class:`~securechat.errors.BadProxyHeader`. It never asks for more than
:data:`MAX_HEADER` bytes: a header still incomplete at that length is an error.
Version 2 (HAProxy's ``send-proxy-v2``) and version 1 (one text line) are read;
a header is never part of the chat protocol and is read only from the networks
given to :func:`parse_networks` (``--proxy-protocol-from``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

from ..errors import BadProxyHeader

V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED: Final = 16  # signature, version and command, family, length
# The address block and some TLVs; HAProxy's own TLVs are far smaller. A v2 header may declare
# 65,535 bytes: past this one it is refused before its body is waited for.
MAX_V2_BODY: Final = 512
V1_PREFIX: Final = b"PROXY "
V1_MAX_LINE: Final = 107  # the spec's bound, CRLF included
MAX_HEADER: Final = V2_FIXED + MAX_V2_BODY

_LOCAL, _PROXY = 0x20, 0x21
_TCP4, _TCP6, _UNSPEC = 0x11, 0x21, 0x00
_ADDRESS_BYTES: Final = {_TCP4: 12, _TCP6: 36}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A complete header: ``source`` is the client's (host, port), or None (``LOCAL``, ``UNKNOWN``, ``AF_UNSPEC``)."""

    source: tuple[str, int] | None
    rest: bytes  # what followed the header: the start of the TLS stream


class NeedMore:
    """The bytes so far are a valid beginning of a header: read more."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_MORE"


NEED_MORE: Final = NeedMore()


def parse_networks(text: str) -> tuple[Network, ...]:
    """``CIDR[,CIDR...]`` as networks (empty text: none); ``ValueError`` names a bad one."""
    networks = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"--proxy-protocol-from: {item!r} is not an address or network (CIDR)") from None
    return tuple(networks)


def trusted(host: str, networks: tuple[Network, ...]) -> bool:
    """Is the TCP peer ``host`` inside one of ``networks`` (so it must send a header)?"""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a node listening on "::" sees an IPv4 balancer this way
    return any(address in net for net in networks)


def parse_proxy_header(data: bytes) -> ProxyHeader | NeedMore:
    """The header at the start of ``data``, or :data:`NEED_MORE`; :class:`BadProxyHeader` says what is wrong."""
    head = data[: len(V2_SIGNATURE)]
    if head == V2_SIGNATURE[: len(head)]:
        return _v2(data) if len(data) >= V2_FIXED else NEED_MORE
    head = data[: len(V1_PREFIX)]
    if head == V1_PREFIX[: len(head)]:
        return _v1(data)
    raise BadProxyHeader(f"no PROXY header (first bytes {data[:8].hex()})")


def _v2(data: bytes) -> ProxyHeader | NeedMore:
    command, family, length = data[12], data[13], int.from_bytes(data[14:16], "big")
    if command not in (_LOCAL, _PROXY):
        raise BadProxyHeader(f"v2 version and command byte {command:#04x}")
    if length > MAX_V2_BODY:
        raise BadProxyHeader(f"v2 header of {length} bytes, above {MAX_V2_BODY}")
    end = V2_FIXED + length
    if len(data) < end:
        return NEED_MORE
    rest = data[end:]
    if command == _LOCAL or family == _UNSPEC:  # a health check, or no address given: the balancer's stands
        return ProxyHeader(None, rest)
    need = _ADDRESS_BYTES.get(family)
    if need is None:
        raise BadProxyHeader(f"v2 address family and transport {family:#04x} (only TCP over IPv4 or IPv6)")
    if length < need:
        raise BadProxyHeader(f"v2 address block of {length} bytes for family {family:#04x}, below {need}")
    body = data[V2_FIXED:end]
    size = (need - 4) // 2
    host = str(ipaddress.ip_address(body[:size]))
    port = int.from_bytes(body[2 * size : 2 * size + 2], "big")
    return ProxyHeader((host, port), rest)


def _v1(data: bytes) -> ProxyHeader | NeedMore:
    end = data.find(b"\r\n", 0, V1_MAX_LINE)
    if end < 0:
        if len(data) >= V1_MAX_LINE:
            raise BadProxyHeader(f"v1 line longer than {V1_MAX_LINE} bytes")
        return NEED_MORE
    fields = data[:end].split(b" ")
    rest = data[end + 2 :]
    if fields[:2] == [b"PROXY", b"UNKNOWN"]:  # the spec: the receiver keeps the connection's own address
        return ProxyHeader(None, rest)
    if len(fields) != 6 or fields[1] not in (b"TCP4", b"TCP6"):
        raise BadProxyHeader("v1 line is not 'PROXY TCP4|TCP6 SRC DST SPORT DPORT'")
    version = 4 if fields[1] == b"TCP4" else 6
    source, _ = (_v1_address(raw, version) for raw in fields[2:4])
    sport, _ = (_v1_port(raw) for raw in fields[4:6])
    return ProxyHeader((source, sport), rest)


def _v1_address(raw: bytes, version: int) -> str:
    try:
        address = ipaddress.ip_address(raw.decode("ascii"))
    except ValueError:  # UnicodeDecodeError is one
        raise BadProxyHeader(f"v1 address {raw[:45]!r}") from None
    if address.version != version:
        raise BadProxyHeader(f"v1 address {address} is not IPv{version}")
    return str(address)


def _v1_port(raw: bytes) -> int:
    if not (raw.isdigit() and len(raw) <= 5 and int(raw) <= 65535) or (len(raw) > 1 and raw[:1] == b"0"):
        raise BadProxyHeader(f"v1 port {raw[:8]!r}")
    return int(raw)
