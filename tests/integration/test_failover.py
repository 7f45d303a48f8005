"""Three ``durable worker`` processes on one S3 bucket (moto_server on loopback).

300 workflows of 10 steps spread over the workers' partitions. One worker is killed
with SIGKILL mid-run and another is frozen with SIGSTOP past its lease, then thawed:
the survivors take their partitions once the leases expire, every workflow ends with
the right result, and — the bucket being versioned — no ``log/{seq}`` object was ever
written twice. A worker started again later rejoins and gets partitions back.
"""

from __future__ import annotations

import json
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import durable

if TYPE_CHECKING:
    from conftest import MotoServer

HERE = Path(__file__).parent
N_WORKFLOWS, N_STEPS, PARTITIONS = 300, 10, 12
LINE_TIMEOUT = 90.0

sys.path.insert(0, str(HERE))
import crash_worker  # noqa: E402
from _procs import LineProcess, child_env  # noqa: E402


def worker_process(name: str, url: str, env: dict[str, str], log_path: Path) -> LineProcess:
    """One ``durable worker`` process of the fleet."""
    argv = [
        sys.executable, "-m", "durable", "worker", "fleet_app:registry", "--store", url,
        "--owner", name, "--partitions", str(PARTITIONS), "--lease-ttl", "8s",
        "--poll-interval", "1.0",
    ]  # fmt: skip
    return LineProcess(name, argv, log_path, env, HERE)


def _lease_owners(moto: MotoServer, bucket: str) -> dict[int, str]:
    owners: dict[int, str] = {}
    listed = moto.client.list_objects_v2(Bucket=bucket, Prefix="root/leases/")
    for item in listed.get("Contents", []):
        body = moto.client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        owners[int(item["Key"].rsplit("/", 1)[1])] = json.loads(body)["owner"]
    return owners


async def _start_all(url: str, options: dict[str, Any]) -> None:
    async with durable.Client(url, storage_options=options) as client:
        limiter = anyio.CapacityLimiter(16)

        async def start(index: int) -> None:
            async with limiter:
                await client.start(
                    "chain", [index, N_STEPS], instance_id=crash_worker.instance_id(index)
                )

        async with anyio.create_task_group() as tg:
            for index in range(N_WORKFLOWS):
                tg.start_soon(start, index)


async def _results(url: str, options: dict[str, Any]) -> dict[int, int]:
    async with durable.Client(url, storage_options=options, poll_interval=0.2) as client:
        return {
            index: await client.get_handle(crash_worker.instance_id(index)).result(timeout=120)
            for index in range(N_WORKFLOWS)
        }


@pytest.mark.timeout(400)
def test_workers_fail_over_and_rejoin_on_s3(moto_server: MotoServer, tmp_path: Path) -> None:
    bucket = moto_server.new_bucket()
    moto_server.client.put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    url = f"s3://{bucket}/root"
    activity_log = tmp_path / "activities.log"
    env = child_env() | {
        "AWS_ENDPOINT_URL": moto_server.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "FLEET_ACTIVITY_LOG": str(activity_log),
    }
    workers: list[LineProcess] = []

    def start(name: str) -> LineProcess:
        worker = worker_process(name, url, env, tmp_path / f"{name}.log")
        workers.append(worker)
        worker.wait_for(r"^READY ", "READY")
        return worker

    try:
        w1, w2, w3 = start("w1"), start("w2"), start("w3")
        anyio.run(_start_all, url, moto_server.storage_options)

        # mid-run: kill w1 for good, once the fleet has run a good share of the steps
        while sum(w.steps for w in workers) < N_WORKFLOWS * 2:
            w3.wait_for(r"^STEP ", "steps")
        w1.proc.send_signal(signal.SIGKILL)
        w1.proc.wait(timeout=LINE_TIMEOUT)

        # freeze w2 past its lease: w3 ends up holding every partition
        w2.proc.send_signal(signal.SIGSTOP)
        w3.wait_for(rf"took partitions .*holds {PARTITIONS}$", "all partitions")
        w2.proc.send_signal(signal.SIGCONT)  # thawed: a stale owner, which must let go
        w2.wait_for(r"lost partitions", "losing its stale leases")

        results = anyio.run(_results, url, moto_server.storage_options)
        assert results == {i: crash_worker.expected_result(i, N_STEPS) for i in range(N_WORKFLOWS)}

        # a worker started again rejoins, and the others hand it partitions
        w1b = start("w1b")
        w1b.wait_for(r"took partitions", "partitions for the new member")
        assert "w1b" in _lease_owners(moto_server, bucket).values()

        # at least once: every step of every workflow ran (some more than once)
        ran = Counter(tuple(line.split()[:2]) for line in activity_log.read_text().splitlines())
        expected = {(crash_worker.instance_id(i), str(s)) for i in range(N_WORKFLOWS)
                    for s in range(N_STEPS)}  # fmt: skip
        assert set(ran) == expected

        # exactly once per turn: no log object ever had a second version
        paginator = moto_server.client.get_paginator("list_object_versions")
        versions: Counter[str] = Counter()
        for page in paginator.paginate(Bucket=bucket, Prefix="root/instances/"):
            for version in page.get("Versions", []):
                if "/log/" in version["Key"]:
                    versions[version["Key"]] += 1
        assert len(versions) >= N_WORKFLOWS * (N_STEPS + 2)
        twice = {key: n for key, n in versions.items() if n > 1}
        assert not twice, f"log objects written more than once: {twice}"

        for worker in (w2, w3, w1b):
            assert worker.stop() == 0, worker.tail()
            assert any(line.startswith("STOPPED") for line in worker.lines), worker.tail()
    finally:
        for worker in workers:
            worker.cleanup()
