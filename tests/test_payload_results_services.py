"""A code's payload at each live edge (issue 12): `qrw scan` (JSON and table), the shim on a
real socket (its answer checked against its own OpenAPI document, and its /metrics), queue
workers (the result document, and their /metrics), and a `qrw backfill` run (index.csv,
summary.json, `qrw backfill report`).

Three images in each place: an EPC credit transfer as models/synth emits it (scheme
`epc.sct`, every check ok), the same transfer with a broken IBAN (still read, its payload
says which check failed), and a text that is no known scheme (payload null).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from tests.conftest import reply_list, wait_result, worker_env
from tests.services import RedisServer, ShimProcess, WorkerProcess, free_port, wait_until
from tests.test_payload_results import NOT_A_SCHEME, epc_text, failed, qr_png, with_bad_iban
from worker.backfill import output
from worker.queue import producer

QUEUE = "qr-payload"  # this module's own queue: no other test's workers take its jobs
GOOD, BAD = epc_text(21), with_bad_iban(epc_text(22))
TEXTS = {"good.png": GOOD, "bad.png": BAD, "plain.png": NOT_A_SCHEME}


@pytest.fixture(scope="module")
def images(file_root: Path) -> dict[str, Path]:
    folder = file_root / "payloads"
    folder.mkdir(exist_ok=True)
    paths = {}
    for name, text in TEXTS.items():
        paths[name] = folder / name
        paths[name].write_bytes(qr_png(text))
    return paths


def qrw(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
        check=False,
    )


def assert_the_three_payloads(codes_of: dict[str, list[dict[str, Any]]]) -> None:
    """Each image's one code: its text as read, and its payload."""
    for name, text in TEXTS.items():
        assert [c["text"] for c in codes_of[name]] == [text], name
    good, bad, plain = (codes_of[name][0]["payload"] for name in TEXTS)
    assert good["scheme"] == "epc.sct" and good["ok"] is True, good
    assert bad["scheme"] == "epc.sct" and bad["ok"] is False and "iban" in failed(bad), bad
    assert plain is None


# qrw scan ----------------------------------------------------------------------------------


def test_scan_json_carries_each_codes_payload(images: dict[str, Path]) -> None:
    out = qrw("scan", "--json", *(str(path) for path in images.values()))
    assert out.returncode == 0, out.stderr
    results = [json.loads(text) for text in out.stdout.splitlines()]
    assert all(result["ok"] for result in results)
    assert_the_three_payloads({Path(r["source"]).name: r["codes"] for r in results})


def test_the_scan_table_has_a_scheme_column(images: dict[str, Path]) -> None:
    out = qrw("scan", *(str(path) for path in images.values()))
    assert out.returncode == 0, out.stderr
    header, _, *rows = out.stdout.splitlines()
    assert header.split()[5] == "scheme"  # "read by" is two words
    start = header.index("scheme")
    cells = {Path(row.split()[0]).name: row[start:].split("  ")[0].strip() for row in rows}
    assert cells == {
        "good.png": "epc.sct",
        "bad.png": "epc.sct (failed: iban)",
        "plain.png": "-",
    }


# The shim ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShimProcess]:
    log = tmp_path_factory.mktemp("payload-shim") / "shim.log"
    server = ShimProcess({"QRW_LOG_LEVEL": "warning"}, log=log)
    yield server
    server.stop()


def test_the_shim_answers_each_codes_payload_as_its_openapi_document_promises(
    shim: ShimProcess, images: dict[str, Path]
) -> None:
    with httpx.Client(base_url=shim.url, timeout=60) as client:
        document = client.get("/openapi.json").json()
        schema = document["paths"]["/detect"]["post"]["responses"]["200"]["content"][
            "application/json"
        ]["schema"]
        answers = {}
        for name, path in images.items():
            response = client.post("/detect", content=path.read_bytes())
            assert response.status_code == 200, response.text
            answers[name] = response.json()
            jsonschema.validate(answers[name], schema, cls=jsonschema.Draft202012Validator)
        # A failed check is no failed request: the original service's fields stand.
        assert answers["bad.png"]["success"] is True and answers["bad.png"]["data"] == BAD
        assert_the_three_payloads({name: answer["codes"] for name, answer in answers.items()})

        text = client.get("/metrics").text
        assert 'qrw_codes_by_scheme_total{scheme="epc.sct",source="http"} 2.0' in text
        assert 'qrw_codes_by_scheme_total{scheme="none",source="http"} 1.0' in text


