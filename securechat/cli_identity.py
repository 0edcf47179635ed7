"""``securechat-client``'s own identity on the command line: its name, its passphrase, its key.

The prompts (a passphrase for a new key, asked twice; the passphrase of an
existing key, three tries on a terminal) and the first-run key generation live
here, apart from the commands that use them (:mod:`securechat.client_cli`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Final

import click

from . import crypto
from .client.home import ClientHome, Identity
from .client.state import ClientStore
from .errors import KeyStoreError, ServerErrorReply, UsageError, WrongPassphrase
from .names import is_valid_name, parse_typed_name

PASSPHRASE_ENV: Final = "SECURECHAT_PASSPHRASE"
# Tests only: smaller (but still protocol-valid) keys so suites stay fast.
KEY_BITS_ENV: Final = "SECURECHAT_KEY_BITS"
PASSPHRASE_TRIES: Final = 3


def own_name(typed: str) -> str:
    """The name given with ``--name``, exactly as it is on the wire; never changed silently.

    A name with capitals is refused with the name to use instead: names are
    lowercase (docs/protocol.md section 3), and an identity is not a place to guess.
    """
    if is_valid_name(typed):
        return typed
    meant = parse_typed_name(typed)  # InvalidName if no spelling of it is a name
    raise UsageError(f"names are lowercase and without spaces: use --name {meant} (not {typed!r})")


def key_bits() -> int:
    raw = os.environ.get(KEY_BITS_ENV)
    if not raw:
        return crypto.DEFAULT_KEY_BITS
    try:
        bits = int(raw)
    except ValueError:
        raise click.UsageError(f"{KEY_BITS_ENV} must be a number") from None
    if bits < crypto.MIN_KEY_BITS:
        raise click.UsageError(f"{KEY_BITS_ENV} must be at least {crypto.MIN_KEY_BITS}")
    return bits


def load_identity(home: ClientHome, name: str, *, interactive: bool) -> Identity:
    """An existing identity, asking for its passphrase when needed (three tries on a terminal)."""
    home.check_identity(name)  # permissions first: never ask for a passphrase to a key others can read
    if not home.key_is_encrypted(name):
        return home.load_identity(name)
    env = os.environ.get(PASSPHRASE_ENV)
    if env is not None:
        return home.load_identity(name, env)
    if not interactive:
        raise KeyStoreError(f"the key of '{name}' is protected by a passphrase; set {PASSPHRASE_ENV}")
    for attempt in range(1, PASSPHRASE_TRIES + 1):
        typed = str(click.prompt(f"Passphrase for {name}", hide_input=True, err=True))
        try:
            return home.load_identity(name, typed)
        except WrongPassphrase:
            if attempt == PASSPHRASE_TRIES:
                raise
            click.echo(f"Wrong passphrase; try again ({PASSPHRASE_TRIES - attempt} left).", err=True)
    raise AssertionError("unreachable")


def _new_passphrase() -> str:
    """Offer a passphrase for a new key; only a non-empty one is asked twice."""
    while True:
        first = str(
            click.prompt(
                "Passphrase for the new key (empty for none)",
                hide_input=True,
                default="",
                show_default=False,
                err=True,
            )
        )
        if not first:
            return ""
        again = str(click.prompt("Repeat the passphrase", hide_input=True, err=True))
        if again == first:
            return first
        click.echo("The two passphrases differ; try again.", err=True)


def open_or_create(
    home: ClientHome,
    name: str,
    *,
    interactive: bool,
    on_generate: Callable[[str, int], None] | None = None,
    before_create: Callable[[str], None] | None = None,
) -> tuple[ClientStore, bool]:
    """Load ``name``'s identity, or create it on first use; returns (store, first_run).

    ``before_create`` runs before anything is asked or generated for a new name
    (the client checks there that the server does not know the name already).
    """
    name = parse_typed_name(name)
    home.identity_dir(name)  # validates the name
    first_run = not home.has_identity(name)
    if first_run:
        if before_create is not None:
            before_create(name)
        passphrase = os.environ.get(PASSPHRASE_ENV)
        if passphrase is None and interactive:
            passphrase = _new_passphrase()
        bits = key_bits()
        click.echo(f"Generating a {bits}-bit RSA key for {name}…", err=True)
        if on_generate is not None:
            on_generate(name, bits)
        identity = home.create_identity(name, passphrase or None, bits=bits)
    else:
        identity = load_identity(home, name, interactive=interactive)
    return home.open_store(name, identity), first_run


def refusal(error: ServerErrorReply, name: str, server: str) -> str:
    """What the server's refusal for good means for ``name``, and what to do about it."""
    if error.code == "name_taken":
        return (
            f"the name {name} is taken on {server}: it is registered there with another key. "
            f"Choose another name: securechat-client --name ANOTHER"
        )
    if error.code == "replaced":
        return f"another securechat-client signed in as {name} on {server}, so this one was signed out"
    return f"{server} refused {name}: {error.code}: {' '.join(error.message.split())}"
