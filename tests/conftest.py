"""Shared test configuration: hypothesis profiles, the vendored vectors' folder and the fixtures
that several test modules use (a server in this process, a server process, client sessions,
``--json`` client processes). Helpers that are not fixtures live in ``tests/support/``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from securechat import crypto
from securechat.client import ClientSession
from securechat.client.state import ClientStore
from securechat.server import ChatServer
from tests.support.hostile import HostileServer
from tests.support.jsonclient import JsonClient, JsonClientProcess
from tests.support.nodes import Nodes, nodes_on
from tests.support.rawclient import identity_key, running_server
from tests.support.redisproc import RedisProcess
from tests.support.serverproc import ServerProcess, server_process
from tests.support.sessions import BITS, Client, Recorder
from tests.support.stores import StoreMaker
from tests.support.streams import client_homes

REPO_ROOT = Path(__file__).resolve().parent.parent
# Vendored with their license and source (tests/vectors/wycheproof/README.md): the repository stands alone.
WYCHEPROOF_DIR = REPO_ROOT / "tests" / "vectors" / "wycheproof"

settings.register_profile("ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "fuzz", max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ChatServer]:
    """A ChatServer in this process on 127.0.0.1 and a free port, with its database in ``tmp_path``.

    It serves TLS, like every server and client here unless a test asks otherwise: its
    identity is made beside the database, and ``RawClient``/``clients`` speak TLS to it.
    """
    async with running_server(tmp_path / "server.db") as srv:
        yield srv


@pytest.fixture
async def plain_server(tmp_path: Path) -> AsyncIterator[ChatServer]:
    """The same server without TLS, for a test that needs the raw protocol on the wire (it says why).

    Talk to it with ``RawClient.connect(port, tls=False)`` or ``clients(port, ..., tls=False)``.
    """
    async with running_server(tmp_path / "plain-server.db", tls=False) as srv:
        yield srv


@pytest.fixture
def server_proc(tmp_path: Path) -> Iterator[ServerProcess]:
    """A ``securechat-server`` process on 127.0.0.1 and a free port, killed at the end."""
    with server_process(tmp_path / "server.db") as proc:
        yield proc


@pytest.fixture
async def hostile() -> AsyncIterator[HostileServer]:
    """A malicious fake relay (tests/support/hostile.py) whose ``lookup`` knows bob's key."""
    srv = HostileServer()
    srv.keys["bob"] = crypto.public_key_pem(identity_key("bob").public_key())
    await srv.start()
    yield srv
    await srv.close()


@pytest.fixture
async def make_client(tmp_path: Path) -> AsyncIterator[Callable[..., Client]]:
    """Make client sessions (not started) with homes in ``tmp_path``; stopped, and their stores closed, at the end.

    Stopped before the server the test also asked for closes: sessions left running reconnect to a
    closing server in a tight backoff, which on a loaded machine outlasted the server's teardown.
    """
    made: list[Client] = []

    def make(name: str, port: int, home: Path | None = None, **options: Any) -> Client:
        store = ClientStore.open(home or tmp_path / "homes", name, bits=BITS)
        options = {"backoff_initial": 0.05, "backoff_max": 0.3, "request_timeout": 5.0, **options}
        client = Client(ClientSession(store, "127.0.0.1", port, **options), Recorder())
        client.session.add_listener(client.rec)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.stop()
        client.session.store.close()


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Callable[[str, int], Any]]:
    """Start ``securechat-client --json`` processes (home ``tmp_path/home``); killed at the end."""
    started: list[JsonClient] = []

    async def make(name: str, port: int) -> JsonClient:
        client = await JsonClient.start(name, port, tmp_path / "home")
        started.append(client)
        return client

    yield make
    for client in started:
        client.kill()
        await client.proc.wait()


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[Path]:
    """The folder of the ``spawn_process`` clients' homes (tmpfs when there is one)."""
    yield from client_homes(tmp_path)


@pytest.fixture
def spawn_process(homes: Path) -> Iterator[Callable[..., JsonClientProcess]]:
    """Start ``securechat-client --json`` processes (synchronous tests); all are killed at the end.

    ``server`` is a port on 127.0.0.1 or a whole ``--server`` value (``HOST:PORT,HOST:PORT``).
    """
    started: list[JsonClientProcess] = []

    def make(name: str, server: int | str, label: str = "") -> JsonClientProcess:
        client = JsonClientProcess(name, server, homes, label=label)
        started.append(client)
        return client

    yield make
    for client in started:
        client.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One ``redis-server`` for the session (no persistence); tests keep apart by key prefix."""
    proc = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield proc
    proc.stop()


@pytest.fixture
def make_redis(tmp_path: Path) -> Iterator[Callable[..., RedisProcess]]:
    """Start ``redis-server`` processes of this test's own (to kill, pause, restart); stopped at the end."""
    started: list[RedisProcess] = []

    def make(**options: Any) -> RedisProcess:
        proc = RedisProcess(tmp_path / f"redis{len(started)}", **options).start()
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.kill()


@pytest.fixture
def redis(make_redis: Callable[..., RedisProcess]) -> RedisProcess:
    """A ``redis-server`` of this test's own with an append-only file, for the nodes' scenarios."""
    return make_redis(appendonly=True)


@pytest.fixture
def nodes(redis: RedisProcess, tmp_path: Path) -> Iterator[Nodes]:
    """Server nodes over ``redis`` (:class:`tests.support.nodes.Nodes`), killed at the end."""
    with nodes_on(redis, tmp_path) as made:
        yield made


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    """The store backend a backend-independent test runs on (each test runs on both)."""
    return str(request.param)


@pytest.fixture
async def stores(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[StoreMaker]:
    """Make server stores of ``backend``; closed at the end."""
    redis = request.getfixturevalue("redis_server") if backend == "redis" else None
    maker = StoreMaker(backend, tmp_path, redis)
    yield maker
    await maker.close_all()


_PREFIX_NUMBERS = itertools.count(1)  # the session's Redis is this worker's own (redis_server)


@pytest.fixture
def backend_options(backend: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The ServerConfig options that put a server on ``backend`` (Redis: a key prefix of its own)."""
    if backend == "sqlite":
        return {}
    redis: RedisProcess = request.getfixturevalue("redis_server")
    # A number of this worker's own, not id(request): an id is unique only among objects alive at once (a run of
    # the Redis tests reused ids), so two tests whose names begin alike (a parametrized pair) could share a prefix,
    # and the second's bob find the first's name taken (a clean-clone run failed so: bob's login never came; a
    # prefix made the same on purpose fails that test the same way).
    return {"redis_url": redis.url, "redis_prefix": f"{request.node.name[:40]}-{next(_PREFIX_NUMBERS)}:"}


@pytest.fixture
async def any_server(tmp_path: Path, backend_options: dict[str, Any]) -> AsyncIterator[ChatServer]:
    """:func:`server` on each backend in turn: SQLite with one-node routing, Redis with cluster routing."""
    async with running_server(tmp_path / "server.db", **backend_options) as srv:
        assert srv.store_kind == ("redis" if backend_options else "sqlite")
        yield srv
