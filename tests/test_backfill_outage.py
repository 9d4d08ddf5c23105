"""`qrw backfill` when Redis goes away or fills up (issue 18 point 3): a real backfill
process, real workers and a redis-server of each test's own, stopped for longer than the
driver's lease or filled to its `maxmemory`.

The driver rides out what it can (backing off, taking its own lapsed lease back when no
other driver holds it); when it must stop, it records why in the run's state and exits 1,
the failure status of docs/backfill.md; it says another process took over only when
another driver holds the lease."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import RedisServer, wait_until
from tests.test_backfill_run import (
    archive,
    assert_exactly_once,
    count,
    env,
    finished,
    qrw,
    spawn,
    state,
    write_manifest,
)
from worker.backfill.state import LEASE_S
from worker.queue import names

QUEUE = "bf-outage"  # this module's backfill queue
TAKEN_OVER = "took over"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own: stopping or filling it must not disturb the others."""
    redis_server = RedisServer(tmp_path / "redis")
    yield redis_server
    redis_server.stop()


@pytest.fixture
def drivers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The test's backfill processes: none outlives it, whatever it asserted."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def invoices() -> list[bytes]:
    from models.synth import digital_invoice

    return [digital_invoice(900 + n).data for n in range(4)]


def fill(server: RedisServer) -> None:
    """Redis at its `maxmemory` under `noeviction`: every write that may grow memory is
    refused with OOM, as in the issue's soak."""
    client = server.client()
    client.config_set("maxmemory-policy", "noeviction")
    client.set("filler", b"x" * 4_000_000)
    # Well under what the filler alone holds: Redis frees the 4 MB query buffer of the SET a
    # moment later, and a limit just under the memory used at once would then be room again.
    client.config_set("maxmemory", str(2_000_000))
    assert int(client.info("memory")["used_memory"]) > 4_000_000


def unfill(server: RedisServer) -> None:
    client = server.client()
    client.config_set("maxmemory", "0")
    client.delete("filler")


def start_run(
    drivers: list[subprocess.Popen[bytes]],
    server: RedisServer,
    s3_endpoint: str,
    file_root: Path,
    tmp_path: Path,
    refs: list[str],
    name: str,
    **extra: str,
) -> tuple[dict[str, str], Path, subprocess.Popen[bytes]]:
    manifest = write_manifest(tmp_path / f"{name}.txt", refs)
    environ = env(server.url, s3_endpoint, file_root, QRW_LOG_LEVEL="info", **extra)
    log = tmp_path / f"{name}.log"
    # A slow rate, and room for every job, keep the driver enqueueing (writing to Redis)
    # through the fault whatever the workers do.
    progress = "parts" if server.client().scard(f"rq:workers:{QUEUE}") else "enqueued"
    process = spawn(
        environ, log, "start", name, "--manifest", str(manifest), "--out",
        f"file://{tmp_path}/out", "--queue", QUEUE, "--batch", "1", "--max-in-flight", "100",
        "--rate", "3",
    )  # fmt: skip
    drivers.append(process)
    wait_until(lambda: count(server, name, progress) >= 1, 90, f"{progress} to move")
    assert count(server, name, "enqueued") < len(refs)  # mid-run
    return environ, log, process


