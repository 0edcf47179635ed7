"""What the protocol promises a sender about its acks, for tests that read them (docs/protocol.md, "Delivery").

A node may tell a sender ``queued`` for a message to an online recipient before its ``delivered``, as
one node does: the message waited in the queue because the recipient's backlog was being read (a
session that has just logged in), its window was full, or its session was starting or ending
(securechat/server/awaited.py; cluster.py's ``_on_new_message``). So a test that reads acks asserts
the ``delivered`` ones exactly, and that any ``queued`` came before its message's ``delivered``, never
after it: :func:`settled` drops each such early ``queued`` and fails on anything else. (CI failed an
exact list of acks at c857c0a with such a ``queued`` in it; the fix of the test is 7a86d6d.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tests.support.rawclient import RawClient, envelope

Ack = Mapping[str, Any]


def about(ack: Ack) -> tuple[Any, Any, Any]:
    """The message copy an ack is about: its id, its ``to`` and, for a room's copy, the member."""
    return ack.get("id"), ack.get("to"), ack.get("member")


def of(acks: Sequence[Ack], ack: Ack) -> list[tuple[int, Any]]:
    """Where in ``acks`` the acks about the copy ``ack`` is about are, and their statuses."""
    return [(i, x.get("status")) for i, x in enumerate(acks) if about(x) == about(ack)]


def settled(acks: Sequence[Ack]) -> list[Ack]:
    """``acks`` without each ``queued`` that a ``delivered`` of the same copy follows; AssertionError on a
    ``queued`` after its copy's ``delivered`` or on a copy ``delivered`` twice."""
    delivered_at: dict[tuple[Any, Any, Any], int] = {}
    for i, ack in enumerate(acks):
        if ack.get("status") == "delivered":
            assert about(ack) not in delivered_at, f"{about(ack)} delivered twice: {of(acks, ack)}"
            delivered_at[about(ack)] = i
    kept = []
    for i, ack in enumerate(acks):
        if ack.get("status") == "queued" and about(ack) in delivered_at:
            assert i < delivered_at[about(ack)], f"a `queued` after its `delivered`: {of(acks, ack)}"
            continue
        kept.append(ack)
    return kept


async def acks_until(client: RawClient, enough: Callable[[list[Ack]], bool], within: float = 15.0) -> list[Ack]:
    """Every ack ``client`` reads until ``enough`` holds of what :func:`settled` keeps of them (each
    read within ``within`` seconds)."""
    got: list[Ack] = []
    while not enough(settled(got)):
        got.append(await client.recv_type("ack", within))
    return got


async def delivered_acks(client: RawClient, count: int, within: float = 15.0) -> list[Ack]:
    """What :func:`settled` keeps of the acks ``client`` reads until ``count`` of them said ``delivered``."""
    return settled(await acks_until(client, lambda kept: sum(x["status"] == "delivered" for x in kept) >= count, within))


async def next_ack_about(client: RawClient, msg_id: str, within: float = 15.0) -> tuple[Ack, list[Ack]]:
    """The next ack about ``msg_id``, and the acks about other messages read before it: each of those
    may only be a ``queued`` (the caller checks that its ``delivered``, if any, comes later)."""
    before: list[Ack] = []
    while (ack := await client.recv_type("ack", within))["id"] != msg_id:
        assert ack["status"] == "queued", f"{ack} before the ack about {msg_id}"
        before.append(ack)
    return ack, before


async def backlog_read(sender: RawClient, recipient: RawClient, probe_id: str, within: float = 15.0) -> None:
    """Return once ``recipient``'s new session has read its backlog: a probe message from ``sender`` reached
    it and was confirmed, and ``sender`` heard its ``delivered`` (a ``queued`` first allowed). A message
    sent after this to that session is handed out at once while its window has room, so a test whose
    scenario is about something else can expect ``delivered`` alone again. Both are logged in; their
    names are the ones they logged in with."""
    to, name = recipient.name, sender.name
    assert to is not None and name is not None, "both log in first"
    await sender.send_frame({"type": "send", "to": to, "envelope": envelope(name, to, probe_id)})
    got = await recipient.recv_type("message", within)
    assert got["envelope"]["id"] == probe_id, got
    await recipient.send_frame({"type": "received", "id": probe_id, "from": name})
    await acks_until(sender, lambda kept: any(x["id"] == probe_id and x["status"] == "delivered" for x in kept), within)
