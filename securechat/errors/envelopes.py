"""Errors about keys and envelopes: a key v1 does not accept, an envelope a recipient rejects."""

from __future__ import annotations

from .base import SecurechatError


class BadKey(SecurechatError):  # keys and envelopes
    """A public key that protocol v1 does not accept."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return f"bad key: {self.detail}"


class EnvelopeRejected(SecurechatError):
    """An envelope failed one of the recipient's checks.

    ``reason`` is the short machine-readable name shown in ``rejected`` events.
    """

    reason: str = "rejected"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


class MalformedEnvelope(EnvelopeRejected):
    reason = "malformed"


class UnsupportedVersion(EnvelopeRejected):
    reason = "bad_version"


class WrongRecipient(EnvelopeRejected):
    reason = "bad_recipient"


class SenderMismatch(EnvelopeRejected):
    reason = "sender_mismatch"


class RoomMismatch(EnvelopeRejected):
    reason = "room_mismatch"


class UnknownState(EnvelopeRejected):
    reason = "unknown_state"


class NotAMember(EnvelopeRejected):
    reason = "not_member"


class MemberMismatch(EnvelopeRejected):
    reason = "member_mismatch"


class UnknownSender(EnvelopeRejected):
    reason = "unknown_sender"


class SenderKeyChanged(EnvelopeRejected):
    reason = "key_changed"


class BadSignature(EnvelopeRejected):
    reason = "bad_signature"


class UnwrapFailed(EnvelopeRejected):
    reason = "unwrap_failed"


class DecryptFailed(EnvelopeRejected):
    reason = "decrypt_failed"


class BadPlaintext(EnvelopeRejected):
    reason = "bad_plaintext"
