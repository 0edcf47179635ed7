"""Server stores for backend-independent tests: the same test runs on SQLite and on Redis."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from securechat.server.sqlite import SqliteStore
from securechat.server.store import ServerStore
from tests.support.redisproc import RedisProcess

_NAMESPACES = itertools.count(1)


class StoreMaker:
    """Makes stores of one backend, each a fresh namespace; :meth:`again` opens one more over the last one's data."""

    def __init__(self, backend: str, tmp_path: Path, redis: RedisProcess | None) -> None:
        self.backend = backend
        self._tmp = tmp_path
        self._redis = redis
        self._made: list[ServerStore] = []
        self._where: dict[str, Any] = {}

    def new(self, **options: Any) -> ServerStore:
        """A store with nothing in it (``options``: queue_limit, queue_bytes, queue_ttl, clock)."""
        n = next(_NAMESPACES)
        self._where = {"path": self._tmp / f"store{n}" / "server.db"} if self.backend == "sqlite" else {"prefix": f"t{n}:"}
        return self.again(**options)

    def again(self, **options: Any) -> ServerStore:
        """Another store over the data of the last :meth:`new` (as after a restart)."""
        store: ServerStore
        if self.backend == "sqlite":
            store = SqliteStore(self._where["path"], **options)
        else:
            from securechat.server.redisstore import RedisStore
            from securechat.server.resp import RedisAddress

            assert self._redis is not None
            store = RedisStore(RedisAddress.from_url(self._redis.url), prefix=self._where["prefix"], **options)
        self._made.append(store)
        return store

    async def close_all(self) -> None:
        for store in self._made:
            await store.close()
