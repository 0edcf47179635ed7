"""The incoming policy: what the client does with a ``message`` frame (docs/protocol.md section 7).

In order, for one message at a time:

1. a ``(from, id)`` already accepted is a replay or a redelivery: confirm it with
   ``received`` again, show nothing, spend no RSA operation on it;
2. checks 0-3, which need no key (:func:`precheck_envelope`);
3. the sender's pinned key; on first contact it is looked up and pinned
   (:class:`~securechat.client.contacts.Contacts`); a pending key change rejects;
4. :func:`securechat.crypto.open_parsed` (checks 5-8); a bad signature from a pinned
   contact asks the server once more, and a different key there means ``key_changed``;
5. accepted: the ``(from, id)`` and the history row in one transaction, then
   :class:`~securechat.events.MessageReceived`, then ``received``.

A room message (``message`` with a ``room``) goes through the checks of
docs/protocol.md 11.7 instead: the state it names must be one the session holds
verified (fetching the log first if it is ahead), its sender and we members of
it, its keys for exactly those members.

A rejected envelope is confirmed with ``received`` too (and shown as
:class:`~securechat.events.MessageRejected`): a server must not redeliver an
envelope we will never accept, for ever. Only a rejection for what the envelope
is counts: a first-contact lookup that fails for now (refused ``rate_limited``,
unanswered, the connection gone) is asked again after a capped pause, and the
message is not confirmed meanwhile (docs/security.md, "What a client confirms").
A bad signature from a pinned sender asks the server whether their key changed
at most once per :data:`KEY_CHECK_INTERVAL` per sender, so a flood of them cannot
spend the lookups a first contact needs. Messages wait for the inbox in an
:class:`IncomingQueue` bounded in count and bytes; one that does not fit is not
confirmed, so the server redelivers it after the next reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from cryptography.hazmat.primitives.asymmetric import rsa

from .. import crypto
from ..envelope import ParsedEnvelope, check_addressing, parse_envelope
from ..errors import (
    BadSignature,
    EnvelopeRejected,
    SecurechatError,
    SenderKeyChanged,
    ServerErrorReply,
    SessionClosed,
    UnknownSender,
    UnknownState,
)
from ..events import ErrorReported, MessageReceived, MessageRejected
from ..records import HistoryEntry
from ..rooms.envelope import check_room_addressing, check_room_members, parse_room_envelope
from ..rooms.log import RoomState
from ..rooms.sealing import open_room_parsed
from .connection import MessageFrame
from .link import Link
from .parts import SessionParts, backoff, lookup_can_retry
from .state import Pin

log = logging.getLogger(__name__)

MAX_PENDING_INCOMING: Final = 1000
# Envelope bytes waiting for the inbox: a server flooding 1 MiB envelopes while the
# inbox waits on a lookup would otherwise hold up to MAX_PENDING_INCOMING MiB.
MAX_PENDING_INCOMING_BYTES: Final = 16 * 2**20
# How often a bad signature from one pinned sender may ask the server whether their key changed.
KEY_CHECK_INTERVAL: Final = 60.0
# Senders remembered for that; past it the memory starts again (a flood of names cannot grow it).
MAX_KEY_CHECKS: Final = 1024


def precheck_envelope(envelope: object, recipient: str, frame_sender: str | None = None) -> ParsedEnvelope:
    """Checks 0 to 3 of docs/protocol.md section 7, which need no sender key.

    Raises the same :class:`~securechat.errors.EnvelopeRejected` subclasses as
    :func:`securechat.crypto.open_envelope`, so a key is fetched only for an
    envelope that could be accepted.
    """
    parsed = parse_envelope(envelope)
    check_addressing(parsed, recipient, frame_sender)
    return parsed


def _envelope_size(envelope: dict[str, Any]) -> int:
    """About the memory a waiting message holds: its envelope's string fields."""
    return sum(len(value) for value in envelope.values() if isinstance(value, str))


class IncomingQueue:
    """Messages of one connection waiting for the inbox, bounded in count and in bytes."""

    def __init__(
        self, max_count: int = MAX_PENDING_INCOMING, max_bytes: int = MAX_PENDING_INCOMING_BYTES
    ) -> None:
        self._queue: asyncio.Queue[MessageFrame] = asyncio.Queue(max_count)
        self._max_count = max_count
        self._max_bytes = max_bytes
        self.bytes = 0

    def offer(self, message: MessageFrame) -> bool:
        """Queue ``message``; False (and not confirmed, so redelivered later) if it does not fit."""
        size = _envelope_size(message.envelope)
        if self.bytes + size > self._max_bytes and not self._queue.empty():
            log.warning("dropping an incoming message: %d bytes are waiting", self.bytes)
            return False
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            log.warning("dropping an incoming message: %d are waiting", self._max_count)
            return False
        self.bytes += size
        return True

    async def get(self) -> MessageFrame:
        message = await self._queue.get()
        self.bytes -= _envelope_size(message.envelope)
        return message


class RoomStates(Protocol):
    """What the inbox asks of the session's rooms: the verified state a room message names."""

    async def state_for(self, room: str, seq: int, head: bytes) -> RoomState | None: ...


