"""The securechat relay server (docs/architecture-server.md has the module map).

``ChatServer`` runs it, ``ServerConfig`` holds its options.
"""

from .app import ChatServer
from .config import ServerConfig
from .routing import ack_frame

__all__ = ["ChatServer", "ServerConfig", "ack_frame"]
