"""``securechat-client``: chat, and the offline commands around the client's keys.

Command bodies only gather options and call into the library; :class:`_ClientGroup`
is the one place that turns a :class:`~securechat.errors.SecurechatError` into a
one-line ``Error: ...`` on stderr and a non-zero exit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__, crypto
from .client import ClientSession
from .client.home import ClientHome, Identity, default_home
from .client.inbox import precheck_envelope
from .client.state import ClientStore
from .commands import sanitize as safe
from .commands import times
from .errors import (
    BadKey,
    EnvelopeRejected,
    KeyStoreError,
    SecurechatError,
    UnknownSender,
)
from .events import KeyGenerating
from .names import format_fingerprint, is_valid_name, parse_fingerprint, parse_typed_name

log = logging.getLogger("securechat.client")

DEFAULT_SERVER = "127.0.0.1:5000"
PASSPHRASE_ENV = "SECURECHAT_PASSPHRASE"
# Tests only: smaller (but still protocol-valid) keys so suites stay fast.
KEY_BITS_ENV = "SECURECHAT_KEY_BITS"

F = TypeVar("F", bound=Callable[..., Any])


class _ClientGroup(click.Group):
    """Domain errors become one line on stderr and exit status 1; never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SecurechatError as exc:  # its text may quote a server or a payload
            raise click.ClickException(safe.one_line(str(exc))) from None
        except OSError as exc:  # e.g. an unreadable home directory
            where = f" ({exc.filename})" if exc.filename else ""
            raise click.ClickException(f"{exc.strerror or exc}{where}") from None
        except KeyboardInterrupt:
            click.echo("", err=True)
            raise click.exceptions.Exit(130) from None


@dataclass
class _Config:
    home: Path | None = None


def _home_option(func: F) -> F:
    return click.option(
        "--home",
        type=click.Path(file_okay=False, path_type=Path),
        help="Client home directory (default: $SECURECHAT_HOME or the per-user app directory).",
    )(func)


def _name_option(func: F) -> F:
    return click.option("--name", required=True, help="Your own name (the identity to use).")(func)


def _resolve_home(home: Path | None) -> ClientHome:
    if home is None:
        cfg = click.get_current_context().find_object(_Config)
        home = cfg.home if cfg is not None else None
    return ClientHome(home if home is not None else default_home())


def _key_bits() -> int:
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


def _interactive() -> bool:
    return sys.stdin.isatty()


def _existing_passphrase(home: ClientHome, name: str, interactive: bool) -> str | None:
    home.check_identity(name)  # permissions first: never ask for a passphrase to a key others can read
    if not home.key_is_encrypted(name):
        return None
    env = os.environ.get(PASSPHRASE_ENV)
    if env is not None:
        return env
    if not interactive:
        raise KeyStoreError(
            f"the key of '{parse_typed_name(name)}' is protected by a passphrase; set {PASSPHRASE_ENV}"
        )
    return str(click.prompt(f"Passphrase for {parse_typed_name(name)}", hide_input=True, err=True))


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


def load_identity(home: ClientHome, name: str, *, interactive: bool) -> Identity:
    """An existing identity, asking for its passphrase when needed."""
    return home.load_identity(name, _existing_passphrase(home, name, interactive))


def open_or_create(
    home: ClientHome, name: str, *, interactive: bool, on_generate: Callable[[str, int], None] | None = None
) -> tuple[ClientStore, bool]:
    """Load ``name``'s identity, or create it on first use; returns (store, first_run)."""
    name = parse_typed_name(name)
    home.identity_dir(name)  # validates the name
    first_run = not home.has_identity(name)
    if first_run:
        passphrase = os.environ.get(PASSPHRASE_ENV)
        if passphrase is None and interactive:
            passphrase = _new_passphrase()
        bits = _key_bits()
        click.echo(f"Generating a {bits}-bit RSA key for {name}…", err=True)
        if on_generate is not None:
            on_generate(name, bits)
        identity = home.create_identity(name, passphrase or None, bits=bits)
    else:
        identity = load_identity(home, name, interactive=interactive)
    return home.open_store(name, identity), first_run


