"""Streams of messages between real ``--json`` client processes: what was sent, what was shown, and the
exactly-once check the fault tests (tests/test_faults.py, tests/test_nodes*.py) apply to them."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.support.jsonclient import Event, JsonClientProcess

# Generous: a loaded 2-core CI machine; each test also bounds every wait itself.
LONG = 240.0  # a 5,000 stream takes ~15 s here; CI may be 10x slower
FAST = ["--rate", "100000", "--burst", "100000"]  # streams limited by the clients, not the rate limit

Spawn = Callable[..., JsonClientProcess]


def client_homes(tmp_path: Path) -> Iterator[Path]:
    """Where the clients' homes live: tmpfs when there is one.

    A kill -9 loses nothing the kernel already has, so these tests do not need
    the disk's fsync; on a shared CI disk each fsync can take milliseconds and
    the clients make two to four per message.
    """
    shm = Path("/dev/shm")
    # A container's /dev/shm may be 64 MiB: take it only with room to spare.
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 512 * 2**20:
        with tempfile.TemporaryDirectory(dir=shm, prefix="securechat-faults-") as root:
            yield Path(root)
    else:
        yield tmp_path


def texts(n: int, tag: str = "m") -> list[str]:
    return [f"{tag}{i:05d}" for i in range(n)]


def shown(client: JsonClientProcess, sender: str) -> list[Event]:
    return client.of_kind("message", **{"from": sender})


def acked_ids(client: JsonClientProcess, **fields: str) -> set[str]:
    return {e["id"] for e in client.of_kind("ack", **fields)}


def check_exactly_once(
    messages: list[Event], sent_texts: list[str], label: str, *, ordered: bool = True
) -> None:
    got = [m["text"] for m in messages]
    dupes = len(got) - len(set(got))
    missing = sorted(set(sent_texts) - set(got))
    extra = sorted(set(got) - set(sent_texts))
    summary = (
        f"{label}: sent {len(sent_texts)}, shown {len(got)} ({len(set(got))} distinct), "
        f"{dupes} shown twice, {len(missing)} missing (first {missing[:5]}), {len(extra)} unexpected"
    )
    assert not missing and not extra and dupes == 0, summary
    ids = [m["id"] for m in messages]
    assert len(set(ids)) == len(ids), summary + f"; {len(ids) - len(set(ids))} ids shown twice"
    if ordered:
        out_of_order = sum(1 for a, b in itertools.pairwise(got) if a > b)
        assert got == sorted(got), summary + f"; {out_of_order} out of order"
