"""A future mapped through a function, without a task: how the Redis store shapes its replies."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def then(fut: asyncio.Future[T], fn: Callable[[T], R]) -> asyncio.Future[R]:
    """A future of ``fn(result)``: no task, one callback; an exception (``fn``'s too) goes to the awaiting caller."""
    out: asyncio.Future[R] = asyncio.get_running_loop().create_future()

    def done(f: asyncio.Future[T]) -> None:
        if out.cancelled():
            return
        if f.cancelled():
            out.cancel()
        elif (exc := f.exception()) is not None:
            out.set_exception(exc)
        else:
            try:
                out.set_result(fn(f.result()))
            except Exception as error:  # noqa: BLE001 - handed to the awaiting caller
                out.set_exception(error)

    fut.add_done_callback(done)
    return out
