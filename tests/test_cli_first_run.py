"""First run on a terminal: the passphrase offer (empty for none) and its confirmation."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from securechat.client.home import ClientHome
from tests.support.cli import client_command, client_env

pytestmark = pytest.mark.skipif(
    not hasattr(os, "openpty") or shutil.which("setsid") is None, reason="needs a pseudo-terminal and setsid"
)

OFFER = "Passphrase for the new key (empty for none)"


def first_run(home: Path, answers: list[tuple[str, str]], timeout: float = 60.0) -> str:
    """Start a plain chat for 'carol' on a terminal and answer each prompt as it appears.

    ``answers`` pairs the prompt text to wait for with the line to type (getpass
    discards anything typed before its prompt, as with a person). Nothing
    listens on port 9, so the client creates its identity and then retries;
    it is stopped once the identity is on disk. Returns the terminal's output.
    """
    primary, secondary = os.openpty()
    # `setsid --ctty` makes the pty the controlling terminal, as in a real
    # terminal session: getpass reads the passphrase from /dev/tty.
    proc = subprocess.Popen(
        ["setsid", "--ctty", *client_command(), "--name", "carol", "--plain", "--server", "127.0.0.1:9"],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=client_env(home),
    )
    screen = ""
    answered = 0
    deadline = time.monotonic() + timeout
    try:
        while "Generating" not in screen or not (home / "carol" / "identity.pem").exists():
            assert proc.poll() is None, f"client exited early:\n{screen}"
            assert time.monotonic() < deadline, f"identity not created in time:\n{screen}"
            ready, _, _ = select.select([primary], [], [], 0.2)
            if ready:
                screen += os.read(primary, 65536).decode("utf-8", "replace")
            if answered < len(answers) and screen.count(answers[answered][0]) > sum(
                1 for prompt, _ in answers[:answered] if prompt == answers[answered][0]
            ):
                os.write(primary, (answers[answered][1] + "\n").encode())
                answered += 1
    finally:
        proc.kill()
        proc.wait(timeout=30)
        os.close(primary)
        os.close(secondary)
    assert answered == len(answers), screen
    return screen


def test_empty_passphrase_is_asked_once_and_leaves_the_key_unencrypted(tmp_path: Path) -> None:
    screen = first_run(tmp_path, [(OFFER, "")])
    assert screen.count(OFFER) == 1, screen
    assert "Repeat" not in screen
    assert not ClientHome(tmp_path).key_is_encrypted("carol")


def test_passphrase_is_confirmed_and_encrypts_the_key(tmp_path: Path) -> None:
    screen = first_run(
        tmp_path,
        [
            (OFFER, "correct horse"),
            ("Repeat the passphrase", "wrong horse"),
            (OFFER, "correct horse"),
            ("Repeat the passphrase", "correct horse"),
        ],
    )
    assert "The two passphrases differ" in screen, screen
    home = ClientHome(tmp_path)
    assert home.key_is_encrypted("carol")
    home.load_identity("carol", "correct horse")  # the confirmed passphrase opens it
