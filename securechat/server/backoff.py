"""Backoff: how long a Redis connection waits before it tries again (the link's and the subscriber's)."""

from __future__ import annotations

from typing import Final

BACKOFF_INITIAL: Final = 0.05
BACKOFF_MAX: Final = 2.0


class Backoff:
    """Capped exponential backoff: how long to wait after the ``n``-th failure in a row."""

    def __init__(self) -> None:
        self.failures = 0

    def next(self) -> float:
        self.failures += 1
        return float(min(BACKOFF_MAX, BACKOFF_INITIAL * 2 ** min(self.failures - 1, 10)))

    def reset(self) -> None:
        self.failures = 0
