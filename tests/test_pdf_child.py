"""The general guard (issue 17): PDFium runs in a child process with an address-space limit,
killed at the scan's deadline, reused between documents, respawned when it died, and
never outliving the process that started it.

The hostile files here pass every cheap check: a font program that inflates to 1 GB (PDFium
loads font programs whole; the stream check leaves fonts out) and a page of 20,000 wide
strokes (860 KB, seconds of rasterising in 30 MiB). In the scanning process the first took
more than 1 GiB and the second ran far past its deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from models.synth import digital_invoice
from tests.services import wait_until
from worker.bench import hostile_pdfs
from worker.engine import Engine
from worker.engine.isolation import ChildDocument, open_in_child
from worker.settings import Settings


def renderers(parent: int | None = None) -> list[int]:
    """Pids of the PDF renderer children of `parent` (this process by default)."""
    parent = parent or os.getpid()
    found = []
    for task in Path(f"/proc/{parent}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                if b"worker.engine.isolation" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(int(pid))
            except OSError:
                pass
    return sorted(found)


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie waiting for whoever adopted it to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def pdf_engine() -> Engine:
    engine = Engine(Settings.from_env({}, backend="none"))
    engine.warm_up()
    return engine


@pytest.fixture(scope="module")
def invoice() -> tuple[bytes, bytes]:
    sample = digital_invoice(7, fmt="pdf")
    return sample.data, sample.codes[0].payload


def test_a_digital_pdf_is_read_through_the_child_and_the_child_is_reused(
    pdf_engine: Engine, invoice: tuple[bytes, bytes]
) -> None:
    data, payload = invoice
    first = pdf_engine.scan(data)
    children = renderers()
    second = pdf_engine.scan(data)
    assert [c.data for c in first.codes] == [payload]
    assert [c.data for c in second.codes] == [payload]
    assert first.codes[0].quad == second.codes[0].quad
    assert children and renderers() == children  # no process started for the second


def test_a_page_still_rendering_at_the_deadline_is_killed_and_the_next_document_is_read(
    pdf_engine: Engine, invoice: tuple[bytes, bytes]
) -> None:
    before = renderers()
    started = time.perf_counter()
    result = pdf_engine.scan(hostile_pdfs.slow_strokes(20_000), deadline_ms=1000)
    elapsed = time.perf_counter() - started
    assert result.error is not None and result.error.code == "deadline_exceeded"
    assert elapsed < 2.0  # deadline + 1 s
    # The busy child was killed, not left running (another starts with the next document).
    assert len(renderers()) == len(before) - 1
    data, payload = invoice
    assert [c.data for c in pdf_engine.scan(data).codes] == [payload]


def test_a_document_past_the_childs_address_space_is_too_large_and_this_process_stays_small(
    pdf_engine: Engine, invoice: tuple[bytes, bytes]
) -> None:
    rss_before = rss_mib()
    started = time.perf_counter()
    result = pdf_engine.scan(hostile_pdfs.font_bomb(1_000_000_000), deadline_ms=10_000)
    assert time.perf_counter() - started < 3.0
    assert result.error is not None and result.error.code == "image_too_large"
    assert "QRW_PDF_CHILD_MEMORY_MB" in result.error.message
    assert rss_mib() - rss_before < 50
    data, payload = invoice
    assert [c.data for c in pdf_engine.scan(data).codes] == [payload]


def test_a_child_killed_while_idle_is_replaced(
    pdf_engine: Engine, invoice: tuple[bytes, bytes]
) -> None:
    data, payload = invoice
    pdf_engine.scan(data)
    for pid in renderers():
        os.kill(pid, signal.SIGKILL)
    assert [c.data for c in pdf_engine.scan(data).codes] == [payload]


def test_concurrent_scans_each_get_a_child_of_their_own(invoice: tuple[bytes, bytes]) -> None:
    data, _ = invoice
    settings = Settings.from_env({})
    documents: list[ChildDocument] = [open_in_child(data, settings, None) for _ in range(2)]
    assert len(renderers()) >= 2
    pages: list[object] = []

    def render(document: ChildDocument) -> None:
        pages.append(document.render(0, 1.0))

    threads = [threading.Thread(target=render, args=(d,)) for d in documents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(pages) == 2
    shapes = {getattr(page, "shape", None) for page in pages}
    assert len(shapes) == 1 and None not in shapes


_PARENT = """
import sys, time
from worker.engine import isolation
from worker.settings import Settings
isolation.warm_up(Settings.from_env({}))
print("ready", flush=True)
time.sleep(600)
"""


def test_the_child_exits_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "ready"
        children = renderers(parent.pid)
        assert len(children) == 1
        parent.kill()
        parent.wait(10)
        wait_until(lambda: gone(children[0]), 5, "the orphaned renderer to exit")
    finally:
        if parent.poll() is None:
            parent.kill()


def test_a_forked_process_starts_with_no_renderer_of_its_parent(
    pdf_engine: Engine, invoice: tuple[bytes, bytes]
) -> None:
    # RQ's work-horses are forks of a warmed worker: a horse that wrote to its parent's
    # renderer would leave that renderer's replies out of step with its parent.
    from worker.engine import isolation

    pdf_engine.scan(invoice[0])
    assert isolation._CHILDREN.idle
    pid = os.fork()
    if pid == 0:
        os._exit(0 if not isolation._CHILDREN.idle else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert isolation._CHILDREN.idle  # the parent's own is untouched