def parse_server(value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}", param_hint="--server")
    try:
        port = int(port_text)
    except ValueError:
        raise click.BadParameter(f"port must be a number, got {port_text!r}", param_hint="--server") from None
    if not 0 < port < 65536:
        raise click.BadParameter(f"port must be 1..65535, got {port}", param_hint="--server")
    return host.strip("[]"), port


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, handlers=[safe.log_handler(sys.stderr)])


@click.group(
    cls=_ClientGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.option("--name", help="Your own name; created with a new key on first use.")
@click.option("--server", default=DEFAULT_SERVER, show_default=True, help="Server address HOST:PORT.")
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SECURECHAT_HOME",
    help="Client home directory (default: $SECURECHAT_HOME or the per-user app directory).",
)
@click.option(
    "--json",
    "json_mode",
    is_flag=True,
    help="Events as JSON lines on stdout, commands as JSON lines on stdin.",
)
@click.option("--plain", is_flag=True, help="Line-based interface instead of the full-screen one.")
@click.option("-v", "--verbose", count=True, help="Log more to stderr (-vv for debug).")
@click.version_option(__version__, prog_name="securechat-client")
@click.pass_context
def main(
    ctx: click.Context,
    name: str | None,
    server: str,
    home: Path | None,
    json_mode: bool,
    plain: bool,
    verbose: int,
) -> None:
    """End-to-end encrypted chat over TCP.

    Without a subcommand: connect to --server as --name and chat.
    """
    ctx.obj = _Config(home=home)
    _setup_logging(verbose)
    if ctx.invoked_subcommand is not None:
        return
    if not name:
        raise click.UsageError("--name is required to chat (for example: securechat-client --name alice)")
    host, port = parse_server(server)
    client_home = _resolve_home(home)

    def announce(who: str, bits: int) -> None:
        if json_mode:
            from .jsonmode import event_to_json, write_json_line

            obj = event_to_json(KeyGenerating(who, bits))
            if obj is not None:
                write_json_line(obj)

    store, first_run = open_or_create(
        client_home, name, interactive=_interactive() and not json_mode, on_generate=announce
    )
    try:
        status = asyncio.run(_chat(store, host, port, json_mode=json_mode, plain=plain, first_run=first_run))
    finally:
        store.close()
    ctx.exit(status)


async def _chat(
    store: ClientStore, host: str, port: int, *, json_mode: bool, plain: bool, first_run: bool
) -> int:
    session = ClientSession(store, host, port)
    if json_mode:
        from .jsonmode import run_json_mode

        return await run_json_mode(session)
    if not plain and sys.stdin.isatty() and sys.stdout.isatty():
        try:
            from .ui import run_chat_ui
        except ImportError as exc:
            log.info("full-screen UI unavailable (%s); using the line interface", exc)
        else:
            return int(await run_chat_ui(session, first_run=first_run))
    from .lineui import run_line_ui

    return await run_line_ui(session, first_run=first_run)


# --- offline commands -----------------------------------------------------------------------


@main.command()
@_name_option
@_home_option
@click.option(
    "--sender-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM public key to verify the signature with, instead of the sender's pinned key.",
)
@click.argument("payloads", nargs=-1)
@click.pass_context
def decrypt(
    ctx: click.Context, name: str, home: Path | None, sender_key: Path | None, payloads: tuple[str, ...]
) -> None:
    """Open pasted payloads addressed to NAME (arguments, a prompt, or one per line on stdin)."""
    client_home = _resolve_home(home)
    identity = load_identity(client_home, name, interactive=_interactive())
    explicit: crypto.PublicKey | None = None
    if sender_key is not None:
        try:
            explicit = crypto.load_public_key_pem(sender_key.read_text("ascii"))
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(f"cannot read {sender_key}: {exc}", param_hint="--sender-key") from None
        except BadKey as exc:
            raise click.BadParameter(str(exc), param_hint="--sender-key") from None
    items = list(payloads)
    if not items:
        if sys.stdin.isatty():
            items = [str(click.prompt("Paste payload", err=True))]
        else:
            items = [line for line in sys.stdin.read().splitlines() if line.strip()]
    if not items:
        raise click.UsageError("no payload given (pass it as an argument or on stdin)")
    with client_home.open_store(name, identity) as store:
        results = [
            _decrypt_one(store, identity, item, explicit, f"payload {i}: " if len(items) > 1 else "")
            for i, item in enumerate(items, 1)
        ]
    ctx.exit(0 if all(results) else 1)


