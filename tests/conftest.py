"""Shared fixtures: one engine per session, and real Redis, S3 and worker processes."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.services import RedisServer, WorkerProcess, free_port, wait_until
from worker.engine import Engine
from worker.harness import moto_s3
from worker.settings import Settings

BUCKET = "invoices"
ARCHIVE = "archive"  # only its 2024/ folder is allowed


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env({})


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Engine:
    return Engine(settings)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with moto_s3((BUCKET, ARCHIVE)) as (endpoint, _):
        yield endpoint


def s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


@pytest.fixture(scope="session")
def file_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("file-root")


def worker_env(redis_url: str, s3: str, file_root: Path, **extra: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "AWS_ENDPOINT_URL": s3,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "QRW_S3_BUCKETS": f"{BUCKET},{ARCHIVE}/2024/",
        "QRW_FILE_ROOTS": str(file_root),
        "QRW_FETCH_ATTEMPTS": "3",
        "QRW_RECOVERY_INTERVAL": "5",
        "QRW_METRICS_PORT": str(free_port()),
        "QRW_LOG_LEVEL": os.environ.get("QRW_TEST_WORKER_LOG_LEVEL", "warning"),
        **extra,
    }


@pytest.fixture
def start_worker(
    s3_endpoint: str, file_root: Path, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(redis_url: str, queue: str, workers: int = 1, **env: str) -> WorkerProcess:
        worker = WorkerProcess(
            worker_env(redis_url, s3_endpoint, file_root, **env),
            queue,
            workers,
            log=tmp_path / f"worker-{len(started)}.log",
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def shared_queue(
    redis_server: RedisServer,
    s3_endpoint: str,
    file_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """One pool of two workers that the plain behaviour tests share."""
    queue = "qr-shared"
    log = tmp_path_factory.mktemp("shared-worker") / "worker.log"
    worker = WorkerProcess(worker_env(redis_server.url, s3_endpoint, file_root), queue, 2, log=log)
    yield queue
    worker.stop()


def reply_list() -> str:
    return f"qrw:reply:{uuid.uuid4()}"


def wait_result(redis_server: RedisServer, reply_to: str, timeout: float = 60) -> dict[str, Any]:
    # The test client gives up reading after 10 s: a longer BLPOP would end in redis-py's
    # TimeoutError instead of this message, so wait in slices.
    deadline = time.monotonic() + timeout
    popped = None
    while popped is None and (left := deadline - time.monotonic()) > 0:
        popped = redis_server.client().blpop([reply_to], timeout=max(1, min(5, int(left))))
    assert popped is not None, f"no result on {reply_to} within {timeout}s"
    return json.loads(popped[1])


def wait_results(
    redis_server: RedisServer, reply_to: str, count: int, timeout: float = 90
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    wait_until(lambda: _drain(redis_server, reply_to, results, count), timeout, f"{count} results")
    return results


def _drain(
    redis_server: RedisServer, reply_to: str, results: list[dict[str, Any]], count: int
) -> bool:
    popped = redis_server.client().blpop([reply_to], timeout=1)
    if popped:
        results.append(json.loads(popped[1]))
    return len(results) >= count
