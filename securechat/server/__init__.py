"""The securechat relay server: ``ChatServer`` runs it, ``ServerConfig`` holds its options.

A sans-I/O connection per client (:mod:`.connection`) inside an asyncio shell
(:mod:`.transport`); admission, directory, routing and presence beside it; the
store behind an interface (:mod:`.store`, :mod:`.sqlite`); :mod:`.app` wires them.
"""

from .app import ChatServer
from .config import ServerConfig

__all__ = ["ChatServer", "ServerConfig"]
