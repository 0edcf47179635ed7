"""Drive real ``securechat-client --json`` processes: ``JsonClientProcess`` from synchronous tests,
``JsonClient`` from asyncio tests.

A daemon thread reads the child's stdout line by line into ``events`` (a list
guarded by a condition variable), so a test can wait for any event with a
deadline while the child keeps running, and a kill -9 never blocks the reader.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from tests.support.cli import client_command, client_env

WAIT = 30.0

Event = dict[str, Any]


def run_client(home: Path, args: list[str], timeout: float = WAIT) -> subprocess.CompletedProcess[str]:
    """A one-shot ``securechat-client`` subcommand (``history``, ``fingerprint``, ...)."""
    return subprocess.run(
        [*client_command(), "--home", str(home), *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=timeout,
        env=client_env(),
        stdin=subprocess.DEVNULL,
    )


class JsonClientProcess:
    """One ``securechat-client --json`` child; stderr goes to ``stderr_path``."""

    def __init__(self, name: str, server: int | str, home: Path, *, label: str = "") -> None:
        """``server``: a port on 127.0.0.1, or the whole ``--server`` value (``HOST:PORT,HOST:PORT``)."""
        self.name = name
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.stderr_path = home / f"{name}{label}.stderr.log"
        self._stderr: IO[bytes] = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [
                *client_command(),
                "--name",
                name,
                "--server",
                server if isinstance(server, str) else f"127.0.0.1:{server}",
                "--home",
                str(home),
                "--json",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=client_env(),
        )
        self.events: list[Event] = []
        self.bad_lines: list[bytes] = []
        self.eof = False
        self._cond = threading.Condition()
        self._stdin_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read_stdout, name=f"stdout-{name}", daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                event = None
            with self._cond:
                if isinstance(event, dict) and isinstance(event.get("event"), str):
                    self.events.append(event)
                else:  # every stdout line must be one JSON event: remembered for an assertion
                    self.bad_lines.append(raw)
                self._cond.notify_all()
        with self._cond:
            self.eof = True
            self._cond.notify_all()

    # --- commands -------------------------------------------------------------------------

    def command(self, obj: dict[str, Any]) -> None:
        self.commands([obj])

    def commands(self, objs: Iterable[dict[str, Any]]) -> None:
        """Write command lines (blocks while the child's stdin pipe is full)."""
        data = b"".join(json.dumps(o).encode() + b"\n" for o in objs)
        assert self.proc.stdin is not None
        with self._stdin_lock:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

    def send_in_background(self, to: str, texts: list[str]) -> threading.Thread:
        """Write one ``send`` per text from a thread (the stdin pipe fills long before 5,000 lines)."""

        def write() -> None:
            try:
                self.commands({"cmd": "send", "to": to, "text": t} for t in texts)
            except (BrokenPipeError, OSError):
                pass  # the child was killed meanwhile: the test sees what arrived

        thread = threading.Thread(target=write, name=f"stdin-{self.name}", daemon=True)
        thread.start()
        return thread

    # --- events ---------------------------------------------------------------------------

    def snapshot(self) -> list[Event]:
        with self._cond:
            return list(self.events)

    def of_kind(self, kind: str, **fields: Any) -> list[Event]:
        return [
            e for e in self.snapshot() if e["event"] == kind and all(e.get(k) == v for k, v in fields.items())
        ]

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float = WAIT, what: str = "") -> Event:
        """The first event (from the start) that satisfies ``predicate``; AssertionError on timeout/EOF."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                while seen < len(self.events):
                    event = self.events[seen]
                    seen += 1
                    if predicate(event):
                        return event
                left = deadline - time.monotonic()
                if self.eof or left <= 0:
                    raise AssertionError(
                        f"{self.name}: no event {what or predicate} within {timeout:g} s "
                        f"(eof={self.eof}); last events: {self.events[-5:]}\nstderr: {self.stderr_tail()}"
                    )
                self._cond.wait(min(left, 1.0))

    def wait_event(self, kind: str, timeout: float = WAIT, **fields: Any) -> Event:
        return self.wait_for(
            lambda e: e["event"] == kind and all(e.get(k) == v for k, v in fields.items()),
            timeout,
            what=f"{kind} {fields}",
        )

    def wait_until(
        self, condition: Callable[[list[Event]], bool], timeout: float = WAIT, what: str = ""
    ) -> None:
        """Wait until ``condition(events)`` holds; it is re-checked on every new line (keep it cheap)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not condition(self.events):
                left = deadline - time.monotonic()
                if self.eof or left <= 0:
                    raise AssertionError(
                        f"{self.name}: {what or 'condition'} not reached within {timeout:g} s "
                        f"(eof={self.eof}, {len(self.events)} events); last: {self.events[-3:]}\n"
                        f"stderr: {self.stderr_tail()}"
                    )
                self._cond.wait(min(left, 1.0))

    def count_until(self, kind: str, n: int, timeout: float = WAIT, key: str = "id") -> set[Any]:
        """Wait until ``n`` distinct ``key`` values of ``kind`` events were seen; returns them."""
        found: set[Any] = set()
        scanned = [0]

        def enough(events: list[Event]) -> bool:
            for event in events[scanned[0] :]:
                if event["event"] == kind:
                    found.add(event.get(key))
            scanned[0] = len(events)
            return len(found) >= n

        try:
            self.wait_until(enough, timeout, what=f"{n} distinct {kind} events")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n(had {len(found)} distinct {kind} events of {n})") from None
        return found

    def stderr_tail(self, chars: int = 2000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # --- ending ---------------------------------------------------------------------------

    def finish(self, timeout: float = WAIT) -> int:
        """Close stdin (the client drains its outbox, bounded) and wait for the exit status."""
        with self._stdin_lock:
            if self.proc.stdin is not None and not self.proc.stdin.closed:
                try:
                    self.proc.stdin.close()
                except OSError:
                    pass
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._reader.join(timeout)
        return code

    def kill(self) -> int:
        """kill -9, for crash tests; waits until the reader saw everything the child wrote."""
        if self.proc.poll() is None:
            self.proc.kill()
        code = self.proc.wait()
        self._reader.join(10)
        return code

    def close(self) -> None:
        self.kill()
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        self._stderr.close()


class JsonClient:
    """A ``securechat-client --json`` child: write commands, wait for event lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self.raw_lines: list[bytes] = []

    @classmethod
    async def start(cls, name: str, port: int, home: Path, *args: str) -> JsonClient:
        """``args`` go on the command line after the others (``--plaintext``, ``--server-fingerprint FP``)."""
        proc = await asyncio.create_subprocess_exec(
            *client_command(),
            "--name",
            name,
            "--server",
            f"127.0.0.1:{port}",
            "--json",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=client_env(home),
        )
        return cls(proc)

    async def command(self, obj: dict[str, Any] | str) -> None:
        assert self.proc.stdin is not None
        line = obj if isinstance(obj, str) else json.dumps(obj)
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def _read_event(self) -> dict[str, Any] | None:
        assert self.proc.stdout is not None
        raw = await self.proc.stdout.readline()
        if not raw:
            return None
        self.raw_lines.append(raw)
        event = json.loads(raw)  # every stdout line must be one JSON object
        assert isinstance(event, dict) and isinstance(event.get("event"), str), raw
        self.events.append(event)
        return event

    async def wait(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = WAIT
    ) -> dict[str, Any]:
        for event in self.events:
            if predicate(event):
                return event
        async with asyncio.timeout(timeout):
            while True:
                line = await self._read_event()
                if line is None:
                    raise AssertionError(f"stdout closed; events so far: {self.events}")
                if predicate(line):
                    return line

    async def wait_event(self, kind: str, timeout: float = WAIT, **fields: Any) -> dict[str, Any]:
        return await self.wait(
            lambda e: e["event"] == kind and all(e.get(k) == v for k, v in fields.items()), timeout
        )

    async def finish(self, timeout: float = WAIT) -> tuple[int, str]:
        """Close stdin, read the remaining events, return (exit status, stderr)."""
        assert self.proc.stdin is not None and self.proc.stderr is not None
        if not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        async with asyncio.timeout(timeout):
            while await self._read_event() is not None:
                pass
            stderr = (await self.proc.stderr.read()).decode()
            return await self.proc.wait(), stderr

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
