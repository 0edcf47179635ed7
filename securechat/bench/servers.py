"""Servers under test as subprocesses, with their CPU time and memory read from /proc."""

from __future__ import annotations

import collections
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

_LISTENING = re.compile(r"listening on \[?([^\s\]]+?)\]?:(\d+)")
_CLK_TCK = os.sysconf("SC_CLK_TCK")

# Server variants the bench knows how to start. "securechat-*" run the real
# server through :mod:`securechat.bench.launch`: "securechat-uvloop" with whatever the
# [fast] extra installed, "securechat-asyncio" with the standard library alone (uvloop and
# orjson hidden). These two serve plaintext (--plaintext), to compare with the plaintext
# references; the TLS ones run on uvloop, with the size padding on (as deployed) or off.
# "securechat-baseline" is like the first but from the source tree named by
# $SECURECHAT_BENCH_BASELINE (an older commit), so before and after run in the same repetitions.
SECURECHAT_VARIANTS = (
    "securechat-uvloop", "securechat-asyncio", "securechat-tls", "securechat-tls-nopad", "securechat-baseline"
)
TLS_VARIANTS = ("securechat-tls", "securechat-tls-nopad")
BASELINE_ENV = "SECURECHAT_BENCH_BASELINE"
NAIVE_VARIANTS = ("naive-asyncio", "naive-uvloop")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def rss_kib(pid: int) -> int:
    """Resident set size (VmRSS) in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def securechat_server_available() -> str | None:
    """None if the real server can be imported, else why not."""
    try:
        import securechat.server
        import securechat.server_cli  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means: skip with the reason
        return f"securechat server not importable ({type(exc).__name__}: {exc})"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A server subprocess whose stderr is drained by a thread (and its lines counted)."""

    variant: str
    argv: list[str]
    ready_pattern: re.Pattern[str] | None = _LISTENING
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_lines: int = 0
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=40))
    _ready: threading.Event = field(default_factory=threading.Event)
    workdir: str = ""
    tls: bool = False  # clients must speak TLS to it
    env: dict[str, str] = field(default_factory=dict)  # added to the bench's environment

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
            cwd=_tree_dir(self.env),
        )  # fmt: skip
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._ready.wait(timeout) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError(f"{self.variant} did not start: {' | '.join(self.tail)}")

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            self.log_lines += 1
            self.tail.append(line[:300])
            if not self._ready.is_set():
                if self.ready_pattern is None:
                    if "Ready to accept connections" in line:
                        self._ready.set()
                else:
                    match = self.ready_pattern.search(line)
                    if match:
                        self.port = int(match.group(2))
                        self._ready.set()
        self._ready.set()

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_kib(self.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def server_help(env: dict[str, str] | None = None) -> str:
    """The real server's --help text, to pass only the options it has (``env``: added to the environment)."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "securechat.bench.launch", "--", "--help"],
            capture_output=True,
            timeout=30,
            text=True,
            check=False,
            env=dict(os.environ, **(env or {})),
            cwd=_tree_dir(env),
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout + out.stderr


def _tree_dir(env: dict[str, str] | None) -> str | None:
    """Where to start a server whose code is another tree's (``PYTHONPATH`` in ``env``): in that tree.

    ``python -m`` puts the working directory first on ``sys.path``, before ``PYTHONPATH``: started from
    a checkout's root, the "other" server would import that checkout's code and compare it with itself.
    """
    return (env or {}).get("PYTHONPATH") or None


def securechat_argv(
    variant: str, workdir: str, help_text: str, max_connections: int, redis_url: str | None = None
) -> list[str]:
    """The real server's command line; with ``redis_url`` a node of several on that Redis instead of SQLite."""
    argv = [sys.executable, "-m", "securechat.bench.launch"]
    if variant == "securechat-asyncio":
        argv.append("--stdlib")
    store = ["--redis", redis_url] if redis_url else ["--db", os.path.join(workdir, "bench.db")]
    argv += ["--", "--host", "127.0.0.1", "--port", "0", *store]
    if variant not in TLS_VARIANTS and "--plaintext" in help_text:
        argv.append("--plaintext")
    if variant == "securechat-tls-nopad":
        argv.append("--no-padding")
    # No throttling: the bench measures capacity, not the limiter. Logging stays at the
    # server's default (INFO), which must not log per frame.
    wanted = {
        "--rate": "1000000",
        "--burst": "1000000",
        "--max-connections": str(max_connections),
        "--max-per-ip": str(max_connections),
        "--register-per-ip": "1000000000",  # every simulated user registers from 127.0.0.1
        "--register-per-key": "1000000000",
        "--register-rate": "1000000000",
        "--max-users": "1000000000",
        "--idle-timeout": "600",
        "--handshake-timeout": "60",
    }
    for option, value in wanted.items():
        if option in help_text:
            argv += [option, value]
    return argv


def start_server(variant: str, *, help_text: str = "", max_connections: int = 20_000) -> ServerProcess:
    """Start one variant and wait until it listens."""
    workdir = tempfile.mkdtemp(prefix=f"securechat-bench-{variant}-")
    if variant == "securechat-baseline":  # an older server: its own options (no --plaintext before TLS)
        env = {"PYTHONPATH": baseline_tree() or ""}
        server = ServerProcess(variant, securechat_argv(variant, workdir, server_help(env), max_connections), env=env)
    elif variant in SECURECHAT_VARIANTS:
        server = ServerProcess(variant, securechat_argv(variant, workdir, help_text, max_connections))
        server.tls = variant in TLS_VARIANTS
    elif variant in NAIVE_VARIANTS:
        argv = [sys.executable, "-m", "securechat.bench.naive_relay", "--port", "0"]
        if variant == "naive-uvloop":
            argv.append("--uvloop")
        server = ServerProcess(variant, argv)
    elif variant == "redis":
        port = _free_port()
        argv = [
            redis_server_path() or "redis-server",
            "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--protected-mode", "no", "--maxclients", str(max_connections), "--dir", workdir,
            # Redis's default drops a pub/sub subscriber that falls 32 MB behind; pipelined
            # publishers on a loaded machine can get there, which would count as a drop.
            "--client-output-buffer-limit", "pubsub 0 0 0",
        ]  # fmt: skip
        server = ServerProcess(variant, argv, ready_pattern=None, port=port)
    else:
        raise ValueError(f"unknown server variant {variant!r}")
    server.workdir = workdir
    server.start()
    if variant == "redis":
        _wait_port(server.port)
    return server


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def baseline_tree() -> str | None:
    """The source tree of the baseline server ($SECURECHAT_BENCH_BASELINE), if it holds one."""
    tree = os.environ.get(BASELINE_ENV, "")
    return tree if tree and os.path.isfile(os.path.join(tree, "securechat", "server_cli.py")) else None


def redis_ask(port: int, *args: str) -> bytes:
    """One command to a local Redis or sentinel, its raw reply's first bytes (enough for a look)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall((f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)).encode())
        return s.recv(4096)


def redis_server_path() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
