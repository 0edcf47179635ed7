"""Hostile input against the directory (issue 13, items 2 and 10): registrations and ``list``.

Before the fix one address registered about 3,000 names in 5 s with one key, names are
permanent, and at about 18,000 names the one `users` frame passed the frame limit: `list`
failed in every client and the full-screen UI, which lists on every login, reconnected
forever; with 20,000 names one user sending `list` as fast as allowed kept a core busy.
Each test here is one of those attacks, on both backends where the bound is the store's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from securechat.errors import RegistrationRefused, ServerErrorReply
from securechat.events import ConnectionChanged
from securechat.lineui import LineChat
from securechat.listing import LIST_PAGE
from securechat.protocol import encode_frame
from securechat.server import ChatServer
from securechat.server.registration import LIST_PAGE_BYTES, NewName, RegistrationLimits, address_bucket
from securechat.server.sqlite import SqliteStore
from tests.support.docvector import doc_example
from tests.support.hostile import HostileServer
from tests.support.rawclient import RawClient, identity_key, running_server
from tests.support.redisproc import RedisProcess
from tests.support.sessions import WAIT, Client, online
from tests.support.stores import StoreMaker
from tests.support.ui_harness import wait_until

pytestmark = pytest.mark.timeout(120)


async def register(port: int, name: str, key: rsa.RSAPrivateKey) -> dict[str, Any]:
    """A full handshake for ``name`` with ``key``: the frame that answers ``auth`` (welcome or error)."""
    c = await RawClient.connect(port)
    try:
        challenge = await c.hello(name, key)
        assert challenge["type"] == "challenge", challenge
        assert c.handshake is not None
        c.handshake.receive_frame(challenge)
        await c.send_raw(c.handshake.data_to_send())
        return await c.recv()
    finally:
        await c.close()


def refused_by(frame: dict[str, Any], bound: str) -> None:
    assert (frame["type"], frame.get("code"), frame.get("fatal")) == ("error", "registration_limited", True), frame
    assert frame["message"] == str(RegistrationRefused(bound))


# --- item 2: registrations are bounded ---------------------------------------------------------


async def test_one_key_registers_a_few_names_not_thousands(
    tmp_path: Path, backend_options: dict[str, Any]
) -> None:
    """The attack at the defaults: one key, one address, name after name. Before the fix every
    one was welcomed; now the per-key bucket (5 an hour) stops it, and the names refused were
    never registered. The key's own first name still logs in (returning names are free)."""
    key = identity_key("mallory")
    async with running_server(tmp_path / "s.db", **backend_options) as srv:
        answers = [await register(srv.port, f"bot{n}", key) for n in range(7)]
        assert [a["type"] for a in answers[:5]] == ["welcome"] * 5, answers
        for answer in answers[5:]:
            refused_by(answer, "key")
        assert await srv._store.get_registration("bot5") is None
        assert await srv._store.get_registration("bot6") is None
        again = await register(srv.port, "bot0", key)
        assert (again["type"], again["new"]) == ("welcome", False), again


async def test_one_address_is_bounded_whatever_the_keys(tmp_path: Path, backend_options: dict[str, Any]) -> None:
    """Fresh keys do not help: the address's bucket stops the third new name."""
    async with running_server(tmp_path / "s.db", register_per_ip=2, **backend_options) as srv:
        first = [await register(srv.port, f"bot{n}", identity_key(f"bot{n}")) for n in range(2)]
        assert [a["type"] for a in first] == ["welcome", "welcome"], first
        refused_by(await register(srv.port, "bot2", identity_key("bot2")), "address")


async def test_the_server_wide_cap_on_names(tmp_path: Path, backend_options: dict[str, Any]) -> None:
    """`--max-users`: with the directory full, no new name, whoever asks; the registered log in."""
    async with running_server(tmp_path / "s.db", max_users=3, **backend_options) as srv:
        await fill_directory(srv, ["aaa", "bbb"])
        key = identity_key("carol")
        assert (await register(srv.port, "carol", key))["type"] == "welcome"
        refused_by(await register(srv.port, "dave", identity_key("dave")), "full")
        assert (await register(srv.port, "carol", key))["new"] is False


