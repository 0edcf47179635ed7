"""The securechat relay server."""

from .app import ChatServer, ack_frame
from .config import ServerConfig

__all__ = ["ChatServer", "ServerConfig", "ack_frame"]
