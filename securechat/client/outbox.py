"""The outgoing policy: seal, keep until acknowledged, resend, retry (docs/protocol.md section 4, "Messages").

- :meth:`Outbox.send` seals a message for the recipient's pinned key (looked up and pinned on the first
  message to them), stores it in the outbox and the history in ``sending``, and writes it when connected.
  ``send`` frames carry ``rid`` = the envelope id, so a server error about a send names the message.
- After every ``welcome`` the whole outbox is resent, in order, with the same ids (a resend is the same
  envelope, byte for byte).
- ``ack`` ``queued`` and ``delivered`` both remove the outbox entry; a later ``delivered`` still updates the
  history status, which never goes back to ``queued``.
- Errors about a send: :data:`UNDELIVERABLE_CODES` drop it from the outbox (history status ``failed``);
  :data:`RETRY_CODES` resend it on the same connection after a capped, jittered pause; anything left is
  resent after any reconnect; ``internal``: all, in order.
- A message to a new contact whose first lookup cannot finish for now (the connection goes while it is in
  flight, or the server refuses it for the moment) is kept, not failed (:mod:`securechat.client.awaiting`):
  after the next ``welcome``, and after a capped pause while connected, the key is looked up, and the
  message sealed with its id and time and sent. A room message waits the same way for a member's first
  lookup, then is sealed for the members held then.
- A room message (docs/protocol.md 11.5, 11.7) is sealed for the members of the room as verified here;
  ``room_sent`` names the members it was routed to, and it stays in the outbox until each of them is acked
  (``queued`` or ``delivered``): the history shows ``delivered 3/5``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from .. import crypto
from ..clock import now_ms
from ..envelope import MAX_TS
from ..errors import BadRequest, KeyChanged, MessageTooLong, RoomRefused, SecurechatError, SessionClosed
from ..events import Acked, ErrorReported, MessageSent
from ..names import is_room
from ..protocol import HEADER_SIZE, encode_frame, message_frame
from ..records import HistoryEntry, room_ack_status
from ..rooms.sealing import seal_room
from .awaiting import Awaiting
from .connection import AckFrame
from .link import Link
from .parts import SessionParts, backoff, lookup_can_retry
from .pending import OutboxEntry
from .state import Pin

log = logging.getLogger(__name__)

# Send failures after which the message can never be delivered as sealed.
UNDELIVERABLE_CODES: Final = frozenset(
    {"unknown_user", "bad_request", "invalid_name", "message_too_large", "unknown_room", "not_member", "stale_state"}
)
RETRY_CODES: Final = frozenset({"rate_limited", "queue_full", "internal"})  # retried on this connection after a pause
RETRY_INITIAL: Final = 1.0


def _send_frame(to: str, envelope: dict[str, Any]) -> dict[str, Any]:
    if is_room(to):
        return {"type": "room_send", "room": to, "envelope": envelope, "rid": envelope["id"]}
    return {"type": "send", "to": to, "envelope": envelope, "rid": envelope["id"]}


def _largest_frame(sender: str, to: str, envelope: dict[str, Any]) -> int:
    """The larger body of our ``send`` and of the ``message`` the server makes of it (at its latest time)."""
    send = len(encode_frame(_send_frame(to, envelope)))
    message = len(message_frame(sender, MAX_TS - 1, envelope, to if is_room(to) else None))
    return max(send, message) - HEADER_SIZE


@dataclass
class _RoomProgress:
    """A room message's members (from ``room_sent``) and what each acked so far."""

    members: tuple[str, ...] | None = None
    statuses: dict[str, str] = field(default_factory=dict)
    alone: bool = False  # routed to nobody: we are the room's only member

    def delivered(self) -> int:
        return sum(1 for status in self.statuses.values() if status == "delivered")


