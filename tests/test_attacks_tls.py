"""The transport against the network (docs/protocol.md section 2.1, docs/security.md "Transport").

Real servers, real client sessions and real client processes, a recording TCP
proxy in the path and fake servers with identities of their own.
"""

from __future__ import annotations

import asyncio
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from securechat import crypto
from securechat.client.connection import ClientConnection, Dropped, KeyAnswer, UsersAnswer, Welcomed
from securechat.client.link import Link
from securechat.client.servers import KnownServers, ServerTrust
from securechat.events import Acked, MessageReceived, ServerPinned, UsersListed
from securechat.protocol import FrameDecoder, encode_frame
from securechat.server import ChatServer
from securechat.tls import PAD_STEP, padded_size
from tests.support.cli import client_command, client_env
from tests.support.hostile import fake_identity
from tests.support.jsonclient import JsonClient
from tests.support.proxy import recording_proxy, tls_records
from tests.support.rawclient import RawClient, clients, envelope, identity_key, msg_id
from tests.support.serverproc import server_command, server_process
from tests.support.sessions import WAIT, Client, online

pytestmark = pytest.mark.timeout(90)

# A TLS 1.3 record adds a 5-byte header, the 1-byte inner content type and a 16-byte tag to what it carries;
# the last record of a connection is a 2-byte close_notify alert.
TLS13_OVERHEAD, CLOSE_NOTIFY = 17, 2
# The encrypted handshake records before the application's: the client's Finished; OpenSSL's server
# flight (EncryptedExtensions, Certificate, CertificateVerify, Finished), one record each.
HANDSHAKE_RECORDS = {"up": 1, "down": 4}
# Long names: a 3-byte name would turn up in 100 KB of ciphertext now and then.
ALICE, BOB = "alice-in-transit", "bob-on-the-wire"


async def _talk(make_client: Callable[..., Client], port: int, **options: Any) -> tuple[Client, Client]:
    """Alice and Bob log in through ``port``, look each other up, list, and exchange a message each way."""
    alice = await online(make_client(ALICE, port, **options))
    bob = await online(make_client(BOB, port, **options))
    await alice.session.send(BOB, "hello through the wire")
    await bob.rec.wait_kind(MessageReceived)
    await bob.session.send(ALICE, "and back")
    await alice.rec.wait_kind(MessageReceived)
    await alice.rec.wait_kind(Acked, status="delivered")
    await alice.session.list_users()
    await alice.rec.wait_kind(UsersListed)
    return alice, bob


def _secrets(alice: Client) -> dict[str, bytes]:
    """What must not cross the network in clear: names, JSON, keys (PEM, DER, base64, fingerprints)."""
    public = alice.session.store.public_key
    der = crypto.public_key_der(public)
    pem_line = crypto.public_key_pem(public).splitlines()[2]  # 64 base64 characters of the key
    return {
        "alice's name": ALICE.encode(),
        "bob's name": BOB.encode(),
        "a JSON field": b'"type":',
        "an envelope": b'"envelope"',
        "a PEM header": b"BEGIN PUBLIC KEY",
        "alice's key (DER)": der[40:120],
        "alice's key (base64)": pem_line.encode(),
        "alice's fingerprint": alice.session.fingerprint.encode(),
        "alice's fingerprint (raw)": bytes.fromhex(alice.session.fingerprint),
    }


async def test_the_network_sees_no_name_no_json_and_no_key(
    server: ChatServer, plain_server: ChatServer, make_client: Callable[..., Client]
) -> None:
    """A proxy records every byte of a whole session over TLS: none of the secrets appears.

    The same session over plaintext, through the same proxy, shows every one of them:
    the recording would catch a leak.
    """
    async with recording_proxy(server.port) as proxy:
        alice, bob = await _talk(make_client, proxy.port)
        secrets = _secrets(alice)
        await alice.stop()
        await bob.stop()
    recorded = list(proxy.all_bytes())
    assert sum(map(len, recorded)) > 10_000
    for what, needle in secrets.items():
        assert not any(needle in stream for stream in recorded), f"{what} crossed the network in clear"
    for stream in recorded:
        if stream:
            assert stream[0] == 0x16, "every connection starts with a TLS handshake record"

    async with recording_proxy(plain_server.port) as control:
        alice, bob = await _talk(make_client, control.port, plaintext=True)
        await alice.stop()
        await bob.stop()
    in_clear = b"".join(control.all_bytes())
    for what, needle in _secrets(alice).items():
        if "raw" not in what and "DER" not in what:
            assert needle in in_clear, f"the control run should show {what}"


