"""``check_name`` before ``hello`` (docs/protocol.md section 4, step 0; issue 14, item 4): the worked
example's bytes against a real server, the sans-I/O client side with byte literals, and the
client that refuses a taken name before it asks for a passphrase or makes a key."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from securechat.client.namecheck import NameCheck, name_registered
from securechat.client.servers import KnownServers, ServerTrust, server_address
from securechat.errors import ProtocolError, ServerErrorReply, ServerIdentityRefused
from securechat.protocol import encode_frame
from securechat.server import ChatServer
from tests.conftest import REPO_ROOT
from tests.support.cli import client_command, client_env
from tests.support.rawclient import RawClient, clients, identity_key
from tests.support.serverproc import ServerProcess, server_process

DOC = (REPO_ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")


def doc_hex(name: str) -> bytes:
    body = re.search(rf"^```hex vector={name}\n(.*?)^```$", DOC, re.MULTILINE | re.DOTALL)
    assert body is not None, name
    return bytes.fromhex(re.sub(r"\s+", "", body.group(1)))


async def read_exactly(c: RawClient, size: int) -> bytes:
    return await c.reader.readexactly(size)


async def test_the_documented_bytes_get_the_documented_answer(plain_server: ChatServer) -> None:
    """The worked example's bytes on the wire: plaintext, since over TLS the answer is padded (2.2)."""
    server = plain_server
    request, answer = doc_hex("check-name-request"), doc_hex("name-status-answer")
    assert request == encode_frame({"type": "check_name", "name": "bob", "rid": "1"})
    async with clients(server.port, "bob", tls=False):
        c = await RawClient.connect(server.port, tls=False)
        await c.send_raw(request)
        assert await read_exactly(c, len(answer)) == answer
        await c.close()


async def test_a_free_name_and_then_the_handshake_on_the_same_connection(server: ChatServer) -> None:
    c = await RawClient.connect(server.port)
    await c.send_frame({"type": "check_name", "name": "zed"})
    assert await c.recv() == {"type": "name_status", "name": "zed", "registered": False}
    await c.send_frame({"type": "check_name", "name": "zed", "rid": "again"})
    assert (await c.recv())["rid"] == "again"
    welcome = await c.login("zed", identity_key("zed"))  # still waiting for hello
    assert welcome["new"] is True
    await c.close()


async def test_check_name_is_only_before_hello_and_wants_a_valid_name(server: ChatServer) -> None:
    async with clients(server.port, "alice") as (alice,):
        await alice.send_frame({"type": "check_name", "name": "bob"})
        error = await alice.expect_error("unknown_type")
        assert error["fatal"] is False
    c = await RawClient.connect(server.port)
    await c.send_frame({"type": "check_name", "name": "Not Valid"})
    assert (await c.expect_error("invalid_name"))["fatal"] is True
    await c.close()


async def test_check_name_costs_lookup_tokens(tmp_path: Path) -> None:
    from tests.support.rawclient import running_server

    async with running_server(tmp_path / "s.db", lookup_rate=2.0) as srv:
        c = await RawClient.connect(srv.port)
        for _ in range(4):
            await c.send_frame({"type": "check_name", "name": "zed"})
        kinds = [(await c.recv())["type"] for _ in range(4)]
        assert kinds.count("name_status") == 2 and kinds.count("error") == 2  # burst of 2
        await c.close()


def test_name_check_sans_io_with_byte_literals() -> None:
    check = NameCheck("bob")
    assert check.data_to_send() == doc_hex("check-name-request")
    assert check.data_to_send() == b""
    answer = doc_hex("name-status-answer")
    assert check.receive_data(answer[:7]) is None  # half a frame: not answered yet
    assert check.receive_data(answer[7:]) is True
    other = NameCheck("bob")
    assert other.receive_data(encode_frame({"type": "presence", "name": "x", "online": True})) is None
    assert (
        other.receive_data(encode_frame({"type": "name_status", "name": "bob", "registered": False})) is False
    )
    with pytest.raises(ServerErrorReply) as refused:
        NameCheck("bob").receive_data(
            encode_frame({"type": "error", "code": "not_authenticated", "message": "no", "fatal": True})
        )
    assert refused.value.code == "not_authenticated"
    with pytest.raises(ProtocolError):
        NameCheck("bob").receive_data(
            encode_frame({"type": "name_status", "name": "bob", "registered": "yes"})
        )
    with pytest.raises(ProtocolError):
        NameCheck("bob").receive_eof()


