"""The server's Redis client against a real redis-server: order, failures that answer instead of hanging,
reconnection, and a subscriber that resubscribes and says so after any break."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from securechat.server.redisbus import RedisBus
from securechat.server.rediscommands import Script
from securechat.server.replicas import NotReplicated, ReplicaWait
from securechat.server.resp import RedisAddress, RedisLink, RedisReplyError, RedisUnavailable
from tests.support.redisproc import RedisProcess

pytestmark = pytest.mark.timeout(60)

MakeRedis = Callable[..., RedisProcess]
ECHO = Script("echo", "return ARGV[1]")


def address(redis: RedisProcess, **fields: Any) -> RedisAddress:
    return RedisAddress.from_url(redis.url.replace("/0", f"/{fields.pop('db', 0)}"))


async def eventually(fn: Callable[[], Any], timeout: float = 10.0) -> Any:
    """``await fn()`` until it stops raising RedisUnavailable (bounded)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                return await fn()
            except RedisUnavailable:
                await asyncio.sleep(0.05)


def test_urls() -> None:
    a = RedisAddress.from_url("redis://user:s3cret@10.0.0.5:6380/3")
    assert (a.host, a.port, a.db, a.username, a.password, a.tls) == ("10.0.0.5", 6380, 3, "user", "s3cret", False)
    assert str(a) == "redis://10.0.0.5:6380/3" and "s3cret" not in repr(str(a))
    assert RedisAddress.from_url("rediss://h:1/0").tls
    assert RedisAddress.from_url("unix:///run/redis.sock?db=2").path == "/run/redis.sock"
    with pytest.raises(ValueError, match="must be a number"):
        RedisAddress.from_url("redis://h:1/zero")


def test_sentinel_urls() -> None:
    a = RedisAddress.from_url("redis+sentinel://:s3cret@10.0.0.5:26379,10.0.0.6:26380/mymaster/2")
    assert (a.sentinels, a.master, a.db, a.password) == ((("10.0.0.5", 26379), ("10.0.0.6", 26380)), "mymaster", 2, "s3cret")
    assert str(a) == "redis+sentinel://10.0.0.5:26379,10.0.0.6:26380/mymaster/2"
    assert RedisAddress.from_url("redis+sentinel://h:1/m").db == 0
    for bad in ("redis+sentinel://h:1", "redis+sentinel://h:1/m/zero", "redis+sentinel://h:x/m", "redis+sentinel://h:1/m/0/1"):
        with pytest.raises(ValueError, match="bad Redis URL"):
            RedisAddress.from_url(bad)


async def test_commands_apply_in_call_order_across_loop_iterations(redis_server: RedisProcess) -> None:
    link = RedisLink(address(redis_server), scripts=[ECHO])
    key = "order:counter"
    await link.call("DEL", key)
    futures = []
    for i in range(300):
        futures.append(link.call("INCR", key))
        if i % 7 == 0:
            await asyncio.sleep(0)  # some in the same write, some not
    assert await asyncio.gather(*futures) == list(range(1, 301))
    assert await link.script(ECHO, [], ["hi"]) == b"hi"
    with pytest.raises(RedisReplyError):
        await link.call("INCR", "order:not-a-number-" * 0 + "x", "extra")  # wrong arity: an error reply
    assert await link.call("GET", key) == b"300"  # the link is still good after an error reply
    await link.close()
    with pytest.raises(RuntimeError):
        link.call("PING")


async def test_a_killed_redis_fails_commands_at_once_and_a_restarted_one_serves_again(make_redis: MakeRedis) -> None:
    redis = make_redis()
    link = RedisLink(address(redis), scripts=[ECHO])
    assert await link.call("PING") == b"PONG"
    redis.kill()
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(3):  # the lost connection, then refused reconnects, each answered at once
        with pytest.raises(RedisUnavailable):
            await link.call("PING")
    assert loop.time() - started < 2.0
    redis.restart()
    # The scripts are loaded on the new connection: EVALSHA works against the fresh server.
    assert await eventually(lambda: link.script(ECHO, [], ["back"])) == b"back"
    await link.close()


async def test_a_hung_redis_is_an_error_after_the_timeout_not_a_hang(make_redis: MakeRedis) -> None:
    redis = make_redis()
    link = RedisLink(address(redis), timeout=0.5)
    assert await link.call("PING") == b"PONG"
    redis.pause()
    try:
        with pytest.raises(RedisUnavailable):
            await asyncio.wait_for(link.call("PING"), 5.0)  # well before 5 s: the 0.5 s timeout drops it
    finally:
        redis.resume()
    assert await eventually(lambda: link.call("PING")) == b"PONG"
    await link.close()


