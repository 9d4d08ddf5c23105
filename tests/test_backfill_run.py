"""`qrw backfill` end to end: a real `qrw backfill` process, real workers, real Redis and
moto's S3 over HTTP. Whatever dies mid-run (the backfill process, a worker, Redis), the
output ends with exactly one line per object."""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from models.synth import digital_invoice, no_code_invoice
from tests.conftest import ARCHIVE, BUCKET, s3_client, worker_env
from tests.services import RedisServer, WorkerProcess, wait_until

QUEUE = "bf-run"  # this module's backfill queue: no other test's workers take its jobs
DISTINCT = 6  # distinct invoices; the archive repeats them under other names


@pytest.fixture(scope="module")
def invoices(file_root: Path) -> list[bytes]:
    return [digital_invoice(700 + n).data for n in range(DISTINCT)]


@pytest.fixture(scope="module")
def pool(redis_server: RedisServer, s3_endpoint: str, file_root: Path, tmp_path_factory):
    """Two workers on the backfill queue, shared by the tests that kill nothing of theirs."""
    log = tmp_path_factory.mktemp("bf-pool") / "worker.log"
    worker = WorkerProcess(worker_env(redis_server.url, s3_endpoint, file_root), QUEUE, 2, log=log)
    yield worker
    worker.stop()


def archive(folder: Path, invoices: list[bytes], count: int, corrupt: int = 0) -> list[str]:
    """`count` invoice files (and `corrupt` files that are not images) as file:// refs."""
    folder.mkdir(parents=True, exist_ok=True)
    refs = []
    for n in range(count):
        path = folder / f"inv-{n:04d}.png"
        path.write_bytes(invoices[n % len(invoices)])
        refs.append(f"file://{path}")
    for n in range(corrupt):
        path = folder / f"broken-{n:02d}.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image at all" * (n + 1))
        refs.append(f"file://{path}")
    return refs


