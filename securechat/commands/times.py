"""Times from outside, as the front ends show them (docs/security.md, "Times from outside").

A time on the wire is any integer from 0 to 2**53 - 1 milliseconds
(:func:`securechat.envelope.is_timestamp`); that reaches the year 287,396, and
a calendar stops at 9999. Every time that came from the network, a payload or
the history is shown through this module, which range-checks it first:
out of range, it is :data:`OUT_OF_RANGE`, never an exception.

A message is dated by its signed ``ts`` (the sender's clock, which the
signature covers), not by the server's ``server_ts``; when the two are more
than :data:`FAR_FROM_SERVER_MS` apart, the server's time follows in
parentheses: an old envelope replayed, or a sender whose clock is wrong.
"""

from __future__ import annotations

import datetime
from typing import Final

# Honest clocks drift by seconds to minutes; a queued message keeps both times
# of when it was sent, so a larger gap means a wrong clock or a replay.
FAR_FROM_SERVER_MS: Final = 10 * 60 * 1000
OUT_OF_RANGE: Final = "time out of range"
# 9999-12-30 (UTC): a day short of the calendar's end, so any local offset still fits.
_LAST_SHOWN_MS: Final = 253_402_128_000_000


def _valid(ms: float | None) -> bool:
    return isinstance(ms, int | float) and not isinstance(ms, bool) and 0 <= ms <= _LAST_SHOWN_MS


def local_time(ms: float | None) -> datetime.datetime | None:
    """``ms`` since the epoch as a local time, or None when it is no time a calendar can show."""
    if not _valid(ms):
        return None
    assert ms is not None
    try:
        return datetime.datetime.fromtimestamp(ms / 1000)
    except (OverflowError, OSError, ValueError):
        return None


def clock(ms: float | None, now_ms: float) -> str:
    """``HH:MM`` on the day of ``now_ms``, ``YYYY-MM-DD HH:MM`` on any other day."""
    when = local_time(ms)
    if when is None:
        return OUT_OF_RANGE
    today = local_time(now_ms)
    if today is not None and when.date() == today.date():
        return when.strftime("%H:%M")
    return when.strftime("%Y-%m-%d %H:%M")


def far_apart(ts: float, server_ts: float | None) -> bool:
    """True when a message's signed time and the server's are too far apart to pass unmarked."""
    return server_ts is not None and abs(ts - server_ts) > FAR_FROM_SERVER_MS


def message_clock(ts: float, server_ts: float | None, now_ms: float) -> str:
    """A message's signed time, with the server's after it when they are far apart."""
    shown = clock(ts, now_ms)
    if far_apart(ts, server_ts):
        shown += f" (server: {clock(server_ts, now_ms)})"
    return shown


def utc_clock(ms: float | None) -> str:
    """``YYYY-MM-DD HH:MM:SS UTC`` for the offline subcommands, which print whole dates."""
    if not _valid(ms):
        return OUT_OF_RANGE
    assert ms is not None
    when = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def utc_message_clock(ts: float, server_ts: float | None) -> str:
    """:func:`message_clock` in UTC, for ``history``."""
    shown = utc_clock(ts)
    if far_apart(ts, server_ts):
        shown += f" (server: {utc_clock(server_ts)})"
    return shown