async def test_the_bounds_hold_across_nodes(tmp_path: Path, redis_server: RedisProcess) -> None:
    """Two nodes on one Redis: one address's new names are counted together, wherever they land."""
    shared = {"redis_url": redis_server.url, "redis_prefix": f"nodes-{id(tmp_path)}:", "register_per_ip": 2}
    async with running_server(tmp_path / "a.db", **shared) as one, running_server(tmp_path / "b.db", **shared) as two:
        assert (await register(one.port, "bot0", identity_key("bot0")))["type"] == "welcome"
        assert (await register(two.port, "bot1", identity_key("bot1")))["type"] == "welcome"
        refused_by(await register(one.port, "bot2", identity_key("bot2")), "address")
        refused_by(await register(two.port, "bot3", identity_key("bot3")), "address")


async def test_the_store_spends_all_buckets_or_none(stores: StoreMaker) -> None:
    """Summed over addresses and keys, on both backends, with the store's clock: a refusal
    spends nothing (the address keeps its token), the server-wide bucket counts every
    address, and a bucket refills at its hourly rate."""
    now = [1_000_000.0]
    limits = RegistrationLimits(per_address=2, per_key=1, per_server=3, max_users=100)
    store = stores.new(clock=lambda: now[0], registration=limits)
    here, there = address_bucket("192.0.2.7"), address_bucket("198.51.100.9")
    assert (await store.register("n1", "P", "k1", NewName(here, "k1")))[1]
    with pytest.raises(RegistrationRefused) as refused:
        await store.register("n2", "P", "k1", NewName(here, "k1"))  # the key's bucket is empty
    assert refused.value.bound == "key"
    assert (await store.register("n3", "P", "k2", NewName(here, "k2")))[1]  # the address still had its token
    with pytest.raises(RegistrationRefused) as refused:
        await store.register("n4", "P", "k3", NewName(here, "k3"))
    assert refused.value.bound == "address"
    assert (await store.register("n5", "P", "k4", NewName(there, "k4")))[1]
    with pytest.raises(RegistrationRefused) as refused:
        await store.register("n6", "P", "k5", NewName(address_bucket("203.0.113.1"), "k5"))
    assert refused.value.bound == "server"  # three new names an hour on the whole server
    assert await store.names_page("", "", 10) == ["n1", "n3", "n5"]
    assert (await store.register("n1", "P", "k1", NewName(here, "k1")))[1] is False  # returning: free
    now[0] += 1700  # not yet half an hour: the address's bucket (2 an hour) holds 0.94 of a token
    with pytest.raises(RegistrationRefused):
        await store.register("n6", "P", "k5", NewName(here, "k5"))
    now[0] += 100  # half an hour: one of its two tokens is back, and 1.5 of the server's three
    assert (await store.register("n6", "P", "k5", NewName(here, "k5")))[1]


def test_an_ipv6_host_is_one_address() -> None:
    """A host holds a whole /64: its addresses share one bucket (an IPv4-mapped one is its IPv4)."""
    assert address_bucket("2001:db8::1") == address_bucket("2001:db8::ffff:1") == "2001:db8::/64"
    assert address_bucket("2001:db8:0:1::1") != address_bucket("2001:db8::1")
    assert address_bucket("::ffff:192.0.2.7") == address_bucket("192.0.2.7") == "192.0.2.7"


async def test_a_refused_registration_stops_the_client_instead_of_retrying(
    tmp_path: Path, make_client: Callable[..., Client]
) -> None:
    """A retry seconds later would be refused too: the session ends with the server's reason
    (shown to the user) and does not reconnect every backoff."""
    async with running_server(tmp_path / "s.db", register_per_ip=1) as srv:
        await online(make_client("alice", srv.port))
        bob = make_client("bob", srv.port)
        with pytest.raises(ServerErrorReply) as info:
            await asyncio.wait_for(bob.session.run(), WAIT)
        assert info.value.code == "registration_limited" and "address" in info.value.message
        assert [e.state for e in bob.rec.of(ConnectionChanged)] == ["connecting", "offline"]  # no "reconnecting"


# --- items 2 and 10: `list` is paged and its cost bounded --------------------------------------


