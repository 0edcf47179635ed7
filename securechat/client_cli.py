"""``securechat-client``: chat, and the offline commands around the client's keys.

Command bodies only gather options and call into the library;
:class:`~securechat.cli_common.OneLineErrors` is the one place that turns a
:class:`~securechat.errors.SecurechatError` into a one-line ``Error: ...`` on
stderr and a non-zero exit (statuses in :mod:`securechat.cli_common`).

The options a subcommand shares with the chat (``--name``, ``--home``) work
before or after the subcommand's name: ``securechat-client --name bob decrypt``
is ``securechat-client decrypt --name bob``. The chat's own options given
before a subcommand that does not use them are refused, never ignored.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

import click

from . import __version__, crypto
from .cli_common import OneLineErrors, UsageLine, parse_servers
from .cli_identity import load_identity, open_or_create, own_name, refusal
from .cli_servers import server_trust, transport_options, trust_server
from .cli_shared import GroupOptions, group_home_option, name_option, shared
from .client import ClientSession
from .client.decrypting import open_pasted
from .client.home import ClientHome, Identity, default_home
from .client.link import why_not_connected
from .client.namecheck import name_registered
from .client.servers import ServerTrust
from .client.state import ClientStore
from .commands import sanitize as safe
from .commands import times
from .commands.wording import describe_error, unsent_line
from .errors import (
    BadKey,
    EnvelopeRejected,
    KeyStoreError,
    NameTaken,
    SecurechatError,
    ServerErrorReply,
    ServerRefused,
)
from .names import format_fingerprint, parse_fingerprint, parse_typed_name, parse_typed_target
from .pasted import is_whole, split_pasted
from .protocol import WRONG_TRANSPORT_CODES

log = logging.getLogger("securechat.client")

DEFAULT_SERVER: Final = "127.0.0.1:5000"
NAME_CHECK_TIMEOUT: Final = 10.0
SERVER_ENV: Final = "SECURECHAT_SERVER"

def _resolve_home(home: Path | None) -> ClientHome:
    return ClientHome(home if home is not None else default_home())


def _interactive() -> bool:
    return sys.stdin.isatty()


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, handlers=[safe.log_handler(sys.stderr)])


@click.group(
    cls=OneLineErrors, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]}
)
@name_option
@click.option(
    "--server",
    default=DEFAULT_SERVER,
    show_default=True,
    envvar=SERVER_ENV,
    show_envvar=True,
    help="Server address HOST:PORT ([::1]:5000 for IPv6), or the nodes of one server "
    "HOST:PORT,HOST:PORT,... (a failed or lost connection moves on to the next).",
)
@group_home_option
@click.option(
    "--json",
    "json_mode",
    is_flag=True,
    help="Events as JSON lines on stdout, commands as JSON lines on stdin.",
)
@click.option("--plain", is_flag=True, help="Line-based interface instead of the full-screen one.")
@transport_options
@click.option(
    "--keep-history",
    type=click.IntRange(min=1),
    envvar="SECURECHAT_KEEP_HISTORY",
    help="Keep only the newest N messages of each conversation (default: all).",
)
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
    plaintext: bool,
    server_fingerprint: str | None,
    keep_history: int | None,
    verbose: int,
) -> None:
    """End-to-end encrypted chat over TLS.

    Without a subcommand: connect to --server as --name and chat. Options
    such as --name and --home may come before or after a subcommand.
    """
    ctx.obj = GroupOptions(
        dict(ctx.params),
        frozenset(
            k for k in ctx.params if ctx.get_parameter_source(k) is click.core.ParameterSource.COMMANDLINE
        ),
        {p.name: max(p.opts, key=len) for p in ctx.command.params if p.name is not None},
    )
    _setup_logging(verbose)
    if ctx.invoked_subcommand is not None:
        return
    if json_mode and plain:
        raise UsageLine("--json and --plain are two different front ends: choose one")
    if not name:
        raise UsageLine("--name is required to chat (for example: securechat-client --name alice)")
    name = own_name(name)
    servers = parse_servers(server)
    client_home = _resolve_home(home)
    trust = server_trust(client_home.root, plaintext=plaintext, expected=server_fingerprint, home=home)
    with client_home.lock(name):
        ctx.exit(
            _start_chat(client_home, name, servers, trust, json_mode=json_mode, plain=plain, keep=keep_history)
        )


def _start_chat(
    client_home: ClientHome,
    name: str,
    servers: list[tuple[str, int]],
    trust: ServerTrust | None,
    *,
    json_mode: bool,
    plain: bool,
    keep: int | None = None,
) -> int:
    (host, port), *others = servers  # check_name asks the first node
    on_generate: Callable[[str, int], None] | None = None
    if json_mode:
        from .jsonmode import announce_key_generation

        on_generate = announce_key_generation
    try:
        store, first_run = open_or_create(
            client_home,
            name,
            interactive=_interactive() and not json_mode,
            on_generate=on_generate,
            before_create=functools.partial(_must_be_free, host=host, port=port, trust=trust),
        )
    except NameTaken as exc:
        client_home.remove_unused(name)  # the directory the lock made, nothing else
        if json_mode:  # a script reads stdout: the same fatal error line as a refusal at sign-in
            from .jsonmode import write_json_line

            write_json_line({"event": "error", "code": "name_taken", "message": str(exc), "fatal": True})
        raise
    if keep is not None:
        store.history.retain(keep)
    session = ClientSession(store, host, port, more_servers=others, plaintext=trust is None, trust=trust)
    try:
        status = asyncio.run(_chat(session, json_mode=json_mode, plain=plain, first_run=first_run))
        unsent = session.unacknowledged()
    finally:
        store.close()
    if unsent and not json_mode:  # --json says it with its exit status 2
        click.echo(unsent_line(unsent, name), err=True)
    if session.refused is not None:
        click.echo(f"Error: {refusal(session.refused, name, f'{host}:{port}')}", err=True)
        if first_run and session.refused.code == "name_taken":
            client_home.discard_identity(name)  # never registered: nothing can be sealed to it
            click.echo(f"The key made for {name} on this start was removed.", err=True)
    return status


def _must_be_free(name: str, *, host: str, port: int, trust: ServerTrust | None) -> None:
    """Before a key is made for ``name``: refuse a name the server has already (item 4 of issue 14)."""
    try:
        taken = asyncio.run(name_registered(host, port, name, NAME_CHECK_TIMEOUT, trust))
    except (SecurechatError, OSError, TimeoutError) as exc:
        if isinstance(exc, ServerRefused) or (isinstance(exc, ServerErrorReply) and exc.code in WRONG_TRANSPORT_CODES):
            return  # a server we will not talk to, or the other transport: the session says it, once
        why = (
            describe_error(exc)
            if isinstance(exc, SecurechatError)
            else why_not_connected(exc, NAME_CHECK_TIMEOUT)
        )
        click.echo(f"Could not ask {host}:{port} whether {name} is free ({why}); going on.", err=True)
        return
    if taken:
        raise NameTaken(refusal(ServerErrorReply("name_taken", ""), name, f"{host}:{port}"))


async def _chat(session: ClientSession, *, json_mode: bool, plain: bool, first_run: bool) -> int:
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


@main.command(short_help="Open pasted payloads addressed to you.")
@shared("name", "home")
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
    """Open pasted payloads addressed to NAME: given as arguments, on stdin, or pasted at the prompt.

    Line breaks inside a payload do not matter, however it was copied; a blank
    line or a complete payload ends one.
    """
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
    items = _pasted(payloads)
    if not items:
        raise UsageLine("no payload given (pass it as an argument, on stdin, or paste it at the prompt)")
    with client_home.open_store(name, identity) as store:
        results = [
            _decrypt_one(store, identity, item, explicit, f"payload {i}: " if len(items) > 1 else "")
            for i, item in enumerate(items, 1)
        ]
    ctx.exit(0 if all(results) else 1)


def _pasted(arguments: tuple[str, ...]) -> list[str]:
    """The payloads from the arguments, else stdin; on a terminal, one payload pasted at a prompt."""
    if arguments:
        return split_pasted(line for argument in arguments for line in argument.splitlines())
    if not sys.stdin.isatty():
        return split_pasted(sys.stdin.read().splitlines())
    click.echo("Paste the payload (line breaks are fine), then press Enter on an empty line:", err=True)
    lines: list[str] = []
    while not lines or not is_whole("".join("".join(lines).split())):
        line = sys.stdin.readline()
        if not line or (lines and not line.strip()):
            break  # end of input, or the blank line after the paste
        if line.strip():
            lines.append(line)
    return split_pasted(lines)[:1]


def _decrypt_one(
    store: ClientStore, identity: Identity, payload: str, explicit: crypto.PublicKey | None, prefix: str
) -> bool:
    try:
        found = open_pasted(store, identity, payload, explicit)
    except EnvelopeRejected as exc:
        click.echo(f"{prefix}rejected: {safe.one_line(' '.join(str(exc).split()))}", err=True)
        return False
    opened, state = found.opened, found.state
    where = (
        f"to {opened.recipient}"
        if state is None
        else f"in {state.room} (sent under seq {state.seq} of its log: {len(state.members)} members)"
    )
    safe.echo_rows(
        click.echo,
        f"{prefix}from {opened.sender} {where} at {times.utc_clock(opened.ts)} "
        f"(id {opened.msg_id}); signed with {found.source}",
        safe.OWN_INDENT,
    )
    # The text, indented further than our own rows: no row of it can pass for ours.
    safe.echo_rows(click.echo, " " * safe.TEXT_INDENT + opened.text)
    return True


@main.command(short_help="Print your own fingerprint.")
@shared("name", "home")
def fingerprint(name: str, home: Path | None) -> None:
    """Print the fingerprint of your own key (compare it with your contacts out of band)."""
    client_home = _resolve_home(home)
    key = client_home.load_public_key(name)
    click.echo(format_fingerprint(crypto.fingerprint(key)))


@main.command(short_help="Mark a contact verified after comparing fingerprints.")
@shared("name", "home")
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


@main.command(short_help="Show the stored history of a conversation.")
@shared("name", "home")
@click.argument("peer")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="How many of the latest entries to show.",
)
def history(name: str, home: Path | None, peer: str, limit: int) -> None:
    """Show the local (decrypted) history of the conversation with PEER (a name or a #room)."""
    client_home = _resolve_home(home)
    identity = load_identity(client_home, name, interactive=_interactive())
    peer = parse_typed_target(peer)  # a name or a #room
    with client_home.open_store(name, identity) as store:
        entries = store.history.recent(peer, limit)
    if not entries:
        click.echo(f"no history with {peer}", err=True)
    for entry in entries:
        when = times.utc_message_clock(entry.ts, entry.server_ts)
        if entry.direction == "out":
            who = f"{identity.name} -> {peer}"
        else:  # a room's message names its writer (docs/protocol.md 11)
            who = f"{entry.sender} -> {peer}" if entry.sender else f"{peer} -> {identity.name}"
        status = f"  [{entry.status}]" if entry.status else ""
        safe.echo_rows(click.echo, f"{when}  {who}: {entry.text}{status}")


main.add_command(trust_server)

if __name__ == "__main__":
    main()
