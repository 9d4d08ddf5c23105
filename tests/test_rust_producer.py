"""docs/protocol.md from the producer's language: examples/rust-producer, built with cargo
and run against real workers.

`qr-producer` is a standard-library-only Rust program (its own RESP client and JSON
reader): nothing on its side shares code with the worker, so what passes here is the
contract itself. Each test runs the binary as a user would and reads what it prints.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
import uuid
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from models.synth import digital_invoice
from tests.services import RedisServer, WorkerProcess, free_port, wait_until
from worker.queue import producer

ROOT = Path(__file__).resolve().parent.parent
CRATE = ROOT / "examples" / "rust-producer"
# Under build/ (ignored by git): kept between sessions, so cargo rebuilds only on a change.
TARGET = ROOT / "build" / "rust-producer"
RQ_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture(scope="session")
def qr_producer() -> Path:
    """The release binary, built once per session (`cargo build --offline --locked`)."""
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("cargo is not installed (make setup installs Debian's cargo)")
    built = subprocess.run(
        [cargo, "build", "--offline", "--locked", "--release", "--target-dir", str(TARGET)],
        cwd=CRATE,
        capture_output=True,
        text=True,
        timeout=600,  # a cold build on a busy two-core machine
        check=False,
    )
    assert built.returncode == 0, f"cargo build failed:\n{built.stderr[-4000:]}"
    return TARGET / "release" / "qr-producer"


Run = Callable[..., subprocess.CompletedProcess[str]]


def test_its_own_unit_tests_pass(qr_producer: Path) -> None:
    """RESP encoding, URLs, the JSON reader and writer, RQ timestamps, arguments."""
    tested = subprocess.run(
        ["cargo", "test", "--offline", "--locked", "--release", "--target-dir", str(TARGET)],
        cwd=CRATE,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout[-4000:] + tested.stderr[-4000:]
    assert re.search(r"test result: ok\. [1-9]\d* passed; 0 failed", tested.stdout)


@pytest.fixture
def run(qr_producer: Path, redis_server: RedisServer) -> Run:
    """qr-producer with REDIS_URL set to the session's Redis, as a deployment would set it."""

    def run(
        *args: str, redis_url: str | None = None, timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "REDIS_URL": redis_url or redis_server.url}
        return subprocess.run(
            [str(qr_producer), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run


def invoice(file_root: Path, name: str, seed: int) -> tuple[str, str]:
    """A born-digital invoice with one UTF-8 code: its file:// reference and the code's text."""
    sample = digital_invoice(seed, payload_kind="utf8")
    (file_root / name).write_bytes(sample.data)
    return f"file://{file_root}/{name}", sample.codes[0].payload.decode("utf-8")


def jobs(stdout: str) -> dict[str, list[str]]:
    """The printed results: each job's header line and the indented lines under it."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in stdout.splitlines():
        if line.startswith("job="):
            current = [line]
            found[line.split()[0].removeprefix("job=")] = current
        else:
            current.append(line)
    return found


def pairs(line: str) -> dict[str, str]:
    """`key=value` words of one line (values without spaces)."""
    return dict(word.split("=", 1) for word in line.split() if "=" in word)


def shown_text(line: str) -> str:
    """The code's text as a `code` line shows it (JSON-quoted, cut to 60 characters)."""
    return json.loads(line.split(" text=", 1)[1])


def expected_shown(text: str) -> str:
    return text if len(text) <= 60 else text[:60] + "..."


def test_one_job_per_reference_prints_each_results_codes_and_timings(
    run: Run, redis_server: RedisServer, shared_queue: str, file_root: Path
) -> None:
    first, first_text = invoice(file_root, "rust-1.png", 1301)
    second, second_text = invoice(file_root, "rust-2.png", 1302)

    done = run("--queue", shared_queue, "--request-id", "inv", first, second)

    assert done.returncode == 0, done.stderr
    printed = jobs(done.stdout)
    assert len(printed) == 2
    by_image = {pairs(lines[1])["image"]: (job_id, lines) for job_id, lines in printed.items()}
    for ref, text, request_id in ((first, first_text, "inv-1"), (second, second_text, "inv-2")):
        job_id, (head, image, code, timings) = by_image[ref]
        assert pairs(head)["ok"] == "true"
        assert pairs(head)["request_id"] == request_id
        assert pairs(image)["codes"] == "1"
        assert code.startswith("    code stage=")
        assert shown_text(code) == expected_shown(text)
        assert timings.startswith("    timings_ms queue_wait=")
        assert "total=" in timings
        # What the worker stored is the document the producer printed, and the job hash
        # it ran is the one qr-producer wrote.
        client = redis_server.client()
        stored = json.loads(client.get(f"qrw:result:{job_id}"))
        assert (stored["job_id"], stored["request_id"], stored["image"]) == (
            job_id,
            request_id,
            ref,
        )
        data = client.hget(f"rq:job:{job_id}", "data")
        with contextlib.suppress(zlib.error):
            data = zlib.decompress(data)  # RQ saves the job again, compressed, once it ran
        function, instance, (payload,), kwargs = json.loads(data)
        assert (function, instance, kwargs) == ("jobs.scan", None, {})
        assert payload["image"] == ref
        assert payload["request_id"] == request_id
        assert payload["reply_to"].startswith("qrw:reply:")


def test_the_job_hash_is_the_one_docs_protocol_md_describes(
    run: Run, redis_server: RedisServer
) -> None:
    queue = f"rust-idle-{uuid.uuid4().hex[:8]}"  # no worker listens: the job stays as written
    before = datetime.now(UTC)

    done = run("--queue", queue, "--wait", "0", "s3://invoices/2026/inv-1.jpg")

    assert done.returncode == 0, done.stderr
    (job_id,) = done.stdout.split()
    client = redis_server.client()
    job = {k.decode(): v.decode() for k, v in client.hgetall(f"rq:job:{job_id}").items()}
    function, instance, (payload,), kwargs = json.loads(job["data"])
    assert (function, instance, kwargs) == ("jobs.scan", None, {})
    assert payload.keys() == {"image", "request_id"}  # no reply_to: nobody waits
    assert payload["image"] == "s3://invoices/2026/inv-1.jpg"
    assert re.fullmatch(r"qr-producer-\d+-1", payload["request_id"])
    assert (job["origin"], job["status"], job["timeout"]) == (queue, "queued", "60")
    assert RQ_TIMESTAMP.match(job["created_at"]) and job["enqueued_at"] == job["created_at"]
    stamped = datetime.strptime(job["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs((stamped - before).total_seconds()) < 30
    assert client.lrange(f"rq:queue:{queue}", 0, -1) == [job_id.encode()]
    assert client.sismember("rq:queues", f"rq:queue:{queue}")
    # The same fields as the project's own Python producer writes.
    python_id = producer.enqueue(client, {"image": "s3://invoices/x.jpg"}, queue=queue)
    assert set(client.hgetall(f"rq:job:{python_id}")) == {k.encode() for k in job}
    client.delete(f"rq:queue:{queue}", f"rq:job:{job_id}", f"rq:job:{python_id}")
    client.srem("rq:queues", f"rq:queue:{queue}")


def test_a_reference_travels_as_exact_json_text(run: Run, redis_server: RedisServer) -> None:
    queue = f"rust-idle-{uuid.uuid4().hex[:8]}"
    odd = 's3://invoices/"quoted"\\back\nnew\tline é 請求書 😀\x7f.png'

    done = run("--queue", queue, "--wait", "0", "--request-id", 'inv "7"', odd)

    assert done.returncode == 0, done.stderr
    (job_id,) = done.stdout.split()
    client = redis_server.client()
    (payload,) = json.loads(client.hget(f"rq:job:{job_id}", "data"))[2]
    assert (payload["image"], payload["request_id"]) == (odd, 'inv "7"')
    client.delete(f"rq:queue:{queue}", f"rq:job:{job_id}")


def test_a_password_and_a_database_in_the_url_are_used(qr_producer: Path, tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    try:
        server.client().config_set("requirepass", "s3cr@t")  # after start: its ping has none
        base = f"redis://:s3cr%40t@127.0.0.1:{server.port}"
        done = subprocess.run(
            [str(qr_producer), "--redis", f"{base}/3", "--wait", "0", "s3://invoices/a.jpg"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        (job_id,) = done.stdout.split()
        db3 = redis.Redis(port=server.port, password="s3cr@t", db=3)
        assert db3.lrange("rq:queue:qr", 0, -1) == [job_id.encode()]
        refused = subprocess.run(
            [str(qr_producer), "--redis", f"redis://:wrong@127.0.0.1:{server.port}", "x"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert refused.returncode == 1
        assert "WRONGPASS" in refused.stderr or "invalid password" in refused.stderr
    finally:
        server.stop()


def test_a_command_refused_inside_the_transaction_is_reported(
    run: Run, redis_server: RedisServer
) -> None:
    queue = f"rust-broken-{uuid.uuid4().hex[:8]}"
    client = redis_server.client()
    client.set(f"rq:queue:{queue}", "not a list")  # RPUSH then fails inside EXEC
    jobs_before = set(client.scan_iter("rq:job:*"))

    done = run("--queue", queue, "--wait", "5", "s3://invoices/a.jpg")

    assert done.returncode == 1
    assert "WRONGTYPE" in done.stderr
    assert "the job was not queued" in done.stderr
    # Redis ran the HSET before the RPUSH failed (no rollback): the producer took it back.
    assert not [key for key in client.scan_iter("rq:job:*") if key not in jobs_before]
    client.delete(f"rq:queue:{queue}")


def test_a_batch_is_one_job_with_one_line_per_image(
    run: Run, redis_server: RedisServer, shared_queue: str, file_root: Path
) -> None:
    made = [invoice(file_root, f"rust-batch-{i}.png", 1310 + i) for i in range(3)]

    done = run("--queue", shared_queue, "--batch", *(ref for ref, _ in made))

    assert done.returncode == 0, done.stderr
    ((job_id, lines),) = jobs(done.stdout).items()
    images = [line for line in lines if line.startswith("  image=")]
    assert [pairs(line)["image"] for line in images] == [ref for ref, _ in made]
    codes = [line for line in lines if line.startswith("    code ")]
    assert [shown_text(line) for line in codes] == [expected_shown(text) for _, text in made]
    assert lines[-1].startswith("  job timings_ms queue_wait=")
    stored = json.loads(redis_server.client().get(f"qrw:result:{job_id}"))
    assert len(stored["items"]) == 3
    assert json.loads(redis_server.client().hget(f"rq:job:{job_id}", "timeout")) == 90


def test_a_refused_reference_is_printed_with_its_error_code_and_exits_1(
    run: Run, shared_queue: str, file_root: Path
) -> None:
    good, _ = invoice(file_root, "rust-ok.png", 1320)
    outside = "file:///etc/hostname"  # not under QRW_FILE_ROOTS

    done = run("--queue", shared_queue, good, outside)

    assert done.returncode == 1
    by_image = {pairs(lines[1])["image"]: lines for lines in jobs(done.stdout).values()}
    assert pairs(by_image[good][0])["ok"] == "true"
    head, image = by_image[outside][:2]
    assert pairs(head)["ok"] == "false"
    assert pairs(head)["error"] == "refused_reference"
    assert pairs(image)["error"] == "refused_reference"
    assert "message=" in image


def test_no_result_in_time_exits_1_naming_the_jobs(run: Run, redis_server: RedisServer) -> None:
    queue = f"rust-nobody-{uuid.uuid4().hex[:8]}"

    done = run("--queue", queue, "--wait", "1", "s3://invoices/late.jpg")

    assert done.returncode == 1
    assert "1 job(s) gave no result within 1 s" in done.stderr
    client = redis_server.client()
    (job_id,) = client.lrange(f"rq:queue:{queue}", 0, -1)
    assert job_id.decode() in done.stderr
    client.delete(f"rq:queue:{queue}", f"rq:job:{job_id.decode()}")


@pytest.mark.parametrize(
    "args",
    [
        (),  # nothing to enqueue, nothing to collect
        ("--timeout", "0", "s3://invoices/a.jpg"),
        ("--timeout", "1.5", "s3://invoices/a.jpg"),
        ("--want", "most", "s3://invoices/a.jpg"),
        ("--redis", "http://127.0.0.1:6379", "s3://invoices/a.jpg"),
        ("--count", "2", "s3://invoices/a.jpg"),  # --count is for a collector without REFs
        ("--frobnicate", "s3://invoices/a.jpg"),
    ],
)
def test_usage_errors_exit_2_before_touching_redis(run: Run, args: tuple[str, ...]) -> None:
    done = run(*args, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert done.returncode == 2
    assert "usage: qr-producer" in done.stderr or "--redis" in done.stderr


def test_an_unreachable_redis_is_a_failure_not_a_hang(run: Run) -> None:
    done = run("s3://invoices/a.jpg", redis_url=f"redis://127.0.0.1:{free_port()}/0", timeout=30)
    assert done.returncode == 1
    assert "redis connection" in done.stderr


def test_a_consumer_group_collects_every_result_once_across_a_worker_restart(
    qr_producer: Path, start_worker: Callable[..., WorkerProcess], file_root: Path, tmp_path: Path
) -> None:
    # A Redis of its own: the stream then holds only this test's results, so "every result
    # once" is exact.
    server = RedisServer(tmp_path / "redis")
    try:
        collect_across_a_restart(qr_producer, server, start_worker, file_root)
    finally:
        server.stop()


def collect_across_a_restart(
    qr_producer: Path,
    server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    file_root: Path,
) -> None:
    client = server.client()

    def producer_cmd(*args: str) -> list[str]:
        return [str(qr_producer), "--redis", server.url, "--collect", "billing", *args]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(producer_cmd(*args), capture_output=True, text=True, timeout=120)

    # A worker runs; the first collection creates the group (XGROUP CREATE ... MKSTREAM).
    worker = start_worker(server.url, "qr")
    ref, _ = invoice(file_root, "rust-group-0.png", 1330)
    first = run("--consumer", "c1", ref)
    assert first.returncode == 0, first.stderr
    assert "created consumer group billing" in first.stderr
    assert len(jobs(first.stdout)) == 1

    # The worker stops; jobs are enqueued and wait; a worker starts again.
    worker.stop()
    refs = [invoice(file_root, f"rust-group-{i}.png", 1330 + i)[0] for i in range(1, 4)]
    collector = subprocess.Popen(
        producer_cmd("--consumer", "c1", "--wait", "120", *refs),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: client.llen("rq:queue:qr") == 3, 30, "the three jobs to be queued")
        stream_before = client.xlen("qrw:results")
        time.sleep(0.5)
        assert client.xlen("qrw:results") == stream_before  # nobody is working
        start_worker(server.url, "qr")
        out, err = collector.communicate(timeout=120)
    finally:
        if collector.poll() is None:
            collector.kill()
    assert collector.returncode == 0, err
    collected = jobs(out)
    assert sorted(pairs(lines[1])["image"] for lines in collected.values()) == sorted(refs)
    assert all(pairs(lines[0])["entry"] for lines in collected.values())
    assert client.xpending("qrw:results", "billing")["pending"] == 0

    # Every result went to the group once: another consumer finds nothing left.
    later = run("--consumer", "c2", "--idle", "1")
    assert later.returncode == 0, later.stderr
    assert later.stdout == ""
    assert "collected 0 result(s)" in later.stderr

    # A collector that read an entry and died before XACK gets it back when it restarts
    # under the same name (its pending history is read first), and acks it then.
    ref, _ = invoice(file_root, "rust-group-4.png", 1334)
    enqueued = subprocess.run(
        [str(qr_producer), "--redis", server.url, "--wait", "0", ref],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    (job_id,) = enqueued.stdout.split()
    wait_until(
        lambda: client.xreadgroup("billing", "c3", {"qrw:results": ">"}, count=1, block=1000),
        60,
        "c3 to read the job's entry",
    )
    assert client.xpending("qrw:results", "billing")["pending"] == 1
    restarted = run("--consumer", "c3", "--count", "1", "--idle", "5")
    assert restarted.returncode == 0, restarted.stderr
    assert list(jobs(restarted.stdout)) == [job_id]
    assert client.xpending("qrw:results", "billing")["pending"] == 0
