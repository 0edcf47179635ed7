"""What the line-based front ends (``--plain`` and ``--json``) share around the executor.

:func:`stdin_lines` reads input lines without blocking the event loop;
:func:`feed` hands them to a front end's handler while the session runs, until
the input ends, the handler asks to quit, or the session (or anything else the
front end waits on) stops first.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Final, TypeVar

MAX_LINE: Final = 1 << 20
READ_CHUNK: Final = 65536

T = TypeVar("T")


class Ending(enum.Enum):
    """Why :func:`feed` returned."""

    EOF = "end of input"
    QUIT = "the handler asked to quit"
    STOPPED = "something the front end waits on finished first"


async def feed(
    lines: AsyncIterator[T], handle: Callable[[T], Awaitable[bool]], stops: Iterable[asyncio.Future[Any]]
) -> Ending:
    """Pass each line to ``handle`` (False: quit) until input ends or one of ``stops`` is done."""
    iterator = aiter(lines)
    while True:
        next_line: asyncio.Future[T] = asyncio.ensure_future(anext(iterator))
        await asyncio.wait({next_line, *stops}, return_when=asyncio.FIRST_COMPLETED)
        if not next_line.done():
            next_line.cancel()
            return Ending.STOPPED
        try:
            line = next_line.result()
        except StopAsyncIteration:
            return Ending.EOF
        if not await handle(line):
            return Ending.QUIT


async def stdin_lines(fd: int | None = None) -> AsyncIterator[bytes]:
    """Lines from file descriptor ``fd`` (default: stdin) without blocking the event loop.

    A daemon thread does the blocking reads, so this works for pipes, files
    and terminals alike; the iterator ends at end of input. The thread uses
    ``os.read`` rather than ``sys.stdin``: a daemon thread parked inside a
    buffered reader's lock aborts the interpreter at exit. A line longer than
    :data:`MAX_LINE` is handed on in pieces (to be refused by the parser).
    """
    source = fd if fd is not None else sys.stdin.fileno()
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def put(item: bytes | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop may be gone at exit
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def reader() -> None:
        pending = b""
        try:
            while True:
                chunk = os.read(source, READ_CHUNK)
                if not chunk:
                    break
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    put(line + b"\n")
                if len(pending) > MAX_LINE:  # an endless line: hand it on to be refused
                    put(pending)
                    pending = b""
        except OSError:
            pass
        finally:
            if pending:
                put(pending)
            put(None)

    threading.Thread(target=reader, name="securechat-stdin", daemon=True).start()
    while True:
        item = await queue.get()
        if item is None:
            return
        yield item
