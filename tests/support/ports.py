"""Ports for test servers that must come back on the same port after a kill -9."""

from __future__ import annotations

import contextlib
import random
import socket
from pathlib import Path


def restartable_port() -> int:
    """A free port below the ephemeral range, for a server that must come back on the same port.

    After a kill -9 the port is free again; a port from the ephemeral range could then be
    taken as the local port of some outgoing connection (a reconnecting client's, even:
    a TCP self-connect) before the server restarts.
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1025, low // 2), low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return 0  # no luck: an ephemeral port after all
