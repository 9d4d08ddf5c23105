"""Small things `qrw` users hit (issue 17, points 15 and 16), each through the real command.

- A pool whose metrics port is taken refuses to start, in one line, instead of running
  without metrics while Prometheus scrapes whoever holds the port.
- Output piped into a reader that stops early (`qrw status --json | head`) ends quietly.
- Third-party libraries' INFO lines (botocore's) stay out of the log; our events and RQ's
  lifecycle lines stay in.
- `qrw enqueue --wait` to a queue no worker serves says so at once.
- `qrw bench` without matplotlib writes its report without the plots, and says so first.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import BUCKET, s3_client
from tests.services import RedisServer

# The status of a process cut off by SIGPIPE as shells report it (128 + 13): what `seq` or
# `cat` give in the same pipe.
CUT_OFF_BY_SIGPIPE = 141


def qrw(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


# --- the metrics port (point 15) --------------------------------------------------------------


def test_a_pool_whose_metrics_port_is_taken_refuses_to_start_with_one_line(
    redis_server: RedisServer,
) -> None:
    queue = "qr-metrics-taken"
    with socket.socket() as holder:  # another pool, or anything else, on the port
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        out = qrw(
            "worker",
            "--burst",
            "--queues",
            queue,
            env={"REDIS_URL": redis_server.url, "QRW_METRICS_PORT": str(port)},
        )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("qrw: error: "), out.stderr[-2000:]
    assert f"QRW_METRICS_PORT={port}" in last
    assert "QRW_METRICS_PORT=0" in last  # the way to run without metrics
    assert redis_server.client().scard(f"rq:workers:{queue}") == 0  # no worker started


def test_a_pool_with_metrics_turned_off_starts_whatever_holds_the_default_port(
    redis_server: RedisServer,
) -> None:
    out = qrw(
        "worker",
        "--burst",
        "--queues",
        "qr-metrics-off",
        env={"REDIS_URL": redis_server.url, "QRW_METRICS_PORT": "0"},
    )
    assert out.returncode == 0, out.stderr[-2000:]


# --- a reader that stops early ----------------------------------------------------------------


def piped_to_a_closed_reader(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`qrw ARGS | head -0`: the reader has gone before qrw writes its first byte."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            env={**os.environ, **env},
        )
    finally:
        os.close(write)


def test_status_json_into_a_reader_that_has_gone_ends_quietly(redis_server: RedisServer) -> None:
    out = piped_to_a_closed_reader("status", "--json", env={"REDIS_URL": redis_server.url})
    assert out.stderr == ""
    assert out.returncode == CUT_OFF_BY_SIGPIPE


def test_every_command_ends_quietly_when_its_reader_has_gone(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    from models.synth import digital_invoice

    (tmp_path / "a.png").write_bytes(digital_invoice(160).data)
    for args in (
        ("scan", "--json", str(tmp_path)),
        ("enqueue", "--queue", "qr-piped", f"file://{tmp_path}/a.png"),
        ("backfill", "status"),
    ):
        out = piped_to_a_closed_reader(*args, env={"REDIS_URL": redis_server.url})
        assert "Traceback" not in out.stderr, (args, out.stderr[-2000:])
        assert "BrokenPipeError" not in out.stderr, args
        assert out.returncode == CUT_OFF_BY_SIGPIPE, (args, out.stderr[-2000:])


# --- third-party INFO lines -------------------------------------------------------------------


def test_a_backfill_command_prints_no_botocore_info_lines(s3_endpoint: str, tmp_path: Path) -> None:
    s3_client(s3_endpoint).put_object(Bucket=BUCKET, Key="quiet/a.png", Body=b"\x89PNG")
    out = qrw(
        "backfill",
        "start",
        "quiet",
        "--source",
        f"s3://{BUCKET}/quiet/",
        "--out",
        f"file://{tmp_path}",
        "--dry-run",
        env={
            "AWS_ENDPOINT_URL": s3_endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "QRW_S3_BUCKETS": BUCKET,
            "QRW_LOG_LEVEL": "info",
        },
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["objects"] == 1
    assert "botocore" not in out.stderr, out.stderr
    assert "Found credentials" not in out.stderr


def test_the_log_keeps_our_events_rqs_lines_and_third_party_warnings() -> None:
    program = """
import logging, structlog
from worker import logs
from worker.settings import Settings
logs.configure(Settings.from_env({}, log_level="info"))
structlog.get_logger("worker").info("our_event", job_id="j1")
logging.getLogger("rq.worker").info("rq lifecycle line")
logging.getLogger("botocore.credentials").info("Found credentials in environment variables.")
logging.getLogger("urllib3.connectionpool").info("Starting new HTTPS connection")
logging.getLogger("botocore.endpoint").warning("a warning of theirs")
"""
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    events = [json.loads(line) for line in out.stderr.splitlines()]
    assert [e["event"] for e in events] == ["our_event", "rq lifecycle line", "a warning of theirs"]
    assert events[0]["job_id"] == "j1"


# --- enqueue to a queue nobody serves ---------------------------------------------------------


def test_enqueue_wait_to_a_queue_no_worker_serves_warns_at_once_and_still_enqueues(
    redis_server: RedisServer,
) -> None:
    queue = "qr-unserved-wait"  # a queue of its own: others count what waits on theirs
    wait_s = 7  # past redis-py's default socket timeout (5 s), which a single BLPOP outlasted
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker.cli",
            "enqueue",
            "--queue",
            queue,
            "--wait",
            str(wait_s),
            "file:///srv/invoices/a.png",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "REDIS_URL": redis_server.url},
    )
    started = time.monotonic()
    assert process.stderr is not None
    first = process.stderr.readline()
    warned_after = time.monotonic() - started
    rest = process.stderr.read()
    process.wait(60)
    assert first.startswith("qrw: warning: "), first + rest
    assert repr(queue) in first and "no worker" in first
    assert warned_after < wait_s - 2  # at once, not when the wait runs out
    assert redis_server.client().llen(f"rq:queue:{queue}") == 1  # queued all the same
    # The wait runs its whole length and ends in one line, not a Redis timeout.
    assert "Traceback" not in rest, rest
    assert rest.strip() == f"1 job(s) gave no result within {wait_s} s"
    assert process.returncode == 1
    assert time.monotonic() - started >= wait_s


# --- the benchmark without matplotlib ---------------------------------------------------------


def test_bench_without_matplotlib_says_so_first_and_writes_its_report_without_plots(
    tmp_path: Path,
) -> None:
    out_file = tmp_path / "benchmarks.md"
    # The base install: matplotlib comes only with the `bench` extra.
    program = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from worker.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            program,
            "bench",
            "--quick",
            "--per-category",
            "1",
            "--readers",
            "zxing-cpp",
            "--real",
            "--corpus",
            str(tmp_path / "corpus"),
            "--out",
            str(out_file),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    notice = next(i for i, line in enumerate(lines) if "matplotlib" in line)
    ran = next(i for i, line in enumerate(lines) if line.startswith("zxing-cpp: "))
    assert notice < ran, out.stderr  # said before the work, not after it
    assert "<!-- begin:accuracy -->" in out_file.read_text()
    assert not (tmp_path / "benchmarks-decode-rate.png").exists()
