"""Run ``securechat-server`` in this interpreter, optionally with the [fast] extra hidden.

``python -m securechat.bench.launch [--no-uvloop | --stdlib] -- SERVER-ARGS...``:
the server picks uvloop (and the strict codec orjson) when it can import
them, so hiding the modules is how the bench measures the standard loop
(``--no-uvloop``) or the standard library alone (``--stdlib``: neither)
without changing the server.
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
    if args and args[0] in ("--no-uvloop", "--stdlib"):
        hidden = ("uvloop", "orjson") if args[0] == "--stdlib" else ("uvloop",)
        for module in hidden:
            sys.modules[module] = None  # type: ignore[assignment]  # makes `import module` fail
        args = args[1:]
    if args and args[0] == "--":
        args = args[1:]
    sys.argv = ["securechat-server", *args]
    entry = _server_main()
    result = entry()  # type: ignore[operator]
    raise SystemExit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