async def test_what_the_network_sees_comes_in_padded_sizes(
    server: ChatServer, make_client: Callable[..., Client]
) -> None:
    """Every TLS record after the handshake carries a bucket's worth of plaintext (docs/protocol.md 2.2)."""
    async with recording_proxy(server.port) as proxy:
        alice, bob = await _talk(make_client, proxy.port)
        await alice.stop()
        await bob.stop()
    buckets = {padded_size(n) for n in range(1, PAD_STEP + 1)}
    seen = 0
    for rec in proxy.recordings:
        for direction, stream in (("up", rec.upstream), ("down", rec.downstream)):
            encrypted = [length - TLS13_OVERHEAD for kind, length in tls_records(bytes(stream)) if kind == 0x17]
            if encrypted and encrypted[-1] == CLOSE_NOTIFY:
                encrypted.pop()  # the alert that ends the connection
            for size in encrypted[HANDSHAKE_RECORDS[direction] :]:
                assert size in buckets, f"{direction}: a record of {size} plaintext bytes"
                seen += 1
    assert seen >= 20


# --- a fake server that relays the real server's challenge (docs/security.md; issue 13 item 9) ---


async def _relay_attack(fake_port_box: list[int], real_port: int, log: list[dict[str, Any]]) -> asyncio.Server:
    """A fake server (its own TLS identity) that logs in at the real one with what the victim signs.

    It passes the victim's ``hello`` on, her the real ``challenge``, and the real server her
    ``auth``; if that worked it would confirm (delete) every queued message.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        victim = FrameDecoder()
        real = await RawClient.connect(real_port)
        try:
            hello = await _next_frame(reader, victim)
            await real.send_frame(hello)
            challenge = await real.recv()
            writer.write(encode_frame(challenge))
            auth = await _next_frame(reader, victim)
            await real.send_frame(auth)
            answer = await real.recv()
            log.append(answer)
            if answer["type"] == "welcome":
                while True:  # take her session: confirm (delete) whatever is queued for her
                    frame = await real.recv(2.0)
                    log.append(frame)
                    if frame["type"] == "message":
                        await real.send_frame({"type": "received", "id": frame["envelope"]["id"], "from": frame["from"]})
        except (TimeoutError, ConnectionError):
            pass
        finally:
            await real.close()
            writer.close()

    fake = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=fake_identity().context())
    fake_port_box.append(fake.sockets[0].getsockname()[1])
    return fake


async def _next_frame(reader: asyncio.StreamReader, decoder: FrameDecoder) -> dict[str, Any]:
    pending: list[dict[str, Any]] = []
    while not pending:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("the victim left")
        pending = decoder.feed(data)
    return pending[0]


async def test_a_fake_server_relaying_the_challenge_cannot_log_in_as_the_user(
    server: ChatServer, make_client: Callable[..., Client]
) -> None:
    """Bob's messages wait for alice; she connects to a fake server (a typo, a spoofed name, anyone
    on the path), which relays the real server's challenge to her and her signature to the real
    server. The real server refuses it (it is bound to the fake's identity): the fake never gets a
    session, and bob's messages stay queued until alice herself logs in."""
    alice = await online(make_client("alice", server.port))  # registers alice with her own key
    key = alice.session.store.require_identity().private_key
    await alice.stop()
    async with clients(server.port, "bob") as (b,):
        for n in range(3):
            await b.send_frame({"type": "send", "to": "alice", "envelope": envelope("bob", "alice", msg_id(n))})
            assert (await b.recv_type("ack"))["status"] == "queued"
        log: list[dict[str, Any]] = []
        port: list[int] = []
        fake = await _relay_attack(port, server.port, log)
        try:
            victim = make_client("alice", port[0])  # the same home: alice's real client and key
            victim.start()
            await victim.rec.wait_kind(ServerPinned)  # she met the fake first: trust on first use pins it
            async with asyncio.timeout(WAIT):
                while not log:
                    await asyncio.sleep(0.05)
            await victim.stop()
        finally:
            fake.close()
        assert log[0]["type"] == "error" and log[0]["code"] == "auth_failed", log
        assert not [f for f in log if f["type"] == "message"], "the fake was handed alice's messages"
        # Nothing was delivered: bob heard no "delivered", and alice gets all three herself.
        await b.expect_silence(0.3, ignore=("presence",))
        real = await RawClient.connect(server.port)
        await real.login("alice", key)
        got = [(await real.recv_type("message"))["envelope"]["id"] for _ in range(3)]
        assert got == [msg_id(n) for n in range(3)]
        await real.close()


# --- pinned identities, with the real client and server processes ---------------------------------


def _identity_files(db: Path) -> list[Path]:
    return [db.with_name(db.stem + ".tls-cert.pem"), db.with_name(db.stem + ".tls-key.pem")]


async def test_a_changed_server_identity_is_refused_then_accepted_with_the_command_it_names(tmp_path: Path) -> None:
    """The server comes back at the same address with another key (its files were replaced: an
    impostor, or a careless operator). The client refuses before sending anything, names both
    fingerprints and one command; once that command is run, it connects."""
    db, home = tmp_path / "server.db", tmp_path / "home"
    with server_process(db) as first:
        port = first.port
        alice = await JsonClient.start("alice", port, home)
        pinned = await alice.wait_event("server_pinned")
        await alice.wait_event("ready")
        assert (await alice.finish())[0] == 0
        first.stop()
    for path in _identity_files(db):
        path.unlink()
    with server_process(db, port=port) as second:
        again = await JsonClient.start("alice", port, home)
        refused = await again.wait_event("server_refused")
        status, stderr = await again.finish()
        assert status == 1 and "Traceback" not in stderr
        assert refused["reason"] == "identity_changed" and refused["wanted"] == pinned["fingerprint"]
        assert refused["presented"] != pinned["fingerprint"]
        assert not [e for e in again.events if e["event"] in ("ready", "error")]
        assert not any("alice" in line for line in second.lines), "the refused client sent its name"
        # The one command, as printed (it names the presented identity and this home).
        accept = shlex.split(refused["accept"])
        assert accept[0] == "securechat-client" and "trust-server" in accept
        done = await asyncio.create_subprocess_exec(
            *client_command(), *accept[1:], env=client_env(home), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(done.communicate(), WAIT)
        assert done.returncode == 0, err
        assert b"is pinned to" in out
        assert refused["presented"] in (home / "known_servers").read_text()
        back = await JsonClient.start("alice", port, home)
        await back.wait_event("ready")
        assert (await back.finish())[0] == 0
        assert not [e for e in back.events if e["event"] in ("server_refused", "server_pinned")]


def _print_fingerprint(db: Path) -> str:
    done = subprocess.run(
        [*server_command(), "--db", str(db), "--print-fingerprint"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == 0, done.stderr
    grouped, plain = done.stdout.splitlines()
    assert grouped.replace(" ", "") == plain and len(plain) == 64
    return plain


async def test_a_fingerprint_given_in_advance_is_checked_on_first_use(tmp_path: Path) -> None:
    db, home = tmp_path / "server.db", tmp_path / "home"
    published = _print_fingerprint(db)  # the operator prints it before the first start (the files are made)
    with server_process(db) as proc:
        wrong = "0" * 64
        mallory_side = await JsonClient.start("alice", proc.port, home, "--server-fingerprint", wrong)
        refused = await mallory_side.wait_event("server_refused")
        assert (await mallory_side.finish())[0] == 1
        assert refused["reason"] == "identity_mismatch"
        assert (refused["wanted"], refused["presented"]) == (wrong, published)
        assert not (home / "known_servers").exists(), "a refused identity was pinned"
        right = await JsonClient.start("alice", proc.port, home, "--server-fingerprint", published)
        assert (await right.wait_event("server_pinned"))["fingerprint"] == published
        await right.wait_event("ready")
        assert (await right.finish())[0] == 0


# --- one clear line for what cannot work -------------------------------------------------------------


async def _plain_client(port: int, home: Path, *args: str) -> tuple[int, list[str], str]:
    """``securechat-client --plain`` until it gives up by itself: (status, stdout lines, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *client_command(), "--name", "alice", "--server", f"127.0.0.1:{port}", "--plain", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=client_env(home),
    )  # stdin stays open: the client must end on its own
    try:
        assert proc.stdout is not None and proc.stderr is not None
        out, err = await asyncio.wait_for(asyncio.gather(proc.stdout.read(), proc.stderr.read()), WAIT)
        status = await asyncio.wait_for(proc.wait(), WAIT)
    finally:
        if proc.returncode is None:
            proc.kill()
    return status, out.decode().splitlines(), err.decode()


def _about(lines: list[str], *words: str) -> list[str]:
    return [line for line in lines if all(word in line for word in words)]


async def test_a_tls_client_at_a_plaintext_server_gets_one_line(tmp_path: Path) -> None:
    with server_process(tmp_path / "server.db", ["--plaintext"]) as proc:
        status, lines, stderr = await _plain_client(proc.port, tmp_path / "home")
        assert status == 1 and "Traceback" not in stderr and "Could not ask" not in stderr, stderr
        assert len(_about(lines, "speaks plaintext securechat, not TLS")) == 1, lines
        assert [line for line in lines if line.startswith("!")] == _about(lines, "speaks plaintext"), lines
        proc.stop()
    # Two connections on a first run, each refused with the code: the name check, then the session.
    assert len(_about(proc.lines, "tls_unsupported", "not TLS")) == 2, proc.stderr
    assert "listening on" in proc.stderr and "plaintext: no TLS" in proc.stderr


async def test_a_plaintext_client_at_a_tls_server_gets_one_line(tmp_path: Path) -> None:
    with server_process(tmp_path / "server.db") as proc:
        status, lines, stderr = await _plain_client(proc.port, tmp_path / "home", "--plaintext")
        assert status == 1 and "Traceback" not in stderr and "Could not ask" not in stderr, stderr
        assert len(_about(lines, "tls_required", "this server speaks TLS")) == 1, lines
        # The other warning line is the one every plaintext session shows.
        assert [line for line in lines if line.startswith("!") and "PLAINTEXT" not in line] == _about(
            lines, "tls_required"
        ), lines
        proc.stop()
    assert len(_about(proc.lines, "does not speak TLS")) == 2, proc.stderr  # the name check, the session


def _certificate(tmp_path: Path, *, days: tuple[int, int]) -> tuple[Path, Path]:
    """A self-signed P-256 certificate valid from ``days[0]`` to ``days[1]`` days from now, and its key."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old server")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=days[0]))
        .not_valid_after(now + datetime.timedelta(days=days[1]))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


async def test_an_expired_certificate_is_one_line_at_the_client(tmp_path: Path) -> None:
    import ssl

    cert, key = _certificate(tmp_path, days=(-400, -30))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)  # a server that presents it anyway (OpenSSL does not mind its own)
    fake = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=context)
    try:
        status, lines, stderr = await _plain_client(fake.sockets[0].getsockname()[1], tmp_path / "home")
    finally:
        fake.close()
    assert status == 1 and "Traceback" not in stderr
    assert [line for line in lines if line.startswith("!")] == _about(lines, "certificate", "expired on"), lines
    assert len(_about(lines, "expired on")) == 1


