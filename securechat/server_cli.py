"""``securechat-server``: run the relay from the command line.

Every option can also come from the environment (``SECURECHAT_PORT``,
``SECURECHAT_DB``, ``SECURECHAT_REDIS``, ...; ``--help`` names each). The command body only gathers
options and calls into :mod:`securechat.server`. Exit statuses are those of
:mod:`securechat.cli_common`: 2 for a wrong command line, 1 for a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import click

from . import __version__
from .cli_common import INTERRUPTED, USAGE
from .names import format_fingerprint
from .rooms.log import MAX_ROOM_MEMBERS
from .server import ChatServer, ServerConfig
from .server.identity import default_paths, identity_for

log = logging.getLogger("securechat.server")

_DEFAULTS = ServerConfig.__dataclass_fields__  # the defaults live in one place: ServerConfig


def _default(name: str) -> Any:
    return _DEFAULTS[name].default


def default_db_path() -> Path:
    """``server.db`` in the per-user application directory (the server core takes a path, not click's idea of one)."""
    return Path(click.get_app_dir("securechat")) / "server.db"


_POSITIVE_INT = click.IntRange(min=1)
_POSITIVE_FLOAT = click.FloatRange(min=0, min_open=True)


# New objects the collector's youngest generation takes before it runs (Python's default is 700). A node holds
# every message in flight for a round trip (a live send across nodes: its send, its stored form and its
# live record until its `delivered`), so at 700 most of them outlived a collection and were traversed
# again in the older generations: some 7 us a message on a sender's node (docs/performance.md, round 8).
# At 10,000 most die young; a node makes almost no cyclic garbage, so the bound delays little.
GC_YOUNG: Final = 10_000


def _tune_collector() -> None:
    """Set the collector for a long-running node: what start-up made is frozen out of every later
    collection (gc.freeze), and the youngest generation is :data:`GC_YOUNG`."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])


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


def _state_line(config: ServerConfig) -> str:
    """Where this node keeps its state and its TLS identity, for the start-up log (never a password)."""
    if config.redis_url is None:
        state = f"state in the SQLite database {config.db_path}"
    else:
        from .server.resp import RedisAddress

        state = f"state in Redis at {RedisAddress.from_url(config.redis_url)} (no SQLite database)"
    if not config.tls:
        return state
    if config.tls_cert is not None:
        return f"{state}; TLS identity {config.tls_cert}"
    return f"{state}; TLS identity {default_paths(config.db_path)[0]}"


async def _serve(config: ServerConfig) -> None:
    log.info("%s", _state_line(config))
    server = ChatServer(config)
    await server.start()
    _tune_collector()
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


def _check_redis_option(url: str, db: Path | None) -> None:
    """``--redis`` needs the extra installed, a URL redis-py understands, and no ``--db`` beside it."""
    if db is not None:
        raise click.UsageError("--db and --redis exclude each other: with --redis every node keeps its state in Redis")
    try:
        from .server.resp import RedisAddress
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None
    RedisAddress.from_url(url)  # ValueError says what is wrong with it
def _print_fingerprint(config: ServerConfig) -> None:
    """What the operator publishes: the identity grouped for people, then as one hex word."""
    if not config.tls:
        raise click.UsageError("--print-fingerprint prints the TLS identity; it has no meaning with --plaintext")
    identity = identity_for(config)
    click.echo(format_fingerprint(identity.fingerprint))
    click.echo(identity.fingerprint)


class _OneLineErrors(click.Command):
    """Usage and option errors as one ``Error: ...`` line on stderr, exit status 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.Exit as exc:  # --help, --version
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            sys.exit(INTERRUPTED)


class _BadValue(click.ClickException):
    """An option value that the server's config refuses: a usage error like click's own."""

    exit_code = USAGE


_SETTINGS: Final = {
    "auto_envvar_prefix": "SECURECHAT",
    "help_option_names": ["-h", "--help"],
    "show_default": True,
}


@click.command(cls=_OneLineErrors, context_settings=_SETTINGS)
@click.option("--host", default=_default("host"), show_envvar=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=_default("port"), show_envvar=True,
              help="TCP port (0 picks a free one).")
@click.option("--db", "db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              show_default=False, show_envvar=True,
              help=f"SQLite database file, created with its directory if missing  [default: {default_db_path()}]")
@click.option("--max-frame", type=click.IntRange(1, 2**32 - 1), default=_default("max_frame"), show_envvar=True,
              help="Largest frame body accepted, in bytes.")
@click.option("--handshake-timeout", type=_POSITIVE_FLOAT, default=_default("handshake_timeout"),
              show_envvar=True, help="Seconds allowed from connect to welcome.")
@click.option("--idle-timeout", type=_POSITIVE_FLOAT, default=_default("idle_timeout"), show_envvar=True,
              help="Seconds without any frame before the connection is closed.")
@click.option("--rate", type=_POSITIVE_FLOAT, default=_default("rate"), show_envvar=True,
              help="Frames per second per connection (token bucket refill).")
@click.option("--burst", type=_POSITIVE_INT, default=_default("burst"), show_envvar=True,
              help="Token bucket size (frames).")
@click.option("--max-connections", type=_POSITIVE_INT, default=_default("max_connections"), show_envvar=True,
              help="Connections served at once.")
@click.option("--max-per-ip", type=_POSITIVE_INT, default=_default("max_per_ip"), show_envvar=True,
              help="Connections served at once from one address.")
@click.option("--lookup-rate", type=_POSITIVE_FLOAT, default=_default("lookup_rate"), show_envvar=True,
              help="Key lookups per second per connection.")
@click.option("--register-per-ip", type=_POSITIVE_INT, default=_default("register_per_ip"), show_envvar=True,
              help="New names per hour from one address (an IPv6 /64); also the burst.")
@click.option("--register-per-key", type=_POSITIVE_INT, default=_default("register_per_key"), show_envvar=True,
              help="New names per hour with one key; also the burst.")
@click.option("--register-rate", type=_POSITIVE_INT, default=_default("register_rate"), show_envvar=True,
              help="New names per hour on the whole server (all nodes); also the burst.")
@click.option("--max-users", type=_POSITIVE_INT, default=_default("max_users"), show_envvar=True,
              help="Registered names the server holds; past it no new name is registered.")
@click.option("--queue-limit", type=_POSITIVE_INT, default=_default("queue_limit"), show_envvar=True,
              help="Messages stored for one offline recipient.")
@click.option("--queue-bytes", type=_POSITIVE_INT, default=_default("queue_bytes"), show_envvar=True,
              help="Bytes stored for one offline recipient.")
@click.option("--queue-ttl", type=_POSITIVE_FLOAT, default=_default("queue_ttl"), show_envvar=True,
              help="Seconds a stored message is kept.")
@click.option("--sender-share", type=_POSITIVE_INT, default=_default("sender_share"), show_envvar=True,
              help="One sender may fill at most 1/N of a recipient's queue (messages and bytes).")
@click.option("--max-store-bytes", type=_POSITIVE_INT, default=_default("max_store_bytes"), show_envvar=True,
              help="Bytes of messages stored for all recipients together.")
@click.option("--max-hand-outs", type=_POSITIVE_INT, default=_default("max_hand_outs"), show_envvar=True,
              help="Failed hand-outs after which a message is set aside and its sender told 'undeliverable'.")
@click.option("--max-outgoing-buffer", type=_POSITIVE_INT, default=_default("max_outgoing_buffer"),
              show_envvar=True, help="Bytes buffered for a slow reader before it is disconnected.")
@click.option("--redis", "redis_url", default=None, metavar="URL", envvar="SECURECHAT_REDIS", show_envvar=True,
              help="Share all state with other nodes through Redis at URL (redis://HOST:PORT/DB, "
                   "rediss://, unix://) instead of the SQLite file; needs securechat[redis].")
@click.option("--redis-replicas", "redis_replicas", type=click.IntRange(min=0), default=_default("redis_replicas"),
              show_envvar=True, help="Ack a stored message 'queued' only once this many Redis replicas have it "
                                     "(WAIT), so that a failover does not lose it; else the send is refused and resent.")
@click.option("--live-path/--no-live-path", "live_path", default=_default("live_path"), show_default=True, show_envvar=True,
              help="With --redis: hand a message to a recipient online on any node by pub/sub alone, its sender "
                   "acked only 'delivered'; --no-live-path stores every message in Redis before handing it out.")
@click.option("--plaintext", is_flag=True, show_envvar=True,
              help="Serve the raw protocol without TLS (tests, benchmarks, local use only).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), default=None, show_envvar=True,
              help="TLS certificate (PEM)  [default: <db>.tls-cert.pem, made on first start]")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), default=None, show_envvar=True,
              help="Private key of --tls-cert (PEM)  [default: <db>.tls-key.pem, made on first start]")
