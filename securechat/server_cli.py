"""``securechat-server``: run the relay from the command line.

Every option can also come from the environment (``SECURECHAT_PORT``,
``SECURECHAT_DB``, ...). The command body only gathers options and calls
into :mod:`securechat.server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .rooms.log import MAX_ROOM_MEMBERS
from .server import ChatServer, ServerConfig

log = logging.getLogger("securechat.server")

_DEFAULTS = ServerConfig.__dataclass_fields__  # the defaults live in one place: ServerConfig


def _default(name: str) -> Any:
    return _DEFAULTS[name].default


def default_db_path() -> Path:
    """``server.db`` in the per-user application directory (the server core takes a path, not click's idea of one)."""
    return Path(click.get_app_dir("securechat")) / "server.db"


_POSITIVE_INT = click.IntRange(min=1)
_POSITIVE_FLOAT = click.FloatRange(min=0, min_open=True)


def _run(config: ServerConfig) -> None:
    try:
        import uvloop
    except ImportError:
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
        log.info("event loop: asyncio default")
    else:
        loop_factory = uvloop.new_event_loop
        log.info("event loop: uvloop %s", getattr(uvloop, "__version__", ""))
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(config))


async def _serve(config: ServerConfig) -> None:
    server = ChatServer(config)
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    serving = asyncio.ensure_future(server.serve_forever())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        log.info("shutting down")
        stopping.cancel()
        await server.close()
        await asyncio.gather(serving, return_exceptions=True)


class _OneLineErrors(click.Command):
    """Usage and option errors as one ``Error: ...`` line on stderr, exit status 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            sys.exit(130)


@click.command(cls=_OneLineErrors, context_settings={"auto_envvar_prefix": "SECURECHAT", "help_option_names": ["-h", "--help"]})
@click.option("--host", default=_default("host"), show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=_default("port"), show_default=True,
              help="TCP port (0 picks a free one).")
@click.option("--db", "db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="SQLite database file  [default: <app dir>/securechat/server.db]")
@click.option("--max-frame", type=click.IntRange(1, 2**32 - 1), default=_default("max_frame"), show_default=True,
              help="Largest frame body accepted, in bytes.")
@click.option("--handshake-timeout", type=_POSITIVE_FLOAT, default=_default("handshake_timeout"),
              show_default=True, help="Seconds allowed from connect to welcome.")
@click.option("--idle-timeout", type=_POSITIVE_FLOAT, default=_default("idle_timeout"), show_default=True,
              help="Seconds without any frame before the connection is closed.")
@click.option("--rate", type=_POSITIVE_FLOAT, default=_default("rate"), show_default=True,
              help="Frames per second per connection (token bucket refill).")
@click.option("--burst", type=_POSITIVE_INT, default=_default("burst"), show_default=True,
              help="Token bucket size (frames).")
@click.option("--max-connections", type=_POSITIVE_INT, default=_default("max_connections"), show_default=True,
              help="Connections served at once.")
@click.option("--max-per-ip", type=_POSITIVE_INT, default=_default("max_per_ip"), show_default=True,
              help="Connections served at once from one address.")
@click.option("--lookup-rate", type=_POSITIVE_FLOAT, default=_default("lookup_rate"), show_default=True,
              help="Key lookups per second per connection.")
@click.option("--queue-limit", type=_POSITIVE_INT, default=_default("queue_limit"), show_default=True,
              help="Messages stored for one offline recipient.")
@click.option("--queue-bytes", type=_POSITIVE_INT, default=_default("queue_bytes"), show_default=True,
              help="Bytes stored for one offline recipient.")
@click.option("--queue-ttl", type=_POSITIVE_FLOAT, default=_default("queue_ttl"), show_default=True,
              help="Seconds a stored message is kept.")
@click.option("--max-outgoing-buffer", type=_POSITIVE_INT, default=_default("max_outgoing_buffer"),
              show_default=True, help="Bytes buffered for a slow reader before it is disconnected.")
@click.option("--max-room-members", type=click.IntRange(1, MAX_ROOM_MEMBERS), default=_default("max_room_members"),
              show_default=True, help="Members of one room (at most the protocol's 256).")
@click.option("--max-rooms", type=_POSITIVE_INT, default=_default("max_rooms"), show_default=True,
              help="Rooms on this server.")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              default="INFO", show_default=True)
def main(db: Path | None, log_level: str, **options: Any) -> None:
    """Run the securechat relay server."""
    logging.basicConfig(
        level=log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = ServerConfig(db_path=db if db is not None else default_db_path(), **options)
    try:
        config.validate()
        _run(config)
    except (ValueError, OSError, sqlite3.Error) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass  # a second Ctrl-C during shutdown


if __name__ == "__main__":
    main()