async def test_a_refused_login_fails_the_commands(make_redis: MakeRedis) -> None:
    redis = make_redis(extra=("--requirepass", "right"))
    wrong = RedisLink(RedisAddress.from_url(f"redis://:wrong@127.0.0.1:{redis.port}/0"))
    with pytest.raises((RedisReplyError, RedisUnavailable)):
        await asyncio.wait_for(wrong.call("PING"), 5.0)
    await wrong.close()
    right = RedisLink(RedisAddress.from_url(f"redis://:right@127.0.0.1:{redis.port}/0"))
    assert await right.call("PING") == b"PONG"
    await right.close()


class Heard:
    def __init__(self) -> None:
        self.messages: list[tuple[bytes, bytes]] = []
        self.resyncs = 0
        self.changed = asyncio.Event()

    def message(self, channel: bytes, data: bytes) -> None:
        self.messages.append((channel, data))
        self.changed.set()

    def resync(self) -> None:
        self.resyncs += 1
        self.changed.set()

    async def until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


async def subscribed(redis: RedisProcess, channel: bytes) -> tuple[Heard, RedisBus, RedisLink]:
    """A bus subscribed to ``channel`` (what it heard is recorded) and a link beside it."""
    heard = Heard()
    bus = RedisBus(address(redis), heard.message, heard.resync)
    await bus.start()
    await bus.subscribe(channel)
    return heard, bus, RedisLink(address(redis))


async def test_the_subscriber_resubscribes_after_its_connection_is_killed(make_redis: MakeRedis) -> None:
    redis = make_redis()
    heard, bus, link = await subscribed(redis, b"ch:a")
    assert await link.call("PUBLISH", b"ch:a", b"one") == 1
    await heard.until(lambda: (b"ch:a", b"one") in heard.messages)
    resyncs = heard.resyncs
    assert await link.call("CLIENT", "KILL", "TYPE", "pubsub") >= 1
    await heard.until(lambda: heard.resyncs > resyncs)  # back, and it says so
    assert await link.call("PUBLISH", b"ch:a", b"two") == 1  # subscribed again
    await heard.until(lambda: (b"ch:a", b"two") in heard.messages)
    bus.unsubscribe(b"ch:a")
    assert await _numsub_becomes_zero(link, b"ch:a")
    await bus.close()
    await link.close()


async def _numsub_becomes_zero(link: RedisLink, channel: bytes, timeout: float = 5.0) -> bool:
    """Redis has no event for an unsubscribe: ask until nobody is subscribed, within ``timeout``."""
    async with asyncio.timeout(timeout):
        while (await link.call("PUBSUB", "NUMSUB", channel))[1] != 0:
            await asyncio.sleep(0.02)
    return True


async def test_the_subscriber_notices_a_hung_redis_by_its_heartbeat(make_redis: MakeRedis) -> None:
    redis = make_redis()
    heard = Heard()
    bus = RedisBus(address(redis), heard.message, heard.resync, timeout=1.0)
    await bus.start()
    await bus.subscribe(b"ch:b")
    resyncs = heard.resyncs
    redis.pause()
    try:  # the heartbeat goes unanswered for longer than the 1 s timeout: the bus gives up on it
        await asyncio.wait_for(_until_disconnected(bus), 10)
    finally:
        redis.resume()
    await heard.until(lambda: heard.resyncs > resyncs)
    await bus.close()


async def test_subscribing_while_redis_is_down_takes_effect_when_it_is_back(make_redis: MakeRedis) -> None:
    redis = make_redis()
    heard = Heard()
    bus = RedisBus(address(redis), heard.message, heard.resync)
    await bus.start()
    redis.kill()
    await asyncio.wait_for(_until_disconnected(bus), 10)
    waiting = bus.subscribe(b"ch:c")
    assert not waiting.done()
    redis.restart()
    await asyncio.wait_for(waiting, 15)
    link = RedisLink(address(redis))
    assert await link.call("PUBLISH", b"ch:c", b"x") == 1
    await bus.close()
    await link.close()


async def _until_disconnected(bus: RedisBus) -> None:
    while bus.connected.is_set():
        await asyncio.sleep(0.02)


