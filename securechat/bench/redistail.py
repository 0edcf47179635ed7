"""Where a latency run's slow messages were slow: Redis's main thread seen from outside, and a split per message.

Issue 11's latency target is a tail (p99), and a tail has a place. Two views, both cheap enough to leave on:

- :class:`StateSampler` reads the state of a process's main thread from ``/proc/PID/stat`` a few hundred
  times a second: ``R`` running or waiting for a core, ``D`` waiting for the disk (Redis's ``fdatasync``
  of the append-only file under ``appendfsync always``, done in the main thread before the loop turn's
  replies and publishes go out), ``S`` idle in ``epoll_wait``. With the process's CPU time over the same
  window this says how much of Redis's time went to its CPU, to waiting for a core, to the disk, and
  how much was left.
- :func:`split` takes the slow messages a latency run kept (:mod:`securechat.bench.worker`: sent time,
  latency, and how long after the send the sender's node stamped the frame's ``server_ts``) and says
  how much of their latency came before the sender's node handled the send and how much after it
  (Redis, the recipient's node, the receiving client).
"""

from __future__ import annotations

import math
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Final

SAMPLE_EVERY: Final = 0.002  # seconds between two reads of the state
SLOW_MS: Final = 10.0  # issue 11's target: a message slower than this is "slow"


class StateSampler:
    """Counts of a process's scheduler states (``R``, ``D``, ``S``, ...), sampled by a thread until stopped."""

    def __init__(self, pid: int, every: float = SAMPLE_EVERY) -> None:
        self._path = f"/proc/{pid}/stat"
        self._every = every
        self._counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> StateSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def counts(self) -> dict[str, float]:
        """The samples so far per state, as ``state_R``, ``state_D``, ... (cumulative: a probe takes deltas)."""
        counts = dict(self._counts)
        return {f"state_{state}": float(counts.get(state, 0)) for state in {"R", "D", "S", *counts}}

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                with open(self._path, "rb") as f:
                    stat = f.read()
            except OSError:
                return
            self._counts[stat[stat.rindex(b")") + 2 :][:1].decode()] += 1


def shares(probe: dict[str, float], wall_s: float) -> dict[str, float]:
    """From a window's probe deltas: Redis's time on its CPU, waiting for a core, for the disk, and idle (0..1)."""
    samples = sum(v for k, v in probe.items() if k.startswith("state_"))
    if not samples or not wall_s:
        return {}
    running = probe.get("state_R", 0.0) / samples
    cpu = min(probe.get("redis_cpu_s", 0.0) / wall_s, running)
    return {
        "cpu": cpu,
        "waiting_for_a_core": running - cpu,
        "waiting_for_the_disk": probe.get("state_D", 0.0) / samples,
        "idle": probe.get("state_S", 0.0) / samples,
    }


def split(slow: Sequence[tuple[float, float, float]], over_ms: float = SLOW_MS) -> dict[str, float]:
    """The messages slower than ``over_ms``: how many, and the median ms of their latency before and after the
    sender's node stamped them (the stamp is in whole ms: each part is good to about a millisecond)."""
    late = [(latency, before) for _, latency, before in slow if latency >= over_ms and not math.isnan(before)]
    if not late:
        return {"slow": 0.0}
    return {
        "slow": float(len(late)),
        "before_stamp_ms": statistics.median(before for _, before in late),
        "after_stamp_ms": statistics.median(latency - before for latency, before in late),
    }


def command(port: int, *args: str) -> bytes:
    """One command to the Redis at ``port`` and the start of its raw reply (the bench needs no client)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in (x.encode() for x in args)))
        reply = s.recv(65536)
        deadline = time.monotonic() + 1
        while not reply.endswith(b"\r\n") and time.monotonic() < deadline:
            reply += s.recv(65536)
        return reply


def worst_stalls(port: int) -> dict[str, int]:
    """``LATENCY LATEST``: the worst ms of each event Redis's latency monitor saw since its last reset."""
    lines = command(port, "LATENCY", "LATEST").split(b"\r\n")
    out: dict[str, int] = {}
    for k in range(int(lines[0][1:])):  # each event: *4, $len, its name, :time, :latest ms, :worst ms
        entry = lines[1 + 6 * k : 7 + 6 * k]
        out[entry[2].decode()] = int(entry[5][1:])
    return out
