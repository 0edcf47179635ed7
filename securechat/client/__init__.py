"""The client library: a session with no user interface, its policies and its storage.

Modules, from the wire up:

- ``connection``: :class:`ClientConnection`, the client's side of the protocol, sans I/O
- ``link``: one TCP connection (over TLS: a ``TlsChannel``) driving a ``ClientConnection``;
  ``servers``: the known servers (pinned TLS identities) and the rule that checks them
- ``session``: :class:`ClientSession`, the asyncio shell (connect, reconnect, ping); ``finish``: its ending;
  ``requests``: answers matched to requests by ``rid``
- ``inbox`` / ``outbox``: what happens to incoming and outgoing messages; ``parts``: what
  the session shares with them
- ``contacts``: trust on first use over the pinned keys
- ``rooms``: the rooms' verified chains, changes and sync; ``roomchains``: their storage
- ``home``: identity files and their permissions; ``state`` / ``history``: the state database
"""

from __future__ import annotations

from .connection import ClientConnection
from .ending import finish_session
from .session import ClientSession

__all__ = ["ClientConnection", "ClientSession", "finish_session"]
