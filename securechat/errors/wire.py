"""Errors of the wire: the peer broke the protocol, or the server said no (docs/protocol.md section 9)."""

from __future__ import annotations

from .base import SecurechatError


class ProtocolError(SecurechatError):
    """The peer broke the protocol: ``code`` (docs/protocol.md section 9) and ``fatal`` (the connection closes)."""

    code: str = "bad_request"
    fatal: bool = False

    def __init__(self, detail: str, *, code: str | None = None, fatal: bool | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if fatal is not None:
            self.fatal = fatal

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


class FrameError(ProtocolError):
    """A framing error; always fatal."""

    code = "bad_frame"
    fatal = True


class FrameTooLarge(FrameError):
    """The length prefix is 0 or larger than ``max_frame``."""

    code = "frame_too_large"

    def __init__(self, size: int, max_frame: int) -> None:
        self.size = size
        self.max_frame = max_frame
        if size == 0:
            super().__init__("frame length 0 is not allowed")
            self.code = "bad_frame"
        else:
            super().__init__(f"frame of {size} bytes exceeds the limit of {max_frame} bytes")


class BadFrame(FrameError):
    """The body is not UTF-8 JSON with an object top level and a string ``type``."""

    code = "bad_frame"


class BadRequest(ProtocolError):
    """A frame whose fields do not match its type's schema (non-fatal by default)."""

    code = "bad_request"


class RoomRefused(ProtocolError):
    """A room change or request that the rules of docs/protocol.md section 11 refuse.

    ``code`` is the wire error code (section 11.8: ``not_allowed``, ``not_member``,
    ``room_full``, ``bad_entry``, ...); the server answers with it, a client shows it.
    """

    code = "bad_entry"


class RegistrationRefused(SecurechatError):
    """Server side: a new name was refused by a registration bound (docs/protocol.md section 9).

    ``bound``: ``address``, ``key`` or ``server`` (a rate per hour), or ``full`` (``--max-users``).
    """

    def __init__(self, bound: str) -> None:
        super().__init__(bound)
        self.bound = bound

    def __str__(self) -> str:
        return {
            "address": "too many new names from your address; try again later",
            "key": "too many new names with this key; try again later",
            "server": "the server registers no more new names right now; try again later",
        }.get(self.bound, "the server registers no new names: it has as many as it is set to hold")


class QueueFull(SecurechatError):
    """The store refuses a message: a cap on the recipient's queue, the sender's share of it, or the whole store.

    ``cap`` says which (``queue``, ``sender_share`` or ``store``), for the
    server's log only: the sender's answer says nothing about the recipient's
    queue (issue 13, item 8), so it is the same text whatever the cap.
    """

    def __init__(self, recipient: str, cap: str) -> None:
        super().__init__(recipient)
        self.recipient = recipient
        self.cap = cap

    def __str__(self) -> str:
        return f"'{self.recipient}' cannot take more messages from you now; try again later"


class ServerErrorReply(SecurechatError):
    """The server answered a request with an ``error`` frame."""

    def __init__(self, code: str, message: str, *, fatal: bool = False, rid: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal
        self.rid = rid

    def __str__(self) -> str:
        return f"server error {self.code}: {self.message}"
