"""Two payload fields for producers that collect from their own reply list (a backfill):
`result_ttl` (how long the result and its delivery token stay in Redis) and `stream`
(false: the result stays out of the capped `qrw:results` stream).

Jobs are written with raw Redis commands, as docs/protocol.md tells a producer, to one real
worker. Neither field is echoed in the result; both also rule a job's failure result, and
a bad value is `invalid_payload` at once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from models.synth import digital_invoice
from tests.conftest import reply_list, wait_result, worker_env
from tests.services import RedisServer, WorkerProcess, wait_until
from worker.queue import names
from worker.queue.producer import rq_timestamp
from worker.queue.replies import Publisher
from worker.settings import Settings

QUEUE = "qr-fields"
ANSWER_S = 60  # generous: the answers come in milliseconds, the cores are shared
DAY = 86_400  # QRW_RESULT_TTL's default, which the worker runs with


@pytest.fixture(scope="module")
def image(file_root: Path) -> str:
    path = file_root / "fields.png"
    path.write_bytes(digital_invoice(71).data)
    return f"file://{path}"


@pytest.fixture(scope="module")
def client(
    redis_server: RedisServer,
    s3_endpoint: str,
    file_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[redis.Redis]:
    """The session's Redis, with one worker on QUEUE."""
    log = tmp_path_factory.mktemp("fields-worker") / "worker.log"
    worker = WorkerProcess(worker_env(redis_server.url, s3_endpoint, file_root), QUEUE, 1, log=log)
    connection = redis_server.client()
    wait_until(lambda: connection.scard(names.rq_queue_workers_key(QUEUE)) == 1, 90, "the worker")
    yield connection
    worker.stop()


def push(client: redis.Redis, payload: dict[str, Any], **fields: str) -> str:
    """HSET the job hash and RPUSH its id in one MULTI, as a producer in any language does."""
    job_id = str(uuid.uuid4())
    stamp = rq_timestamp()
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(
            names.rq_job_key(job_id),
            mapping={
                "data": json.dumps(["jobs.scan", None, [payload], {}]),
                "origin": QUEUE,
                "status": "queued",
                "created_at": stamp,
                "enqueued_at": stamp,
                "timeout": "60",
                **fields,
            },
        )
        pipe.rpush(names.rq_queue_key(QUEUE), job_id)
        pipe.execute()
    return job_id


def stream_tip(client: redis.Redis) -> str:
    newest = client.xrevrange(names.RESULTS_STREAM, count=1)
    return newest[0][0].decode() if newest else "0-0"


def streamed_since(client: redis.Redis, tip: str) -> list[str]:
    """Job ids of the stream entries added after `tip`."""
    return [
        fields[b"job_id"].decode()
        for entry_id, fields in client.xrange(names.RESULTS_STREAM, min=tip)
        if entry_id.decode() != tip
    ]


def answer(client: redis.Redis, redis_server: RedisServer, reply_to: str, job_id: str) -> dict:
    result = wait_result(redis_server, reply_to, ANSWER_S)
    assert result["job_id"] == job_id
    return result


def test_a_job_with_stream_false_gets_its_reply_and_result_but_no_stream_entry(
    client: redis.Redis, redis_server: RedisServer, image: str
) -> None:
    tip = stream_tip(client)
    reply_to = reply_list()
    quiet = push(client, {"image": image, "reply_to": reply_to, "stream": False})
    result = answer(client, redis_server, reply_to, quiet)
    assert result["ok"] is True, result
    assert json.loads(client.get(names.result_key(quiet)))["job_id"] == quiet
    assert client.get(names.delivery_key(quiet))  # once per enqueue, as ever
    # A job without the field, finished after it, is streamed: the stream was looked at.
    loud = push(client, {"image": image, "reply_to": reply_to})
    answer(client, redis_server, reply_to, loud)
    streamed = streamed_since(client, tip)
    assert loud in streamed
    assert quiet not in streamed


def test_result_ttl_sets_how_long_the_result_and_its_delivery_token_stay(
    client: redis.Redis, redis_server: RedisServer, image: str
) -> None:
    reply_to = reply_list()
    job_id = push(
        client, {"images": [image, image], "reply_to": reply_to, "result_ttl": 120, "stream": True}
    )
    wait_until(lambda: client.llen(reply_to), ANSWER_S, "the reply")
    assert 60 < client.ttl(names.result_key(job_id)) <= 120
    assert 60 < client.ttl(names.delivery_key(job_id)) <= 120
    # The reply list is shared by many jobs: it keeps QRW_RESULT_TTL.
    assert client.ttl(reply_to) > DAY - 600
    assert answer(client, redis_server, reply_to, job_id)["ok"] is True