def write_manifest(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def env(redis_url: str, s3_endpoint: str, file_root: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, **worker_env(redis_url, s3_endpoint, file_root, **extra)}


def qrw(
    environ: dict[str, str], *args: str, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "backfill", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def spawn(environ: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "backfill", *args],
        env=environ,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def state(redis_server: RedisServer, name: str) -> dict[str, str]:
    raw = redis_server.client().hgetall(f"qrw:backfill:{name}")
    return {k.decode(): v.decode() for k, v in raw.items()}


def count(redis_server: RedisServer, name: str, field: str) -> int:
    return int(state(redis_server, name).get(field, 0))


def lines(out: Path) -> list[dict[str, Any]]:
    found = []
    for part in sorted(out.glob("part-*.jsonl.gz")):
        with gzip.open(part, "rt", encoding="utf-8") as handle:
            found += [json.loads(line) for line in handle]
    return found


def assert_exactly_once(out: Path, refs: list[str]) -> list[dict[str, Any]]:
    written = lines(out)
    per_object = Counter(line["image"] for line in written)
    twice = sorted(ref for ref, n in per_object.items() if n > 1)
    assert not twice, f"written more than once: {twice[:5]}"
    missing = sorted(set(refs) - set(per_object))
    assert not missing, f"never written: {missing[:5]}"
    assert set(per_object) == set(refs)
    return written


def finished(process: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> int:
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"the backfill did not end:\n{log.read_text()[-3000:]}") from None


def test_a_manifest_run_writes_one_line_per_object_a_summary_an_index_and_the_bad_lines(
    pool, redis_server, s3_endpoint, file_root, invoices, tmp_path
):
    refs = archive(file_root / "plain", invoices, 14, corrupt=1)
    manifest = write_manifest(
        tmp_path / "manifest.txt", [*refs[:5], "not a reference", *refs[5:], "http://x/y.png"]
    )
    out = tmp_path / "out"
    environ = env(redis_server.url, s3_endpoint, file_root)
    ran = qrw(
        environ,
        "start",
        "plain",
        "--manifest",
        str(manifest),
        "--out",
        f"file://{out}",
        "--queue",
        QUEUE,
        "--batch",
        "4",
        "--max-in-flight",
        "2",
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout.strip().endswith("backfill plain: done")

    written = assert_exactly_once(out, refs)
    first = next(line for line in written if line["image"] == refs[0])
    assert first["ok"] is True and first["codes"], first
    assert first["key"] == refs[0].removeprefix("file://")
    assert first["size"] == len(invoices[0])
    broken = next(line for line in written if "broken" in line["image"])
    assert broken["ok"] is False and broken["error"]["code"] == "corrupt_image"

    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == "done"
    assert summary["objects"] == 15 and summary["read"] == 14 and summary["failed"] == 1
    assert summary["failed_by_code"] == {"corrupt_image": 1}
    # Bad manifest lines are counted and reported with their line numbers, never enqueued.
    assert [n for n, _ in summary["bad_line_list"]] == [6, 17]
    # The skipped total is the sum of its reasons: bad lines are lines, not objects, and are
    # reported apart (issue 18 point 6: `skipped` 0 beside `skipped_by` {"bad_line": 2}).
    assert summary["bad_lines"] == 2
    assert summary["skipped"] == sum(summary["skipped_by"].values()) == 0
    with (out / "index.csv").open(encoding="utf-8-sig", newline="") as handle:
        assert len(list(csv.reader(handle))) == 1 + 15

    status = json.loads(qrw(environ, "status", "plain", "--json").stdout)
    assert status["state"] == "done" and status["in_flight"] == 0
    assert status["enqueued"] == 15 and status["jobs"] == 4 and status["done"] == 4
    assert status["objects_ok"] == 14 and status["objects_failed"] == 1
    assert status["bad_lines"] == 2
    assert [line for line, _ in status["bad_line_list"]] == [6, 17]
    # Nothing of the run is left in Redis but its state.
    client = redis_server.client()
    assert client.llen(f"rq:queue:{QUEUE}") == 0
    assert not client.exists("qrw:reply:backfill:plain", "qrw:backfill:plain:inflight")
    # Written results are not kept under qrw:result:<id> (~3 KB a job for RESULT_TTL_S: Redis
    # would grow with the rate, not with --max-in-flight); the ~100-byte delivery tokens
    # stay, so a rerun of a job after a worker loss still publishes nothing twice.
    job_ids = {line["job_id"] for line in written}
    assert len(job_ids) == 4
    assert not any(client.exists(f"qrw:result:{jid}") for jid in job_ids)
    assert all(client.exists(f"qrw:delivery:{jid}") for jid in job_ids)

    every = qrw(environ, "status")
    assert every.returncode == 0
    assert any(row.split()[:2] == ["plain", "done"] for row in every.stdout.splitlines())

    report = qrw(environ, "report", "plain")
    assert report.returncode == 0 and "corrupt_image" in report.stdout

    again = qrw(environ, "start", "plain", "--manifest", str(manifest), "--out", f"file://{out}2")
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "exists already" in again.stderr


def test_a_batch_listed_twice_while_its_job_is_in_flight_is_enqueued_once_and_counted(
    pool, redis_server, s3_endpoint, file_root, invoices, tmp_path
):
    # Batches taken together go into Redis in one transaction: the repeated objects find
    # their twins in that same transaction, not in Redis, and must still become no job.
    refs = archive(file_root / "twice", invoices, 3)
    manifest = write_manifest(tmp_path / "manifest.txt", [refs[0], refs[1], *refs])
    out = tmp_path / "out"
    environ = env(redis_server.url, s3_endpoint, file_root)
    ran = qrw(
        environ,
        "start",
        "twice",
        "--manifest",
        str(manifest),
        "--out",
        f"file://{out}",
        "--queue",
        QUEUE,
        "--batch",
        "2",
    )
    assert ran.returncode == 0, ran.stderr[-3000:]

    assert_exactly_once(out, refs)
    assert len(lines(out)) == 3
    status = json.loads(qrw(environ, "status", "twice", "--json").stdout)
    assert status["jobs"] == 2 and status["enqueued"] == 3
    assert status["skipped_by"] == {"duplicate": 2}


def test_an_s3_prefix_is_listed_filtered_by_file_name_and_read(
    pool, redis_server, s3_endpoint, file_root, invoices, tmp_path
):
    s3 = s3_client(s3_endpoint)
    keys = [f"bf-s3/2024/{n:02d}/inv.png" for n in range(7)]
    for n, key in enumerate(keys):
        s3.put_object(Bucket=BUCKET, Key=key, Body=invoices[n % len(invoices)])
    s3.put_object(Bucket=BUCKET, Key="bf-s3/2024/notes.txt", Body=b"not an invoice")
    out = tmp_path / "out"
    environ = env(redis_server.url, s3_endpoint, file_root)

    dry = qrw(
        environ,
        "start",
        "s3dry",
        "--source",
        f"s3://{BUCKET}/bf-s3/",
        "--include",
        "*.png",
        "--out",
        f"file://{out}",
        "--dry-run",
    )
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["objects"] == 7
    assert json.loads(dry.stdout)["skipped"] == {"include": 1}
    assert not redis_server.client().exists("qrw:backfill:s3dry")  # a dry run leaves nothing

    # The output on S3 too: parts, summary and index under the prefix.
    ran = qrw(
        environ, "start", "s3", "--source", f"s3://{BUCKET}/bf-s3/", "--include", "*.png",
        "--out", f"s3://{BUCKET}/bf-out/s3/", "--queue", QUEUE, "--batch", "3",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    stored = s3_client(s3_endpoint).list_objects_v2(Bucket=BUCKET, Prefix="bf-out/s3/")
    names = sorted(item["Key"].removeprefix("bf-out/s3/") for item in stored["Contents"])
    parts = [name for name in names if name.startswith("part-")]
    assert sorted(set(names) - set(parts)) == ["index.csv", "summary.json"]
    written = []
    for name in parts:
        body = s3.get_object(Bucket=BUCKET, Key=f"bf-out/s3/{name}")["Body"].read()
        written += [json.loads(line) for line in gzip.decompress(body).decode().splitlines()]
    assert Counter(line["image"] for line in written) == Counter(
        f"s3://{BUCKET}/{key}" for key in keys
    )
    assert all(line["ok"] and line["etag"] and line["size"] > 0 for line in written)
    after = state(redis_server, "s3")
    assert after["skipped_by"] == '{"include": 1}'
    assert (after["listed"], after["skipped"], after["enqueued"]) == ("8", "1", "7")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (("--source", f"s3://{ARCHIVE}/2023/"), "QRW_S3_BUCKETS"),
        (("--source", "s3://no-such-bucket/in/"), "NoSuchBucket"),
        (("--manifest", "/nonexistent/manifest.txt"), "cannot be read"),
    ],
    ids=["outside-the-allow-list", "unlistable-bucket", "unreadable-manifest"],
)
def test_a_bad_source_is_refused_in_one_line_before_anything_is_enqueued(
    redis_server, s3_endpoint, file_root, tmp_path, request, source, message
):
    name = f"bad-{request.node.callspec.id}"
    environ = env(
        redis_server.url,
        s3_endpoint,
        file_root,
        QRW_S3_BUCKETS=f"{BUCKET},{ARCHIVE}/2024/,no-such-bucket",
    )
    ran = qrw(environ, "start", name, *source, "--out", f"file://{tmp_path}/out", "--queue", QUEUE)
    assert ran.returncode == 2, ran.stderr
    assert ran.stderr.count("\n") == 1 and message in ran.stderr, ran.stderr
    client = redis_server.client()
    assert not client.exists(f"qrw:backfill:{name}")
    assert not client.sismember("qrw:backfills", name)
    assert client.llen(f"rq:queue:{QUEUE}") == 0


@pytest.mark.parametrize(
    "option",
    [
        ("--batch", "0"),
        ("--batch", "101"),
        ("--max-in-flight", "0"),
        ("--rate", "nan"),
        ("--shard", "3/2"),
        ("--queue", "a b"),
        ("--want", "some"),
        ("--deadline-ms", "0"),
        ("--modified-after", "yesterday"),
    ],
    ids=lambda option: " ".join(option),
)
def test_a_bad_option_value_is_a_usage_error(
    redis_server, s3_endpoint, file_root, tmp_path, option
):
    environ = env(redis_server.url, s3_endpoint, file_root)
    ran = qrw(
        environ, "start", "opt", "--source", f"s3://{BUCKET}/x/", "--out", "file:///tmp/x", *option
    )
    assert ran.returncode == 2
    assert option[0] in ran.stderr.splitlines()[-1]
    assert not redis_server.client().exists("qrw:backfill:opt")


def test_a_bad_run_name_is_refused(redis_server, s3_endpoint, file_root, tmp_path):
    ran = qrw(
        env(redis_server.url, s3_endpoint, file_root),
        "start",
        "no spaces",
        "--source",
        f"s3://{BUCKET}/x/",
        "--out",
        f"file://{tmp_path}",
    )
    assert ran.returncode == 2 and ran.stderr.count("\n") == 1 and "run name" in ran.stderr


def test_a_backfill_killed_with_sigkill_and_resumed_writes_every_object_exactly_once(
    pool, redis_server, s3_endpoint, file_root, invoices, tmp_path
):
    refs = archive(file_root / "killed", invoices, 60)
    manifest = write_manifest(tmp_path / "manifest.txt", refs)
    out = tmp_path / "out"
    environ = env(redis_server.url, s3_endpoint, file_root)
    log = tmp_path / "backfill.log"
    # A rate limit keeps the run going for a few seconds, so the kill lands mid-run.
    process = spawn(
        environ,
        log,
        "start",
        "killed",
        "--manifest",
        str(manifest),
        "--out",
        f"file://{out}",
        "--queue",
        QUEUE,
        "--batch",
        "3",
        "--max-in-flight",
        "3",
        "--rate",
        "20",
    )
    wait_until(lambda: count(redis_server, "killed", "parts") >= 3, 60, "three parts")
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    before = state(redis_server, "killed")
    assert before["state"] == "running"
    assert 0 < int(before["enqueued"]) < 60

    started = time.monotonic()
    resumed = qrw({**environ, "QRW_LOG_LEVEL": "info"}, "resume", "killed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # The dead driver's lease is taken over at once on its own machine, not after it lapses.
    assert time.monotonic() - started < 14
    # Without a terminal, progress is a structured log line (the last one at the end).
    progress = [
        json.loads(line)
        for line in resumed.stderr.splitlines()
        if line.startswith("{") and '"backfill_progress"' in line
    ]
    assert progress and progress[-1]["state"] == "done"
    assert progress[-1]["written"] == progress[-1]["total"] == 60
    assert {"listed", "enqueued", "in_flight", "failed", "images_per_s", "eta_s"} <= set(
        progress[-1]
    )
    assert_exactly_once(out, refs)
    after = state(redis_server, "killed")
    assert after["state"] == "done"
    assert int(after["objects_ok"]) == 60 and int(after["enqueued"]) == 60


def test_a_worker_killed_mid_job_still_leaves_every_object_written_exactly_once(
    redis_server, s3_endpoint, file_root, invoices, start_worker, tmp_path
):
    queue = "bf-worker-kill"
    slow = file_root / "slow"
    slow.mkdir(exist_ok=True)
    slow_refs = []
    for seed in range(2):
        path = slow / f"photo-{seed}.jpg"
        path.write_bytes(no_code_invoice(800 + seed, fmt="jpeg", megapixels=6.0, photo=True).data)
        slow_refs.append(f"file://{path}")
    refs = [*archive(file_root / "worker-kill", invoices, 6)[:3], *slow_refs]
    refs += archive(file_root / "worker-kill", invoices, 6)[3:]
    manifest = write_manifest(tmp_path / "manifest.txt", refs)
    out = tmp_path / "out"
    worker = start_worker(redis_server.url, queue)
    environ = env(redis_server.url, s3_endpoint, file_root)
    log = tmp_path / "backfill.log"
    process = spawn(
        environ,
        log,
        "start",
        "worker-kill",
        "--manifest",
        str(manifest),
        "--out",
        f"file://{out}",
        "--queue",
        queue,
        "--batch",
        "2",
        "--max-in-flight",
        "2",
    )
    client = redis_server.client()

    def slow_job_running() -> bool:
        for job_id, objects in client.hgetall("qrw:backfill:worker-kill:inflight").items():
            status = client.hget(b"rq:job:" + job_id, "status")
            if status == b"started" and any(o[0] in slow_refs for o in json.loads(objects)):
                return True
        return False

    wait_until(slow_job_running, 60, "the job with the slow images to start")
    time.sleep(0.3)
    worker.kill_all()
    start_worker(redis_server.url, queue)
    assert finished(process, log, timeout=120) == 0, log.read_text()[-3000:]
    written = assert_exactly_once(out, refs)
    assert all(line["ok"] for line in written), [
        line["error"] for line in written if not line["ok"]
    ]


def test_a_redis_restart_mid_run_loses_and_repeats_nothing(
    s3_endpoint, file_root, invoices, start_worker, tmp_path
):
    server = RedisServer(tmp_path / "redis")  # its own: the restart must not disturb others
    try:
        refs = archive(file_root / "restart", invoices, 40)
        manifest = write_manifest(tmp_path / "manifest.txt", refs)
        out = tmp_path / "out"
        start_worker(server.url, QUEUE)
        environ = env(server.url, s3_endpoint, file_root)
        log = tmp_path / "backfill.log"
        process = spawn(
            environ,
            log,
            "start",
            "restart",
            "--manifest",
            str(manifest),
            "--out",
            f"file://{out}",
            "--queue",
            QUEUE,
            "--batch",
            "2",
            "--max-in-flight",
            "2",
            "--rate",
            "10",
        )
        wait_until(lambda: count(server, "restart", "parts") >= 2, 60, "two parts")
        assert count(server, "restart", "enqueued") < 40  # mid-run
        server.stop()
        time.sleep(1.5)
        server.start()
        assert finished(process, log, timeout=120) == 0, log.read_text()[-3000:]
        assert_exactly_once(out, refs)
        assert state(server, "restart")["state"] == "done"
    finally:
        server.stop()


def test_pause_stops_enqueueing_resume_goes_on_and_cancel_ends_the_run_with_a_summary(
    pool, redis_server, s3_endpoint, file_root, invoices, tmp_path
):
    refs = archive(file_root / "paused", invoices, 80)
    manifest = write_manifest(tmp_path / "manifest.txt", refs)
    out = tmp_path / "out"
    environ = env(redis_server.url, s3_endpoint, file_root)
    log = tmp_path / "backfill.log"
    process = spawn(
        environ,
        log,
        "start",
        "paused",
        "--manifest",
        str(manifest),
        "--out",
        f"file://{out}",
        "--queue",
        QUEUE,
        "--batch",
        "2",
        "--max-in-flight",
        "2",
        "--rate",
        "10",
    )
    wait_until(lambda: count(redis_server, "paused", "enqueued") >= 6, 60, "six objects enqueued")
    # Live traffic first: the driver takes QRW_BACKFILL_NICE (10), so on the workers' cores
    # it runs in the time they leave idle.
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, process.pid) == max(10, own)

    assert qrw(environ, "pause", "paused").returncode == 0
    assert state(redis_server, "paused")["state"] == "paused"
    client = redis_server.client()
    wait_until(lambda: client.hlen("qrw:backfill:paused:inflight") == 0, 60, "running jobs to end")
    enqueued = count(redis_server, "paused", "enqueued")
    time.sleep(1.0)
    assert count(redis_server, "paused", "enqueued") == enqueued  # nothing new while paused
    assert count(redis_server, "paused", "objects_ok") == enqueued  # but results collected
    assert process.poll() is None  # the driver waits, paused

    resumed = qrw(environ, "resume", "paused")
    assert resumed.returncode == 0 and "driven by" in resumed.stdout  # the live driver goes on
    wait_until(
        lambda: count(redis_server, "paused", "enqueued") >= enqueued + 4, 60, "more enqueued"
    )

    cancelled = qrw(environ, "cancel", "paused")
    assert cancelled.returncode == 0, cancelled.stderr
    assert finished(process, log) == 0
    final = state(redis_server, "paused")
    assert final["state"] == "cancelled" and final.get("finished_at")
    written = lines(out)
    assert 0 < len(written) < 80
    assert len(written) == int(final["enqueued"]) - int(final["cancelled"])
    assert len({line["image"] for line in written}) == len(written)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == "cancelled" and summary["objects"] == len(written)
    assert client.llen(f"rq:queue:{QUEUE}") == 0
    # A finished run is never driven again.
    again = qrw(environ, "resume", "paused")
    assert again.returncode == 2 and "cancelled" in again.stderr


def test_retry_makes_a_new_run_over_exactly_the_objects_that_failed_with_those_codes(
    pool, redis_server, s3_endpoint, file_root, invoices, tmp_path
):
    refs = archive(file_root / "retried", invoices, 5, corrupt=3)
    manifest = write_manifest(tmp_path / "manifest.txt", refs)
    out = tmp_path / "out"
    environ = env(redis_server.url, s3_endpoint, file_root)
    ran = qrw(
        environ,
        "start",
        "retried",
        "--manifest",
        str(manifest),
        "--out",
        f"file://{out}",
        "--queue",
        QUEUE,
        "--batch",
        "2",
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    broken = sorted(ref for ref in refs if "broken" in ref)

    # Once repaired, the retry reads them.
    for ref in broken:
        Path(ref.removeprefix("file://")).write_bytes(invoices[0])
    retried = qrw(environ, "retry", "retried", "--errors", "corrupt_image,worker_lost")
    assert retried.returncode == 0, retried.stderr[-3000:]
    assert "retried-retry-1" in retried.stdout
    retry_state = state(redis_server, "retried-retry-1")
    assert retry_state["state"] == "done" and retry_state["retry_of"] == "retried"
    retry_out = Path(json.loads(retry_state["spec"])["out"].removeprefix("file://"))
    written = assert_exactly_once(retry_out, broken)
    assert len(written) == 3

    nothing = qrw(environ, "retry", "retried", "--errors", "not_found")
    assert nothing.returncode == 2 and "nothing to retry" in nothing.stderr
    unknown = qrw(environ, "retry", "retried", "--errors", "bogus")
    assert unknown.returncode == 2 and "--errors" in unknown.stderr


def test_a_run_whose_output_cannot_be_written_fails_with_the_reason_and_resumes_once_fixed(
    pool, redis_server, s3_endpoint, file_root, invoices, tmp_path
):
    refs = archive(file_root / "unwritable", invoices, 30)
    manifest = write_manifest(tmp_path / "manifest.txt", refs)
    out = tmp_path / "out"
    environ = env(redis_server.url, s3_endpoint, file_root)
    log = tmp_path / "backfill.log"
    process = spawn(
        environ, log, "start", "unwritable", "--manifest", str(manifest), "--out",
        f"file://{out}", "--queue", QUEUE, "--batch", "2", "--max-in-flight", "2", "--rate", "10",
    )  # fmt: skip
    wait_until(lambda: count(redis_server, "unwritable", "parts") >= 1, 60, "a part")
    out.rename(tmp_path / "moved")
    out.write_text("a file where the output folder was")
    assert finished(process, log) == 1
    failed = state(redis_server, "unwritable")
    assert failed["state"] == "failed" and "not a folder" in failed["error"]
    assert "not a folder" in qrw(environ, "status", "unwritable").stdout

    out.unlink()
    (tmp_path / "moved").rename(out)
    resumed = qrw(environ, "resume", "unwritable")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_exactly_once(out, refs)
    assert "error" not in state(redis_server, "unwritable")


def test_rate_caps_the_images_enqueued_per_second(
    pool, redis_server, s3_endpoint, file_root, invoices, tmp_path
):
    refs = archive(file_root / "rated", invoices, 12)
    manifest = write_manifest(tmp_path / "manifest.txt", refs)
    environ = env(redis_server.url, s3_endpoint, file_root)
    ran = qrw(
        environ, "start", "rated", "--manifest", str(manifest), "--out", f"file://{tmp_path}/out",
        "--queue", QUEUE, "--batch", "2", "--rate", "8",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    run = state(redis_server, "rated")
    took = datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["started_at"])
    # 12 images at 8/s: the last batch cannot go in before 1.5 s (unlimited: a fraction of one).
    assert took.total_seconds() >= 1.4


def test_a_run_resumed_after_its_results_expired_enqueues_the_lost_jobs_again(
    pool, redis_server, s3_endpoint, file_root, invoices, tmp_path
):
    """A driver away for longer than the reply list lives (QRW_RESULT_TTL) finds jobs in
    flight whose hash, reply and result key all expired: it enqueues them again. Where only
    the reply expired, the result key (kept `result_ttl`) still gives the result."""
    refs = archive(file_root / "expired", invoices, 16)
    manifest = write_manifest(tmp_path / "manifest.txt", refs)
    out = tmp_path / "out"
    environ = env(redis_server.url, s3_endpoint, file_root)
    log = tmp_path / "backfill.log"
    client = redis_server.client()
    # A queue no worker serves yet: the jobs wait there while the driver is away.
    queue = "bf-expired"
    process = spawn(
        environ, log, "start", "expired", "--manifest", str(manifest), "--out", f"file://{out}",
        "--queue", queue, "--batch", "2", "--max-in-flight", "8",
    )  # fmt: skip
    wait_until(lambda: count(redis_server, "expired", "jobs") == 8, 60, "eight jobs")
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    worker = WorkerProcess(
        worker_env(redis_server.url, s3_endpoint, file_root), queue, 1, log=tmp_path / "w.log"
    )
    try:
        wait_until(lambda: client.llen("qrw:reply:backfill:expired") == 8, 60, "eight results")
        # What a day's wait does: the reply list, the finished job hashes and, for half of
        # the jobs, the result keys expire.
        job_ids = sorted(j.decode() for j in client.hkeys("qrw:backfill:expired:inflight"))
        client.delete("qrw:reply:backfill:expired", *(f"rq:job:{j}" for j in job_ids))
        client.delete(*(f"qrw:result:{j}" for j in job_ids[:4]))
        client.delete(*(f"qrw:delivery:{j}" for j in job_ids[:4]))

        resumed = qrw(environ, "resume", "expired")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    finally:
        worker.stop()
    written = assert_exactly_once(out, refs)
    assert all(line["ok"] for line in written)


def test_cancel_of_a_run_whose_process_died_finishes_it_itself(
    pool, redis_server, s3_endpoint, file_root, invoices, tmp_path
):
    refs = archive(file_root / "orphan", invoices, 40)
    manifest = write_manifest(tmp_path / "manifest.txt", refs)
    out = tmp_path / "out"
    environ = env(redis_server.url, s3_endpoint, file_root)
    log = tmp_path / "backfill.log"
    process = spawn(
        environ, log, "start", "orphan", "--manifest", str(manifest), "--out", f"file://{out}",
        "--queue", QUEUE, "--batch", "2", "--max-in-flight", "2", "--rate", "10",
    )  # fmt: skip
    wait_until(lambda: count(redis_server, "orphan", "parts") >= 1, 60, "a part")
    process.send_signal(signal.SIGKILL)
    process.wait(10)

    cancelled = qrw(environ, "cancel", "orphan")
    assert cancelled.returncode == 0, cancelled.stderr[-3000:]
    assert cancelled.stdout.strip().endswith("backfill orphan: cancelled")
    final = state(redis_server, "orphan")
    assert final["state"] == "cancelled" and final.get("finished_at")
    written = lines(out)
    assert len(written) == int(final["enqueued"]) - int(final["cancelled"]) < 40
    assert len({line["image"] for line in written}) == len(written)
    assert json.loads((out / "summary.json").read_text())["state"] == "cancelled"


def test_a_dry_run_checks_the_output_as_start_does(
    redis_server, s3_endpoint, file_root, invoices, tmp_path
):
    refs = archive(file_root / "dry-out", invoices, 3)
    manifest = write_manifest(tmp_path / "manifest.txt", refs)
    environ = env(redis_server.url, s3_endpoint, file_root)
    used = tmp_path / "used"
    used.mkdir()
    (used / "part-000000.jsonl.gz").write_bytes(gzip.compress(b""))
    for out, message in (
        ("s3://no-such-output-bucket/runs/x/", "NoSuchBucket"),
        (f"file://{used}", "already holds a backfill's output"),
    ):
        dry = qrw(
            environ, "start", "dry-out", "--manifest", str(manifest), "--out", out, "--dry-run"
        )
        assert dry.returncode == 2, (out, dry.stdout, dry.stderr)
        assert dry.stderr.count("\n") == 1 and message in dry.stderr, dry.stderr
        assert not dry.stdout
    fine = qrw(
        environ, "start", "dry-out", "--manifest", str(manifest), "--out",
        f"file://{tmp_path}/fresh", "--dry-run",
    )  # fmt: skip
    assert fine.returncode == 0, fine.stderr
    assert json.loads(fine.stdout)["objects"] == 3
    # The probe is gone again: a dry run leaves nothing behind, in Redis or the output.
    assert list((tmp_path / "fresh").iterdir()) == []
    assert not redis_server.client().exists("qrw:backfill:dry-out")


def test_an_object_a_plain_manifest_names_twice_or_spells_differently_gets_one_line(
    pool, redis_server, s3_endpoint, file_root, invoices, tmp_path
):
    # Issue 17: 23 objects named on 31 lines gave 31 lines. Exact repeats in later batches,
    # and other spellings the workers' reference parser resolves to the same object: for a
    # file, its resolved path ("./", "//", localhost, percent-encoding, a symlink); for S3,
    # the bucket and the percent-decoded key.
    folder = file_root / "dup"
    files = archive(folder, invoices, 21)
    (folder / "link.png").symlink_to(folder / "inv-0005.png")
    s3 = s3_client(s3_endpoint)
    s3_refs = []
    for n in range(2):
        s3.put_object(Bucket=BUCKET, Key=f"bf-dup/inv-{n}.png", Body=invoices[n])
        s3_refs.append(f"s3://{BUCKET}/bf-dup/inv-{n}.png")
    refs = [*files, *s3_refs]
    again = [
        files[0],
        files[20],
        s3_refs[1],
        f"s3://{BUCKET}/bf-%64up/inv%2D0.png",
        f"file://{folder}/./inv-0001.png",
        f"file://{folder}//inv-0002.png",
        f"file://localhost{folder}/inv%2D0003.png",
        f"file://{folder}/link.png",
    ]
    # S3 keys are opaque: "bf-dup/./inv-1.png" is another key than "bf-dup/inv-1.png".
    other = f"s3://{BUCKET}/bf-dup/./inv-1.png"
    manifest = write_manifest(
        tmp_path / "manifest.txt", [*refs[:10], *again[:3], *refs[10:], *again[3:], other]
    )
    out = tmp_path / "out"
    environ = env(redis_server.url, s3_endpoint, file_root)
    ran = qrw(
        environ, "start", "dup", "--manifest", str(manifest), "--out", f"file://{out}",
        "--queue", QUEUE, "--batch", "4", "--max-in-flight", "2",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]

    written = lines(out)
    assert len(written) == 24
    per_object = Counter(line["key"] for line in written)
    assert not [key for key, n in per_object.items() if n > 1]
    # The first spelling is the one read; the other key is an object of its own.
    assert {line["image"] for line in written} == {*refs, other}
    assert next(line for line in written if line["image"] == other)["error"]["code"] == "not_found"
    status = json.loads(qrw(environ, "status", "dup", "--json").stdout)
    assert status["skipped_by"] == {"duplicate": 8}
    assert (status["listed"], status["enqueued"], status["skipped"]) == (32, 24, 8)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["objects"] == 24 and summary["duplicates"] == 8
    # What the run kept to tell them apart is gone once the listing has ended.
    assert not list(redis_server.client().scan_iter("qrw:backfill:dup:seen:*"))


def test_duplicates_stay_single_across_a_sigkill_and_resume(
    pool, redis_server, s3_endpoint, file_root, invoices, tmp_path
):
    folder = file_root / "dup-killed"
    refs = archive(folder, invoices, 30)
    lines_of_manifest = []
    for n, ref in enumerate(refs):
        lines_of_manifest.append(ref)
        if n % 2:
            lines_of_manifest.append(ref.replace("/inv-", "/./inv-"))
    lines_of_manifest += refs  # every object once more, after the kill
    manifest = write_manifest(tmp_path / "manifest.txt", lines_of_manifest)
    out = tmp_path / "out"
    environ = env(redis_server.url, s3_endpoint, file_root)
    log = tmp_path / "backfill.log"
    process = spawn(
        environ, log, "start", "dup-killed", "--manifest", str(manifest), "--out",
        f"file://{out}", "--queue", QUEUE, "--batch", "3", "--max-in-flight", "2", "--rate", "20",
    )  # fmt: skip
    wait_until(lambda: count(redis_server, "dup-killed", "parts") >= 3, 60, "three parts")
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    assert 0 < count(redis_server, "dup-killed", "enqueued") < 30

    resumed = qrw(environ, "resume", "dup-killed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_exactly_once(out, refs)
    after = state(redis_server, "dup-killed")
    assert after["state"] == "done" and int(after["enqueued"]) == 30
    assert json.loads(after["skipped_by"]) == {"duplicate": 15 + 30}
    assert int(after["listed"]) == len(lines_of_manifest)


def test_status_says_when_a_run_lost_its_backfill_process_and_that_resume_continues_it(
    pool, redis_server, s3_endpoint, file_root, invoices, tmp_path
):
    refs = archive(file_root / "gone", invoices, 40)
    manifest = write_manifest(tmp_path / "manifest.txt", refs)
    environ = env(redis_server.url, s3_endpoint, file_root)
    log = tmp_path / "backfill.log"
    process = spawn(
        environ, log, "start", "gone", "--manifest", str(manifest), "--out",
        f"file://{tmp_path}/out", "--queue", QUEUE, "--batch", "2", "--max-in-flight", "2",
        "--rate", "10",
    )  # fmt: skip
    wait_until(lambda: count(redis_server, "gone", "parts") >= 1, 60, "a part")
    alive = json.loads(qrw(environ, "status", "gone", "--json").stdout)
    assert alive["driver"] and alive["driver_gone_since"] is None
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    killed_at = datetime.now(UTC)

    status = json.loads(qrw(environ, "status", "gone", "--json").stdout)
    assert status["state"] == "running" and status["driver"] is None
    since = datetime.fromisoformat(status["driver_gone_since"])
    # The last renewal of its lease: at most one renewal interval (5 s) before the kill.
    assert killed_at - timedelta(seconds=7) <= since <= killed_at
    assert status["last_driver"].split(":")[1] == str(process.pid)
    assert "qrw backfill resume gone" in status["hint"]
    table = qrw(environ, "status", "gone")
    assert table.returncode == 0
    assert "no backfill process drives it" in table.stdout
    assert status["driver_gone_since"] in table.stdout
    assert "`qrw backfill resume gone` continues it" in table.stdout

    assert qrw(environ, "cancel", "gone").returncode == 0
    finished_status = json.loads(qrw(environ, "status", "gone", "--json").stdout)
    assert finished_status["driver_gone_since"] is None and finished_status["hint"] is None


def test_the_rate_and_eta_after_a_resume_count_only_what_this_process_saw_done(
    redis_server, s3_endpoint, file_root, invoices, tmp_path
):
    # The results that waited for the resumed process (done while none ran) were counted
    # as done in its first second: the first rate was several times the real one, the ETA
    # a fraction of the time left (issue 17: 4.9 s shown for 25 s of work).
    queue = "bf-eta"  # no worker serves it until the driver is dead
    refs = archive(file_root / "eta", invoices, 96)
    manifest = write_manifest(tmp_path / "manifest.txt", refs)
    environ = env(redis_server.url, s3_endpoint, file_root)
    log = tmp_path / "backfill.log"
    process = spawn(
        environ, log, "start", "eta", "--manifest", str(manifest), "--out",
        f"file://{tmp_path}/out", "--queue", queue, "--batch", "4", "--max-in-flight", "16",
        "--rate", "10",
    )  # fmt: skip
    wait_until(lambda: count(redis_server, "eta", "jobs") == 16, 60, "sixteen jobs")
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    client = redis_server.client()
    worker = WorkerProcess(
        worker_env(redis_server.url, s3_endpoint, file_root), queue, 1, log=tmp_path / "w.log"
    )
    try:
        wait_until(lambda: client.llen("qrw:reply:backfill:eta") == 16, 60, "the 16 results")
        resumed = qrw({**environ, "QRW_LOG_LEVEL": "info"}, "resume", "eta")
    finally:
        worker.stop()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    progress = [
        json.loads(line)
        for line in resumed.stderr.splitlines()
        if line.startswith("{") and '"backfill_progress"' in line
    ]
    rated = [line for line in progress if line["images_per_s"] is not None]
    assert rated, progress
    # --rate 10 bounds what this process can see done; with the 64 waiting results counted
    # the first rate came out near 30 images/s.
    for line in rated:
        assert line["images_per_s"] <= 15, rated
        if line["eta_s"] is not None and line["total"] is not None:
            left = line["total"] - line["written"]
            assert line["eta_s"] == pytest.approx(left / line["images_per_s"], abs=0.2)
    assert_exactly_once(tmp_path / "out", refs)


def test_a_driver_killed_after_its_listing_ended_counts_the_manifest_tail_once(
    redis_server, s3_endpoint, file_root, invoices, tmp_path
):
    # The skips after the last object (bad lines, duplicates) are stored when the listing
    # ends; a resume that read the listing's tail again counted them twice.
    queue = "bf-tail"  # no worker serves it until the driver is dead: the run cannot end
    refs = archive(file_root / "tail", invoices, 6)
    manifest = write_manifest(
        tmp_path / "manifest.txt", [*refs, "not a reference", refs[0], "nor this", refs[1], "x"]
    )
    environ = env(redis_server.url, s3_endpoint, file_root)
    log = tmp_path / "backfill.log"
    process = spawn(
        environ, log, "start", "tail", "--manifest", str(manifest), "--out",
        f"file://{tmp_path}/out", "--queue", queue, "--batch", "2",
    )  # fmt: skip
    wait_until(lambda: count(redis_server, "tail", "bad_lines") == 3, 60, "the listing's end")
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    worker = WorkerProcess(
        worker_env(redis_server.url, s3_endpoint, file_root), queue, 1, log=tmp_path / "w.log"
    )
    try:
        resumed = qrw(environ, "resume", "tail")
    finally:
        worker.stop()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_exactly_once(tmp_path / "out", refs)
    after = state(redis_server, "tail")
    assert json.loads(after["skipped_by"]) == {"bad_line": 3, "duplicate": 2}
    assert (after["bad_lines"], after["skipped"], after["listed"]) == ("3", "2", "8")