@click.option("--padding/--no-padding", default=_default("padding"), show_default=True,
              help="Pad what is written over TLS to size buckets.")
@click.option("--proxy-protocol-from", default=_default("proxy_protocol_from"), metavar="CIDR[,CIDR...]",
              show_default=False, show_envvar=True,
              help="Connections from these networks (your load balancers) must begin with a PROXY protocol header "
                   "(v1 or v2, e.g. HAProxy's send-proxy-v2), whose client address the per-address bounds use.")
@click.option("--print-fingerprint", is_flag=True,
              help="Print the TLS identity clients pin (made first if missing) and exit.")
@click.option("--max-room-members", type=click.IntRange(1, MAX_ROOM_MEMBERS), default=_default("max_room_members"),
              show_envvar=True, help="Members of one room (at most the protocol's 256).")
@click.option("--max-rooms", type=_POSITIVE_INT, default=_default("max_rooms"), show_envvar=True,
              help="Rooms on this server.")
@click.option("--window", type=_POSITIVE_INT, default=_default("window"), show_envvar=True,
              help="Unconfirmed messages one session may hold; the rest waits in the store.")
@click.option("--window-bytes", type=_POSITIVE_INT, default=_default("window_bytes"), show_envvar=True,
              help="Bytes of unconfirmed messages one session may hold (one message always).")
