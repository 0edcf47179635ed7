"""``securechat-client decrypt``: real payloads, tampered and foreign ones, --sender-key, piped input."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from securechat import crypto
from securechat.client.state import ClientStore
from tests.support.cli import client_command, client_env

BITS = 2048


@dataclass
class World:
    home: Path
    alice: crypto.PrivateKey
    bob: crypto.PrivateKey


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """alice and bob homes; bob has alice pinned (as after a first message)."""
    home = tmp_path_factory.mktemp("home")
    with ClientStore.open(home, "alice", bits=BITS) as alice, ClientStore.open(home, "bob", bits=BITS) as bob:
        assert alice.identity is not None and bob.identity is not None
        bob.pins.pin("alice", alice.identity.public_pem)
        alice.pins.pin("bob", bob.identity.public_pem)
        return World(home, alice.identity.private_key, bob.identity.private_key)


def payload(world: World, text: str, to: str = "bob") -> str:
    recipient = world.bob if to == "bob" else world.alice
    env = crypto.seal_envelope(world.alice, recipient.public_key(), "alice", to, text)
    return crypto.encode_payload(env)


def run(
    world: World, args: Sequence[str], stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*client_command(), *args],
        check=False,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=client_env(world.home, **env),
        timeout=30,
    )


def tamper(payload_text: str, field: str) -> str:
    env = json.loads(base64.b64decode(payload_text))
    raw = bytearray(base64.b64decode(env[field]))
    raw[len(raw) // 2] ^= 0x01
    env[field] = base64.b64encode(bytes(raw)).decode()
    return crypto.encode_payload(env)


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_decrypt_real_payload(world: World) -> None:
    result = run(world, ["decrypt", "--name", "bob", payload(world, "meet at noon")])
    assert result.returncode == 0, result.stderr
    assert "meet at noon" in result.stdout
    assert "signed with the key pinned for alice (not verified yet: compare fingerprints" in result.stdout


@pytest.mark.parametrize("field", ["ct", "sig", "key", "nonce"])
def test_tampered_payload_rejected_without_plaintext(world: World, field: str) -> None:
    bad = tamper(payload(world, "top secret words"), field)
    result = run(world, ["decrypt", "--name", "bob", bad])
    assert result.returncode != 0
    assert "top secret" not in result.stdout + result.stderr
    line = one_line_error(result.stderr)
    assert "rejected:" in line and "bad_signature" in line


def test_mangled_payload(world: World) -> None:
    result = run(world, ["decrypt", "--name", "bob", payload(world, "x")[:-7]])
    assert result.returncode != 0
    assert "malformed" in one_line_error(result.stderr)


def test_foreign_payload(world: World) -> None:
    for_alice = payload(world, "not for bob", to="alice")
    result = run(world, ["decrypt", "--name", "bob", for_alice])
    assert result.returncode != 0
    assert "not for bob" not in result.stdout
    assert "bad_recipient" in one_line_error(result.stderr)


def test_sender_key_option(world: World, tmp_path: Path) -> None:
    good = tmp_path / "alice.pem"
    good.write_text(crypto.public_key_pem(world.alice.public_key()))
    wrong = tmp_path / "other.pem"
    wrong.write_text(crypto.public_key_pem(world.bob.public_key()))
    text = payload(world, "checked with a file key")
    ok = run(world, ["decrypt", "--name", "bob", "--sender-key", str(good), text])
    assert ok.returncode == 0, ok.stderr
    assert "checked with a file key" in ok.stdout and "--sender-key" in ok.stdout
    bad = run(world, ["decrypt", "--name", "bob", "--sender-key", str(wrong), text])
    assert bad.returncode != 0 and "checked with" not in bad.stdout
    assert "bad_signature" in one_line_error(bad.stderr)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    assert run(world, ["decrypt", "--name", "bob", "--sender-key", str(junk), text]).returncode == 2


def test_unpinned_sender_needs_sender_key(world: World) -> None:
    # alice has no pin for herself: a message from alice to alice cannot be verified.
    result = run(world, ["decrypt", "--name", "alice", payload(world, "note to self", to="alice")])
    assert result.returncode != 0 and "note to self" not in result.stdout
    assert "--sender-key" in one_line_error(result.stderr)


def test_piped_payloads_one_per_line(world: World) -> None:
    lines = [payload(world, "first"), tamper(payload(world, "second"), "ct"), "", payload(world, "third")]
    result = run(world, ["decrypt", "--name", "bob"], stdin="\n".join(lines) + "\n")
    assert result.returncode == 1  # not every payload opened
    assert "first" in result.stdout and "third" in result.stdout and "second" not in result.stdout
    assert one_line_error(result.stderr).startswith("payload 2: rejected:")
    all_good = run(
        world, ["decrypt", "--name", "bob"], stdin=payload(world, "a") + "\n" + payload(world, "b") + "\n"
    )
    assert all_good.returncode == 0, all_good.stderr
    assert all_good.stdout.count("signed with the key pinned for alice") == 2


def test_missing_home_or_name_is_a_clear_error(world: World, tmp_path: Path) -> None:
    result = run(world, ["decrypt", "--name", "zed", payload(world, "x")])
    assert result.returncode != 0
    line = one_line_error(result.stderr)
    assert line.startswith("Error: no identity 'zed'")
    empty = run(world, ["decrypt", "--home", str(tmp_path / "nowhere"), "--name", "bob", payload(world, "x")])
    assert empty.returncode != 0 and one_line_error(empty.stderr).startswith("Error: no identity 'bob'")
    no_name = run(world, ["decrypt", payload(world, "x")])
    assert no_name.returncode == 2 and "--name" in no_name.stderr and "Traceback" not in no_name.stderr


def test_no_payload_on_empty_stdin(world: World) -> None:
    result = run(world, ["decrypt", "--name", "bob"], stdin="")
    assert result.returncode == 2 and "no payload" in result.stderr


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_prompts_for_a_payload_on_a_tty(world: World) -> None:
    primary, secondary = os.openpty()
    try:
        proc = subprocess.Popen(
            [*client_command(), "decrypt", "--name", "bob"],
            stdin=secondary,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=client_env(world.home),
            text=True,
        )
        os.write(primary, (payload(world, "typed in by hand") + "\n").encode())
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(primary)
        os.close(secondary)
    assert proc.returncode == 0, err
    assert "Paste the payload (line breaks are fine), then press Enter on an empty line:" in err
    assert "typed in by hand" in out
    assert sys.platform != "win32"


# --- a payload split over lines, however it was copied (issue 14, item 2) ----------------------


def wrapped(text: str, width: int = 80, trail: str = "") -> list[str]:
    """``text`` hard-wrapped as a terminal selection copies it (rows of ``width``, maybe padded)."""
    return [text[i : i + width] + trail for i in range(0, len(text), width)]


def test_piped_payloads_split_over_lines(world: World) -> None:
    first, second = payload(world, "first, wrapped"), payload(world, "second, right after")
    pasted = wrapped(first, 80, "   ") + wrapped(second, 57) + [""] + wrapped(payload(world, "third"), 13)
    result = run(world, ["decrypt", "--name", "bob"], stdin="\r\n".join(pasted) + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("signed with the key pinned for alice") == 3
    for text in ("first, wrapped", "second, right after", "third"):
        assert text in result.stdout


def test_payload_split_over_several_arguments(world: World) -> None:
    one, two = payload(world, "in pieces"), payload(world, "and another")
    result = run(world, ["decrypt", "--name", "bob", *wrapped(one, 100), "\n".join(wrapped(two, 64))])
    assert result.returncode == 0, result.stderr
    assert "in pieces" in result.stdout and "and another" in result.stdout
    assert result.stdout.startswith("payload 1: from alice to bob")


def test_a_payload_cut_short_says_so(world: World) -> None:
    whole = payload(world, "the end is missing")
    for cut in (whole[: len(whole) // 2], whole[: len(whole) // 2 - 1], whole[:-4]):
        result = run(world, ["decrypt", "--name", "bob"], stdin=cut + "\n")
        line = one_line_error(result.stderr)
        assert line == f"rejected: malformed: {crypto.CUT_SHORT}", (len(cut), line)
    junk = run(world, ["decrypt", "--name", "bob", "07:19 <alice> hi " + whole])
    assert "not valid base64 (was something other than the payload copied with it?)" in junk.stderr


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
@pytest.mark.parametrize("end", ["", "\n"])
def test_prompt_reads_a_payload_pasted_over_many_lines(world: World, end: str) -> None:
    """Pasted at the prompt in rows of 80: read until the payload is whole (or a blank line)."""
    primary, secondary = os.openpty()
    try:
        proc = subprocess.Popen(
            [*client_command(), "decrypt", "--name", "bob"],
            stdin=secondary,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=client_env(world.home),
            text=True,
        )
        os.write(primary, ("\n".join(wrapped(payload(world, "pasted in rows"))) + "\n" + end).encode())
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(primary)
        os.close(secondary)
    assert proc.returncode == 0, err
    assert "pasted in rows" in out and out.count("from alice to bob") == 1
