"""One process per identity home (issue 14, item 1): a second start refuses and leaves the first alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from securechat.client.home import ClientHome
from securechat.errors import IdentityInUse
from tests.support.cli import client_command, client_env
from tests.support.jsonclient import JsonClientProcess
from tests.support.serverproc import ServerProcess

BITS = 2048


def start_again(home: Path, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*client_command(), "--home", str(home), "--server", f"127.0.0.1:{port}", *extra],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=client_env(),
        stdin=subprocess.DEVNULL,
    )


def test_lock_names_the_holder_and_is_free_after_release(tmp_path: Path) -> None:
    home = ClientHome(tmp_path)
    lock = home.lock("alice")
    with pytest.raises(IdentityInUse) as refused:
        home.lock("alice")
    assert str(refused.value) == f"alice is already running in this home (pid {os.getpid()})"
    home.lock("bob").release()  # one lock per identity, not per home
    lock.release()
    home.lock("alice").release()


def test_lock_is_released_by_a_crash(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys; from securechat.client.home import ClientHome;"
                f"lock = ClientHome({str(tmp_path)!r}).lock('alice'); print('locked', flush=True); sys.stdin.read()"
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(IdentityInUse, match=f"pid {holder.pid}"):
            ClientHome(tmp_path).lock("alice")
    finally:
        holder.kill()  # kill -9: no cleanup ran, the kernel dropped the lock
        holder.wait()
    ClientHome(tmp_path).lock("alice").release()


def test_second_client_for_one_identity_refuses_and_the_first_stays(
    server_proc: ServerProcess, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    first = JsonClientProcess("alice", server_proc.port, home)
    try:
        first.wait_event("connection", state="online")
        for extra in (["--json"], ["--plain"]):
            again = start_again(home, server_proc.port, "--name", "alice", *extra)
            assert again.returncode == 1, again.stderr
            assert again.stderr.strip().splitlines() == [
                f"Error: alice is already running in this home (pid {first.proc.pid})"
            ]
            assert again.stdout == ""
        # The first was not replaced: it still answers, and no fatal error reached it.
        first.command({"cmd": "list"})
        first.wait_event("users")
        assert not first.of_kind("error")
        first.kill()
        # After a kill -9 the lock is free: the next start signs in.
        after = JsonClientProcess("alice", server_proc.port, home, label="-after")
        try:
            after.wait_event("connection", state="online")
        finally:
            after.close()
    finally:
        first.close()


def test_a_capitalised_name_is_refused_with_the_name_to_use(tmp_path: Path) -> None:
    result = start_again(tmp_path, 9, "--name", "Alice", "--json")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "Error: names are lowercase and without spaces: use --name alice (not 'Alice')"
    ]
    assert not (tmp_path / "alice").exists()  # nothing was created under another spelling
    decrypt = start_again(tmp_path, 9, "--name", "Bob", "decrypt", "x")
    assert decrypt.returncode == 2 and "use --name bob" in decrypt.stderr