async def fill_directory(server: ChatServer, names: list[str]) -> None:
    """Registrations written straight into the server's store (a login each would take minutes)."""
    store: Any = server._store
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as db:
            db.executemany(
                "INSERT INTO registrations (name, pubkey_pem, fingerprint, created) VALUES (?, 'PEM', ?, 0)",
                [(name, "0" * 64) for name in names],
            )
        return
    for start in range(0, len(names), 1000):
        chunk = names[start : start + 1000]
        await store._link.call("ZADD", store.prefix + "names", *[part for name in chunk for part in (0, name)])


def longest_names(count: int) -> list[str]:
    return [f"n{i:06d}".ljust(32, "-") for i in range(count)]


async def list_page(c: RawClient, **fields: Any) -> tuple[dict[str, Any], int]:
    """One ``list`` answer and the size of its frame body (the server's encoding, which re-encoding repeats)."""
    await c.send_frame({"type": "list", **fields})
    answer = await c.recv_type("users")
    return answer, len(encode_frame(answer)) - 4


async def test_paging_twenty_thousand_names_returns_each_once_in_small_frames(
    tmp_path: Path, backend_options: dict[str, Any]
) -> None:
    """Before the fix one `list` was one 1.2 MB frame (past every client's 1 MiB limit). Now each
    page is at most 200 names and 12 KiB even with the longest names and rid, and paging with
    `after` returns every name exactly once, in order."""
    names = longest_names(20_000)
    rid = "r" * 64
    async with running_server(tmp_path / "s.db", lookup_rate=1000.0, **backend_options) as srv:
        await fill_directory(srv, names)
        c = await RawClient.connect(srv.port)
        await c.login("alice", identity_key("alice"))
        seen: list[str] = []
        after: dict[str, str] = {}
        while True:
            page, size = await list_page(c, rid=rid, **after)
            assert size <= LIST_PAGE_BYTES and len(page["users"]) <= LIST_PAGE, (size, len(page["users"]))
            seen.extend(user["name"] for user in page["users"])
            if not page["more"]:
                break
            after = {"after": seen[-1]}
        assert seen == sorted([*names, "alice"])
        old_client, _ = await list_page(c)  # a v1 `list` with no field: the first page
        assert [u["name"] for u in old_client["users"]] == seen[:LIST_PAGE] and old_client["more"] is True
        await c.close()


async def test_a_prefix_keeps_to_its_names_and_pages_too(tmp_path: Path, backend_options: dict[str, Any]) -> None:
    async with running_server(tmp_path / "s.db", lookup_rate=1000.0, **backend_options) as srv:
        names = [f"a{i:03d}" for i in range(250)] + ["b", "a", "a-", "a_z", "ab", "b0"]
        await fill_directory(srv, names)
        c = await RawClient.connect(srv.port)
        await c.login("zed", identity_key("zed"))
        first, _ = await list_page(c, prefix="a")
        second, _ = await list_page(c, prefix="a", after=first["users"][-1]["name"])
        got = [u["name"] for u in first["users"] + second["users"]]
        assert (len(first["users"]), first["more"], second["more"]) == (LIST_PAGE, True, False)
        assert got == sorted(name for name in names if name.startswith("a"))  # bytewise: "a" "a-" "a000" … "a_z" "ab"
        tens, _ = await list_page(c, prefix="a00")
        assert [u["name"] for u in tens["users"]] == [f"a{i:03d}" for i in range(10)] and not tens["more"]
        none, _ = await list_page(c, prefix="c")
        assert none["users"] == [] and none["more"] is False
        await c.send_frame({"type": "list", "prefix": "A*", "rid": "bad"})
        error = await c.recv_type("error")
        assert (error["code"], error["fatal"], error["rid"]) == ("bad_request", False, "bad")
        await c.close()


async def test_list_spends_the_lookup_rate(tmp_path: Path) -> None:
    """Item 10: `list` as fast as the frame rate allowed (200 a second) was the amplifier. It
    now costs a lookup token: with a burst of 2, four lists get two pages and two refusals."""
    async with running_server(tmp_path / "s.db", lookup_rate=2.0) as srv:
        c = await RawClient.connect(srv.port)
        await c.login("alice", identity_key("alice"))
        for n in range(4):
            await c.send_frame({"type": "list", "rid": str(n)})
        kinds = [(await c.recv())["type"] for _ in range(4)]
        assert sorted(kinds) == ["error", "error", "users", "users"], kinds
        await c.close()


