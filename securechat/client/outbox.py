"""The outgoing policy: seal, keep until acknowledged, resend, retry (docs/protocol.md section 4, "Messages").

- :meth:`Outbox.send` seals a message for the recipient's pinned key (looked up and
  pinned on the first message to them), stores it in the outbox and the history in
  ``sending``, and writes it when connected. ``send`` frames carry ``rid`` = the
  envelope id, so a server error about a send names the message.
- After every ``welcome`` the whole outbox is resent, in order, with the same ids
  (a resend is the same envelope, byte for byte).
- ``ack`` ``queued`` and ``delivered`` both remove the outbox entry; a later
  ``delivered`` still updates the history status, which never goes back to ``queued``.
- Errors about a send: :data:`UNDELIVERABLE_CODES` drop it from the outbox (history
  status ``failed``); :data:`RETRY_CODES` resend it on the same connection after a
  capped, jittered pause; anything left is resent after any reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any, Final

from .. import crypto
from ..envelope import MAX_TS
from ..errors import BadRequest, KeyChanged, MessageTooLong, SessionClosed
from ..events import Acked, ErrorReported, MessageSent
from ..protocol import HEADER_SIZE, encode_frame, message_frame
from ..records import HistoryEntry
from .connection import AckFrame
from .link import Link
from .parts import SessionParts
from .state import OutboxEntry

log = logging.getLogger(__name__)

# Send failures after which the message can never be delivered as sealed.
UNDELIVERABLE_CODES: Final = frozenset({"unknown_user", "bad_request", "invalid_name", "message_too_large"})
# Send failures worth retrying on the same connection after a pause.
RETRY_CODES: Final = frozenset({"rate_limited", "queue_full", "internal"})
RETRY_INITIAL: Final = 1.0


def _send_frame(to: str, envelope: dict[str, Any]) -> dict[str, Any]:
    return {"type": "send", "to": to, "envelope": envelope, "rid": envelope["id"]}


def _largest_frame(sender: str, to: str, envelope: dict[str, Any]) -> int:
    """The larger body of our ``send`` and of the ``message`` the server makes of it (at its latest time)."""
    send = len(encode_frame(_send_frame(to, envelope)))
    message = len(message_frame(sender, MAX_TS - 1, envelope))
    return max(send, message) - HEADER_SIZE


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

    def __len__(self) -> int:
        return len(self._store.outbox)

    # --- the connection ----------------------------------------------------------------

    def attach(self, link: Link) -> None:
        """Welcomed on ``link``: resend everything not acknowledged yet, oldest first."""
        self._link = link
        for entry in self._store.outbox.entries():
            link.send(_send_frame(entry.recipient, entry.envelope))
        self._report_set_aside()

    def _report_set_aside(self) -> None:
        """One warning per damaged outbox row the store moved aside (docs/security.md, "Local state")."""
        for row in self._store.outbox.take_set_aside():
            log.info("outbox row %r set aside: %s", row.msg_id[:40], row.reason)
            detail = f"a message in the outbox could not be sent ({row.reason}); it was set aside, not sent"
            self._emit(ErrorReported("outbox_set_aside", detail, msg_id=None))

    def detach(self) -> None:
        self._link = None

    def cancel_retries(self) -> None:
        for task in list(self._retries):
            task.cancel()

    # --- sending --------------------------------------------------------------------------

    async def send(self, to: str, text: str) -> str:
        """Seal and send ``text`` to the (valid) name ``to``; returns the message id."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest("the text holds an unpaired surrogate and cannot be sent as UTF-8") from None
        pin = self._contacts.pinned(to)
        if pin is None:
            await self._parts.lookup(to)
            pin = self._contacts.pinned(to)
            if pin is None:
                raise SessionClosed(f"could not get the key of '{to}'")
        if pin.trust == "changed":
            self._contacts.alert(pin)
            raise KeyChanged(to, pin.fingerprint, pin.pending_fingerprint or "")
        identity = self._parts.identity
        envelope = crypto.seal_envelope(identity.private_key, pin.public_key(), identity.name, to, text)
        size = _largest_frame(identity.name, to, envelope)
        if size > self._max_frame:
            raise MessageTooLong(size, self._max_frame)
        msg_id: str = envelope["id"]
        ts: int = envelope["ts"]
        self._store.outbox.add(to, envelope)
        self._store.history.add(HistoryEntry(to, "out", msg_id, ts, text, "sending"))
        self._emit(MessageSent(msg_id, to, ts, text, crypto.encode_payload(envelope)))
        link = self._link
        if link is not None:
            link.send(_send_frame(to, envelope))
            await link.drain()
        return msg_id

    # --- answers ----------------------------------------------------------------------------

    def entry(self, rid: str | None) -> OutboxEntry | None:
        """The outbox entry a server error is about (its ``rid`` is the envelope id)."""
        entry = self._store.outbox.get(rid) if rid is not None else None
        self._report_set_aside()
        return entry

    def on_send_error(self, link: Link, entry: OutboxEntry, code: str) -> None:
        """A non-fatal error answered a send: give up on it, retry it later, or wait for a reconnect."""
        if code in UNDELIVERABLE_CODES:
            self._store.outbox.remove(entry.msg_id)
            self._store.history.set_status(entry.recipient, entry.msg_id, "failed")
            self._shrunk.set()
        elif code in RETRY_CODES:
            self._schedule_retry(link, entry)

    def _schedule_retry(self, link: Link, entry: OutboxEntry) -> None:
        attempt = self._retry_attempts.get(entry.msg_id, 0)
        self._retry_attempts[entry.msg_id] = attempt + 1
        delay = min(self._retry_max, RETRY_INITIAL * 2**attempt) * self._rng.uniform(0.5, 1.0)

        async def retry() -> None:
            await asyncio.sleep(delay)
            if self._link is link and self._store.outbox.get(entry.msg_id) is not None:
                link.send(_send_frame(entry.recipient, entry.envelope))

        task = asyncio.create_task(retry())
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    def on_ack(self, ack: AckFrame) -> None:
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
        self._emit(Acked(ack.msg_id, peer, "delivered" if ack.status == "delivered" else "queued"))

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
