"""What both console scripts share: the exit statuses, one-line errors, and server addresses.

Exit status, for ``securechat-client`` and ``securechat-server`` alike:

    0    done
    1    it ran and failed (a wrong passphrase, a port in use, a refused name, ...)
    2    the command line is wrong (an unknown or malformed option, a bad name, a bad address)
    130  interrupted (Ctrl-C at a prompt)

The ``--json`` chat adds its own 2 (messages left unacknowledged at exit; README.md).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Final

import click

from .commands import sanitize as safe
from .errors import SecurechatError, UsageError

FAILURE: Final = 1
USAGE: Final = 2
INTERRUPTED: Final = 130

# A host name as people type it: letters, digits, dots, dashes, underscores.
_HOST_NAME: Final = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})")
_EXAMPLE: Final = "for example 127.0.0.1:5000, chat.example.org:5000 or [::1]:5000"


def parse_server(value: str, option: str = "--server") -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 in brackets) as (host, port); a :class:`click.BadParameter` that says what to type."""

    def bad(why: str) -> click.BadParameter:
        return click.BadParameter(f"{why}; {_EXAMPLE}", param_hint=option)

    text = value.strip()
    if "://" in text or "/" in text:
        raise bad(f"expected HOST:PORT, not a URL: {value!r}")
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise bad(f"expected HOST:PORT, got {value!r} with no port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"{host!r} in brackets is not an IPv6 address") from None
    elif ":" in host:
        raise bad(f"expected HOST:PORT, got {value!r} (an IPv6 address goes in brackets)")
    elif not host:
        raise bad(f"expected HOST:PORT, got {value!r} with no host")
    elif _HOST_NAME.fullmatch(host) is None:
        raise bad(f"{host!r} is not a host name or address")
    if not port_text.isascii() or not port_text.isdigit():
        raise bad(f"the port must be a number, got {port_text!r}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise bad(f"the port must be 1..65535, got {port}")
    return host, port


def parse_servers(value: str, option: str = "--server") -> list[tuple[str, int]]:
    """``HOST:PORT[,HOST:PORT...]``: the nodes of one server, in the order the client tries them."""
    return [parse_server(part, option) for part in value.split(",")]


class UsageLine(click.ClickException):
    """A usage mistake found after parsing (a bad name, conflicting options): one line, status 2."""

    exit_code = USAGE


def one_line(exc: SecurechatError | OSError) -> click.ClickException:
    """A domain error as click's one ``Error: ...`` line: status 2 for a usage mistake, else 1."""
    # Its text may quote a server, a payload or a file name: one sanitised line.
    if isinstance(exc, UsageError):
        return UsageLine(safe.one_line(str(exc)))
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return click.ClickException(safe.one_line(f"{exc.strerror or exc}{where}"))
    return click.ClickException(safe.one_line(str(exc)))


class OneLineErrors(click.Group):
    """Domain errors become one line on stderr and the status above; never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (SecurechatError, OSError) as exc:  # OSError: e.g. an unreadable home directory
            raise one_line(exc) from None
        except KeyboardInterrupt:
            click.echo("", err=True)
            raise click.exceptions.Exit(INTERRUPTED) from None