def _server_with(tmp_path: Path, cert: Path, key: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*server_command(), "--db", str(tmp_path / "s.db"), "--port", "0", "--tls-cert", str(cert),
         "--tls-key", str(key)],
        capture_output=True, text=True, timeout=30, check=False,
    )


def test_an_expired_certificate_stops_the_server_with_one_line(tmp_path: Path) -> None:
    done = _server_with(tmp_path, *_certificate(tmp_path, days=(-400, -30)))
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("Error: the TLS certificate") and "expired on" in done.stderr
    assert "renew it" in done.stderr


@pytest.mark.parametrize("what", ["garbage certificate", "garbage key", "key of another certificate"])
def test_unusable_identity_files_are_one_line_at_the_server(tmp_path: Path, what: str) -> None:
    cert, key = _certificate(tmp_path, days=(-1, 30))
    if what == "garbage certificate":
        cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    elif what == "garbage key":
        key.write_bytes(b"\x00\x01 not a key")
    else:
        other = tmp_path / "other"
        other.mkdir()
        _, key = _certificate(other, days=(-1, 30))
    done = _server_with(tmp_path, cert, key)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and done.stderr.startswith("Error: "), done.stderr
    assert "Traceback" not in done.stderr


async def test_garbage_instead_of_a_tls_handshake_is_one_line(tmp_path: Path) -> None:
    """A server that answers the ClientHello with bytes that are neither TLS nor a frame."""

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"\x15\x03\x03\xff\xff" + b"\xa5" * 64)
        await writer.drain()
        await reader.read()
        writer.close()

    fake = await asyncio.start_server(garbage, "127.0.0.1", 0)
    try:
        status, lines, stderr = await _plain_client(fake.sockets[0].getsockname()[1], tmp_path / "home")
    finally:
        fake.close()
    assert status == 1 and "Traceback" not in stderr
    assert [line for line in lines if line.startswith("!")] == _about(lines, "TLS handshake", "failed"), lines