def events(log: Path, event: str) -> list[dict[str, object]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            found.append(json.loads(line))
    return found


def refused(log: Path, process: subprocess.Popen[bytes]) -> bool:
    """Whether the driver met the full Redis and waits (or died: the test says so next)."""
    retried = events(log, "backfill_redis_retry")
    return process.poll() is not None or any("OutOfMemory" in str(e["error"]) for e in retried)


def test_a_redis_outage_longer_than_the_lease_is_ridden_out_and_no_takeover_is_claimed(
    server, s3_endpoint, file_root, invoices, start_worker, drivers, tmp_path
):
    refs = archive(file_root / "outage", invoices, 40)
    start_worker(server.url, QUEUE)
    _, log, process = start_run(drivers, server, s3_endpoint, file_root, tmp_path, refs, "outage")
    server.stop()
    time.sleep(LEASE_S + 3)  # the driver's lease lapses while Redis is away
    assert process.poll() is None, log.read_text()[-3000:]
    server.start()

    assert finished(process, log, timeout=120) == 0, log.read_text()[-3000:]
    assert TAKEN_OVER not in log.read_text()
    assert_exactly_once(tmp_path / "out", refs)
    after = state(server, "outage")
    assert after["state"] == "done" and "error" not in after
    assert events(log, "backfill_redis_retry")  # it said what it was waiting for


def test_a_full_redis_is_ridden_out_and_every_object_written_once(
    server, s3_endpoint, file_root, invoices, start_worker, drivers, tmp_path
):
    refs = archive(file_root / "full", invoices, 40)
    # No worker yet: what a worker does with a full Redis is issue 18 point 2's, not this
    # test's; the driver enqueues all the same.
    _, log, process = start_run(drivers, server, s3_endpoint, file_root, tmp_path, refs, "full")
    fill(server)
    wait_until(lambda: refused(log, process), 30, "the driver to meet the full Redis")
    time.sleep(3)
    assert process.poll() is None, log.read_text()[-3000:]
    unfill(server)
    start_worker(server.url, QUEUE)

    assert finished(process, log, timeout=120) == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()
    assert_exactly_once(tmp_path / "out", refs)
    assert state(server, "full")["state"] == "done"


@pytest.mark.parametrize("fault", ["stopped", "full"])
def test_a_driver_that_must_stop_records_why_and_exits_with_the_failure_status(
    fault, server, s3_endpoint, file_root, invoices, start_worker, drivers, tmp_path
):
    name = f"stop-{fault}"
    refs = archive(file_root / name, invoices, 40)
    environ, log, process = start_run(
        drivers,
        server,
        s3_endpoint,
        file_root,
        tmp_path,
        refs,
        name,
        QRW_BACKFILL_REDIS_PATIENCE="2",
    )
    if fault == "stopped":
        server.stop()
    else:
        fill(server)
    # Past its patience the driver gives up, and waits only to record why.
    wait_until(
        lambda: events(log, "backfill_failed") or process.poll() is not None,
        30,
        "the driver to give up",
    )
    assert process.poll() is None, log.read_text()[-3000:]
    if fault == "stopped":
        server.start()
    else:
        unfill(server)

    assert finished(process, log, timeout=60) == 1, log.read_text()[-3000:]
    text = log.read_text()
    assert "Traceback" not in text and TAKEN_OVER not in text
    failed = state(server, name)
    assert failed["state"] == "failed"
    assert "QRW_BACKFILL_REDIS_PATIENCE" in failed["error"]
    assert f"qrw backfill resume {name}" in text
    status = qrw(environ, "status", name, "--json")
    assert json.loads(status.stdout)["error"] == failed["error"]

    start_worker(server.url, QUEUE)
    resumed = qrw(environ, "resume", name, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_exactly_once(tmp_path / "out", refs)
    assert "error" not in state(server, name)


def test_another_driver_taking_over_a_stopped_one_is_named_and_the_first_writes_no_more(
    server, s3_endpoint, file_root, invoices, start_worker, drivers, tmp_path
):
    refs = archive(file_root / "takeover", invoices, 40)
    start_worker(server.url, QUEUE)
    environ, first_log, first = start_run(
        drivers, server, s3_endpoint, file_root, tmp_path, refs, "takeover"
    )
    first.send_signal(signal.SIGSTOP)  # alive, but renewing nothing: its lease lapses
    lease = "qrw:backfill:takeover:lease"
    wait_until(lambda: not server.client().exists(lease), LEASE_S + 10, "the lease to lapse")
    second_log = tmp_path / "second.log"
    second = spawn(environ, second_log, "resume", "takeover")
    drivers.append(second)
    second_token = wait_until(
        lambda: [e["driver"] for e in events(second_log, "backfill_driving")],
        30,
        "the second driver to take the lapsed lease",
    )[0]  # type: ignore[index]
    first.send_signal(signal.SIGCONT)

    assert finished(first, first_log, timeout=60) == 2
    said = first_log.read_text()
    assert f"another process took over the run: {second_token}" in said, said[-3000:]
    assert finished(second, second_log, timeout=120) == 0, second_log.read_text()[-3000:]
    assert TAKEN_OVER not in second_log.read_text()
    assert_exactly_once(tmp_path / "out", refs)
    after = state(server, "takeover")
    assert after["state"] == "done" and "error" not in after


def test_a_redis_that_comes_back_with_an_older_state_is_caught_up_and_every_object_written_once(
    server, s3_endpoint, file_root, invoices, start_worker, drivers, tmp_path
):
    # A Sentinel failover promotes a replica that may lag: the run's state the driver finds
    # then is older than what it wrote. Going on from its listing in memory, a driver ended a
    # run 'done' with 28 of its 40 objects never written (tests/test_redis_sentinel.py, on a
    # loaded machine). Here the run's keys are put back as they were a moment earlier, the
    # way such a replica would hold them.
    refs = archive(file_root / "older", invoices, 40)
    start_worker(server.url, QUEUE)
    _, log, process = start_run(drivers, server, s3_endpoint, file_root, tmp_path, refs, "older")
    client = server.client()
    lease = names.backfill_lease_key("older").encode()
    inflight = names.backfill_inflight_key("older")

    def snapshot() -> tuple[dict[bytes, bytes], list[bytes]] | None:
        """The run's keys, once at least five objects are enqueued and some jobs are in
        flight in what was taken; and those jobs."""
        if count(server, "older", "enqueued") < 5:
            return None
        taken = {k: client.dump(k) for k in client.scan_iter(match="*older*") if k != lease}
        if inflight.encode() not in taken:
            return None
        client.restore("probe", 0, taken[inflight.encode()], replace=True)
        held = client.hkeys("probe")
        client.delete("probe")
        return (taken, held) if held else None

    before, held = wait_until(snapshot, 60, "five enqueued, jobs in flight")
    # The replica lags by more than those jobs: each of them finished and its result was
    # written before the failover. Its result is collected, its reply gone; the older state
    # still has it in flight, with its RQ job hash and stored result still in Redis.
    wait_until(
        lambda: (
            count(server, "older", "enqueued") >= 20
            and not any(client.hexists(inflight, jid) for jid in held)
        ),
        90,
        "twenty enqueued, the jobs in flight then written",
    )
    with client.pipeline(transaction=True) as pipe:
        for key in client.scan_iter(match="*older*"):
            if key != lease and key not in before:
                pipe.delete(key)
        for key, value in before.items():
            pipe.restore(key, 0, value, replace=True)
        pipe.execute()
    assert count(server, "older", "enqueued") < 20

    assert finished(process, log, timeout=180) == 0, log.read_text()[-3000:]
    assert_exactly_once(tmp_path / "out", refs)
    assert state(server, "older")["state"] == "done"