def test_without_result_ttl_the_result_stays_for_qrw_result_ttl(
    client: redis.Redis, redis_server: RedisServer, image: str
) -> None:
    reply_to = reply_list()
    job_id = push(client, {"image": image, "reply_to": reply_to, "result_ttl": None})
    answer(client, redis_server, reply_to, job_id)
    assert client.ttl(names.result_key(job_id)) > DAY - 600
    assert client.ttl(names.delivery_key(job_id)) > DAY - 600


def test_neither_field_is_echoed_in_the_result(
    client: redis.Redis, redis_server: RedisServer, image: str
) -> None:
    reply_to = reply_list()
    job_id = push(
        client, {"images": [image], "reply_to": reply_to, "result_ttl": 300, "stream": False}
    )
    result = answer(client, redis_server, reply_to, job_id)
    text = json.dumps(result)
    assert "result_ttl" not in text and '"stream"' not in text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("result_ttl", 59),
        ("result_ttl", 0),
        ("result_ttl", -60),
        ("result_ttl", 30 * 86_400 + 1),
        ("result_ttl", "3600"),
        ("result_ttl", 3600.0),
        ("result_ttl", True),
        ("result_ttl", [3600]),
        ("stream", "false"),
        ("stream", 0),
        ("stream", 1),
        ("stream", {}),
    ],
)
def test_a_bad_value_is_invalid_payload_at_once(
    client: redis.Redis, redis_server: RedisServer, image: str, field: str, value: object
) -> None:
    reply_to = reply_list()
    job_id = push(client, {"image": image, "reply_to": reply_to, field: value})
    result = answer(client, redis_server, reply_to, job_id)
    assert result["ok"] is False
    assert result["error"]["code"] == "invalid_payload"
    assert f"'{field}'" in result["error"]["message"]
    # Answered, never retried: one result, and RQ counted no second run.
    assert client.hget(names.rq_job_key(job_id), "number_of_retries") in (None, b"0")


def test_a_failed_job_follows_stream_false_and_result_ttl_too(
    client: redis.Redis, redis_server: RedisServer, image: str
) -> None:
    # The other fields are read on their own: one broken field does not send a backfill's
    # failure into the stream, nor keep it for a day.
    tip = stream_tip(client)
    reply_to = reply_list()
    job_id = push(
        client,
        {
            "image": image,
            "want": "everything",
            "reply_to": reply_to,
            "result_ttl": 90,
            "stream": False,
        },
    )
    result = answer(client, redis_server, reply_to, job_id)
    assert result["error"]["code"] == "invalid_payload"
    assert "'want'" in result["error"]["message"]
    assert 0 < client.ttl(names.result_key(job_id)) <= 90
    assert job_id not in streamed_since(client, tip)


def test_a_job_refused_before_it_runs_follows_them_too(
    client: redis.Redis, redis_server: RedisServer, image: str
) -> None:
    tip = stream_tip(client)
    reply_to = reply_list()
    payload = {"image": image, "reply_to": reply_to, "result_ttl": 90, "stream": False}
    job_id = push(client, payload, timeout="1h")  # refused by the worker's checks, never run
    result = answer(client, redis_server, reply_to, job_id)
    assert result["error"]["code"] == "invalid_payload"
    assert "timeout" in result["error"]["message"]
    assert 0 < client.ttl(names.result_key(job_id)) <= 90
    assert job_id not in streamed_since(client, tip)


def test_a_second_publish_of_one_enqueue_writes_nothing_with_the_new_fields(
    redis_server: RedisServer, settings: Settings
) -> None:
    # A job run again after its worker died: the delivery token keeps it to one result,
    # whatever TTL and stream choice it carries.
    client = redis_server.client()
    publisher = Publisher(client, settings)
    job_id, reply_to = str(uuid.uuid4()), reply_list()
    document = {"job_id": job_id, "ok": True, "error": None, "codes": []}
    first = publisher.publish(document, reply_to, "enqueue-1", result_ttl=60, stream=False)
    again = publisher.publish(
        {**document, "run": 2}, reply_to, "enqueue-1", result_ttl=60, stream=False
    )
    assert (first, again) == (True, False)
    assert client.llen(reply_to) == 1
    assert 0 < client.ttl(names.delivery_key(job_id)) <= 60
    # A new enqueue under the id gets its own result, as ever.
    assert publisher.publish(document, reply_to, "enqueue-2", result_ttl=60, stream=False)
    assert client.llen(reply_to) == 2
