"""ServerConfig: every server option, with the documented defaults.

No command-line library here: the CLI (:mod:`securechat.server_cli`) gathers
options, fills ``db_path`` (a per-user default there) and builds this object.
With ``redis_url`` set, ``db_path`` is not used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..protocol import DEFAULT_MAX_FRAME
from ..rooms.log import MAX_ROOM_MEMBERS
from .proxyheader import parse_networks
from .registration import (
    DEFAULT_MAX_USERS,
    DEFAULT_REGISTER_PER_ADDRESS,
    DEFAULT_REGISTER_PER_KEY,
    DEFAULT_REGISTER_PER_SERVER,
    RegistrationLimits,
)
from .roomstore import DEFAULT_MAX_ROOMS
from .store import (
    DEFAULT_MAX_HAND_OUTS,
    DEFAULT_QUEUE_BYTES,
    DEFAULT_QUEUE_LIMIT,
    DEFAULT_QUEUE_TTL,
    DEFAULT_SENDER_SHARE,
    DEFAULT_STORE_BYTES,
)

REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://")

@dataclass
class ServerConfig:
    """Every server option; the defaults are the documented ones. ``db_path`` has none: the caller picks it."""

    host: str = "127.0.0.1"
    port: int = 5000
    db_path: Path = field(kw_only=True)
    max_frame: int = DEFAULT_MAX_FRAME
    handshake_timeout: float = 10.0
    idle_timeout: float = 120.0
    rate: float = 200.0
    burst: int = 400
    max_connections: int = 10_000
    # One address must not be able to take every slot; NAT-ed offices still fit.
    max_per_ip: int = 256
    lookup_rate: float = 20.0
    # New names (docs/protocol.md, "Registration and the directory"): per hour, each also its burst.
    register_per_ip: int = DEFAULT_REGISTER_PER_ADDRESS
    register_per_key: int = DEFAULT_REGISTER_PER_KEY
    register_rate: int = DEFAULT_REGISTER_PER_SERVER
    max_users: int = DEFAULT_MAX_USERS
    queue_limit: int = DEFAULT_QUEUE_LIMIT
    queue_bytes: int = DEFAULT_QUEUE_BYTES
    queue_ttl: float = DEFAULT_QUEUE_TTL
    # One sender fills at most 1/sender_share of a recipient's queue; every queue together at most max_store_bytes.
    sender_share: int = DEFAULT_SENDER_SHARE
    max_store_bytes: int = DEFAULT_STORE_BYTES
    # Failed hand-outs after which a stored message is set aside and its sender told (issue 13 item 1).
    max_hand_outs: int = DEFAULT_MAX_HAND_OUTS
    max_outgoing_buffer: int = 4 * 2**20
    # Several nodes: all shared state in Redis (docs/deployment.md); None: one node on db_path.
    redis_url: str | None = None
    redis_prefix: str = "sc:"  # key and channel names start with this (one Redis, several deployments)
    # A stored message is acked `queued` only once this many replicas have it (WAIT; server/replicas.py).
    redis_replicas: int = 0
    # The transport (docs/protocol.md sections 2.1 and 2.2): TLS 1.3 unless plaintext is asked for;
    # without files the identity is made beside the database (server/identity.py).
    tls: bool = True
    tls_cert: Path | None = None
    tls_key: Path | None = None
    padding: bool = True
    # Balancers whose connections begin with a PROXY header (docs/protocol.md 2.3): CIDR[,CIDR...]; "" reads none.
    proxy_protocol_from: str = ""
    agent_port: int = 0  # the load balancer's agent port (agent.py); 0: none
    # Several nodes: cut off from Redis this long (its own heartbeat not heard back), a node ends its sessions
    # `unavailable` so that their clients move to another node (cluster.py); 0: never.
    shed_after: float = 15.0
    # Rooms (docs/protocol.md 11.8): the member cap may be lowered, never raised past the protocol's.
    max_room_members: int = MAX_ROOM_MEMBERS
    max_rooms: int = DEFAULT_MAX_ROOMS
    # Unconfirmed messages one session may hold (one message always): the rest waits in the store.
    window: int = 4096
    window_bytes: int = 2 * 2**20
    # Frames held in memory for all sessions together (messages forwarded and not yet confirmed).
    max_unconfirmed_bytes: int = 256 * 2**20
    # Several nodes: a message to an online recipient goes by pub/sub alone (server/livepath.py), not through its queue.
    live_path: bool = True

    @property
    def registration(self) -> RegistrationLimits:
        """The registration bounds, as the store applies them."""
        return RegistrationLimits(self.register_per_ip, self.register_per_key, self.register_rate, self.max_users)

    @property
    def deliverable_frame(self) -> int:
        """The largest frame body the server writes: its own limit, and never more than every v1 client reads."""
        return min(self.max_frame, DEFAULT_MAX_FRAME)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first option with an impossible value."""
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if not 0 <= self.agent_port <= 65535 or (self.agent_port and self.agent_port == self.port):
            raise ValueError(f"agent port must be 0 (none) or a port other than the server's, got {self.agent_port}")
        positive = {
            "max_frame": self.max_frame,
            "handshake_timeout": self.handshake_timeout,
            "idle_timeout": self.idle_timeout,
            "rate": self.rate,
            "burst": self.burst,
            "max_connections": self.max_connections,
            "max_per_ip": self.max_per_ip,
            "lookup_rate": self.lookup_rate,
            "register_per_ip": self.register_per_ip,
            "register_per_key": self.register_per_key,
            "register_rate": self.register_rate,
            "max_users": self.max_users,
            "queue_limit": self.queue_limit,
            "queue_bytes": self.queue_bytes,
            "queue_ttl": self.queue_ttl,
            "sender_share": self.sender_share,
            "max_store_bytes": self.max_store_bytes,
            "max_hand_outs": self.max_hand_outs,
            "max_outgoing_buffer": self.max_outgoing_buffer,
            "max_room_members": self.max_room_members,
            "max_rooms": self.max_rooms,
            "window": self.window,
            "window_bytes": self.window_bytes,
            "max_unconfirmed_bytes": self.max_unconfirmed_bytes,
        }
        for key, value in positive.items():
            if not value > 0:
                raise ValueError(f"{key} must be positive, got {value}")
        if self.redis_url is not None and not self.redis_url.startswith(REDIS_SCHEMES):
            raise ValueError(f"the Redis URL must start with {', '.join(REDIS_SCHEMES)}, got {self.redis_url!r}")
        if not 0 <= self.shed_after < float("inf"):
            raise ValueError(f"shed_after must be 0 (never) or a number of seconds, got {self.shed_after}")
        if self.redis_replicas < 0:
            raise ValueError(f"redis_replicas must be 0 or more, got {self.redis_replicas}")
        if self.redis_replicas and self.redis_url is None:
            raise ValueError("--redis-replicas needs --redis: it counts the replicas of the Redis primary")
        if self.max_room_members > MAX_ROOM_MEMBERS:
            raise ValueError(f"max_room_members may lower the protocol's {MAX_ROOM_MEMBERS}, not raise it")
        if self.max_frame >= 2**32:
            raise ValueError("max_frame must fit the 32-bit length prefix")
        parse_networks(self.proxy_protocol_from)  # ValueError names a bad network
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both --tls-cert and --tls-key, or neither")