async def test_close_notify_is_the_tls_half_close(server: ChatServer, tmp_path: Path) -> None:
    """A client that sends its requests and then close_notify (no FIN: asyncio's TLS waits like that
    for the server's close_notify) still gets every answer, and then the end of the stream: the TLS
    form of tests/test_server.py's half-close test, through the client library's link."""
    conn = ClientConnection("alice", identity_key("alice"))
    link = await Link.open("127.0.0.1", server.port, WAIT, conn, ServerTrust(KnownServers(tmp_path / "ks")))
    assert link.tls is not None and conn.server_identity is not None
    link.flush()
    events: list[Any] = []
    while not any(isinstance(e, Welcomed) for e in events):
        events += await link.read_events(WAIT)
    for n in range(15):
        conn.send({"type": "lookup", "name": "alice", "rid": str(n)})
    conn.send({"type": "list", "rid": "l"})
    link.flush()
    link.tls.close()
    link.writer.write(link.tls.data_to_send())
    answers: list[Any] = []
    while not any(isinstance(e, Dropped) for e in answers):
        answers += await link.read_events(WAIT)
    assert [e.rid for e in answers if isinstance(e, KeyAnswer)] == [str(n) for n in range(15)]
    assert [e.rid for e in answers if isinstance(e, UsersAnswer)] == ["l"]
    await link.wait_closed()
