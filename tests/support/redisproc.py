"""A real ``redis-server`` for tests: a free port, a temporary directory, append-only file on request.

Tests never use a Redis they did not start. ``kill()`` is kill -9; ``restart()``
brings the same server back on the same port and directory (so the
append-only file is replayed).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.ports import restartable_port

START_TIMEOUT = 10.0
START_TRIES = 5


def redis_server_binary() -> str | None:
    return shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)


def require_redis() -> str:
    """The redis-server binary; skip the test without one, unless ``SECURECHAT_REQUIRE_REDIS`` is set (CI)."""
    binary = redis_server_binary()
    missing = None if binary else "redis-server is not installed"
    try:
        import hiredis  # noqa: F401
        import redis  # noqa: F401
    except ImportError:
        missing = "the redis extra is not installed (pip install -e '.[test]')"
    if missing is not None:
        if os.environ.get("SECURECHAT_REQUIRE_REDIS"):
            pytest.fail(f"SECURECHAT_REQUIRE_REDIS is set but {missing}")
        pytest.skip(missing)
    assert binary is not None
    return binary


class RedisProcess:
    """One ``redis-server`` child on 127.0.0.1."""

    def __init__(
        self, workdir: Path, *, appendonly: bool = False, fsync: str = "always", port: int = 0, extra: tuple[str, ...] = ()
    ) -> None:
        self.binary = require_redis()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.fsync = fsync
        self.port = port or restartable_port()
        self.port_chosen = not port  # this class chose it: another may be chosen if it was taken meanwhile
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        """The command line that starts this server."""
        return [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", self.fsync,
            "--protected-mode", "no", "--logfile", str(self.log_path), *self.extra,
        ]  # fmt: skip

    def start(self, *, ready: bool = True) -> RedisProcess:
        """Start and wait until it answers ``PING`` (``ready``), or only until it accepts connections
        (``ready=False``: a Redis still loading its data answers ``LOADING`` meanwhile).

        The port is free when chosen, yet another process may take it before redis-server binds it (a
        TOCTOU, or another test's Redis restarting on it): this one then exits, and before the check of
        its own log the other Redis's ``PONG`` was taken for its answer. A port chosen here is chosen
        again; a port that was given (a restart) fails the start."""
        for _ in range(START_TRIES if self.port_chosen else 1):
            if self._start_once(ready):
                return self
            self.port = restartable_port()
        raise RuntimeError(f"redis-server could not bind a port in {START_TRIES} tries:\n{self.log_tail()}")

    def _start_once(self, ready: bool) -> bool:
        """True once our redis-server answers; False if its port was taken (and another may be chosen)."""
        self.proc = subprocess.Popen(
            self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if self.port_chosen and self._said("Address already in use"):
                    return False
                raise RuntimeError(f"redis-server exited at start:\n{self.log_tail()}")
            if self._said("Server initialized") and self._answers_ping(ready):
                return True
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer within {START_TIMEOUT} s:\n{self.log_tail()}")

    def _said(self, phrase: str) -> bool:
        """Our process's own log (its lines start with its pid) has ``phrase``: "Server initialized"
        once it holds its port, so a Redis answering there is ours."""
        assert self.proc is not None
        mark = f"{self.proc.pid}:"
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return False
        return any(line.startswith(mark) and phrase in line for line in lines)

    def _answers_ping(self, ready: bool = True) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                return s.recv(64).startswith((b"+PONG", b"-NOAUTH") if ready else (b"+PONG", b"-NOAUTH", b"-LOADING"))
        except OSError:
            return False

    def pause(self) -> None:
        """SIGSTOP: the server holds its connections and answers nothing (a hung Redis, a partition)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def client(self) -> object:
        """A synchronous redis-py client (for a test's own look at the data, or CLIENT KILL)."""
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def kill(self) -> None:
        """kill -9 (a paused server too)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def restart(self) -> RedisProcess:
        """Start again on the same port and directory (after :meth:`kill`)."""
        self.kill()
        return self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class ConfiguredRedis(RedisProcess):
    """``redis-server FILE``: a redis.conf of the test's port, address and folder, then ``settings`` (a
    redis.conf's text, a doc's say) as they are."""

    def __init__(self, workdir: Path, settings: str) -> None:
        super().__init__(workdir)
        self.conf = workdir / "redis.conf"
        self.settings = settings

    def argv(self) -> list[str]:
        # Written at each start: the port may have been chosen again (RedisProcess.start).
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\nlogfile {self.log_path}\nsave \"\"\n{self.settings}"
        )
        return [self.binary, str(self.conf)]
