"""RQ's own tools against our Redis: rq-dashboard and rq-exporter see our queues, workers,
finished and failed jobs, without a server error.

Both pin `rq<3` while we run RQ 3, so they live in a venv of their own,
build/rq-tools-venv: `make check-rq-tools` creates it and runs this file, which the suite
otherwise skips (docs/operations.md, *RQ's own tools*).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from models.synth import digital_invoice
from tests.conftest import reply_list, wait_result
from tests.services import RedisServer, free_port, wait_until
from worker.queue import names, producer

# Set by `make check-rq-tools`; the suite leaves this file out (the tools' venv is not part
# of `make setup`, and the check starts its own pool: about 10 s).
VENV_ENV = "QRW_RQ_TOOLS_VENV"
QUEUES = ("qr-tools", "qr-tools-backfill")

pytestmark = pytest.mark.skipif(
    VENV_ENV not in os.environ, reason=f"`make check-rq-tools` runs this ({VENV_ENV} unset)"
)


@pytest.fixture(scope="module")
def venv() -> Path:
    folder = Path(os.environ[VENV_ENV])
    for command in ("rq-dashboard", "rq-exporter"):
        assert (folder / "bin" / command).exists(), f"{command} is not in {folder}"
    return folder


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def start_tool(venv: Path, tmp_path: Path) -> Iterator[Callable[..., tuple[str, Path]]]:
    """Start one of the venv's commands on a free port; its base URL and its log."""
    started: list[subprocess.Popen[bytes]] = []

    def start(command: str, *args: str) -> tuple[str, Path]:
        port = free_port()
        log = tmp_path / f"{command}.log"
        process = subprocess.Popen(
            [str(venv / "bin" / command), *args, "--port", str(port)],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        started.append(process)
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"{command} exited: {log.read_text()[-2000:]}")
            try:
                return httpx.get(url + "/", timeout=2).status_code < 500
            except httpx.TransportError:
                return False

        wait_until(answers, 30, f"{command} to answer")
        return url, log

    yield start
    for process in started:
        process.terminate()
        process.wait(10)


def get(url: str) -> httpx.Response:
    response = httpx.get(url, timeout=10, follow_redirects=True)
    assert response.status_code == 200, (url, response.status_code, response.text[-2000:])
    return response


def test_rq_dashboard_and_rq_exporter_see_our_queues_workers_and_failures(
    own_redis: RedisServer, start_worker, start_tool, file_root: Path
) -> None:
    client = own_redis.client()
    start_worker(own_redis.url, ",".join(QUEUES))
    path = file_root / "rq-tools.png"
    path.write_bytes(digital_invoice(171).data)
    reply_to = reply_list()
    queue = QUEUES[0]
    ok = [
        producer.enqueue(client, {"image": f"file://{path}", "reply_to": reply_to}, queue=queue)
        for _ in range(2)
    ]
    missing = producer.enqueue(
        client, {"image": f"file://{file_root}/none.png", "reply_to": reply_to}, queue=queue
    )
    foreign = producer.enqueue(
        client, {"image": f"file://{path}", "reply_to": reply_to}, queue=queue, function="os.system"
    )
    assert {wait_result(own_redis, reply_to)["job_id"] for _ in range(4)} == {
        *ok,
        missing,
        foreign,
    }
    wait_until(lambda: client.zcard(names.rq_failed_key(queue)) == 2, 10, "2 failed jobs")

    dashboard, dashboard_log = start_tool(
        "rq-dashboard", "--redis-url", own_redis.url, "--bind", "127.0.0.1", "--json"
    )
    exporter, exporter_log = start_tool(
        "rq-exporter", "--redis-url", own_redis.url, "--host", "127.0.0.1"
    )

    # rq-dashboard: its pages, and the JSON its pages load.
    for page in ("/0/view/queues", "/0/view/workers", f"/0/view/jobs/{queue}/failed/10/asc/1"):
        get(dashboard + page)
    listed = {q["name"]: q for q in get(dashboard + "/0/data/queues.json").json()["queues"]}
    assert set(QUEUES) <= set(listed)
    (worker,) = get(dashboard + "/0/data/workers.json").json()["workers"]
    assert worker["queues"] == list(QUEUES)
    assert worker["successful_job_count"] == 2 and worker["failed_job_count"] == 1

    def jobs(registry: str) -> set[str]:
        data = get(dashboard + f"/0/data/jobs/{queue}/{registry}/20/asc/1.json").json()
        return {job["id"] for job in data["jobs"]}

    assert jobs("finished") == set(ok)
    assert jobs("failed") == {missing, foreign}
    failed = get(dashboard + f"/0/data/job/{missing}.json").json()
    assert failed["status"] == "failed"
    assert '"code": "not_found"' in failed["exc_info"]

    # rq-exporter: the same counts as Prometheus metrics.
    metrics = get(exporter + "/metrics").text
    assert re.search(rf'^rq_jobs{{queue="{queue}",status="failed"}} 2\.0$', metrics, re.M), metrics
    assert re.search(rf'^rq_jobs{{queue="{queue}",status="finished"}} 2\.0$', metrics, re.M)
    assert re.search(rf'^rq_jobs{{queue="{QUEUES[1]}",status="queued"}} 0\.0$', metrics, re.M)
    assert re.search(r"^rq_workers{.*} 1\.0$", metrics, re.M), metrics

    # The dashboard's Requeue button runs the failed job again, and its new result arrives.
    response = httpx.post(dashboard + f"/job/{missing}/requeue", timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "OK", response.text
    again = wait_result(own_redis, reply_to)
    assert again["job_id"] == missing and again["error"]["code"] == "not_found"

    for log in (dashboard_log, exporter_log):
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
