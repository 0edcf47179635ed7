"""Bounds on new names, and the pages of the directory (docs/protocol.md, "Registration and the directory").

Names are permanent, so a registration is the one thing a peer can make the
server keep forever. Each new name spends a token from three buckets, all or
none: one per source address (an IPv4 address, or an IPv6 /64: one host gets
a whole /64), one per key, and one for the whole server; and the server holds
at most ``max_users`` names. The buckets live in the store beside the names,
and each check-and-register is one transaction there (one SQLite
transaction, one Redis script), so the bounds hold summed over connections
and over the nodes that share a Redis. A returning name spends nothing.

``list`` reads one page of at most :data:`LIST_PAGE` names in name order,
after a cursor and within an optional prefix, from the store's index: its
cost and its answer's size do not grow with the directory.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

HOUR: Final = 3600.0
# A NAT-ed office registering together fits the burst; after it, one a minute.
DEFAULT_REGISTER_PER_ADDRESS: Final = 60
DEFAULT_REGISTER_PER_KEY: Final = 5  # one person, one key: a few names at most
DEFAULT_REGISTER_PER_SERVER: Final = 1000
DEFAULT_MAX_USERS: Final = 100_000
# LIST_PAGE names of at most 32 characters keep a `users` frame under this, whatever the
# directory holds and whatever the rid (docs/protocol.md section 4).
LIST_PAGE_BYTES: Final = 12 * 1024
# Above every character a name may hold ([a-z0-9_-]): `prefix + NAME_CEILING` bounds the names with that prefix.
NAME_CEILING: Final = "~"


@dataclass(frozen=True, slots=True)
class RegistrationLimits:
    """New names per hour (each also the burst) per address, per key and server-wide; and the most names."""

    per_address: int = DEFAULT_REGISTER_PER_ADDRESS
    per_key: int = DEFAULT_REGISTER_PER_KEY
    per_server: int = DEFAULT_REGISTER_PER_SERVER
    max_users: int = DEFAULT_MAX_USERS


@dataclass(frozen=True, slots=True)
class NewName:
    """Who asks for a new name: the address bucket (:func:`address_bucket`) and the key's fingerprint."""

    address: str
    fingerprint: str

    def buckets(self, limits: RegistrationLimits) -> list[tuple[str, str, int]]:
        """(bucket id, the bound's name for :class:`~securechat.errors.RegistrationRefused`, burst) of each rate."""
        return [
            (f"a:{self.address}", "address", limits.per_address),
            (f"k:{self.fingerprint}", "key", limits.per_key),
            ("all", "server", limits.per_server),
        ]


def address_bucket(ip: str) -> str:
    """The registration bucket of a peer address: the address itself (IPv4), or its /64 (IPv6)."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def refilled(tokens: float, stamp: float, now: float, burst: int) -> float:
    """A bucket's tokens at ``now``: ``burst`` an hour, up to ``burst`` (the Redis script does the same sum)."""
    return min(float(burst), tokens + max(0.0, now - stamp) * burst / HOUR)


def name_bounds(after: str, prefix: str) -> tuple[str, bool, str]:
    """The names a page may hold: above ``low`` (``low`` included when the flag says so), below ``high``.

    Names are ASCII and sort the same bytewise in SQLite and in Redis.
    """
    high = prefix + NAME_CEILING
    if after and after >= prefix:
        return after, False, high
    return prefix, True, high
