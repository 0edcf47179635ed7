"""The tests' own ``redis-server`` (tests/support/redisproc.py): a test never uses a Redis it did not start."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.redisproc import RedisProcess


def test_a_redis_whose_port_was_taken_is_not_mistaken_for_the_one_there(tmp_path: Path) -> None:
    """Before the fix ``start()`` returned as soon as the port answered ``PING``, whoever answered: a
    Redis whose port another had taken since it was chosen (another worker's, or another test's Redis
    restarting on it) exited at once, and its test went on against the other one's data."""
    other = RedisProcess(tmp_path / "other").start()
    given = RedisProcess(tmp_path / "given", port=other.port)  # a restart's port: it cannot move
    chosen = RedisProcess(tmp_path / "chosen")
    try:
        with pytest.raises(RuntimeError, match="exited at start"):
            given.start()
        chosen.port = other.port  # taken between the choice and the bind
        chosen.start()
        assert chosen.port != other.port
        assert chosen.proc is not None
        assert chosen.client().info("server")["process_id"] == chosen.proc.pid  # type: ignore[attr-defined]
    finally:
        for proc in (other, given, chosen):
            proc.kill()
