"""Recipients that read and never confirm (issue 13, item 4), shared by the attack tests
(tests/test_attacks_queues.py) and ``tools/unconfirmed_rss.py``, which measures a server
process's memory under the attack."""

from __future__ import annotations

import asyncio
from typing import Any

from ..protocol import encode_frame
from .rawclient import RawClient, clients, envelope, identity_key, msg_id
from .servers import rss_kib

WAIT = 10.0


class Reader:
    """A logged-in recipient that reads every frame and confirms nothing (until told to)."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self.ids: list[str] = []
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    @classmethod
    async def login(cls, port: int, name: str) -> Reader:
        client = await RawClient.connect(port)
        await client.login(name, identity_key(name))
        return cls(client)

    async def _read(self) -> None:
        while True:
            try:
                frame = await self.client.recv(3600)
            except ConnectionError:  # the server closed first (its test is ending)
                return
            if frame["type"] == "message":
                self.ids.append(frame["envelope"]["id"])
                self.changed.set()

    async def wait_count(self, count: int, timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while len(self.ids) < count:
                self.changed.clear()
                await self.changed.wait()

    async def quiet(self, spell: float, timeout: float) -> None:
        """Wait (up to ``timeout``) until no message has arrived for ``spell`` seconds."""
        async with asyncio.timeout(timeout):
            while True:
                self.changed.clear()
                try:
                    await asyncio.wait_for(self.changed.wait(), spell)
                except TimeoutError:
                    return

    async def confirm(self, msg: str, sender: str = "alice") -> None:
        await self.client.send_frame({"type": "received", "id": msg, "from": sender})

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.client.close()


async def answers(client: RawClient, count: int, timeout: float = WAIT) -> list[dict[str, Any]]:
    """The next ``count`` acks and errors (presence skipped)."""
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            frame = await client.recv(timeout)
            if frame["type"] in ("ack", "error"):
                out.append(frame)
    return out


def padded_send(sender: str, to: str, n: int, size: int) -> dict[str, Any]:
    """A well-shaped ``send`` of message ``n`` whose ``ct`` is ``size`` bytes."""
    return {"type": "send", "to": to, "envelope": {**envelope(sender, to, msg_id(n)), "ct": "A" * size}, "rid": str(n)}


async def register(port: int, *names: str) -> None:
    async with clients(port, *names):
        pass


async def flood(port: int, sender: str, to: str, count: int, size: int) -> list[dict[str, Any]]:
    """``count`` sends of ``size`` bytes, pipelined; their answers."""
    async with clients(port, sender) as (s,):
        for start in range(0, count, 64):
            batch = (encode_frame(padded_send(sender, to, n, size)) for n in range(start, min(start + 64, count)))
            s.writer.write(b"".join(batch))
            await s.writer.drain()
        return await answers(s, count, timeout=300)


def rss(pid: int) -> int:
    """The resident set size of process ``pid`` in bytes."""
    kib = rss_kib(pid)
    assert kib, f"no VmRSS for process {pid}"
    return kib * 1024


async def pin_memory(port: int, pid: int, recipients: int = 4, count: int = 1100, size: int = 64 * 1024) -> dict[str, Any]:
    """The issue's attack on a server process: ``recipients`` names with full queues log in, read
    every message and never confirm. Returns the server's RSS before the flood, after it (the queues
    full, nobody logged in) and after the recipients read, and how many unconfirmed messages each
    recipient was handed."""
    names = [f"r{i}" for i in range(recipients)] + [f"s{i}" for i in range(recipients)] + ["warm"]
    await register(port, *names)
    await flood(port, "s0", "warm", 64, size)  # warm-up: the store, the allocator, a backlog read
    warm = await Reader.login(port, "warm")
    for n in range(64):
        await warm.wait_count(n + 1)
        await warm.confirm(msg_id(n), "s0")
    await warm.close()
    before = rss(pid)
    await asyncio.gather(*(flood(port, f"s{i}", f"r{i}", count, size) for i in range(recipients)))
    flooded = rss(pid)
    readers = [await Reader.login(port, f"r{i}") for i in range(recipients)]
    for reader in readers:
        await reader.quiet(1.0, 120)
    after = rss(pid)
    handed = [len(r.ids) for r in readers]
    for reader in readers:
        await reader.close()
    return {"rss_before": before, "rss_flooded": flooded, "rss_after": after, "handed_out": handed}
