"""Drive a real ``securechat-client --plain`` process with piped stdin and stdout.

Its stdout is kept as raw bytes (``out``) as well as decoded lines, so a test can
check exactly what would reach a terminal at the end of a pipe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from tests.support.cli import client_command, client_env

WAIT = 30.0


class PlainClient:
    """One ``--plain`` child; a task reads its stdout into ``out`` and ``lines``."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out = bytearray()
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, name: str, port: int, home: Path, **env: str) -> PlainClient:
        proc = await asyncio.create_subprocess_exec(
            *client_command(),
            "--name",
            name,
            "--server",
            f"127.0.0.1:{port}",
            "--plain",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=client_env(home, **env),
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            self.out += raw
            self.lines.append(raw.decode("utf-8", errors="replace").rstrip("\n"))
            self._changed.set()
        self._changed.set()

    async def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def wait_line(self, predicate: Callable[[str], bool], timeout: float = WAIT) -> str:
        """The first line (from the start) that satisfies ``predicate``."""
        seen = 0
        async with asyncio.timeout(timeout):
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                if self._reader.done():
                    raise AssertionError(f"stdout closed; lines: {self.lines[-10:]}")
                self._changed.clear()
                await self._changed.wait()

    async def finish(self, timeout: float = WAIT) -> tuple[int, str]:
        """Close stdin, wait for the exit; (status, stderr)."""
        assert self.proc.stdin is not None and self.proc.stderr is not None
        self.proc.stdin.close()
        async with asyncio.timeout(timeout):
            await self._reader
            stderr = (await self.proc.stderr.read()).decode(errors="replace")
            return await self.proc.wait(), stderr

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
