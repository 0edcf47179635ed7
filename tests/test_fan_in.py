"""Fan-in past a recipient's window (issue 13 item 4's regression): many senders, one reader.

Since item 4 a session holds at most its window of unconfirmed messages. On one node a message
that arrives while the window is full now waits in the session's in-memory tail (four windows,
at most ``TAIL_WAIT``) and is written as confirmations free the window; only when the tail is full
or too old does it go to the store (docs/protocol.md, "Server behaviour details"). Before, the
first message past the window sent everything through the store: the session's unconfirmed
messages were stored again and every later one was stored and read back, which in the bench's
fan-in cost about five times the CPU per message of a pair.

Whatever the path (window, tail, store; one node or nodes on Redis): every message arrives once,
each sender's in the order it sent them, and every sender hears ``delivered`` for each.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from securechat.protocol import encode_frame
from securechat.server import ChatServer, routing
from tests.support.rawclient import (
    RawClient,
    caught_up,
    clients,
    envelope,
    identity_key,
    msg_id,
    running_server,
)

pytestmark = pytest.mark.timeout(90)

WAIT = 30.0


def send(sender: str, to: str, n: int) -> dict[str, Any]:
    return {"type": "send", "to": to, "envelope": envelope(sender, to, msg_id(n)), "rid": f"{sender}-{n}"}


class ConfirmingReader:
    """A recipient that confirms every message as it reads it, and remembers the order."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self.got: list[tuple[str, str]] = []
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            try:
                frame = await self.client.recv(3600)
            except ConnectionError:
                return
            if frame["type"] == "message":
                sender, mid = frame["from"], frame["envelope"]["id"]
                self.got.append((sender, mid))
                self.changed.set()
                await self.client.send_frame({"type": "received", "id": mid, "from": sender})

    async def wait_count(self, count: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(self.got) < count:
                self.changed.clear()
                await self.changed.wait()

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.client.close()


async def until_delivered(client: RawClient, ids: list[str]) -> list[str]:
    """Read acks until each of ``ids`` is ``delivered``; the statuses seen, in order (errors fail)."""
    left, statuses = set(ids), []
    async with asyncio.timeout(WAIT):
        while left:
            frame = await client.recv(WAIT)
            assert frame["type"] in ("ack", "presence"), frame
            if frame["type"] == "ack":
                statuses.append(frame["status"])
                if frame["status"] == "delivered":
                    left.discard(frame["id"])
    return statuses



async def fan_in(
    server: ChatServer, senders: int, each: int
) -> tuple[list[tuple[str, str]], list[list[str]]]:
    """``senders`` senders pipeline ``each`` messages to a confirming bob; what bob got and the acks heard."""
    names = [f"s{i}" for i in range(senders)]
    async with clients(server.port, *names) as out:
        bob_client = await RawClient.connect(server.port)
        await bob_client.login("bob", identity_key("bob"))
        bob = ConfirmingReader(bob_client)
        await caught_up(server, "bob", WAIT)
        for name, client in zip(names, out, strict=True):
            client.writer.write(b"".join(encode_frame(send(name, "bob", n)) for n in range(each)))
        statuses = await asyncio.gather(*(until_delivered(c, [msg_id(n) for n in range(each)]) for c in out))
        await bob.wait_count(senders * each)
        await bob.close()
    return bob.got, statuses


def check_once_in_order(got: list[tuple[str, str]], senders: int, each: int) -> None:
    assert len(got) == len(set(got)) == senders * each, f"{len(got)} messages, {len(set(got))} distinct"
    for i in range(senders):
        assert [m for s, m in got if s == f"s{i}"] == [msg_id(n) for n in range(each)], f"s{i}'s order"


async def test_fan_in_past_the_window_and_the_tail_delivers_everything_once_in_order(
    tmp_path: Path, backend_options: dict[str, Any]
) -> None:
    """Six senders pipeline 30 messages each at a window of 8 (a tail of 32): the window, the tail
    and the store all carry some (on Redis every message is in the store; the window bounds the
    hand-out). Everything arrives once, in each sender's order, and is acked ``delivered``."""
    async with running_server(tmp_path / "s.db", window=8, **backend_options) as srv:
        got, statuses = await fan_in(srv, senders=6, each=30)
        assert srv.held_bytes() == 0
    check_once_in_order(got, 6, 30)
    assert any("queued" in s for s in statuses), "the window never filled: the test did not reach the store"


async def test_fan_in_that_fits_the_window_and_its_tail_never_touches_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One node: four senders pipeline ten messages each at a window of 8 (a tail of 32) to a reader
    that confirms as it reads. The 32 past the window wait in memory and follow as it confirms:
    no sender hears ``queued``. Before the tail, the ninth sent all forty through the store (the
    eight unconfirmed ones stored again, all acked ``queued``, then read back)."""
    monkeypatch.setattr(routing, "TAIL_WAIT", 60.0)  # a loaded machine must not make the reader look stuck
    async with running_server(tmp_path / "s.db", window=8) as srv:
        got, statuses = await fan_in(srv, senders=4, each=10)
        assert srv.held_bytes() == 0
    check_once_in_order(got, 4, 10)
    assert statuses == [["delivered"] * 10] * 4, statuses


@pytest.mark.parametrize("count", [3, 11], ids=["tail-at-the-end", "tail-stored-when-full"])
async def test_a_session_that_ends_with_a_tail_passes_it_on_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    """Bob reads two (his window) and never confirms; the third waits in his tail (of eight), and an
    eleventh finds the tail full, so his two unconfirmed ones and then the tail go to the store
    first, in that order. When he leaves, everything is stored in order (alice hears ``queued`` for each) and
    his next session gets them in that order, once."""
    monkeypatch.setattr(routing, "TAIL_WAIT", 60.0)  # the session's end, not the tail's timer, stores them
    async with running_server(tmp_path / "s.db", window=2) as srv, clients(srv.port, "alice") as (a,):
        async with clients(srv.port, "bob") as (b,):
            await caught_up(srv, "bob", WAIT)
            for n in range(count):
                await a.send_frame(send("alice", "bob", n))
            assert [(await b.recv_type("message"))["envelope"]["id"] for _ in range(2)] == [
                msg_id(0),
                msg_id(1),
            ]
            await b.expect_silence(0.2)
        acks = [await a.recv_type("ack") for _ in range(count)]
        assert sorted((x["id"], x["status"]) for x in acks) == [
            (msg_id(n), "queued") for n in range(count)
        ], acks
        async with clients(srv.port, "bob") as (b,):
            ids = []
            for _ in range(count):
                ids.append((await b.recv_type("message"))["envelope"]["id"])
                await b.send_frame({"type": "received", "id": ids[-1], "from": "alice"})
            assert ids == [msg_id(n) for n in range(count)]
            await b.expect_silence(0.3)
        assert srv.held_bytes() == 0