async def test_the_worked_example(tmp_path: Path, backend_options: dict[str, Any]) -> None:
    """docs/protocol.md, "The directory": the documented frames get the documented answers."""
    async with running_server(tmp_path / "s.db", **backend_options) as srv:
        c = await RawClient.connect(srv.port)
        await c.login("alice", identity_key("alice"))
        for name in ("amy", "andy", "bob"):
            await srv._store.register(name, "PEM", "0" * 64)
        for request, answer in (("list-request", "list-answer"), ("list-next-request", "list-next-answer")):
            await c.send_frame(json.loads(doc_example(request)))
            assert await c.recv_type("users") == json.loads(doc_example(answer))
        await c.close()


def test_the_largest_page_fits_the_byte_budget() -> None:
    """The bound in docs/protocol.md: 200 names of 32 characters and the longest rid, escaped."""
    page = {"type": "users", "users": [{"name": "x" * 32, "online": False}] * LIST_PAGE, "more": False}
    assert len(encode_frame(page)) - 4 == 11_839
    assert len(encode_frame({**page, "rid": "\x00" * 64})) - 4 <= LIST_PAGE_BYTES



# --- every front end survives a failed `list` ---------------------------------------------------


async def test_a_list_answer_too_large_for_a_frame_costs_one_reconnect_not_a_loop(
    hostile: HostileServer, make_client: Callable[..., Client]
) -> None:
    """A server (an old one with 20,000 names, or a hostile one) answers `list` with a frame past
    the client's 1 MiB limit: the connection breaks, as framing must. Before the fix the front
    ends listed again at every login and reconnected forever; now the failure is shown once, the
    next login does not list, and the new connection serves (a lookup is answered on it)."""
    hostile.users_padding = 20_000  # 20,000 names of 32 characters: about 1.2 MB
    alice = make_client("alice", hostile.port)
    out: list[str] = []
    chat = LineChat(alice.session, out.append)
    alice.session.add_listener(chat.on_event)
    alice.start()
    await wait_until(lambda: hostile.connections == 2 and alice.session.online, what="the one reconnect")
    with contextlib.suppress(ServerErrorReply):  # answered (`unknown_user`) on the second connection: it is up
        await alice.session.lookup("bob")
    assert hostile.connections == 2
    sent = []
    while not hostile.from_client.empty():
        sent.append(hostile.from_client.get_nowait()["type"])
    assert sent.count("hello") == 2 and sent.count("list") == 1, sent  # the second login did not list
    assert "! the list of users failed: the connection to the server was lost" in out, out


async def test_a_refused_list_is_shown_and_the_session_stays(tmp_path: Path, make_client: Callable[..., Client]) -> None:
    """`rate_limited` for a `list` (the lookup bucket, spent by the list at login) is one line, no reconnect."""
    async with running_server(tmp_path / "s.db", lookup_rate=0.01) as srv:
        alice = make_client("alice", srv.port)
        out: list[str] = []
        chat = LineChat(alice.session, out.append)
        alice.session.add_listener(chat.on_event)
        await online(alice)
        await wait_until(lambda: "alice" in chat.executor.online, what="the list at login")
        await chat.handle("/users")
        assert out[-1] == "! the list of users failed: rate_limited: too many lists", out
        await chat.handle("/fingerprint")
        assert alice.session.online and not [e for e in alice.rec.of(ConnectionChanged) if e.state == "reconnecting"]


def test_the_list_cost_bench_runs() -> None:
    """`python -m securechat.bench.listcost` (docs/performance.md): small, but the same path."""
    from securechat.bench.listcost import measure

    got = measure("securechat-asyncio", 1_000, 1.0)
    assert got["users"] >= 20 and got["rate_limited"] > 0, got  # the lookup burst, then refusals
    assert got["bytes"] <= (got["users"] + 1) * LIST_PAGE_BYTES + got["rate_limited"] * 200, got