async def test_name_registered_against_a_real_server(server: ChatServer, tmp_path: Path) -> None:
    """Over TLS, checked like the session checks the server, but nothing is pinned: the session pins."""
    known = KnownServers(tmp_path / "known_servers")
    async with clients(server.port, "bob"):
        assert await name_registered("127.0.0.1", server.port, "bob", 5, ServerTrust(known)) is True
    assert await name_registered("127.0.0.1", server.port, "carol", 5, ServerTrust(known)) is False
    assert known.entries() == {}
    known.pin(server_address("127.0.0.1", server.port), "00" * 32)  # another identity pinned for it
    with pytest.raises(ServerIdentityRefused):
        await name_registered("127.0.0.1", server.port, "carol", 5, ServerTrust(known))


async def test_name_registered_in_plaintext(plain_server: ChatServer) -> None:
    async with clients(plain_server.port, "bob", tls=False):
        assert await name_registered("127.0.0.1", plain_server.port, "bob", 5) is True


# --- the client refuses a taken name before anything is claimed ------------------------------


def start(
    home: Path, port: int, name: str, *extra: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*client_command(), "--home", str(home), "--server", f"127.0.0.1:{port}", "--name", name, *extra],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=client_env(),
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("front_end", ["--plain", "--json"])
def test_a_taken_name_is_refused_before_any_key_is_made(
    server_proc: ServerProcess, tmp_path: Path, front_end: str
) -> None:
    first = start(tmp_path / "theirs", server_proc.port, "bob", "--plain")
    assert first.returncode == 0, first.stderr  # bob is registered (piped input: signs in, leaves)
    mine = tmp_path / "mine"
    result = start(mine, server_proc.port, "bob", front_end)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        (
            f"Error: the name bob is taken on 127.0.0.1:{server_proc.port}: it is registered there with "
            "another key. Choose another name: securechat-client --name ANOTHER"
        )
    ]
    assert "welcome" not in result.stdout and "Generating" not in result.stderr
    assert not (mine / "bob").exists()  # no key, no directory, nothing to clean up
    assert start(mine, server_proc.port, "bobby", "--plain").returncode == 0  # another name works


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_taken_name_found_only_at_sign_in_removes_the_new_key(tmp_path: Path) -> None:
    """The server was down when the key was made: the refusal at sign-in removes the unused key."""
    db = tmp_path / "server.db"
    with server_process(db) as srv:
        port = srv.port
        assert start(tmp_path / "theirs", port, "bob", "--plain").returncode == 0
        srv.stop()
    mine = tmp_path / "mine"
    child = subprocess.Popen(
        [*client_command(), "--home", str(mine), "--server", f"127.0.0.1:{port}", "--name", "bob", "--json"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=client_env(),
    )
    try:
        assert child.stdout is not None
        for line in child.stdout:  # the key is made while the server is down
            if '"connection"' in line and '"reconnecting"' in line:
                break
        assert (mine / "bob" / "identity.pem").exists()
        with server_process(db, port=port):
            child.wait(timeout=120)  # stdin stays open: only the refusal ends it (after a backoff)
        assert child.stderr is not None
        err = child.stderr.read()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 1
    assert f"Could not ask 127.0.0.1:{port} whether bob is free" in err
    assert f"Error: the name bob is taken on 127.0.0.1:{port}" in err
    assert "The key made for bob on this start was removed." in err
    assert not (mine / "bob" / "identity.pem").exists()
