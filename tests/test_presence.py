"""Presence's interest per session is bounded (docs/protocol.md, "Server behaviour details": Directory).

A session that pages through a huge directory, or looks up every name, would
otherwise hold interest in every name and be pushed every login and logout of
every user: memory and writes without bound per connection.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from securechat.protocol import FrameDecoder
from securechat.server.presence import MAX_INTEREST, Presence


@dataclass(eq=False)
class Session:
    """What Presence uses of a session: its name, whether it is closing, and its writes."""

    name: str
    closing: bool = False
    written: list[bytes] = field(default_factory=list)
    wrote: asyncio.Event = field(default_factory=asyncio.Event)

    def write(self, data: bytes) -> None:
        self.written.append(data)
        self.wrote.set()

    def pushed(self) -> set[str]:
        decoder = FrameDecoder()
        return {frame["name"] for frame in decoder.feed(b"".join(self.written))}


async def test_a_session_hears_about_at_most_max_interest_names_the_latest_shown() -> None:
    presence = Presence()
    reader = Session("mallory")
    names = [f"user{i:05d}" for i in range(MAX_INTEREST + 500)]
    for start in range(0, len(names), 200):  # paging through a big directory with list
        presence.watch_many(reader, names[start : start + 200])
    presence.watch(reader, "mallory")  # never about oneself
    presence.note("user00000", True)
    presence.note(names[-1], True)
    presence.note("mallory", True)
    await asyncio.wait_for(reader.wrote.wait(), 5)
    assert reader.pushed() == {names[-1]}  # the oldest interest was dropped, the newest kept
    held = sum(1 for watchers in presence._watchers.values() if reader in watchers)
    assert held == MAX_INTEREST
    presence.forget(reader)
    assert presence._watchers == {}
    presence.close()


async def test_interest_shown_again_counts_as_new() -> None:
    presence = Presence()
    reader = Session("mallory")
    presence.watch(reader, "alice")
    presence.watch_many(reader, [f"user{i:05d}" for i in range(MAX_INTEREST - 1)])
    presence.watch(reader, "alice")  # a lookup of alice again: now the latest interest
    presence.watch(reader, "bob")  # one past the bound: the oldest, user00000, goes, not alice
    presence.note("alice", True)
    presence.note("user00000", True)
    await asyncio.wait_for(reader.wrote.wait(), 5)
    assert reader.pushed() == {"alice"}
    presence.close()
