"""Measure a server process's memory under issue 13's item 4 attack (not a test: a measurement).

Four recipients with full queues (1,100 messages of 64 KiB each) log in, read every message
and never confirm; the server's RSS is read from /proc before and after. Run from the
repository root::

    python tools/unconfirmed_rss.py                  # the code of this checkout
    python tools/unconfirmed_rss.py --src /work/main # another checkout's code, same script

The server runs with the default limits and a rate high enough for the flood.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from securechat.bench.servers import ServerProcess
from securechat.bench.unconfirmed import pin_memory

MIB = 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, help="run the server from this checkout's code (PYTHONPATH)")
    parser.add_argument("--recipients", type=int, default=4)
    parser.add_argument("--count", type=int, default=1100, help="messages per recipient")
    parser.add_argument("--size", type=int, default=64 * 1024, help="bytes of ct per message")
    parser.add_argument("--server-arg", action="append", default=[], help="more securechat-server options")
    args = parser.parse_args()
    env = {"PYTHONPATH": str(args.src.resolve())} if args.src else {}
    with tempfile.TemporaryDirectory() as tmp:
        options = ["--port", "0", "--db", str(Path(tmp) / "s.db"), "--rate", "100000", "--burst", "100000"]
        argv = [sys.executable, "-m", "securechat.bench.launch", "--", *options, *args.server_arg]
        server = ServerProcess("securechat", argv, env=env)
        server.start()
        try:
            result = asyncio.run(pin_memory(server.port, server.pid, args.recipients, args.count, args.size))
        finally:
            server.stop()
    before, flooded, after = result["rss_before"], result["rss_flooded"], result["rss_after"]
    print(
        f"server RSS before the flood {before / MIB:.1f} MiB, queues full {flooded / MIB:.1f} MiB, "
        f"after the recipients read {after / MIB:.1f} MiB ({(after - flooded) / MIB:+.1f} MiB for them); "
        f"unconfirmed messages handed out per recipient: {result['handed_out']}"
        + (f" (code from {args.src})" if args.src else f" (code from {os.getcwd()})")
    )


if __name__ == "__main__":
    main()
