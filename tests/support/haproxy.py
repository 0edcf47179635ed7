"""A real ``haproxy`` for tests, run with the example configuration of docs/deployment.md.

:func:`doc_example` reads the configuration out of the doc ("A load balancer in front"), so the
doc cannot drift from what the test ran; :func:`on_localhost` moves its addresses to 127.0.0.1
ports; :class:`HAProxy` runs it in the foreground with a stats socket of its own (a ``global``
section put before the doc's text, which it does not change) to tell which node serves whom.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.deploydoc import block
from tests.support.ports import restartable_port

SECTION = "### A load balancer in front"
START_TIMEOUT = 10.0


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)


def require_haproxy() -> str:
    """The haproxy binary; skip without one, unless ``SECURECHAT_REQUIRE_REDIS`` is set (.ci/run, which installs it)."""
    binary = haproxy_binary()
    if binary is None:
        missing = "haproxy is not installed (apt-get install haproxy): docs/deployment.md's example is not run"
        if os.environ.get("SECURECHAT_REQUIRE_REDIS"):
            pytest.fail(f"SECURECHAT_REQUIRE_REDIS is set but {missing}")
        pytest.skip(missing)
    return binary


def doc_example() -> str:
    """The one HAProxy configuration in docs/deployment.md's load balancer section, as written there."""
    return block(SECTION, "backend")


def server_names(config: str) -> list[str]:
    """The names of the ``server`` lines of ``config``, in order."""
    return re.findall(r"^\s*server\s+(\S+)", config, re.MULTILINE)


def on_localhost(config: str, front: int, nodes: Sequence[int], agents: Sequence[int] = ()) -> str:
    """``config`` with its ``bind`` on 127.0.0.1:``front``, its ``server`` lines on 127.0.0.1:``nodes`` in turn, and
    their ``agent-port`` (if it has them) on ``agents`` in turn (none given: free ports nothing listens on)."""
    config, binds = re.subn(r"^(\s*bind\s+)\S+", rf"\g<1>127.0.0.1:{front}", config, flags=re.MULTILINE)
    ports = iter(nodes)
    config, servers = re.subn(
        r"^(\s*server\s+\S+\s+)\S+",
        lambda m: f"{m.group(1)}127.0.0.1:{next(ports)}",
        config,
        flags=re.MULTILINE,
    )
    agent_ports = iter(agents or [restartable_port() for _ in nodes])
    config, agent_lines = re.subn(r"(\sagent-port\s+)\d+", lambda m: f"{m.group(1)}{next(agent_ports)}", config)
    assert (binds, servers) == (1, len(nodes)) and agent_lines in ((0, len(nodes)) if not agents else (len(nodes),)), (
        f"{binds} bind, {servers} server and {agent_lines} agent-port lines for {len(nodes)} nodes"
    )
    return config


def without_agent(config: str) -> str:
    """``config`` with a TCP health check only: each ``server`` line's agent check taken out."""
    config, taken = re.subn(r" agent-check agent-port \d+ agent-inter \S+", "", config)
    assert taken == len(server_names(config)), f"{taken} agent checks taken out"
    return config


class HAProxy:
    """``haproxy -db`` (foreground) with ``config``; its log (stderr) in ``folder``/haproxy.log."""

    def __init__(self, config: str, folder: Path) -> None:
        binary = require_haproxy()
        self.stats_port = restartable_port()
        path = folder / "haproxy.cfg"
        path.write_text(f"global\n    stats socket ipv4@127.0.0.1:{self.stats_port} level admin\n\n{config}")
        check = subprocess.run([binary, "-c", "-f", str(path)], check=False, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, f"haproxy -c refused the configuration:\n{check.stdout}{check.stderr}"
        self.log_path = folder / "haproxy.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen([binary, "-db", "-f", str(path)], stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)  # fmt: skip

    def stat(self) -> list[dict[str, str]]:
        """The rows of ``show stat`` (one per frontend, server and backend)."""
        with socket.create_connection(("127.0.0.1", self.stats_port), timeout=5) as s:
            s.sendall(b"show stat\n")
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        lines = reply.decode(errors="replace").splitlines()
        header = lines[0].lstrip("# ").split(",")
        return [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]

    def servers(self) -> dict[str, dict[str, str]]:
        return {row["svname"]: row for row in self.stat() if row["svname"] not in ("FRONTEND", "BACKEND")}

    def sessions(self) -> dict[str, int]:
        """Each server's connections now (``scur``; health checks are not counted)."""
        return {name: int(row["scur"] or 0) for name, row in self.servers().items()}

    def wait_up(self, names: Sequence[str], within: float = START_TIMEOUT) -> None:
        """Until haproxy answers on its stats socket and says each of ``names`` is ``UP``."""
        deadline = time.monotonic() + within
        while True:
            assert self.proc.poll() is None, f"haproxy exited:\n{self.log_tail()}"
            with contextlib.suppress(OSError, IndexError):
                if all(self.servers().get(name, {}).get("status") == "UP" for name in names):
                    return
            assert time.monotonic() < deadline, f"haproxy's servers not all UP:\n{self.log_tail()}"
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@contextlib.contextmanager
def haproxy_running(config: str, folder: Path) -> Iterator[HAProxy]:
    proxy = HAProxy(config, folder)
    try:
        proxy.wait_up(server_names(config))
        yield proxy
    finally:
        proxy.kill()
