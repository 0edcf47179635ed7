"""How tests start ``securechat-client``: the command and its environment, written once."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def client_command() -> list[str]:
    """The installed ``securechat-client`` script, or the same entry point through python."""
    script = shutil.which("securechat-client")
    if script is not None:
        return [script]
    return [sys.executable, "-c", "from securechat.client_cli import main; main()"]


def client_env(home: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a test client: small keys, no inherited passphrase, ``home`` if given.

    ``COLUMNS`` is wide unless a test asks for a width: otherwise a client whose output is a pipe
    cuts its rows to the terminal of whoever runs the tests (stdin or /dev/tty), and a test that
    passes in CI fails in a developer's terminal or under pytest-xdist.
    """
    env = dict(os.environ)
    env.pop("SECURECHAT_PASSPHRASE", None)
    env["SECURECHAT_KEY_BITS"] = "2048"
    env["COLUMNS"] = "1000"
    if home is not None:
        env["SECURECHAT_HOME"] = str(home)
    env.update(extra)
    return env
