"""A subprocess whose output is read line by line by a thread, for the tests that kill
processes (failover of ``durable worker``, crashes of a sidecar and a remote worker)."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

LINE_TIMEOUT = 90.0
HERE = Path(__file__).parent


def child_env() -> dict[str, str]:
    """This environment, with the repository and this folder (the worker scripts) on
    the child's PYTHONPATH."""
    path = [str(HERE), str(HERE.parent.parent), os.environ.get("PYTHONPATH", "")]
    return os.environ | {"PYTHONPATH": os.pathsep.join(path)}


class LineProcess:
    """A process with stdout and stderr merged, logged to a file and queued by line."""

    def __init__(
        self, name: str, argv: list[str], log_path: Path, env: dict[str, str], cwd: Path
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("a")
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            env=env, cwd=cwd,
        )  # fmt: skip
        self.lines: list[str] = []
        self.steps = 0  # STEP lines printed so far (counted by the reader thread)
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.write(line)
            self._log.flush()
            if line.startswith("STEP "):
                self.steps += 1
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, what: str) -> str:
        """Block until a line matching ``pattern`` (fails after a long silence or EOF)."""
        while True:
            try:
                line = self._queue.get(timeout=LINE_TIMEOUT)
            except queue.Empty:
                pytest.fail(f"{self.name}: no {what} for {LINE_TIMEOUT}s\n{self.tail()}")
            if line is None:
                pytest.fail(f"{self.name} exited before {what}\n{self.tail()}")
            self.lines.append(line)
            if re.search(pattern, line):
                return line

    def tail(self, chars: int = 3000) -> str:
        return f"--- {self.name} ---\n{self.log_path.read_text(errors='replace')[-chars:]}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=LINE_TIMEOUT)
        self._reader.join(timeout=LINE_TIMEOUT)

    def stop(self) -> int:
        """SIGTERM, then collect what it printed on the way out."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=LINE_TIMEOUT)
        self._reader.join(timeout=LINE_TIMEOUT)
        while (line := self._queue.get_nowait()) is not None:
            self.lines.append(line)
        return code

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=LINE_TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_listening(proc: LineProcess, port: int) -> None:
    """Block until ``proc`` accepts connections on ``port`` (fails if it exits first)."""
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            try:  # paces the polling (a refused connect returns at once) and sees an exit
                proc.proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                continue
            pytest.fail(f"{proc.name} exited before listening\n{proc.tail()}")
    pytest.fail(f"{proc.name} does not listen on {port}\n{proc.tail()}")


def run_until(
    worker: Path, store: Path, mode: str, line: str
) -> tuple[subprocess.Popen[str], list[str]]:
    """Start ``worker STORE MODE`` and read its output until ``line`` (or its end)."""
    proc = subprocess.Popen(
        [sys.executable, str(worker), str(store), mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    seen: list[str] = []
    for out in proc.stdout:
        seen.append(out.strip())
        if out.strip() == line:
            break
    return proc, seen
