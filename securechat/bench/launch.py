"""Run ``securechat-server`` in this interpreter, optionally with uvloop hidden.

``python -m securechat.bench.launch [--no-uvloop] -- SERVER-ARGS...``: the
server picks uvloop when it can import it, so hiding the module is how the
bench measures the standard loop without changing the server.
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import entry_points


def _server_main() -> object:
    for entry in entry_points(group="console_scripts"):
        if entry.name == "securechat-server":
            return entry.load()
    return importlib.import_module("securechat.server_cli").main


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] == "--no-uvloop":
        sys.modules["uvloop"] = None  # type: ignore[assignment]  # makes `import uvloop` fail
        args = args[1:]
    if args and args[0] == "--":
        args = args[1:]
    sys.argv = ["securechat-server", *args]
    entry = _server_main()
    result = entry()  # type: ignore[operator]
    raise SystemExit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
