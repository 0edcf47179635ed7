"""AwaitedAcks' memory of the ``delivered`` acks written lately (securechat/server/awaited.py): a second copy
within the last DELIVERED_KEPT is not written again, and that memory stays bounded."""

from __future__ import annotations

from securechat.server.awaited import DELIVERED_KEPT, AwaitedAcks


def msg_id(n: int) -> str:
    return f"{n:032x}"


def test_a_second_delivered_for_the_same_send_is_not_written_again() -> None:
    acks = AwaitedAcks()
    acks.add("bob", msg_id(1), "r1")
    assert acks.deliver("bob", msg_id(1))
    assert not acks.deliver("bob", msg_id(1))
    assert ("bob", msg_id(1)) not in acks  # no longer awaited either
    assert acks.deliver("carol", msg_id(1))  # the same id to someone else is another send


def test_only_the_latest_delivered_are_remembered_oldest_forgotten_first() -> None:
    acks = AwaitedAcks()
    for n in range(DELIVERED_KEPT + 1):
        assert acks.deliver("bob", msg_id(n))
    # The first one is forgotten (a copy of it now would be written again); every later one is still known.
    assert all(not acks.deliver("bob", msg_id(n)) for n in range(DELIVERED_KEPT, 0, -1))
    assert acks.deliver("bob", msg_id(0))
    assert not acks.deliver("bob", msg_id(0))


def test_the_memory_stays_bounded_over_many_sends() -> None:
    acks = AwaitedAcks()
    for n in range(10 * DELIVERED_KEPT):
        acks.deliver("bob", msg_id(n))
    forgotten = sum(acks.deliver("bob", msg_id(n)) for n in range(10 * DELIVERED_KEPT - 1, -1, -1))
    # Asking again from the newest down: the newest DELIVERED_KEPT are refused, every older one written.
    assert forgotten == 9 * DELIVERED_KEPT
