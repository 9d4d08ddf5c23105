"""`qrw scan`: what it prints and the exit status scripts rely on."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.synth import digital_invoice, no_code_invoice


def qrw(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def invoices(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    (folder / "nested").mkdir(parents=True)
    for name, sample in {
        "a.png": digital_invoice(40),
        "nested/b.pdf": digital_invoice(41, fmt="pdf"),
        "c.jpg": no_code_invoice(42, fmt="jpeg"),
    }.items():
        (folder / name).write_bytes(sample.data)
    (folder / "a.json").write_text("{}")  # a sidecar beside the images is not an input
    return folder


def test_json_prints_one_object_per_input_with_its_source(invoices: Path) -> None:
    out = qrw("scan", "--json", str(invoices))
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [Path(line["source"]).name for line in lines] == ["a.png", "c.jpg", "b.pdf"]
    first = lines[0]
    assert first["ok"] and first["codes"][0]["stage"] == "fast"
    assert base64.b64decode(first["codes"][0]["bytes_b64"]) == digital_invoice(40).codes[0].payload
    assert lines[1]["codes"] == [] and lines[1]["error"] is None


def test_the_table_shows_each_code_and_each_empty_page(invoices: Path) -> None:
    out = qrw("scan", str(invoices))
    assert out.returncode == 0
    assert out.stdout.splitlines()[0].split() == [
        "source",
        "read",
        "by",
        "page",
        "ms",
        "scheme",
        "text",
        "/",
        "error",
    ]
    assert "none" in out.stdout and "fast" in out.stdout


def test_exit_status_is_1_when_any_input_failed(invoices: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(digital_invoice(43, fmt="jpeg").data[:500])
    out = qrw("scan", "--json", str(invoices), str(broken))
    assert out.returncode == 1
    last = json.loads(out.stdout.splitlines()[-1])
    assert last["error"]["code"] == "corrupt_image"


def test_a_named_file_is_scanned_whatever_its_extension(tmp_path: Path) -> None:
    odd = tmp_path / "scan.dat"
    odd.write_bytes(digital_invoice(44).data)
    out = qrw("scan", "--json", "--want", "first", str(odd))
    assert out.returncode == 0
    assert len(json.loads(out.stdout)["codes"]) == 1


@pytest.mark.parametrize(
    "args",
    [
        ("scan",),
        ("scan", "--want", "some", "x.png"),
        ("scan", "--deadline-ms", "-3", "x.png"),
        ("frobnicate",),
        # Options that override a setting keep to the setting's range.
        ("worker", "--queues", "qr", "rq:queue:other"),
        ("worker", "--workers", "100000"),
        ("enqueue", "--queue", "a b", "s3://invoices/a.png"),
        ("serve", "--port", "70000"),
        ("enqueue", "--wait", "nan", "s3://invoices/a.png"),
        ("enqueue", "--wait", "-1", "s3://invoices/a.png"),
        ("demo", "--count", "0"),
    ],
)
def test_usage_errors_exit_with_2(args: tuple[str, ...]) -> None:
    assert qrw(*args).returncode == 2


def test_a_bad_setting_is_a_usage_error(invoices: Path) -> None:
    out = qrw("scan", str(invoices), env={"QRW_MAX_PIXELS": "lots"})
    assert out.returncode == 2
    assert "QRW_MAX_PIXELS" in out.stderr


# Each of these was accepted in issue 9 and then failed in production: `qrw worker` with
# QRW_QUEUES=" , " crash-looped its pool, a bad log level or REDIS_URL exited 1 with a
# traceback, and the rest passed silently.
UNWORKABLE_SETTINGS = [
    ("QRW_QUEUES", " , "),
    ("QRW_JOB_TIMEOUT", "99999999999"),
    ("QRW_LOG_LEVEL", "loud"),
    ("REDIS_URL", "http://127.0.0.1:6379/0"),
    ("QRW_FILE_ROOTS", "relative/folder"),
    ("QRW_S3_BUCKETS", "*"),
    ("QRW_PDF_DPI", "100000"),
]


def assert_one_line_usage_error(out: subprocess.CompletedProcess[str], variable: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(("variable", "value"), UNWORKABLE_SETTINGS)
def test_a_setting_that_cannot_work_stops_the_worker_with_one_line_and_status_2(
    variable: str, value: str
) -> None:
    assert_one_line_usage_error(qrw("worker", "--burst", env={variable: value}), variable)


@pytest.mark.parametrize(
    "command",
    [
        ("scan", "x.png"),
        ("worker", "--burst"),
        ("serve",),
        ("enqueue", "s3://invoices/a.png"),
        ("status",),
        ("demo", "--count", "1"),
    ],
)
def test_every_command_refuses_an_unworkable_setting_the_same_way(command: tuple[str, ...]) -> None:
    assert_one_line_usage_error(qrw(*command, env={"REDIS_URL": "redis://h:port/0"}), "REDIS_URL")


@pytest.mark.parametrize("deadline", ["\uff15", "\u00b2", "0", "600001", "1e3", "9" * 5000])
def test_deadline_ms_follows_the_same_rule_as_the_queue_and_the_shim(
    invoices: Path, deadline: str
) -> None:
    # Full-width digits were accepted (int() reads them), and so was anything above the
    # queue's and the shim's 600000 ms ceiling.
    for command in (("scan", str(invoices / "a.png")), ("enqueue", "s3://invoices/a.png")):
        out = qrw(*command, "--deadline-ms", deadline, env={"REDIS_URL": "redis://127.0.0.1:1/0"})
        assert out.returncode == 2, (command, out.stderr[-2000:])
        assert "deadline_ms" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ("--queues", "qr,qr-backfill"),
        ("--queues", "qr", "qr-backfill"),
    ],
)
def test_worker_queues_may_be_given_comma_separated_or_one_by_one(argv: tuple[str, ...]) -> None:
    """The comma form, as QRW_QUEUES is written, used to arrive as one nested tuple."""
    from worker.cli import build_parser, worker_queues

    args = build_parser().parse_args(["worker", *argv])
    assert worker_queues(args.queues) == ("qr", "qr-backfill")


def test_a_single_queue_option_refuses_a_list() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "worker.cli", "enqueue", "--queue", "a,b", "file:///x.png"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    assert "one queue" in out.stderr