async def test_a_subscriber_refused_by_an_acl_retries_and_resubscribes_once_let_in(
    make_redis: MakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """An ACL change takes the channels from the bus's user: Redis drops it and refuses its SUBSCRIBE
    (NOPERM) on every reconnect. The bus must not sit on that connection unsubscribed, nor retry in a
    tight loop with a line each time: one line for the refusal, one when it is back."""
    redis = make_redis()
    heard, bus, link = await subscribed(redis, b"ch:d")
    resyncs = heard.resyncs
    with caplog.at_level(logging.DEBUG, logger="securechat.server.redis"):
        await link.call("ACL", "SETUSER", "default", "resetchannels")  # Redis drops the subscriber itself
        async with asyncio.timeout(10):
            while _denied(await link.call("ACL", "LOG"), b"channel") < 3:
                await asyncio.sleep(0.02)  # refused three times: the retries go on, the log says it once
        await link.call("ACL", "SETUSER", "default", "allchannels")
        await heard.until(lambda: heard.resyncs > resyncs)
    assert await link.call("PUBLISH", b"ch:d", b"back") == 1
    await heard.until(lambda: (b"ch:d", b"back") in heard.messages)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("refused the subscriber" in m and "NOPERM" in m for m in said) == 1, said
    assert sum("subscriber reconnected" in m for m in said) == 1, said
    await bus.close()
    await link.close()


async def test_a_link_refused_by_redis_fails_as_unavailable_backs_off_and_says_so_once(
    make_redis: MakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """The password changed under the link, then its connection cut: every reconnect is refused (WRONGPASS).
    Its commands must fail as Redis being away (the node answers `internal`, no traceback), not as Redis
    errors, the reconnects back off instead of one per command, and the log says it once, then once back."""
    redis = make_redis(extra=("--requirepass", "first"))
    url = f"redis://:first@127.0.0.1:{redis.port}/0"
    link, admin = RedisLink(RedisAddress.from_url(url)), RedisLink(RedisAddress.from_url(url))
    assert await link.call("PING") == b"PONG" and await admin.call("PING") == b"PONG"
    with caplog.at_level(logging.INFO, logger="securechat.server.redis"):
        await admin.call("CONFIG", "SET", "requirepass", "second")  # admin's own connection stays logged in
        assert await admin.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes") == 1
        failed = 0
        async with asyncio.timeout(10):
            while _denied(await admin.call("ACL", "LOG"), b"auth") < 3:  # Redis refused three reconnects
                with pytest.raises(RedisUnavailable):
                    await link.call("SET", "k", "v")
                failed += 1
                await asyncio.sleep(0.02)
        await admin.call("CONFIG", "SET", "requirepass", "first")
        assert await eventually(lambda: link.call("SET", "k", "v")) == b"OK"
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("is out of reach" in m for m in said) == 1, said
    assert sum("is back after" in m for m in said) == 1, said
    assert len(said) == 2, said
    assert failed > 3, "commands between the refused reconnects fail at once, without a reconnect each"
    await link.close()
    await admin.close()


def _denied(reply: list[list[Any]], reason: bytes) -> int:
    """How many times Redis denied something for ``reason`` (``auth``, ``channel``), from its ``ACL LOG``."""
    entries = [dict(zip(entry[::2], entry[1::2], strict=True)) for entry in reply]
    return sum(int(e[b"count"]) for e in entries if e[b"reason"] == reason)


async def test_writes_wait_for_the_replicas_asked_for_and_are_refused_when_too_few_answer(
    make_redis: MakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """``--redis-replicas 1`` (securechat/server/replicas.py) on a primary with no replica: each write is
    refused NotReplicated once the WAIT times out, with one log line for the lot; once a replica follows
    the primary the writes go through, with one line that says so."""
    primary = make_redis()
    link = RedisLink(address(primary))
    wait = ReplicaWait(link.call, 1, timeout_ms=200)
    with caplog.at_level(logging.INFO, logger="securechat.server.redis"):
        for n in range(3):  # one turn's writes share one WAIT, the next turn has its own
            writes = [wait.after(link.call("INCR", "n")) for _ in range(2)]
            for write in writes:
                with pytest.raises(NotReplicated, match="0 of 1 replicas"):
                    await write
        assert await link.call("GET", "n") == b"6"  # applied on the primary all the same: the resend is a resend
        assert b"cmdstat_wait:calls=3," in await link.call("INFO", "commandstats")  # one WAIT per turn
        replica = make_redis()
        await link.call("CONFIG", "SET", "repl-diskless-sync-delay", "0")  # the first sync at once, not after 5 s
        assert await RedisLink(address(replica)).call("REPLICAOF", "127.0.0.1", primary.port) == b"OK"
        assert await eventually(lambda: wait.after(link.call("INCR", "n")), 15) >= 7
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "replicas" in r.getMessage()]
    assert len(said) == 2 and "refusing sends" in said[0] and "acknowledge again" in said[1], said
    await link.close()
