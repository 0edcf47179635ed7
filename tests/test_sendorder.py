"""SendOrder (securechat/server/sendorder.py): after a failed store call, a session's other sends wait for
its resend. Live sends that joined one publish are tracked as one entry (track_joined)."""

from __future__ import annotations

import asyncio

import pytest

from securechat.server.sendorder import SendOrder

ONE, TWO, THREE = ("bob", "1"), ("bob", "2"), ("bob", "3")


async def test_a_failed_joined_publish_holds_the_next_send_until_the_resend_begins() -> None:
    order = SendOrder()
    published: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    assert order.admit(ONE)
    order.track_joined(lambda: [ONE, TWO], published)
    published.set_exception(ConnectionError("the Redis link failed"))
    assert not order.admit(THREE)  # sent after the failure: it must not pass 1 and 2's resend
    assert order.held
    assert order.admit(ONE)  # the client's resend, oldest first: the hold is lifted
    assert not order.held and order.admit(THREE)


async def test_sends_that_joined_after_the_publish_was_tracked_are_held_too() -> None:
    order = SendOrder()
    published: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    joined = [ONE]
    order.track_joined(lambda: list(joined), published)
    joined.append(TWO)  # a later send of the same loop turn joined the same publish
    published.set_exception(ConnectionError("the Redis link failed"))
    assert not order.admit(THREE)
    assert order.admit(TWO)  # 2 was held with 1: its resend lifts the hold (were it not held, it would be refused)


async def test_an_answered_joined_publish_holds_nothing_and_reads_no_keys() -> None:
    order = SendOrder()
    published: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def keys() -> list[tuple[str, str]]:
        raise AssertionError("the keys were read although the publish was answered")

    order.track_joined(keys, published)
    published.set_result(1)
    assert order.admit(THREE) and not order.held


@pytest.mark.parametrize("answer", ["cancelled", "failed"])
async def test_a_joined_publish_still_unanswered_holds_nothing_yet(answer: str) -> None:
    order = SendOrder()
    published: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    order.track_joined(lambda: [ONE], published)
    assert order.admit(TWO)  # not answered yet: the send goes on (it is behind 1 on the same connection)
    if answer == "cancelled":
        published.cancel()
    else:
        published.set_exception(ConnectionError("the Redis link failed"))
    assert not order.admit(THREE)