def _decrypt_one(
    store: ClientStore, identity: Identity, payload: str, explicit: crypto.PublicKey | None, prefix: str
) -> bool:
    try:
        envelope = crypto.decode_payload(payload)
        sender = envelope.get("from")
        if explicit is not None:
            key, source = explicit, "the key from --sender-key"
        else:
            pin = store.pins.get(sender) if isinstance(sender, str) and is_valid_name(sender) else None
            if pin is None:
                precheck_envelope(envelope, identity.name)  # checks that need no key come first
                raise UnknownSender(
                    f"no key pinned for {sender!r}; pass --sender-key FILE to verify the signature"
                )
            key, source = pin.public_key(), f"the pinned key of {pin.name} ({pin.trust})"
        opened = crypto.open_envelope(identity.private_key, identity.name, key, envelope)
    except EnvelopeRejected as exc:
        click.echo(f"{prefix}rejected: {safe.one_line(' '.join(str(exc).split()))}", err=True)
        return False
    safe.echo_rows(
        click.echo,
        f"{prefix}from {opened.sender} to {opened.recipient} at {times.utc_clock(opened.ts)} "
        f"(id {opened.msg_id}); signature verified with {source}",
        safe.OWN_INDENT,
    )
    # The text, indented further than our own rows: no row of it can pass for ours.
    safe.echo_rows(click.echo, " " * safe.TEXT_INDENT + opened.text)
    return True


@main.command()
@_name_option
@_home_option
def fingerprint(name: str, home: Path | None) -> None:
    """Print the fingerprint of your own key (compare it with your contacts out of band)."""
    client_home = _resolve_home(home)
    key = client_home.load_public_key(name)
    click.echo(format_fingerprint(crypto.fingerprint(key)))


@main.command()
@_name_option
@_home_option
@click.argument("contact")
@click.argument("fingerprint_parts", metavar="FINGERPRINT", nargs=-1, required=True)
def verify(name: str, home: Path | None, contact: str, fingerprint_parts: tuple[str, ...]) -> None:
    """Mark CONTACT verified if FINGERPRINT (spaces allowed) matches their pinned key."""
    client_home = _resolve_home(home)
    contact = parse_typed_name(contact)
    wanted = parse_fingerprint("".join(fingerprint_parts))
    with client_home.open_store(name) as store:
        pin = store.pins.get(contact)
        if pin is None:
            raise KeyStoreError(f"no key is pinned for '{contact}' yet (exchange a message or /whois first)")
        if not store.pins.verify(contact, wanted):
            shown = (
                pin.pending_fingerprint
                if pin.trust == "changed" and pin.pending_fingerprint
                else pin.fingerprint
            )
            raise KeyStoreError(
                f"the fingerprint does not match the key of '{contact}' ({format_fingerprint(shown)}); "
                "not verified"
            )
        pin = store.pins.get(contact)
        assert pin is not None
        click.echo(f"{contact}: verified ({format_fingerprint(pin.fingerprint)})")


@main.command()
@_name_option
@_home_option
@click.argument("peer")
@click.option("--limit", default=200, show_default=True, help="How many of the latest entries to show.")
def history(name: str, home: Path | None, peer: str, limit: int) -> None:
    """Show the local (decrypted) history of the conversation with PEER."""
    client_home = _resolve_home(home)
    identity = load_identity(client_home, name, interactive=_interactive())
    peer = parse_typed_name(peer)
    with client_home.open_store(name, identity) as store:
        entries = store.history.recent(peer, limit)
    if not entries:
        click.echo(f"no history with {peer}", err=True)
    for entry in entries:
        when = times.utc_message_clock(entry.ts, entry.server_ts)
        who = f"{identity.name} -> {peer}" if entry.direction == "out" else f"{peer} -> {identity.name}"
        status = f"  [{entry.status}]" if entry.status else ""
        safe.echo_rows(click.echo, f"{when}  {who}: {entry.text}{status}")


if __name__ == "__main__":
    main()