# Queue workers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def pool(
    redis_server: RedisServer,
    s3_endpoint: str,
    file_root: Path,
    metrics_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    log = tmp_path_factory.mktemp("payload-pool") / "worker.log"
    env = worker_env(redis_server.url, s3_endpoint, file_root, QRW_METRICS_PORT=str(metrics_port))
    worker = WorkerProcess(env, QUEUE, 1, log=log)
    yield worker
    worker.stop()


def test_a_queue_result_carries_each_codes_payload(
    pool: WorkerProcess, redis_server: RedisServer, images: dict[str, Path], metrics_port: int
) -> None:
    reply_to = reply_list()
    refs = [f"file://{path}" for path in images.values()]
    producer.enqueue(redis_server.client(), {"images": refs, "reply_to": reply_to}, queue=QUEUE)
    result = wait_result(redis_server, reply_to, timeout=120)
    assert result["ok"] is True, result
    assert_the_three_payloads({Path(item["image"]).name: item["codes"] for item in result["items"]})

    # A single-image job's document has the codes at its top level, payloads with them.
    producer.enqueue(redis_server.client(), {"image": refs[0], "reply_to": reply_to}, queue=QUEUE)
    single = wait_result(redis_server, reply_to, timeout=120)
    assert single["codes"][0]["payload"]["scheme"] == "epc.sct"

    def scrape() -> str:
        try:
            return httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        except httpx.TransportError:
            return ""

    text = str(wait_until(lambda: "qrw_codes_by_scheme_total" in scrape() and scrape(), 30, "m"))
    assert 'qrw_codes_by_scheme_total{scheme="epc.sct",source="queue"} 3.0' in text
    assert 'qrw_codes_by_scheme_total{scheme="none",source="queue"} 1.0' in text


# qrw backfill ------------------------------------------------------------------------------


def test_a_backfill_indexes_and_reports_the_payloads(
    pool: WorkerProcess,
    redis_server: RedisServer,
    s3_endpoint: str,
    file_root: Path,
    images: dict[str, Path],
    tmp_path: Path,
) -> None:
    manifest = tmp_path / "manifest.txt"
    manifest.write_text("".join(f"file://{path}\n" for path in images.values()))
    out = tmp_path / "out"
    env = worker_env(redis_server.url, s3_endpoint, file_root)
    ran = qrw(
        "backfill",
        "start",
        "payloads",
        "--manifest",
        str(manifest),
        "--out",
        f"file://{out}",
        "--queue",
        QUEUE,
        "--batch",
        "2",
        env=env,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]

    with (out / "index.csv").open(encoding="utf-8-sig", newline="") as handle:
        rows = {Path(row["key"]).name: row for row in csv.DictReader(handle)}
    good, bad, plain = rows["good.png"], rows["bad.png"], rows["plain.png"]
    assert (good["scheme"], good["currency"], good["payload_ok"]) == ("epc.sct", "EUR", "true")
    assert good["total"] == GOOD.split("\n")[7].removeprefix("EUR")
    assert (bad["scheme"], bad["payload_ok"], bad["ok"]) == ("epc.sct", "false", "true")
    # The read, as read: one physical line in the file, unescape_cell gives the lines back.
    assert "\n" not in bad["first_code_text"]
    assert output.unescape_cell(bad["first_code_text"]) == BAD
    assert (plain["scheme"], plain["payload_ok"], plain["total"]) == ("", "", "")

    summary = json.loads((out / "summary.json").read_text())
    assert summary["read"] == 3
    assert summary["codes_by_scheme"] == {"epc.sct": 2, "none": 1}
    assert summary["failed_checks_by_kind"].get("iban") == 1

    printed = qrw("backfill", "report", "payloads", env=env)
    assert printed.returncode == 0, printed.stderr
    assert "epc.sct" in printed.stdout and "iban" in printed.stdout
