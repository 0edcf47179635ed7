"""Conversation history at rest: each row's content sealed with AES-256-GCM.

The history key is random, created on first use and stored in the state database
OAEP-wrapped with the identity key: history is exactly as protected as the private
key itself. The peer, direction and id stay in clear (to find rows) and are bound to
the sealed content as associated data, so rows cannot be swapped.

The history grows by each message's text (plus about 100 bytes) for as long as it
is kept: by default for ever. With :meth:`History.retain` (``securechat-client
--keep-history N``) each conversation keeps only its newest ``N`` rows, pruned as
rows are added; an own message not yet sent or acknowledged is never pruned.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import TYPE_CHECKING, Any, Final, Literal

from .. import crypto
from ..clock import now_ms
from ..encoding import lp
from ..envelope import GCM_NONCE_SIZE, is_timestamp
from ..errors import DecryptFailed, KeyStoreError, UnwrapFailed
from ..names import is_valid_name
from ..records import HistoryEntry

if TYPE_CHECKING:  # the store owns its History; only the type goes this way
    from .state import ClientStore

HISTORY_LABEL: Final = b"securechat-history-v1"
HISTORY_KEY_META: Final = "history_key"
# Rows of one conversation (?1) past its newest ``keep`` (?2), but never an own message still
# in the outbox or waiting for a key: its text is what will be sent, or shown as pending.
_PRUNE: Final = """
DELETE FROM history WHERE peer = ?1 AND seq < (
    SELECT seq FROM history WHERE peer = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2 - 1
) AND NOT (direction = 'out' AND (
    msg_id IN (SELECT msg_id FROM outbox) OR msg_id IN (SELECT msg_id FROM outbox_awaiting_key)
))
"""


class History:
    """Per-conversation history in the state database."""

    def __init__(self, store: ClientStore) -> None:
        self._store = store
        self._key: bytes | None = None
        self.keep: int | None = None  # rows kept per conversation; None: all (see :meth:`retain`)

    def retain(self, keep: int) -> int:
        """Keep only the newest ``keep`` (>= 1) rows of each conversation, now and from now on.

        Returns how many rows went; if any did, the file is compacted so it shrinks on
        disk too. Later rows reuse the freed pages: the file stays about the size of
        what is kept.
        """
        if keep < 1:
            raise ValueError("keep at least one row per conversation")
        self.keep = keep
        removed = 0
        with self._store.transaction() as db:
            for peer in self.peers():
                removed += db.execute(_PRUNE, (peer, keep)).rowcount
        if removed:
            self._store.compact()
        return removed

    def _history_key(self) -> bytes:
        """The AES key sealing history rows; created on first use, stored OAEP-wrapped."""
        if self._key is not None:
            return self._key
        identity = self._store.require_identity()
        rows = self._store.query("SELECT v FROM meta WHERE k = ?", (HISTORY_KEY_META,))
        if rows:
            try:
                key = crypto.oaep_unwrap(identity.private_key, bytes(rows[0][0]))
            except UnwrapFailed:
                raise KeyStoreError("the history key does not unwrap with this identity key") from None
        else:
            key = os.urandom(crypto.AES_KEY_SIZE)
            with self._store.transaction() as db:
                db.execute(
                    "INSERT INTO meta (k, v) VALUES (?, ?)",
                    (HISTORY_KEY_META, crypto.oaep_wrap(identity.public_key, key)),
                )
        self._key = key
        return key

    @staticmethod
    def _aad(peer: str, direction: str, msg_id: str) -> bytes:
        return lp(HISTORY_LABEL, peer, direction, msg_id)

    def _seal(self, entry: HistoryEntry) -> tuple[bytes, bytes]:
        nonce = os.urandom(GCM_NONCE_SIZE)
        fields: dict[str, Any] = {"ts": entry.ts, "text": entry.text, "status": entry.status}
        if entry.server_ts is not None:
            fields["server_ts"] = entry.server_ts
        if entry.sender:
            fields["from"] = entry.sender  # a room message: the room is the peer
        body = json.dumps(fields).encode("utf-8")
        sealed = crypto.gcm_seal(
            self._history_key(), nonce, body, self._aad(entry.peer, entry.direction, entry.msg_id)
        )
        return nonce, sealed

    def add(self, entry: HistoryEntry, *, accepted: bool = False, awaiting_key: bool = False) -> None:
        """Store ``entry``; with ``accepted``, also record its ``(from, id)`` as accepted (a room message's
        writer, not its room: the inbox looks replays up by who wrote them); with
        ``awaiting_key``, also mark it as an own message waiting for the key to be sealed with.

        Each in one transaction: a crash between two commits would keep the id as
        accepted (so every redelivery is confirmed and dropped) with no history
        row and nothing shown, losing the message; or the text without the mark
        that it still has to be sent.
        """
        nonce, sealed = self._seal(entry)
        with self._store.transaction() as db:
            if awaiting_key:
                db.execute(
                    "INSERT OR IGNORE INTO outbox_awaiting_key (msg_id, recipient, created) VALUES (?, ?, ?)",
                    (entry.msg_id, entry.peer, now_ms()),
                )
            if accepted:
                db.execute(
                    "INSERT OR IGNORE INTO accepted (sender, msg_id, at) VALUES (?, ?, ?)",
                    (entry.sender or entry.peer, entry.msg_id, now_ms()),
                )
            db.execute(
                "INSERT OR IGNORE INTO history (peer, direction, msg_id, nonce, sealed) VALUES (?, ?, ?, ?, ?)",
                (entry.peer, entry.direction, entry.msg_id, nonce, sealed),
            )
            if self.keep is not None:
                db.execute(_PRUNE, (entry.peer, self.keep))

    def get(self, peer: str, direction: Literal["in", "out"], msg_id: str) -> HistoryEntry | None:
        rows = self._store.query(
            "SELECT peer, direction, msg_id, nonce, sealed FROM history "
            "WHERE peer = ? AND direction = ? AND msg_id = ?",
            (peer, direction, msg_id),
        )
        return self._open(rows[0]) if rows else None

    def set_status(self, peer: str, msg_id: str, status: str) -> bool:
        """Update an own message's status; False if there is no such message."""
        current = self.get(peer, "out", msg_id)
        if current is None:
            return False
        if current.status == status:
            return True
        updated = dataclasses.replace(current, status=status)
        nonce, sealed = self._seal(updated)
        with self._store.transaction() as db:
            db.execute(
                "UPDATE history SET nonce = ?, sealed = ? WHERE peer = ? AND direction = 'out' AND msg_id = ?",
                (nonce, sealed, peer, msg_id),
            )
        return True

    def recent(self, peer: str, limit: int = 200) -> list[HistoryEntry]:
        rows = self._store.query(
            "SELECT peer, direction, msg_id, nonce, sealed FROM history WHERE peer = ? ORDER BY seq DESC LIMIT ?",
            (peer, max(0, limit)),
        )
        return [self._open(row) for row in reversed(rows)]

    def peers(self) -> list[str]:
        return [row[0] for row in self._store.query("SELECT DISTINCT peer FROM history ORDER BY peer")]

    def _open(self, row: tuple[Any, ...]) -> HistoryEntry:
        peer, direction, msg_id, nonce, sealed = row
        try:
            body = json.loads(
                crypto.gcm_open(
                    self._history_key(), bytes(nonce), bytes(sealed), self._aad(peer, direction, msg_id)
                )
            )
        except DecryptFailed:
            raise KeyStoreError(f"a history entry with '{peer}' is corrupt or was tampered with") from None
        server_ts = body.get("server_ts")
        return HistoryEntry(
            peer,
            direction,
            msg_id,
            int(body["ts"]),
            str(body["text"]),
            str(body.get("status", "")),
            server_ts if is_timestamp(server_ts) else None,
            sender if is_valid_name(sender := body.get("from")) else "",
        )
