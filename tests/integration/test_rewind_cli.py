"""``durable rewind`` (issue 14): a failed instance, run by a ``durable worker``
process, runs on from its failure once what it needed is there; its successful step
does not run again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli_verbs import durable, durable_json, worker_on_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[str]:
    """A file store with a ``durable worker`` running ``rewind_app:registry`` on it."""
    yield from worker_on_store(tmp_path, "rewind_app:registry")


@pytest.mark.timeout(120)
def test_rewind_runs_a_failed_instance_on(store: str, tmp_path: Path) -> None:
    """``rewind`` of the FAILED instance: it completes, its first step ran once, and its
    history records the rewind with the reason given. A rewind of a COMPLETED instance
    exits 1 with one line; of an unknown one, 3."""
    noted, needed = tmp_path / "noted", tmp_path / "needed"
    paths = f'["{noted}", "{needed}"]'
    failed = durable(store, "start", "mend", "--input", paths, "--id", "m-1", "--wait")
    assert failed.returncode == 1
    assert "is not there yet" in failed.stderr
    needed.write_text("")
    done = durable(store, "rewind", "m-1", "--reason", "the file is there")
    assert (done.returncode, done.stdout) == (0, "rewinding m-1\n"), done.stderr
    assert durable(store, "watch", "m-1").returncode == 0
    assert durable_json(store, "describe", "m-1")["output"] == ["noted 1", "found"]
    assert noted.read_text() == "ran\n"
    marks = [e for e in durable_json(store, "history", "m-1") if e["kind"] == "workflow_rewound"]
    assert [m["reason"] for m in marks] == ["the file is there"]

    again = durable(store, "rewind", "m-1")
    assert again.returncode == 1
    assert again.stderr.strip() == (
        "durable: instance 'm-1' is COMPLETED: only a FAILED instance can be rewound"
    )
    assert durable(store, "rewind", "nobody").returncode == 3
