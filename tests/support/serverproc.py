"""Run the real ``securechat-server`` command as a subprocess for tests."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

LISTENING = re.compile(r"listening on (\S+):(\d+)")
START_TIMEOUT = 15.0


def server_command() -> list[str]:
    """The installed console script, or the module when the script is not on PATH."""
    script = shutil.which("securechat-server")
    if script is not None:
        return [script]
    return [sys.executable, "-m", "securechat.server_cli"]


class ServerProcess:
    """A ``securechat-server`` child process; stderr is collected in ``lines``."""

    def __init__(
        self,
        db_path: Path | None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        port: int | None = 0,
        umask: int = -1,
    ) -> None:
        """``db_path`` / ``port`` None: not on the command line (the environment may set them);
        ``umask`` (if not -1) is the child's file mode creation mask."""
        cmd = server_command()
        if port is not None:
            cmd += ["--port", str(port)]
        if db_path is not None:
            cmd += ["--db", str(db_path)]
        cmd += list(args)
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, text=True,
            umask=umask,
        )
        self.lines: list[str] = []
        self.port = 0
        self._listening = threading.Event()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            match = LISTENING.search(line)
            if match and not self._listening.is_set():
                self.port = int(match.group(2))
                self._listening.set()
        self._listening.set()  # EOF: wake a waiter so it can see the process died

    def wait_listening(self, timeout: float = START_TIMEOUT) -> int:
        """Block until the ``listening on`` line; returns the port."""
        if not self._listening.wait(timeout) or not self.port:
            self.kill()
            raise RuntimeError("server did not start:\n" + self.stderr)
        return self.port

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        """Send ``sig`` and wait for the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._reader.join(timeout)
        return code

    def kill(self) -> int:
        """kill -9, for crash tests."""
        if self.proc.poll() is None:
            self.proc.kill()
        code = self.proc.wait()
        self._reader.join(5)
        return code


@contextmanager
def server_process(
    db_path: Path | None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    port: int | None = 0,
    umask: int = -1,
) -> Iterator[ServerProcess]:
    """A started server (port parsed from its log); killed on exit if still running."""
    proc = ServerProcess(db_path, args, env, port, umask)
    try:
        proc.wait_listening()
        yield proc
    finally:
        if proc.proc.poll() is None:
            proc.kill()
        for stream in (proc.proc.stdout, proc.proc.stderr):
            if stream is not None:
                stream.close()
