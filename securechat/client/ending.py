"""How every front end ends a session: close it, wait (bounded) for ``run()``, say whether it failed."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..errors import SecurechatError
from .session import ClientSession

log = logging.getLogger(__name__)


async def finish_session(session: ClientSession, run_task: asyncio.Task[None], timeout: float = 10.0) -> bool:
    """Close ``session`` and wait (bounded) for its ``run()`` task; True if ``run()`` failed.

    The front ends share this ending: a :class:`SecurechatError` from ``run()``
    was already shown to the user as an event; anything else is logged here.
    """
    await session.close()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait({run_task}, timeout=timeout)
    if not run_task.done() or run_task.cancelled():
        return False
    error = run_task.exception()
    if error is None:
        return False
    if not isinstance(error, SecurechatError):
        log.error("the session failed", exc_info=error)
    return True
