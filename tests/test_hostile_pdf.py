"""PDFs that escaped the limits (issue 17, points 3, 4 and 5a), each answered at once with
its own code, through the engine, `qrw scan`, a real worker job and the shim.

- A one-page PDF whose FlateDecode content stream inflates to 1 GB of `q Q ` (996 KB on
  disk) ran for 21.7 s into deadline_exceeded at a 2.0 GiB peak: now image_too_large
  before PDFium parses the page (its content is inflated and counted first, at most
  PDF_MAX_STREAM_BYTES).
- A `/Pages` chain 10,000 deep, and a page tree that loops: `qrw scan` ended in a
  traceback and a job in internal_error after three attempts (PDFium's "Failed to load
  page" raised outside any handler): now corrupt_image, once.
- A valid PDF with a user password was called corrupt_image: now encrypted_document.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pypdfium2 as pdfium
import pytest

from tests.conftest import reply_list, wait_result
from tests.services import RedisServer, ShimProcess, WorkerProcess
from worker.bench import hostile_pdfs
from worker.engine import Engine
from worker.engine.pdf import PDF_MAX_STREAM_BYTES
from worker.queue import producer
from worker.settings import Settings

# name -> (the issue's file, the code it must get, the shim's status for that code)
EXPECTED = {
    "content-bomb.pdf": ("image_too_large", 413),
    "deep-pages.pdf": ("corrupt_image", 422),
    "pages-loop.pdf": ("corrupt_image", 422),
    "password.pdf": ("encrypted_document", 422),
}
# "At once": the bomb's inflation is counted up to the limit (0.1 s), the rest is a parse.
AT_ONCE_S = 3.0


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return {
        "content-bomb.pdf": hostile_pdfs.content_bomb(1_000_000_000),
        "deep-pages.pdf": hostile_pdfs.deep_page_tree(10_000),
        "pages-loop.pdf": hostile_pdfs.page_tree_loop(),
        "password.pdf": hostile_pdfs.with_user_password(b"secret"),
    }


@pytest.fixture(scope="module")
def on_disk(files: dict[str, bytes], file_root: Path) -> dict[str, Path]:
    folder = file_root / "hostile-pdf"
    folder.mkdir(exist_ok=True)
    paths = {}
    for name, data in files.items():
        paths[name] = folder / name
        paths[name].write_bytes(data)
    return paths


def test_the_files_are_what_the_issue_describes(files: dict[str, bytes]) -> None:
    assert 900_000 < len(files["content-bomb.pdf"]) < 1_100_000
    # The password PDF is valid: with its password PDFium opens and renders it.
    document = pdfium.PdfDocument(files["password.pdf"], password="secret")
    page = document[0].render(scale=0.25, grayscale=True).to_numpy()
    assert page.min() == 0  # the black square its (encrypted) content draws


@pytest.mark.parametrize("in_child", [True, False], ids=["child", "in-process"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_engine_answers_each_file_at_once_with_its_own_code(
    files: dict[str, bytes], name: str, in_child: bool
) -> None:
    engine = Engine(Settings.from_env({}, pdf_child=in_child), stages=[])
    started = time.perf_counter()
    result = engine.scan(files[name], deadline_ms=10_000)
    elapsed = time.perf_counter() - started
    assert result.error is not None, result
    assert result.error.code == EXPECTED[name][0], result.error.message
    assert elapsed < AT_ONCE_S
    assert result.codes == []


def test_a_content_stream_just_past_the_limit_is_refused_and_one_at_it_is_read(
    engine: Engine,
) -> None:
    over = engine.scan(hostile_pdfs.content_bomb(PDF_MAX_STREAM_BYTES + 2**20), deadline_ms=10_000)
    assert over.error is not None and over.error.code == "image_too_large"
    assert "16 MiB" in over.error.message
    # A page of no-ops under the limit is a blank page: scanned, nothing found, no error.
    under = engine.scan(hostile_pdfs.content_bomb(2**20), deadline_ms=10_000)
    assert under.error is None and under.codes == [] and under.format == "pdf"


def test_qrw_scan_prints_one_json_line_per_file_and_no_traceback(on_disk: dict[str, Path]) -> None:
    names = sorted(EXPECTED)
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "scan", "--json", *(str(on_disk[n]) for n in names)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "QRW_BACKEND": "none"},
    )
    assert "Traceback" not in done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [Path(line["source"]).name for line in lines] == names
    assert [line["error"]["code"] for line in lines] == [EXPECTED[n][0] for n in names]
    assert done.returncode == 1  # every input processed, some with errors


@pytest.fixture(scope="module")
def pdf_queue(
    redis_server: RedisServer,
    s3_endpoint: str,
    file_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, WorkerProcess]]:
    from tests.conftest import worker_env

    queue = "qr-hostile-pdf"
    log = tmp_path_factory.mktemp("hostile-pdf-worker") / "worker.log"
    worker = WorkerProcess(worker_env(redis_server.url, s3_endpoint, file_root), queue, 1, log=log)
    yield queue, worker
    worker.stop()


def _worker_pids(worker: WorkerProcess) -> set[int]:
    pids = set()
    for pid in worker.descendants():
        try:
            if b"worker.cli" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.add(pid)
        except OSError:
            pass
    return pids


def test_a_worker_job_gets_one_result_with_the_code_at_once_and_the_worker_lives(
    redis_server: RedisServer, pdf_queue: tuple[str, WorkerProcess], on_disk: dict[str, Path]
) -> None:
    queue, worker = pdf_queue
    client = redis_server.client()
    first = wait_result(redis_server, _enqueue(redis_server, queue, on_disk["pages-loop.pdf"]), 120)
    assert first["error"]["code"] == "corrupt_image"  # the worker is up and warmed
    workers_before = _worker_pids(worker)
    for name in sorted(EXPECTED):
        reply_to = _enqueue(redis_server, queue, on_disk[name])
        started = time.monotonic()
        result = wait_result(redis_server, reply_to, 60)
        assert time.monotonic() - started < AT_ONCE_S + 2
        assert result["ok"] is False
        assert result["error"]["code"] == EXPECTED[name][0], result["error"]
        # One result: not retried (a retry would publish again after its backoff).
        time.sleep(0.5)
        entries = client.xrange("qrw:results", "-", "+")
        mine = [f for _, f in entries if f[b"job_id"].decode() == result["job_id"]]
        assert len(mine) == 1
        assert client.llen(reply_to) == 0
    assert worker.process.poll() is None
    assert _worker_pids(worker) == workers_before


def _enqueue(redis_server: RedisServer, queue: str, path: Path) -> str:
    reply_to = reply_list()
    producer.enqueue(
        redis_server.client(), {"image": f"file://{path}", "reply_to": reply_to}, queue=queue
    )
    return reply_to


def test_the_shim_answers_each_file_with_its_status_and_code(
    files: dict[str, bytes], tmp_path: Path
) -> None:
    shim = ShimProcess({"QRW_BACKEND": "none"}, log=tmp_path / "shim.log")
    try:
        with httpx.Client(base_url=shim.url, timeout=60) as client:
            for name in sorted(EXPECTED):
                started = time.monotonic()
                response = client.post("/detect", content=files[name])
                assert time.monotonic() - started < AT_ONCE_S + 2
                code, status = EXPECTED[name]
                assert response.status_code == status, response.text
                assert response.json()["error"]["code"] == code
            assert shim.process.poll() is None
    finally:
        shim.stop()