class Outbox:
    """Own messages from sealing to their ``ack``."""

    def __init__(self, parts: SessionParts, *, max_frame: int, retry_max: float, rng: random.Random) -> None:
        self._parts = parts
        self._store = parts.store
        self._contacts = parts.contacts
        self._emit = parts.emit
        self._max_frame = max_frame
        self._retry_max = retry_max
        self._rng = rng
        self._link: Link | None = None  # the connection sends go to, once welcomed
        self._shrunk = asyncio.Event()
        self._retry_attempts: dict[str, int] = {}
        self._retries: set[asyncio.Task[None]] = set()
        self._held: Link | None = None  # the link whose sends wait for a resend of the outbox
        self._key_attempts = 0  # refused lookups in a row for messages awaiting a key
        self._later: asyncio.Task[None] | None = None  # the next pass over them, once planned
        self._sealing = asyncio.Lock()
        self._rooms: dict[str, _RoomProgress] = {}  # room messages not yet delivered to every member

    def __len__(self) -> int:
        return len(self._store.outbox) + len(self._store.awaiting)

    # --- the connection ----------------------------------------------------------------

    def attach(self, link: Link) -> None:
        """Welcomed on ``link``: resend everything not acknowledged yet, oldest first."""
        self._link, self._held = link, None
        self._resend_all(link)
        self._report_set_aside()
        if len(self._store.awaiting):
            self._spawn(self._seal_awaiting(link))

    def _resend_all(self, link: Link, held: Link | None = None) -> None:  # oldest first, if still due
        if self._held is held and self._link is link:
            self._held = None
            for entry in self._store.outbox.entries():
                link.send(_send_frame(entry.recipient, entry.envelope))

    def _report_set_aside(self) -> None:
        """One warning per damaged outbox row the store moved aside (docs/security.md, "Local state")."""
        for row in self._store.outbox.take_set_aside():
            log.info("outbox row %r set aside: %s", row.msg_id[:40], row.reason)
            detail = f"a message in the outbox could not be sent ({row.reason}); it was set aside, not sent"
            self._emit(ErrorReported("outbox_set_aside", detail, msg_id=None))

    def detach(self) -> None:
        self._link = None

    def _spawn(self, work: Any) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)
        return task

    def cancel_retries(self) -> None:
        for task in list(self._retries):
            task.cancel()

    # --- sending --------------------------------------------------------------------------

    async def send(self, to: str, text: str) -> str:
        """Seal and send ``text`` to the (valid) name or room ``to``; returns the message id."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest("the text holds an unpaired surrogate and cannot be sent as UTF-8") from None
        try:
            if is_room(to):
                envelope = await self._seal_room(to, text)
            else:
                pin = self._contacts.pinned(to) or await self._first_key(to)
                self._check_trust(pin)
                envelope = self._seal(pin, text)
        except SecurechatError as exc:
            if not lookup_can_retry(exc):
                raise
            return self._keep_for_key(to, text)  # a (member's) first lookup that may pass: kept, asked again
        msg_id: str = envelope["id"]
        ts: int = envelope["ts"]
        self._store.outbox.add(to, envelope)
        self._store.history.add(HistoryEntry(to, "out", msg_id, ts, text, "sending"))
        self._emit(MessageSent(msg_id, to, ts, text, crypto.encode_payload(envelope)))
        link = self._link
        if link is not None and self._held is not link:
            link.send(_send_frame(to, envelope))
            await link.drain()
        return msg_id

    async def _first_key(self, to: str) -> Pin:
        await self._parts.lookup(to)
        if (pin := self._contacts.pinned(to)) is None:
            raise SessionClosed(f"could not get the key of '{to}'")
        return pin

    def _check_trust(self, pin: Pin) -> None:
        if pin.trust == "changed":
            self._contacts.alert(pin)
            raise KeyChanged(pin.name, pin.fingerprint, pin.pending_fingerprint or "")

    def _seal(self, pin: Pin, text: str, *, msg_id: str | None = None, ts: int | None = None) -> dict[str, Any]:
        """``text`` sealed for ``pin``; :class:`MessageTooLong` if it or what the server makes of it is too big."""
        identity = self._parts.identity
        envelope = crypto.seal_envelope(
            identity.private_key, pin.public_key(), identity.name, pin.name, text, msg_id=msg_id, ts=ts
        )
        self._check_size(pin.name, envelope)
        return envelope

    def _check_size(self, to: str, envelope: dict[str, Any]) -> None:
        if (size := _largest_frame(self._parts.identity.name, to, envelope)) > self._max_frame:
            raise MessageTooLong(size, self._max_frame)

    def _keep_for_key(self, to: str, text: str) -> str:
        """The first lookup for ``to`` could not finish for now: keep the message until it can."""
        msg_id, ts = crypto.new_message_id(), now_ms()
        self._store.history.add(HistoryEntry(to, "out", msg_id, ts, text, "sending"), awaiting_key=True)
        self._emit(MessageSent(msg_id, to, ts, text, ""))
        if self._link is not None:  # refused for now while connected: asked again after a pause
            self._seal_later(self._link)
        return msg_id

    async def _seal_awaiting(self, link: Link) -> None:
        """After a welcome: look up, seal and send the messages that wait for a key, oldest first."""
        async with self._sealing:  # one pass at a time: a message is sealed once
            for waiting in self._store.awaiting.entries():
                if self._link is not link:
                    return
                try:
                    envelope = await self._seal_waiting(waiting)
                except KeyChanged:
                    continue  # it waits until the user trusts the new key
                except SecurechatError as exc:
                    if lookup_can_retry(exc) or isinstance(exc, SessionClosed):
                        self._seal_later(link)
                        return
                    self._give_up(waiting, exc)
                    continue
                if envelope is not None:
                    self._store.outbox.add(waiting.recipient, envelope, awaiting=True)
                    if self._held is not link:
                        link.send(_send_frame(waiting.recipient, envelope))
            self._key_attempts = 0

    def _seal_later(self, link: Link) -> None:
        if self._later is not None and not self._later.done():
            return  # a pass is planned already: it takes every waiting message
        delay = backoff(self._key_attempts, RETRY_INITIAL, self._retry_max, self._rng)
        self._key_attempts += 1

        async def again() -> None:
            await asyncio.sleep(delay)
            self._later = None
            await self._seal_awaiting(link)

        self._later = self._spawn(again())

    async def _seal_waiting(self, waiting: Awaiting) -> dict[str, Any] | None:
        """The waiting message sealed with the id and time it was typed with; None if it cannot be yet."""
        entry = self._store.history.get(waiting.recipient, "out", waiting.msg_id)
        if entry is None:  # its text is gone (history cleared): nothing to send
            self._store.awaiting.remove(waiting.msg_id)
            return None
        if is_room(waiting.recipient):  # for the members it holds now (docs/protocol.md 11.7, "Sending")
            return await self._seal_room(waiting.recipient, entry.text, msg_id=entry.msg_id, ts=entry.ts)
        pin = self._contacts.pinned(waiting.recipient) or await self._first_key(waiting.recipient)
        if pin.trust == "changed":
            return None
        return self._seal(pin, entry.text, msg_id=entry.msg_id, ts=entry.ts)

    def _give_up(self, waiting: Awaiting, exc: SecurechatError) -> None:
        """A message that waited for a key can never be sent (no such user, an unusable key...)."""
        self._store.awaiting.remove(waiting.msg_id)
        self._store.history.set_status(waiting.recipient, waiting.msg_id, "failed")
        self._shrunk.set()
        code = getattr(exc, "code", "undeliverable")
        self._emit(ErrorReported(code, f"not sent to {waiting.recipient}: {exc}", msg_id=waiting.msg_id))

    async def _seal_room(self, room: str, text: str, *, msg_id: str | None = None, ts: int | None = None) -> dict[str, Any]:
        """Seal for every member of the room as verified here (docs/protocol.md 11.5)."""
        identity = self._parts.identity
        state = self._store.rooms.state(room)
        if state is None or identity.name not in state.members:  # None: a typo, or never held here
            held = "" if state else " (no such room is held here: /rooms lists them)"
            raise RoomRefused(f"you are not a member of {room}{held}", code="not_member")
        keys = {identity.name: identity.private_key.public_key()}  # our own key: no lookup of ourselves
        for name in sorted(state.members - {identity.name}):
            pin = self._contacts.pinned(name) or await self._first_key(name)
            self._check_trust(pin)
            keys[name] = pin.public_key()
        envelope = seal_room(identity.private_key, keys, state, identity.name, text, msg_id=msg_id, ts=ts)
        self._check_size(room, envelope)
        return envelope

    # --- answers ----------------------------------------------------------------------------

    def entry(self, rid: str | None) -> OutboxEntry | None:
        """The outbox entry a server error is about (its ``rid`` is the envelope id)."""
        entry = self._store.outbox.get(rid) if rid is not None else None
        self._report_set_aside()
        return entry

    def on_send_error(self, link: Link, entry: OutboxEntry, code: str) -> bool:
        """A non-fatal error answered a send: False if given up; True if kept, to retry later or after a reconnect."""
        if code in UNDELIVERABLE_CODES:
            self._store.outbox.remove(entry.msg_id)
            self._store.history.set_status(entry.recipient, entry.msg_id, "failed")
            self._shrunk.set()
            return False
        if code == "internal":
            self._resend_all_later(link, entry)
        elif code in RETRY_CODES:
            self._schedule_retry(link, entry)
        return True

    def _resend_all_later(self, link: Link, entry: OutboxEntry) -> None:  # hold every send on ``link``
        if self._held is not link:
            self._held = link
            attempt = self._retry_attempts[entry.msg_id] = self._retry_attempts.get(entry.msg_id, 0) + 1
            delay = backoff(attempt - 1, RETRY_INITIAL, self._retry_max, self._rng)
            asyncio.get_running_loop().call_later(delay, self._resend_all, link, link)

    def _schedule_retry(self, link: Link, entry: OutboxEntry) -> None:
        attempt = self._retry_attempts.get(entry.msg_id, 0)
        self._retry_attempts[entry.msg_id] = attempt + 1
        delay = backoff(attempt, RETRY_INITIAL, self._retry_max, self._rng)

        async def retry() -> None:
            await asyncio.sleep(delay)
            if self._link is link and self._store.outbox.get(entry.msg_id) is not None:
                link.send(_send_frame(entry.recipient, entry.envelope))

        self._spawn(retry())

    def on_ack(self, ack: AckFrame) -> None:
        if ack.member is not None:
            self._on_member_ack(ack.msg_id, ack.to, ack.member, ack.status)
            return
        entry = self._store.outbox.remove(ack.msg_id)
        self._report_set_aside()
        peer = entry.recipient if entry is not None else ack.to
        current = self._store.history.get(peer, "out", ack.msg_id)
        if entry is None and current is None:
            log.info("ignoring an ack for a message we did not send: %s", ack.msg_id)
            return
        if current is not None and not (current.status == "delivered" and ack.status == "queued"):
            self._store.history.set_status(peer, ack.msg_id, ack.status)
        self._retry_attempts.pop(ack.msg_id, None)
        if entry is not None:
            self._shrunk.set()
        self._emit(Acked(ack.msg_id, peer, _status(ack.status)))

    # --- room messages: one ack per member (docs/protocol.md 11.7, "Sending") ----------------------

    def on_room_sent(self, frame: dict[str, Any]) -> None:
        """``room_sent``: the members the message was routed to; it stays in the outbox until each acks."""
        msg_id: str = frame["id"]
        if msg_id not in self._store.outbox and msg_id not in self._rooms:
            return
        progress = self._rooms.setdefault(msg_id, _RoomProgress())
        progress.members = tuple(frame["members"])
        progress.alone = not progress.members and not frame.get("full")
        if progress.alone:  # no ack will come: say so once (docs/protocol.md 11.7, "Sending")
            self._emit(Acked(msg_id, frame["room"], "delivered", "", 0, 0))
        if frame.get("full"):
            who = ", ".join(frame["full"])
            self._emit(ErrorReported("queue_full", f"not accepted for {who}: they cannot take more from you now", msg_id=msg_id))
        self._settle(msg_id, frame["room"], progress)

    def _on_member_ack(self, msg_id: str, room: str, member: str, status: str) -> None:
        progress = self._rooms.get(msg_id)
        if progress is None:
            if self._store.history.get(room, "out", msg_id) is None:
                log.info("ignoring an ack for a message we did not send: %s", msg_id)
                return
            progress = self._rooms[msg_id] = _RoomProgress()
        if progress.statuses.get(member) != "delivered":  # never backwards
            progress.statuses[member] = status
        self._settle(msg_id, room, progress)
        done = progress.delivered()
        total = len(progress.members) if progress.members is not None else 0
        self._emit(Acked(msg_id, room, _status(status), member, done, total))

    def _settle(self, msg_id: str, room: str, progress: _RoomProgress) -> None:
        """Keep the history status; drop the outbox entry once every member is covered (queued or delivered)."""
        if progress.members is None:
            return
        total, done = len(progress.members), progress.delivered()
        if done or progress.statuses or not total:
            self._store.history.set_status(room, msg_id, room_ack_status(done, total, alone=progress.alone))
        if all(member in progress.statuses for member in progress.members):
            if self._store.outbox.discard(msg_id):
                self._retry_attempts.pop(msg_id, None)
                self._shrunk.set()
            if done == total:
                del self._rooms[msg_id]

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every outbox entry is acknowledged; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            self._shrunk.clear()
            if len(self) == 0:
                return True
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._shrunk.wait(), remaining)
            except TimeoutError:
                return len(self) == 0


def _status(status: str) -> Literal["queued", "delivered", "undeliverable"]:
    """An ack's status as an event carries it (the connection checked it is one of these)."""
    return "delivered" if status == "delivered" else "undeliverable" if status == "undeliverable" else "queued"