@click.option("--agent-port", type=click.IntRange(0, 65535), default=_default("agent_port"), show_envvar=True,
              help="Also listen on this port (same host, no TLS) for a load balancer's agent check (HAProxy "
                   "agent-check): each connection reads one line, 'up', or 'down #why' while this node is cut "
                   "off from Redis. 0: no agent port.")
@click.option("--shed-after", type=click.FloatRange(min=0), default=_default("shed_after"), metavar="SECONDS",
              show_default=True, show_envvar=True,
              help="With --redis: once this node has been cut off from Redis this long, end its sessions "
                   "('unavailable') so that their clients reconnect to another node. 0: never.")
@click.option("--max-unconfirmed-bytes", type=_POSITIVE_INT, default=_default("max_unconfirmed_bytes"),
              show_envvar=True, help="Bytes of forwarded, unconfirmed messages held in memory on this node.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              default="info", show_envvar=True, help="How much to log to stderr.")
@click.version_option(__version__, "-V", "--version", prog_name="securechat-server")
def main(db: Path | None, log_level: str, plaintext: bool, print_fingerprint: bool, **options: Any) -> None:
    """Run the securechat relay server."""
    logging.basicConfig(
        level=log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = ServerConfig(db_path=db if db is not None else default_db_path(), tls=not plaintext, **options)
    try:
        config.validate()
        if config.redis_url is not None:
            _check_redis_option(config.redis_url, db)
    except ValueError as exc:
        raise _BadValue(str(exc)) from None
    try:
        if print_fingerprint:
            _print_fingerprint(config)
            return
        if config.tls:
            identity_for(config).context()  # unusable files: one line now, before the event loop starts
        _run(config)
    except (ValueError, OSError, sqlite3.Error) as exc:
        raise click.ClickException(str(exc)) from None  # status 1 (FAILURE)
    except KeyboardInterrupt:
        pass  # a second Ctrl-C during shutdown


if __name__ == "__main__":
    main()