class Inbox:
    """Opens, checks, stores and confirms incoming messages, one at a time and in order."""

    def __init__(
        self, parts: SessionParts, rooms: RoomStates, *, retry_initial: float, retry_max: float, rng: random.Random
    ) -> None:
        self._store = parts.store
        self._identity = parts.identity
        self._contacts = parts.contacts
        self._emit = parts.emit
        self._lookup = parts.lookup
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._rng = rng
        self._key_checked: dict[str, float] = {}  # sender -> when a bad signature last asked
        self._rooms = rooms

    async def serve(self, link: Link, queue: IncomingQueue) -> None:
        """Handle ``queue`` until cancelled with the connection.

        A task of its own, not the read loop: opening may need a lookup round
        trip, which the read loop answers.
        """
        while True:
            message = await queue.get()
            try:
                await self._on_message(link, message)
            except SessionClosed:
                continue  # unconfirmed: the server redelivers it after a reconnect
            except Exception:
                log.exception("failed to handle an incoming message")
                self._emit(ErrorReported("internal", "could not handle an incoming message"))

    async def _on_message(self, link: Link, message: MessageFrame) -> None:
        sender, envelope, msg_id, room = message.sender, message.envelope, message.msg_id, message.room
        received = {"type": "received", "id": msg_id, "from": sender}
        if (sender, msg_id) in self._store.accepted:
            link.send(received)  # a replay or a redelivery (our earlier `received` was lost)
            return
        payload = crypto.encode_payload(envelope)
        gone: tuple[str, ...] = ()
        try:
            if room is None:
                opened = await self._open(sender, envelope)
            else:
                opened, gone = await self._open_room(message)
        except EnvelopeRejected as exc:
            self._emit(MessageRejected(sender, msg_id, exc.reason, exc.detail, payload, room))
            link.send(received)
            return
        # One transaction: accepted without its history row would lose the message on a crash.
        entry = HistoryEntry(
            room or sender, "in", msg_id, opened.ts, opened.text, server_ts=message.server_ts,
            sender=sender if room else "",
        )
        self._store.history.add(entry, accepted=True)
        self._emit(MessageReceived(sender, msg_id, opened.ts, opened.text, payload, message.server_ts, room, gone))
        link.send(received)

    async def _open(self, sender: str, envelope: dict[str, Any]) -> crypto.OpenedMessage:
        """The checks of docs/protocol.md section 7 in order, fetching the key at check 4."""
        parsed = precheck_envelope(envelope, self._identity.name, sender)  # checks 0-3 need no key
        return await self._verified(sender, lambda key: crypto.open_parsed(self._identity.private_key, key, parsed))

    async def _open_room(self, message: MessageFrame) -> tuple[crypto.OpenedMessage, tuple[str, ...]]:
        """The checks of docs/protocol.md section 11.7 in order; also who could read it and is no longer in."""
        me = self._identity.name
        env = parse_room_envelope(message.envelope)
        check_room_addressing(env, message.room, message.sender)  # checks 0-3
        state = await self._rooms.state_for(env.room, env.seq, env.head)  # check 4, fetching the log if ahead
        if state is None:
            held = self._store.rooms.state(env.room)
            ours = f"we hold seq {held.seq}" if held is not None else "we hold no such room"
            raise UnknownState(
                f"{env.sender} sent it under seq {env.seq} of {env.room}, which the server does not show us "
                f"({ours}): a change may be withheld from us"
            )
        check_room_members(env, state.members, me)  # checks 5-7
        key = self._identity.private_key
        opened = await self._verified(env.sender, lambda pinned: open_room_parsed(key, me, pinned, env))
        current = self._store.rooms.state(env.room)
        behind = current is not None and current.seq > env.seq
        return opened, tuple(sorted(set(env.keys) - current.members)) if behind and current else ()

    async def _verified(
        self, sender: str, open_with: Callable[[rsa.RSAPublicKey], crypto.OpenedMessage]
    ) -> crypto.OpenedMessage:
        """The sender's pinned key (looked up on first contact), then ``open_with`` it (section 7, checks 4-8)."""
        pin = self._contacts.pinned(sender)
        first_contact = pin is None
        if pin is None:
            pin = await self._first_contact(sender)
        if pin.trust == "changed":
            self._contacts.alert(pin)
            raise SenderKeyChanged(f"the key of '{sender}' changed; trust or verify the new key first")
        try:
            return open_with(pin.public_key())
        except BadSignature:
            # Maybe they have a new key: ask the server and say so rather than "bad signature".
            if not first_contact and await self._changed_on_server(sender):
                raise SenderKeyChanged(
                    f"the message is not signed by the pinned key of '{sender}', and the server now "
                    "presents a different key"
                ) from None
            raise

    async def _first_contact(self, sender: str) -> Pin:
        """Look the sender up; a failure that may pass is retried here, never turned into a rejection."""
        attempt = 0
        while True:
            try:
                await self._lookup(sender)
            except SessionClosed as exc:
                if not lookup_can_retry(exc):
                    raise  # not connected: unconfirmed, the server redelivers it after a reconnect
            except ServerErrorReply as exc:
                if not lookup_can_retry(exc):
                    raise UnknownSender(f"the server has no key for '{sender}' ({exc.code})") from None
            except SecurechatError as exc:
                raise UnknownSender(f"the server gave no usable key for '{sender}' ({exc})") from None
            else:
                break
            log.info("the key of %r could not be looked up yet: asking again", sender)
            await asyncio.sleep(backoff(attempt, self._retry_initial, self._retry_max, self._rng))
            attempt += 1
        pin = self._contacts.pinned(sender)
        if pin is None:
            raise UnknownSender(f"no key for '{sender}'")
        return pin

    async def _changed_on_server(self, name: str) -> bool:
        now = time.monotonic()
        last = self._key_checked.get(name)
        if last is not None and now - last < KEY_CHECK_INTERVAL:
            return False  # asked lately: the signature is simply bad
        if len(self._key_checked) >= MAX_KEY_CHECKS:
            self._key_checked.clear()
        self._key_checked[name] = now
        try:
            info = await self._lookup(name)
        except SessionClosed:
            raise
        except SecurechatError:
            return False
        return info.trust == "changed"
