"""``securechat-client decrypt``: real payloads, tampered and foreign ones, --sender-key, piped input."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from securechat import crypto
from securechat.client.state import ClientStore
from securechat.rooms.log import ZERO_HEAD, RoomEntry, RoomState, apply
from securechat.rooms.sealing import seal_room, sign_entry
from tests.support.cli import client_command, client_env
from tests.support.rooms import T0

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
    # bob has no pin for carol: a message from carol cannot be verified.
    carol = crypto.generate_private_key(BITS)
    env = crypto.seal_envelope(carol, world.bob.public_key(), "carol", "bob", "from a stranger")
    result = run(world, ["decrypt", "--name", "bob", crypto.encode_payload(env)])
    assert result.returncode != 0 and "from a stranger" not in result.stdout
    assert "--sender-key" in one_line_error(result.stderr)


def test_a_note_to_self_opens_with_the_own_key_and_only_with_it(world: World) -> None:
    """Our own name's key is our own identity's, never a pin the server could have set."""
    result = run(world, ["decrypt", "--name", "alice", payload(world, "note to self", to="alice")])
    assert result.returncode == 0 and "note to self" in result.stdout, result.stderr
    forged = crypto.seal_envelope(world.bob, world.alice.public_key(), "alice", "alice", "not from alice")
    result = run(world, ["decrypt", "--name", "alice", crypto.encode_payload(forged)])
    assert result.returncode != 0 and "not from alice" not in result.stdout
    assert "bad_signature" in one_line_error(result.stderr)


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


# --- room payloads (docs/protocol.md 11.7, "The pasted payload"; issue 10) ------------------------


@dataclass
class Room:
    """A room #ops of alice (admin), bob and carol at seq 2; bob then removed at seq 3.

    Every home holds the chain its client would have verified: bob, carol and alice
    up to seq 3, erin only up to seq 2 (she has not fetched the removal yet; she is
    not a member but reads the log in this test as a client that was behind would),
    dave nothing. bob has alice pinned, not carol.
    """

    home: Path
    keys: dict[str, crypto.PrivateKey]
    states: list[RoomState]


def _entries(keys: dict[str, crypto.PrivateKey]) -> tuple[list[RoomEntry], list[RoomState]]:
    changes = [("create", "alice", "alice", "invite"), ("add", "alice", "bob", ""), ("add", "alice", "carol", ""),
               ("remove", "alice", "bob", "")]
    entries, states = [], []
    state: RoomState | None = None
    for op, by, name, kind in changes:
        seq, prev = (state.seq + 1, state.head) if state is not None else (0, ZERO_HEAD)
        entry = sign_entry(keys[by], "#ops", seq, prev, op, by, name, kind, T0 + seq)
        state = apply(state, entry)
        entries.append(entry)
        states.append(state)
    return entries, states


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Room:
    home = tmp_path_factory.mktemp("roomhome")
    names = ("alice", "bob", "carol", "dave", "erin")
    stores = {name: ClientStore.open(home, name, bits=BITS) for name in names}
    try:
        keys = {name: store.require_identity().private_key for name, store in stores.items()}
        entries, states = _entries(keys)
        for name, upto in (("alice", 3), ("bob", 3), ("carol", 3), ("erin", 2)):
            stores[name].rooms.extend(states[upto], entries[: upto + 1])
        stores["bob"].pins.pin("alice", stores["alice"].require_identity().public_pem)
        for other in ("alice", "bob"):
            stores["carol"].pins.pin(other, stores[other].require_identity().public_pem)
        return Room(home, keys, states)
    finally:
        for store in stores.values():
            store.close()


def room_payload(room: Room, sender: str, seq: int, text: str, state: RoomState | None = None) -> str:
    state = state if state is not None else room.states[seq]
    members = {name: room.keys[name].public_key() for name in state.members}
    env = seal_room(room.keys[sender], members, state, sender, text, msg_id="0123456789abcdef" * 2, ts=T0 + 90_000)
    return crypto.encode_payload(env)


def decrypt_as(room: Room, name: str, *payloads: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*client_command(), "decrypt", "--name", name, *payloads], check=False, input="", capture_output=True,
        text=True, env=client_env(room.home, COLUMNS="1000"), timeout=30,
    )


def test_a_member_opens_a_room_payload_naming_the_room_and_the_sender(room: Room) -> None:
    text = "deploy at 5 \x1b[2J\u202eevil"
    result = decrypt_as(room, "bob", room_payload(room, "alice", 2, text))
    assert result.returncode == 0, result.stderr
    first, body = result.stdout.splitlines()
    assert first == (
        "from alice in #ops (sent under seq 2 of its log: 3 members) at 2026-01-01 00:01:30 UTC "
        "(id 0123456789abcdef0123456789abcdef); signed with the key pinned for alice (not verified yet: "
        "compare fingerprints, then securechat-client verify)"
    ), first
    # The text through the one sanitiser: escapes and the bidi override shown, never acted on.
    assert body == "    deploy at 5 ⟨U+001B⟩[2J⟨U+202E⟩evil", body
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout


def test_the_sender_opens_its_own_room_payload_with_its_own_key(room: Room) -> None:
    result = decrypt_as(room, "carol", room_payload(room, "carol", 3, "my own words"))
    assert result.returncode == 0, result.stderr
    assert "from carol in #ops (sent under seq 3 of its log: 2 members)" in result.stdout
    assert "signed with your own key" in result.stdout and "my own words" in result.stdout


def test_an_old_state_still_opens_for_who_was_a_member_then(room: Room) -> None:
    # Sent while bob was a member (seq 2): bob, removed since, still reads what was wrapped for him.
    result = decrypt_as(room, "bob", room_payload(room, "alice", 2, "before your removal"))
    assert result.returncode == 0 and "before your removal" in result.stdout, result.stderr


def room_refusal(room: Room, name: str, payload_text: str, secret: str) -> str:
    result = decrypt_as(room, name, payload_text)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert secret not in result.stdout + result.stderr
    return one_line_error(result.stderr)


def test_not_a_member_of_the_state_it_was_sent_under(room: Room) -> None:
    line = room_refusal(room, "bob", room_payload(room, "alice", 3, "after bob left"), "after bob left")
    assert line == "rejected: bad_recipient: we are not a member of #ops at seq 3", line


def test_a_room_the_reader_does_not_hold(room: Room) -> None:
    line = room_refusal(room, "dave", room_payload(room, "alice", 2, "not for dave"), "not for dave")
    assert line.startswith("rejected: unknown_state: dave holds no room #ops: only a member's client"), line


def test_a_state_beyond_the_held_log_says_to_catch_up(room: Room) -> None:
    line = room_refusal(room, "erin", room_payload(room, "carol", 3, "too new"), "too new")
    assert "unknown_state: it was sent under seq 3 of #ops's log and erin holds it up to seq 2: start the chat" in line


def test_a_forged_state_at_a_held_seq(room: Room) -> None:
    forged = replace(room.states[2], head=bytes(32))
    line = room_refusal(room, "bob", room_payload(room, "alice", 2, "forged head", forged), "forged head")
    assert "unknown_state: seq 2 of #ops in it is not the one in bob's verified log" in line, line


def test_a_sender_without_a_pinned_key(room: Room) -> None:
    line = room_refusal(room, "bob", room_payload(room, "carol", 2, "from carol"), "from carol")
    assert line.startswith("rejected: unknown_sender: no key pinned for 'carol'; pass --sender-key FILE"), line


def test_a_sender_outside_the_state(room: Room) -> None:
    with_dave = replace(room.states[2], members=room.states[2].members | {"dave"})
    line = room_refusal(room, "bob", room_payload(room, "dave", 2, "ghost sender", with_dave), "ghost sender")
    assert line == "rejected: not_member: 'dave' is not a member of #ops at seq 2", line


def test_a_ghost_key_and_a_tampered_room_payload(room: Room) -> None:
    env = crypto.decode_payload(room_payload(room, "alice", 2, "ghost key"))
    env["keys"]["dave"] = env["keys"]["carol"]
    line = room_refusal(room, "bob", crypto.encode_payload(env), "ghost key")
    assert line.startswith("rejected: member_mismatch:") and "keys for non-members: dave" in line, line
    for field in ("ct", "nonce", "sig"):
        line = room_refusal(room, "bob", tamper(room_payload(room, "alice", 2, "tampered"), field), "tampered")
        assert line.startswith("rejected: bad_signature: signature does not verify with the key of 'alice'"), line


def test_sender_key_option_opens_a_room_payload(room: Room, tmp_path: Path) -> None:
    pem = tmp_path / "carol.pem"
    pem.write_text(crypto.public_key_pem(room.keys["carol"].public_key()))
    result = decrypt_as(room, "bob", "--sender-key", str(pem), room_payload(room, "carol", 2, "checked by file"))
    assert result.returncode == 0, result.stderr
    assert "from carol in #ops" in result.stdout and "the key from --sender-key" in result.stdout
