"""``RedisLink.publish_batched`` (securechat/server/resp.py, ``PublishBatch`` in rediscommands.py) against a real
redis-server: the live path's pokes of one loop turn join into one ``PUBLISH`` only while each call follows the
one it may join, so commands still reach Redis in call order; a subscriber of redis-py's own is the witness.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Hashable
from typing import Any

import pytest
import redis.asyncio as aioredis

from securechat.server.rediscommands import BATCH_MAX, PUBLISH_BATCH_BYTES
from securechat.server.resp import RedisAddress, RedisLink
from tests.support.redisproc import RedisProcess

pytestmark = pytest.mark.timeout(30)

_CHANNELS = itertools.count(1)
END = b"END"


class Witness:
    """Two subscribers of ``one`` (so its publishes answer 2) and one of ``other`` (answers 1), on redis-py."""

    def __init__(self, url: str) -> None:
        n = next(_CHANNELS)
        self.one, self.other = b"pb%d:one" % n, b"pb%d:other" % n
        self._clients = [aioredis.from_url(url), aioredis.from_url(url)]
        self._main, self._second = (c.pubsub() for c in self._clients)

    async def start(self) -> None:
        await self._main.subscribe(self.one, self.other)
        await self._second.subscribe(self.one)

    async def heard(self, link: RedisLink) -> list[tuple[bytes, bytes]]:
        """Every message published on either channel so far, in order: the link publishes END after them and
        Redis hands one subscriber what it publishes in the order it ran it."""
        await link.call("PUBLISH", self.other, END)
        out: list[tuple[bytes, bytes]] = []
        async with asyncio.timeout(10):
            while True:
                message = await self._main.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None:
                    continue
                if message["data"] == END:
                    return out
                out.append((message["channel"], message["data"]))

    async def close(self) -> None:
        for pubsub in (self._main, self._second):
            await pubsub.aclose()  # type: ignore[no-untyped-call]
        for client in self._clients:
            await client.aclose()


@pytest.fixture
async def link_and_witness(redis_server: RedisProcess) -> AsyncIterator[tuple[RedisLink, Witness]]:
    link = RedisLink(RedisAddress.from_url(redis_server.url))
    witness = Witness(redis_server.url)
    await witness.start()
    await link.call("PING")  # connected: what follows is one loop turn's writes
    try:
        yield link, witness
    finally:
        await link.close()
        await witness.close()


composed: list[tuple[Hashable, list[bytes]]] = []


def compose(first: Hashable, items: list[Any]) -> bytes:
    composed.append((first, list(items)))
    return b"|".join(items)


def publish(link: RedisLink, channel: bytes, item: bytes, join: Hashable, then: Hashable, size: int = 0) -> asyncio.Future[int]:
    return link.publish_batched(channel, item, join=join, then=then, compose=compose, size=size)


async def test_calls_that_follow_each_other_are_one_publish_and_share_its_future(
    link_and_witness: tuple[RedisLink, Witness],
) -> None:
    link, w = link_and_witness
    composed.clear()
    calls = [publish(link, w.one, b"a%d" % i, join=i, then=i + 1) for i in range(5)]
    other = [publish(link, w.other, b"b%d" % i, join=("x", i), then=("x", i + 1)) for i in range(2)]
    assert all(c is calls[0] for c in calls) and other[1] is other[0] is not calls[0]
    assert [await c for c in calls] == [2] * 5 and [await c for c in other] == [1, 1]  # the subscriber counts
    # compose once per publish, with the first call's join
    assert composed == [(0, [b"a0", b"a1", b"a2", b"a3", b"a4"]), (("x", 0), [b"b0", b"b1"])]
    assert await w.heard(link) == [(w.one, b"a0|a1|a2|a3|a4"), (w.other, b"b0|b1")]


async def test_a_call_with_another_join_starts_a_new_publish(link_and_witness: tuple[RedisLink, Witness]) -> None:
    link, w = link_and_witness
    calls = [
        publish(link, w.one, b"a0", join=0, then=1),
        publish(link, w.one, b"a1", join=1, then=2),
        publish(link, w.one, b"a2", join=7, then=8),  # not the then of the one before
        publish(link, w.one, b"a3", join=1, then=2),  # the join of an earlier one, not the last one's then
        publish(link, w.one, b"a4", join=2, then=3),
    ]
    assert [await c for c in calls] == [2] * 5
    assert calls[1] is calls[0] and len({id(c) for c in calls}) == 3
    assert await w.heard(link) == [(w.one, b"a0|a1"), (w.one, b"a2"), (w.one, b"a3|a4")]


async def test_a_call_on_another_channel_starts_a_new_publish(link_and_witness: tuple[RedisLink, Witness]) -> None:
    link, w = link_and_witness
    calls = [
        publish(link, w.one, b"a0", join=0, then=1),
        publish(link, w.other, b"a1", join=1, then=2),
        publish(link, w.one, b"a2", join=2, then=3),
        publish(link, w.one, b"a3", join=3, then=4),
    ]
    assert [await c for c in calls] == [2, 1, 2, 2]
    assert await w.heard(link) == [(w.one, b"a0"), (w.other, b"a1"), (w.one, b"a2|a3")]


async def test_a_command_in_between_starts_a_new_publish_and_keeps_call_order(link_and_witness: tuple[RedisLink, Witness]) -> None:
    link, w = link_and_witness
    calls = [
        publish(link, w.one, b"a0", join=0, then=1),
        link.call("PUBLISH", w.one, b"plain"),
        publish(link, w.one, b"a1", join=1, then=2),
        link.call("SET", w.one + b":key", b"v"),
        publish(link, w.one, b"a2", join=2, then=3),
    ]
    assert [await c for c in calls] == [2, 2, 2, b"OK", 2]
    assert await w.heard(link) == [(w.one, b"a0"), (w.one, b"plain"), (w.one, b"a1"), (w.one, b"a2")]


async def test_a_publish_written_already_is_not_joined(link_and_witness: tuple[RedisLink, Witness]) -> None:
    link, w = link_and_witness
    first = publish(link, w.one, b"a0", join=0, then=1)
    await asyncio.sleep(0)  # one loop turn: the link writes it; its reply is still to come
    second = publish(link, w.one, b"a1", join=1, then=2)  # its join matches, but a0 went out
    assert second is not first and [await first, await second] == [2, 2]
    assert await w.heard(link) == [(w.one, b"a0"), (w.one, b"a1")]


async def test_a_publish_takes_no_more_than_batch_max_calls(link_and_witness: tuple[RedisLink, Witness]) -> None:
    link, w = link_and_witness
    count = 2 * BATCH_MAX + 3
    calls = [publish(link, w.one, b"%d" % i, join=i, then=i + 1) for i in range(count)]
    assert [await c for c in calls] == [2] * count
    heard = await w.heard(link)
    assert [len(data.split(b"|")) for _, data in heard] == [BATCH_MAX, BATCH_MAX, 3]
    assert b"|".join(data for _, data in heard) == b"|".join(b"%d" % i for i in range(count))


async def test_a_publish_takes_no_more_calls_past_its_bytes(link_and_witness: tuple[RedisLink, Witness]) -> None:
    link, w = link_and_witness
    sizes = [PUBLISH_BATCH_BYTES - 1, 1, 1, PUBLISH_BATCH_BYTES // 2, PUBLISH_BATCH_BYTES // 2, 5, 0]
    calls = [publish(link, w.one, b"a%d" % i, join=i, then=i + 1, size=size) for i, size in enumerate(sizes)]
    assert [await c for c in calls] == [2] * len(sizes)
    # Under the bound a call joins; at it the publish is full: the next call starts another.
    assert await w.heard(link) == [(w.one, b"a0|a1"), (w.one, b"a2|a3|a4"), (w.one, b"a5|a6")]
