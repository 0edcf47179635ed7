"""docs/deployment.md's examples, read out of the doc so that the tests run what it says.

:func:`block` is the one fenced block of a section that holds a given text; the Redis and Sentinel
settings of "### Redis" are turned here into running processes' files (:class:`DocSentinels`; a
data node is :class:`tests.support.redisproc.ConfiguredRedis` with :func:`redis_settings`), with
the doc's placeholder addresses and password replaced by the test's.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.redisproc import RedisProcess
from tests.support.sentinels import DOWN_AFTER_MS, Sentinels

DOC = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"
REDIS = "### Redis"
PASSWORD = "doc-test-password"  # the doc's PASSWORD


def section(heading: str) -> str:
    """The text of the section whose heading line is ``heading``, up to the next ``###``."""
    text = DOC.read_text(encoding="utf-8")
    assert f"\n{heading}\n" in text, f"docs/deployment.md has no section {heading!r}"
    return text.split(f"\n{heading}\n", 1)[1].split("\n### ", 1)[0]


def block(heading: str, holding: str) -> str:
    """The one fenced block of section ``heading`` that holds ``holding``, as written there."""
    blocks = [b for b in re.findall(r"^ *```\w*\n(.*?)^ *```", section(heading), re.DOTALL | re.MULTILINE)]
    found = [b for b in blocks if holding in b]
    assert len(found) == 1, f"docs/deployment.md's {heading!r} should hold one block with {holding!r}: {found}"
    return str(found[0])


def redis_settings(primary: RedisProcess | None = None) -> str:
    """A data node's redis.conf text as the doc gives it (its settings, its password's), for the primary
    or, given ``primary``, for a replica of it (the doc's ``replicaof`` line)."""
    text = block(REDIS, "appendonly yes") + block(REDIS, "requirepass").replace("PASSWORD", PASSWORD)
    if primary is not None:
        (directive,) = re.findall(r"`(replicaof) \S+ \d+`", section(REDIS))
        text += f"{directive} 127.0.0.1 {primary.port}\n"
    return text


def replica_count() -> int:
    """How many replicas the doc says to run with ``--redis-replicas 1``."""
    (said,) = re.findall(r"`--redis-replicas 1` run \*\*(\w+)\*\* replicas", section(REDIS))
    return ["one", "two", "three"].index(said) + 1


def sentinel_url(ports: list[int]) -> str:
    """The doc's filled-in ``redis+sentinel://`` URL, its sentinels' addresses replaced by ``ports``."""
    (url,) = re.findall(r"`(redis\+sentinel://:PASSWORD@[^`]+)`", section(REDIS))
    addresses = iter(ports)
    url, count = re.subn(r"[\d.]+:\d+", lambda _: f"127.0.0.1:{next(addresses)}", url)
    assert count == len(ports), f"the doc's URL names {count} sentinels, the test runs {len(ports)}"
    return url.replace("PASSWORD", PASSWORD)


class DocSentinels(Sentinels):
    """Sentinels with the doc's file, its ``port`` and primary's address replaced, and its
    ``down-after-milliseconds`` shortened to the other Sentinel tests' (a test bounded in seconds)."""

    def settings(self, port: int, primary: int) -> str:
        text = block(REDIS, "sentinel monitor").replace("PASSWORD", PASSWORD)
        text, ports = re.subn(r"^port \d+$", f"port {port}", text, flags=re.MULTILINE)
        text, monitors = re.subn(r"(sentinel monitor \S+ )\S+ \d+", rf"\g<1>127.0.0.1 {primary}", text)
        text, downs = re.subn(r"(down-after-milliseconds \S+ )\d+", rf"\g<1>{DOWN_AFTER_MS}", text)
        assert (ports, monitors, downs) == (1, 1, 1), f"the doc's sentinel file changed:\n{text}"
        return text
