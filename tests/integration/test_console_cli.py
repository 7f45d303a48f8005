"""``durable ui`` as a process: refuses to open the console to the network without a
token, says so in one line, serves, and stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _procs import LineProcess, child_env

REPO = Path(__file__).resolve().parents[2]


def ui(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "durable", "ui", "--store", f"file://{tmp_path}", *args]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, check=False, env=child_env()
    )


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("0.0.0.0:0", "opens the console beyond this machine: give --api-token too"),
        ("bogus", "--listen wants HOST:PORT, got 'bogus'"),
        ("127.0.0.1:99999", "--listen wants HOST:PORT"),
    ],
)
def test_bad_listen_is_one_line(tmp_path: Path, listen: str, message: str) -> None:
    """Bug pinned: a console reachable from the network without --api-token is refused
    (and a bad address), as bad usage (exit 2), with one line and no traceback."""
    result = ui(tmp_path, "--listen", listen)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_address_in_use_is_one_line(tmp_path: Path) -> None:
    """A port another process holds: exit 1, one line naming the address."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = ui(tmp_path, "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.timeout(90)
def test_serves_then_stops_on_sigterm(tmp_path: Path) -> None:
    """The console answers on the address it prints, and SIGTERM stops it with exit 0."""
    argv = [sys.executable, "-m", "durable", "ui", "--store", f"file://{tmp_path}",
            "--listen", "127.0.0.1:0"]  # fmt: skip
    proc = LineProcess("ui", argv, tmp_path / "ui.log", child_env(), REPO)
    try:
        line = proc.wait_for(r"listening on http://", "the console's address")
        url = line.rsplit(" ", 1)[1]
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200
            assert b"No instance matches" in response.read()
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(timeout=60) == 0
        proc.wait_for(r"^durable ui stopped$", "the stop line")
    finally:
        proc.cleanup()
