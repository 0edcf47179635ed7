"""SqliteStore: the :class:`~securechat.server.store.ServerStore` on one SQLite file.

WAL mode, with every statement run on one dedicated worker thread (the
connection is created on that thread), so the event loop only ever waits on a
future. Enqueues made in one loop iteration share one transaction.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Final, TypeVar

from ..crypto import SERVER_ID_SIZE
from ..errors import QueueFull
from ..files import make_private_dir
from ..rooms.log import RoomState
from . import sqlite_aside, sqlite_bodies, sqlite_names, sqlite_rooms
from .registration import NewName, RegistrationLimits
from .roomstore import DEFAULT_MAX_ROOMS, AppendResult, CreateResult, RoomListing, StoredEntry
from .sqlschema import SCHEMA, SENDER_TOTALS, write_ahead
from .store import (
    DEFAULT_QUEUE_BYTES,
    DEFAULT_QUEUE_LIMIT,
    DEFAULT_QUEUE_TTL,
    DEFAULT_SENDER_SHARE,
    DEFAULT_STORE_BYTES,
    QueuedMessage,
    Registration,
    SetAside,
    sender_caps,
)

SCHEMA_VERSION: Final = 1
PRIVATE_FILE_MODE: Final = 0o600

T = TypeVar("T")


def prepare_private_files(path: Path) -> None:
    """Make ``path``'s folder (0700 if created here) and the database file 0600 before SQLite opens it.

    SQLite creates the ``-wal`` and ``-shm`` files with the mode of the database
    file, whatever the umask, so a 0600 database gives 0600 companions. Files
    left looser by an earlier run are tightened; an existing folder is left as
    its owner made it.
    """
    make_private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    for companion in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            if companion.stat().st_mode & 0o077:
                companion.chmod(PRIVATE_FILE_MODE)


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction (the connection is in autocommit mode otherwise)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class SqliteStore:
    """:class:`ServerStore` on one SQLite file (WAL) driven by one worker thread.

    ``synchronous=NORMAL`` in WAL mode: a committed transaction survives a
    crash of the server process (kill -9); a power loss may undo the last few.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        queue_ttl: float = DEFAULT_QUEUE_TTL,
        max_rooms: int = DEFAULT_MAX_ROOMS,
        sender_share: int = DEFAULT_SENDER_SHARE,
        store_bytes: int = DEFAULT_STORE_BYTES,
        registration: RegistrationLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if min(queue_limit, queue_bytes, sender_share, store_bytes) < 1 or queue_ttl <= 0:
            raise ValueError("queue_limit, queue_bytes, queue_ttl, sender_share and store_bytes must be positive")
        self.path = Path(path)
        self.queue_limit = queue_limit
        self.queue_bytes = queue_bytes
        self.queue_ttl = queue_ttl
        self.max_rooms = max_rooms
        self.sender_limit, self.sender_bytes = sender_caps(queue_limit, queue_bytes, sender_share)
        self.store_bytes = store_bytes
        self.registration = registration or RegistrationLimits()
        self._clock = clock
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._db: sqlite3.Connection | None = None
        self._db_thread: int | None = None
        self._closed = False
        self._batch: list[tuple[QueuedMessage, asyncio.Future[bool]]] = []
        self._bodies = sqlite_bodies.RoomBodies()  # a room message's frame, stored once for its members

    # --- plumbing --------------------------------------------------------------------

    def _submit(self, fn: Callable[..., T], *args: object) -> asyncio.Future[T]:
        if self._closed:
            raise RuntimeError("store is closed")
        self._submit_enqueues()  # whatever was enqueued before this call runs before it
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _submit_enqueues(self) -> None:
        """Hand the enqueues gathered in this loop iteration to the worker as one transaction."""
        batch, self._batch = self._batch, []
        if not batch:
            return
        job = asyncio.get_running_loop().run_in_executor(
            self._executor, self._enqueue_many, [m for m, _ in batch]
        )

        def settle(done: asyncio.Future[list[bool | QueueFull]]) -> None:
            failure = None if done.cancelled() else done.exception()
            results = None if done.cancelled() or failure is not None else done.result()
            for i, (_, fut) in enumerate(batch):
                if fut.done():
                    continue
                if results is None:
                    fut.set_exception(failure or RuntimeError("store job cancelled"))
                elif isinstance(results[i], QueueFull):
                    fut.set_exception(results[i])  # type: ignore[arg-type]
                else:
                    fut.set_result(bool(results[i]))

        job.add_done_callback(settle)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            prepare_private_files(self.path)
            db = sqlite3.connect(self.path, isolation_level=None)
            db.execute("PRAGMA busy_timeout=5000")
            write_ahead(db)
            db.execute("PRAGMA synchronous=NORMAL")
            counted = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'sender_totals'").fetchone()
            db.executescript(SCHEMA)
            sqlite_aside.add_queue_columns(db)  # a database from before rooms, or set-aside
            if counted is None:  # a database from before the shares: counted once
                db.executescript(f"BEGIN IMMEDIATE; {SENDER_TOTALS} COMMIT;")
            db.executescript(sqlite_rooms.ROOM_SCHEMA + sqlite_aside.ASIDE_SCHEMA + sqlite_names.NAMES_SCHEMA
                             + sqlite_bodies.BODIES_SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            self._db = db
            self._db_thread = threading.get_ident()
        return self._db

    # --- synchronous implementations (worker thread only) --------------------------------

    def _server_id(self) -> bytes:
        db = self._conn()
        with _transaction(db):
            row = db.execute("SELECT value FROM meta WHERE key = 'server_id'").fetchone()
            if row is not None:
                return bytes(row[0])
            server_id = os.urandom(SERVER_ID_SIZE)
            db.execute("INSERT INTO meta (key, value) VALUES ('server_id', ?)", (server_id,))
            return server_id

    def _get_registration(self, name: str) -> Registration | None:
        row = self._conn().execute(
            "SELECT name, pubkey_pem, fingerprint, created FROM registrations WHERE name = ?", (name,)
        ).fetchone()
        return Registration(*row) if row is not None else None

    def _register(
        self, name: str, pubkey_pem: str, fingerprint: str, asker: NewName | None
    ) -> tuple[Registration, bool]:
        db = self._conn()
        with _transaction(db):
            reg = self._get_registration(name)
            if reg is not None:
                return reg, False
            now = self._clock()
            if asker is not None:
                sqlite_names.admit(db, asker, self.registration, now)
            db.execute(
                "INSERT INTO registrations (name, pubkey_pem, fingerprint, created) VALUES (?, ?, ?, ?)",
                (name, pubkey_pem, fingerprint, now),
            )
        return Registration(name, pubkey_pem, fingerprint, now), True

    def _totals(self, db: sqlite3.Connection, recipient: str) -> tuple[int, int]:
        row = db.execute("SELECT count, bytes FROM queue_totals WHERE recipient = ?", (recipient,)).fetchone()
        return (int(row[0]), int(row[1])) if row is not None else (0, 0)

    def _store_total(self, db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT bytes FROM store_total").fetchone()[0])

    def _refusal(self, db: sqlite3.Connection, m: QueuedMessage, stored: int) -> QueueFull | None:
        """Which cap, if any, ``m`` would pass: the store's, the recipient's queue, the sender's share of it."""
        if stored + m.size > self.store_bytes:
            return QueueFull(m.recipient, "store")
        count, size = self._totals(db, m.recipient)
        if count + 1 > self.queue_limit or size + m.size > self.queue_bytes:
            return QueueFull(m.recipient, "queue")
        row = db.execute(
            "SELECT count, bytes FROM sender_totals WHERE recipient = ? AND sender = ?", (m.recipient, m.sender)
        ).fetchone()
        mine, my_bytes = (int(row[0]), int(row[1])) if row is not None else (0, 0)
        if mine and (mine + 1 > self.sender_limit or my_bytes + m.size > self.sender_bytes):
            return QueueFull(m.recipient, "sender_share")
        return None

    def _enqueue_one(self, db: sqlite3.Connection, m: QueuedMessage, stored: int) -> bool | QueueFull:
        dup = db.execute(
            "SELECT 1 FROM queue WHERE recipient = ? AND sender = ? AND msg_id = ?",
            (m.recipient, m.sender, m.msg_id),
        ).fetchone()
        if dup is not None:
            return False
        refused = self._refusal(db, m, stored)
        if refused is not None:
            return refused
        frame, body = self._bodies.stored_as(db, m)
        db.execute(
            "INSERT INTO queue (recipient, sender, msg_id, server_ts, frame, size, enqueued_at, room, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (m.recipient, m.sender, m.msg_id, m.server_ts, frame, m.size, m.enqueued_at, m.room, body),
        )
        return True

    def _enqueue_many(self, messages: Sequence[QueuedMessage]) -> list[bool | QueueFull]:
        """Group commit: each message is accepted, a duplicate, or refused on its own."""
        db = self._conn()
        with _transaction(db):
            stored = self._store_total(db)  # once per commit, then counted as it goes
            out: list[bool | QueueFull] = []
            for m in messages:
                out.append(self._enqueue_one(db, m, stored))
                if out[-1] is True:
                    stored += m.size
            return out

    def _requeue(self, messages: Sequence[QueuedMessage]) -> int:
        db = self._conn()
        with _transaction(db):
            stored = 0
            for m in messages:
                frame, body = self._bodies.stored_as(db, m)
                cur = db.execute(
                    "INSERT OR IGNORE INTO queue (recipient, sender, msg_id, server_ts, frame, size, enqueued_at, room, body) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (m.recipient, m.sender, m.msg_id, m.server_ts, frame, m.size, m.enqueued_at, m.room, body),
                )
                if not cur.rowcount:
                    self._bodies.unused(db, body)
                stored += cur.rowcount
        return stored

    def _fetch(self, recipient: str, after_seq: int, limit: int, max_bytes: int | None) -> list[QueuedMessage]:
        return self._bodies.fetch(self._conn(), recipient, after_seq, self._clock() - self.queue_ttl, limit, max_bytes)

    def _delete(self, keys: Sequence[tuple[str, str, str]]) -> int:
        db = self._conn()
        with _transaction(db):
            cur = db.executemany("DELETE FROM queue WHERE recipient = ? AND sender = ? AND msg_id = ?", keys)
            return cur.rowcount

    def _in_transaction(self, fn: Callable[..., T], *args: object) -> T:
        db = self._conn()
        with _transaction(db):
            return fn(db, *args)

    def _expire(self) -> int:
        db = self._conn()
        with _transaction(db):
            db.execute("DELETE FROM set_aside WHERE enqueued_at < ?", (self._clock() - self.queue_ttl,))
            cur = db.execute("DELETE FROM queue WHERE enqueued_at < ?", (self._clock() - self.queue_ttl,))
            return cur.rowcount

    def _room_create(self, entry: StoredEntry) -> CreateResult:
        db = self._conn()
        with _transaction(db):
            return sqlite_rooms.create(db, entry, self._clock(), self.max_rooms)

    def _room_append(self, entry: StoredEntry) -> AppendResult:
        db = self._conn()
        with _transaction(db):
            return sqlite_rooms.append(db, entry)

    def _queue_size(self, recipient: str) -> tuple[int, int]:
        return self._totals(self._conn(), recipient)

    def _close(self) -> None:
        if self._db is not None:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._db.close()
                self._db = None

    # --- ServerStore -------------------------------------------------------------------------

    def server_id(self) -> asyncio.Future[bytes]:
        return self._submit(self._server_id)

    def get_registration(self, name: str) -> asyncio.Future[Registration | None]:
        return self._submit(self._get_registration, name)

    def register(
        self, name: str, pubkey_pem: str, fingerprint: str, asker: NewName | None = None
    ) -> asyncio.Future[tuple[Registration, bool]]:
        return self._submit(self._register, name, pubkey_pem, fingerprint, asker)

    def names_page(self, after: str, prefix: str, limit: int) -> asyncio.Future[list[str]]:
        return self._submit(lambda: sqlite_names.page(self._conn(), after, prefix, limit))

    def enqueue(self, message: QueuedMessage) -> asyncio.Future[bool]:
        """Enqueues made in one loop iteration share one transaction (group commit)."""
        if self._closed:
            raise RuntimeError("store is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        self._batch.append((message, fut))
        if len(self._batch) == 1:
            loop.call_soon(self._submit_enqueues)
        return fut

    def requeue(self, messages: Sequence[QueuedMessage]) -> asyncio.Future[int]:
        return self._submit(self._requeue, list(messages))

    def fetch(
        self, recipient: str, after_seq: int = 0, limit: int = 500, max_bytes: int | None = None
    ) -> asyncio.Future[list[QueuedMessage]]:
        return self._submit(self._fetch, recipient, after_seq, limit, max_bytes)

    def delete(self, keys: Iterable[tuple[str, str, str]]) -> asyncio.Future[int]:
        return self._submit(self._delete, list(keys))

    def expire(self) -> asyncio.Future[int]:
        return self._submit(self._expire)

    def failed_hand_out(self, recipient: str, sender: str, msg_id: str, limit: int) -> asyncio.Future[bool]:
        return self._submit(self._in_transaction, sqlite_aside.failed_hand_out, recipient, sender, msg_id, limit)

    def take_set_aside(self, sender: str) -> asyncio.Future[list[SetAside]]:
        return self._submit(self._in_transaction, sqlite_aside.take, sender, self._clock() - self.queue_ttl)

    def queue_size(self, recipient: str) -> asyncio.Future[tuple[int, int]]:
        return self._submit(self._queue_size, recipient)

    # --- RoomStore (the tables are in sqlite_rooms) --------------------------------------------

    def room_create(self, entry: StoredEntry) -> asyncio.Future[CreateResult]:
        return self._submit(self._room_create, entry)

    def room_append(self, entry: StoredEntry) -> asyncio.Future[AppendResult]:
        return self._submit(self._room_append, entry)

    def room(self, room: str) -> asyncio.Future[RoomState | None]:
        return self._submit(lambda: sqlite_rooms.room(self._conn(), room))

    def room_log(self, room: str, since: int, until: int, limit: int) -> asyncio.Future[list[str]]:
        return self._submit(lambda: sqlite_rooms.log(self._conn(), room, since, until, limit))

    def room_head(self, room: str, seq: int) -> asyncio.Future[bytes | None]:
        return self._submit(lambda: sqlite_rooms.head(self._conn(), room, seq))

    def room_left(self, room: str, name: str) -> asyncio.Future[int | None]:
        return self._submit(lambda: sqlite_rooms.left(self._conn(), room, name))

    def rooms_page(self, name: str, after: str, limit: int) -> asyncio.Future[list[RoomListing]]:
        return self._submit(lambda: sqlite_rooms.page(self._conn(), name, after, limit))

    async def close(self) -> None:
        """Finish queued work, checkpoint the WAL and close the file. Idempotent."""
        if self._closed:
            return
        fut = self._submit(self._close)
        self._closed = True
        try:
            await fut
        finally:
            self._executor.shutdown(wait=True)
