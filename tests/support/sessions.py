"""Client sessions in tests: a recorder of their events (tests wait on it, never sleep) and a runner."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from securechat.client import ClientSession
from securechat.events import Ready, SessionEvent

BITS = 2048
WAIT = 10.0


class Recorder:
    """Collects a session's events; tests wait on them, never sleep."""

    def __init__(self) -> None:
        self.events: list[SessionEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: SessionEvent) -> None:
        self.events.append(event)
        self._changed.set()

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait_for(self, predicate: Callable[[SessionEvent], bool], timeout: float = WAIT) -> Any:
        seen = 0
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                self._changed.clear()
                await self._changed.wait()

    async def wait_kind(self, kind: type, timeout: float = WAIT, **fields: Any) -> Any:
        return await self.wait_for(
            lambda e: isinstance(e, kind) and all(getattr(e, k) == v for k, v in fields.items()), timeout
        )


class Client:
    def __init__(self, session: ClientSession, rec: Recorder) -> None:
        self.session = session
        self.rec = rec
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.session.run())

    async def stop(self) -> None:
        await self.session.close()
        if self.task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, WAIT)


async def online(client: Client) -> Client:
    client.start()
    await client.rec.wait_kind(Ready)
    return client
