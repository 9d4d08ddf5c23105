"""Hostile storage references through real workers: jobs enqueued with raw Redis commands
(docs/protocol.md), answered at once with the right code, never retried, the worker never
blocked (issue 9, defects 10, 12 and 13)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from models.synth import digital_invoice
from tests.conftest import BUCKET, reply_list, s3_client, wait_result
from tests.services import RedisServer, WorkerProcess
from worker.settings import Settings


def enqueue_raw(redis_server: RedisServer, queue: str, payload_json: str) -> str:
    """The producer's commands from docs/protocol.md, with the payload as literal JSON text
    (so escapes like \\u0000 and \\ud800 reach the worker exactly as a producer wrote them)."""
    job_id = str(uuid.uuid4())
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    client = redis_server.client()
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(
            f"rq:job:{job_id}",
            mapping={
                "data": f'["jobs.scan",null,[{payload_json}],{{}}]',
                "origin": queue,
                "status": "queued",
                "created_at": now,
                "enqueued_at": now,
                "timeout": "60",
            },
        )
        pipe.rpush(f"rq:queue:{queue}", job_id)
        pipe.execute()
    return job_id


def run_raw(
    redis_server: RedisServer, queue: str, image_json: str, timeout: float = 60, **extra: object
) -> tuple[str, dict]:
    reply_to = reply_list()
    fields = {"reply_to": reply_to, **extra}
    payload = '{"image":' + image_json + "," + json.dumps(fields)[1:]
    job_id = enqueue_raw(redis_server, queue, payload)
    result = wait_result(redis_server, reply_to, timeout=timeout)
    assert result["job_id"] == job_id
    return job_id, result


def assert_never_retried(redis_server: RedisServer, job_id: str) -> None:
    """One run: the retry budget the worker gives every job (QRW_MAX_ATTEMPTS - 1) is
    untouched, or already spent at once by the failed result (the worker writes 0 after it
    publishes the result, so this may read either), and one result was streamed."""
    client = redis_server.client()
    retries_left = client.hget(f"rq:job:{job_id}", "retries_left")
    assert retries_left is None or int(retries_left) in (0, Settings().max_attempts - 1)
    streamed = [
        fields
        for _, fields in client.xrevrange("qrw:results", count=500)
        if fields[b"job_id"].decode() == job_id
    ]
    assert len(streamed) == 1


@pytest.mark.parametrize(
    ("image_json", "code"),
    [
        # A NUL byte, raw or percent-encoded, in a file path or an S3 key.
        ('"file://{root}/a\\u0000.png"', "invalid_payload"),
        ('"file://{root}/a%00.png"', "invalid_payload"),
        ('"s3://invoices/in/a\\u0000.png"', "invalid_payload"),
        # A lone surrogate: valid JSON, not encodable as a path or a key.
        ('"file://{root}/a\\ud800.png"', "invalid_payload"),
        ('"file://{root}/a\\udcff.png"', "invalid_payload"),  # would become byte 0xff
        ('"s3://invoices/in/\\ud800.png"', "invalid_payload"),
        # Percent-encoding that is not UTF-8 names no file we could mean.
        ('"file://{root}/a%ff.png"', "invalid_payload"),
    ],
)
def test_a_nul_byte_or_lone_surrogate_in_a_reference_is_answered_at_once_and_never_retried(
    redis_server: RedisServer, shared_queue: str, file_root: Path, image_json: str, code: str
) -> None:
    job_id, result = run_raw(
        redis_server, shared_queue, image_json.replace("{root}", str(file_root)), timeout=30
    )
    assert result["error"]["code"] == code, result["error"]
    assert_never_retried(redis_server, job_id)


@pytest.fixture
def fifo(file_root: Path) -> Iterator[Path]:
    path = file_root / f"pipe-{uuid.uuid4().hex[:8]}.png"
    os.mkfifo(path)
    yield path
    path.unlink()


def test_a_fifo_in_a_file_root_is_refused_at_once_instead_of_blocking_the_worker(
    redis_server: RedisServer, shared_queue: str, fifo: Path
) -> None:
    # Before the fix the worker blocked in open() until the job timeout (60 s here),
    # whatever deadline_ms said; 30 s is generous for a loaded machine and far below it.
    job_id, result = run_raw(
        redis_server, shared_queue, json.dumps(f"file://{fifo}"), timeout=30, deadline_ms=2000
    )
    assert result["error"]["code"] == "read_failed"
    assert "not a regular file" in result["error"]["message"]
    assert_never_retried(redis_server, job_id)


def test_a_bucket_folder_without_a_trailing_slash_admits_only_whole_segments(
    redis_server: RedisServer,
    s3_endpoint: str,
    file_root: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    data = digital_invoice(120).data
    client = s3_client(s3_endpoint)
    client.put_object(Bucket=BUCKET, Key="in/ok.png", Body=data)
    client.put_object(Bucket=BUCKET, Key="in-evil/stolen.png", Body=data)
    queue = f"qr-folder-{uuid.uuid4().hex[:6]}"
    start_worker(redis_server.url, queue, QRW_S3_BUCKETS=f"{BUCKET}/in")
    _, allowed = run_raw(redis_server, queue, json.dumps(f"s3://{BUCKET}/in/ok.png"))
    _, evil = run_raw(redis_server, queue, json.dumps(f"s3://{BUCKET}/in-evil/stolen.png"))
    assert allowed["ok"] is True
    assert evil["error"]["code"] == "refused_reference"


def test_a_literal_hash_in_a_key_is_answered_at_once_instead_of_reading_the_key_before_it(
    redis_server: RedisServer, shared_queue: str, s3_endpoint: str
) -> None:
    # Issue 18: `s3://invoices/in/a#b.png` read the object `in/a` (a fragment dropped): here
    # an invoice, so the job answered with another object's codes under this reference.
    s3_client(s3_endpoint).put_object(Bucket=BUCKET, Key="in/a", Body=digital_invoice(121).data)
    job_id, result = run_raw(redis_server, shared_queue, json.dumps(f"s3://{BUCKET}/in/a#b.png"))
    assert result["error"]["code"] == "invalid_payload", result
    assert "%23" in result["error"]["message"]
    assert_never_retried(redis_server, job_id)
