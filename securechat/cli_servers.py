"""The client's command line about servers: ``--plaintext``, ``--server-fingerprint``, ``trust-server``.

The rule itself lives in :mod:`securechat.client.servers` (docs/protocol.md
section 2.1); this module only turns options into a
:class:`~securechat.client.servers.ServerTrust` and gives people the one command
that accepts a server's new identity once they have checked it.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .cli_common import parse_server
from .client.home import ClientHome, default_home
from .client.servers import ACCEPT_COMMAND, KnownServers, ServerTrust, server_address
from .errors import InvalidFingerprint
from .names import format_fingerprint, parse_fingerprint

F = TypeVar("F", bound=Callable[..., Any])
PLAINTEXT_ENV = "SECURECHAT_PLAINTEXT"


def _fingerprint(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return parse_fingerprint(value)
    except InvalidFingerprint as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def transport_options(func: F) -> F:
    """``--plaintext`` and ``--server-fingerprint`` for the chat command."""
    func = click.option(
        "--server-fingerprint",
        "server_fingerprint",
        metavar="FINGERPRINT",
        callback=_fingerprint,
        help="The server identity to expect (its operator publishes it); refused on any other, first use included.",
    )(func)
    return click.option(
        "--plaintext",
        is_flag=True,
        envvar=PLAINTEXT_ENV,
        help="No TLS: names, keys and metadata cross the network in clear (tests and local use only).",
    )(func)


def accept_command(home: Path | None) -> str:
    """How the refusal spells ``trust-server``: with ``--home`` when the user gave one."""
    if home is None:
        return ACCEPT_COMMAND
    program, sub = ACCEPT_COMMAND.rsplit(" ", 1)
    return f"{program} --home {shlex.quote(str(home))} {sub}"


def server_trust(root: Path, *, plaintext: bool, expected: str | None, home: Path | None) -> ServerTrust | None:
    """How the chat checks servers: the home's known servers (and ``--server-fingerprint``), or None for plaintext."""
    if plaintext:
        if expected is not None:
            raise click.UsageError("--server-fingerprint checks the TLS identity: it has no meaning with --plaintext")
        return None
    return ServerTrust(KnownServers.in_home(root), expected, accept_command(home))


@click.command("trust-server", short_help="Pin a server's new identity once checked.")
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    help="Client home directory (default: $SECURECHAT_HOME or the per-user app directory).",
)
@click.argument("server")
@click.argument("fingerprint_parts", metavar="FINGERPRINT", nargs=-1, required=True)
@click.pass_context
def trust_server(ctx: click.Context, home: Path | None, server: str, fingerprint_parts: tuple[str, ...]) -> None:
    """Pin FINGERPRINT as the identity of the server at SERVER (HOST:PORT), in place of any earlier one.

    Run it only after checking FINGERPRINT with the server's operator, over another channel.
    """
    host, port = parse_server(server)
    wanted = parse_fingerprint("".join(fingerprint_parts))
    root = home or ctx.find_root().params.get("home") or default_home()
    known = KnownServers.in_home(ClientHome(root).root)
    address = server_address(host, port)
    before = known.get(address)
    known.replace(address, wanted)
    was = f" (was {format_fingerprint(before)})" if before and before != wanted else ""
    click.echo(f"the server at {address} is pinned to {format_fingerprint(wanted)}{was}")
