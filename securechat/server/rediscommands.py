"""Commands as :class:`~securechat.server.resp.RedisLink` writes them: :func:`pack`, :class:`Script` and :class:`Batch`.

A batch is calls of one script on the same keys, joined into one ``EVALSHA``. A node stores every send with the ``enqueue`` script. The sends a connection's
read brings are handled in one loop turn, one after the other, and each was one
``EVALSHA``: the command's framing, the keys and the settings went over once per
message, and Redis parsed and dispatched each. A batch carries them once: its
``ARGV`` is a head (the settings, from the first call) followed by each call's
item, and the script answers ``width`` values per item, in order. Each call
keeps its own future, resolved (or failed, with the connection) by the link at
the moment a single command's would be, so a caller cannot tell the difference:
the script must treat its items exactly as if each were a call of its own.

A call joins the batch only while the batch is the last command not yet
written, so the link's promise holds unchanged: commands reach Redis in call
order.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import hiredis

# A batch is written as soon as it holds this many calls (a bound on one command's size and on the
# time one script keeps Redis from everyone else).
BATCH_MAX = 64
# A joined PUBLISH takes no more calls past this many bytes: a subscriber's output buffer in Redis is
# bounded (``client-output-buffer-limit pubsub``, 8 MB soft by default).
PUBLISH_BATCH_BYTES = 256 * 1024


def pack(args: Iterable[Any]) -> bytes:
    """One command in RESP (hiredis packs str, bytes, int and float)."""
    return hiredis.pack_command(tuple(args))  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Script:
    """A Lua script, called by its SHA-1 (loaded on every new connection)."""

    name: str
    source: str
    sha: str = field(init=False)  # computed once: every message's EVALSHA names it

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


class Batch:
    """The calls joined into one ``EVALSHA``, and each call's future."""

    __slots__ = ("futures", "head", "items", "join", "keys", "sha", "width")

    def __init__(self, sha: str, keys: Sequence[Any], head: Sequence[Any], join: Hashable, width: int) -> None:
        self.sha = sha
        self.keys = keys
        self.head = head
        self.join = join  # calls with an equal ``join`` (and script) may share this batch
        self.width = width
        self.items: list[Any] = []
        self.futures: list[asyncio.Future[Any]] = []

    def add(self, item: Sequence[Any], fut: asyncio.Future[Any]) -> None:
        self.items.extend(item)
        self.futures.append(fut)

    @property
    def full(self) -> bool:
        return len(self.futures) >= BATCH_MAX

    def command(self) -> tuple[Any, ...]:
        return ("EVALSHA", self.sha, len(self.keys), *self.keys, *self.head, *self.items)

    # The link answers a Batch as it answers one command's future: these three are what it calls.

    def done(self) -> bool:
        return all(f.done() for f in self.futures)

    def set_result(self, reply: Any) -> None:
        """Hand each call its share of the script's reply (a flat list, ``width`` values per call)."""
        width = self.width
        if not isinstance(reply, list) or len(reply) != width * len(self.futures):
            self.set_exception(ValueError(f"{len(self.futures)} joined calls got a reply of the wrong shape: {reply!r:.200}"))
            return
        for i, fut in enumerate(self.futures):
            if not fut.done():
                fut.set_result(reply[i * width : (i + 1) * width])

    def set_exception(self, exc: BaseException) -> None:
        for fut in self.futures:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: a caller that stopped caring must not log it

    def exception(self) -> None:
        """Each call's exception is marked retrieved already."""


class PublishBatch(Batch):
    """Calls of ``PUBLISH`` on one channel joined into one message, made by ``compose(first, items)`` when it is
    written (``first``: the first call's ``join``); the calls share one future, which gets the reply (how many
    subscribers heard it)."""

    __slots__ = ("channel", "compose", "first", "future", "size")

    def __init__(self, channel: bytes, join: Hashable, compose: Callable[[Any, list[Any]], bytes], future: asyncio.Future[Any]) -> None:
        super().__init__("", (), (), join, 1)
        self.channel = channel
        self.compose = compose
        self.first = join
        self.future = future
        self.futures.append(future)
        self.size = 0

    def join_item(self, item: Any, size: int) -> None:
        """One more call's ``item`` (``size`` bytes toward :data:`PUBLISH_BATCH_BYTES`); it shares :attr:`future`."""
        self.items.append(item)
        self.size += size

    @property
    def full(self) -> bool:
        return len(self.items) >= BATCH_MAX or self.size >= PUBLISH_BATCH_BYTES

    def command(self) -> tuple[Any, ...]:
        return ("PUBLISH", self.channel, self.compose(self.first, self.items))

    def set_result(self, reply: Any) -> None:
        if not self.future.done():
            self.future.set_result(reply)


def unanswered(entry: asyncio.Future[Any] | Batch) -> list[asyncio.Future[Any]]:
    """The futures of a command the link submitted (a batch's calls one by one) that are not done yet."""
    return [f for f in (entry.futures if isinstance(entry, Batch) else [entry]) if not f.done()]
