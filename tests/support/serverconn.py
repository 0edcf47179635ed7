"""A server connection driven with byte strings and no network, as a test drives it: a clock that stands
still, a logged-in session, and the frames the connection queued, decoded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from securechat.crypto import public_key_pem, sign_auth
from securechat.encoding import b64decode, b64encode
from securechat.protocol import FrameDecoder
from securechat.server import ServerConfig
from securechat.server.connection import ServerConnection
from securechat.server.events import HANDLED, Login
from tests.support.rawclient import identity_key, json_frame

SERVER_ID = bytes(range(16, 32))


class Clock:
    """A clock that moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def connection(clock: Clock | None = None, **options: Any) -> ServerConnection:
    config = ServerConfig(db_path=Path("unused.db"), **options)
    return ServerConnection(config, SERVER_ID, clock or Clock(), peer="test")


def sent(conn: ServerConnection) -> list[dict[str, Any]]:
    """The frames the connection queued since the last call, decoded."""
    return FrameDecoder(1 << 20).feed(conn.data_to_send())


def hello_frame(name: str = "alice") -> bytes:
    pubkey = public_key_pem(identity_key(name).public_key())
    return json_frame({"type": "hello", "version": 1, "name": name, "pubkey": pubkey, "rid": "h"})


def auth_frame(conn: ServerConnection, name: str = "alice") -> bytes:
    (challenge,) = sent(conn)
    nonce = b64decode(challenge["nonce"])
    signature = sign_auth(identity_key(name), b64decode(challenge["server_id"]), name, nonce)
    return json_frame({"type": "auth", "signature": b64encode(signature), "rid": "a"})


def logged_in(name: str = "alice", **options: Any) -> ServerConnection:
    """A connection through hello, auth and welcome (its queued frames taken)."""
    conn = connection(**options)
    conn.receive_data(hello_frame(name))
    assert conn.next_event() is HANDLED
    conn.receive_data(auth_frame(conn, name))
    assert isinstance(conn.next_event(), Login)
    conn.accept_login(new=True)
    conn.data_to_send()
    return conn
