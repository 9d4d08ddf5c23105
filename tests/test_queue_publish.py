"""Publishing a job's result (worker/queue/publish.lua through `Publisher`), against the
session's real redis-server: exactly once per enqueue, all or nothing, and never into a
key that is not ours."""

from __future__ import annotations

import json
import math
import threading
import uuid
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from rq.job import JobStatus

from models.synth import digital_invoice
from tests.services import RedisServer, wait_until
from worker.queue import producer
from worker.queue.job import QrJob
from worker.queue.replies import Publisher
from worker.settings import Settings


def document(job_id: str, **fields: Any) -> dict[str, Any]:
    return {"job_id": job_id, "ok": True, "error": None, "codes": [], **fields}


def fresh_id() -> str:
    return str(uuid.uuid4())


def stream_entries(client: redis.Redis, job_id: str) -> list[dict[bytes, bytes]]:
    entries = client.xrevrange("qrw:results", count=500)
    return [fields for _, fields in entries if fields[b"job_id"].decode() == job_id]


def stored(client: redis.Redis, job_id: str) -> dict[str, Any]:
    raw = client.get(f"qrw:result:{job_id}")
    assert raw is not None, f"no result stored for {job_id}"
    return json.loads(raw)


def replies_on(client: redis.Redis, reply_to: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in client.lrange(reply_to, 0, -1)]


@pytest.fixture
def client(redis_server: RedisServer) -> redis.Redis:
    return redis_server.client()


@pytest.fixture
def publisher(client: redis.Redis, settings: Settings) -> Publisher:
    return Publisher(client, settings)


def test_a_result_is_stored_streamed_and_pushed_to_its_reply_list(
    publisher: Publisher, client: redis.Redis
) -> None:
    job_id, reply_to = fresh_id(), f"qrw:reply:{fresh_id()}"
    assert publisher.publish(document(job_id, meta={"t": "é"}), reply_to, "enqueue-1") is True
    assert stored(client, job_id)["meta"] == {"t": "é"}
    assert [r["job_id"] for r in replies_on(client, reply_to)] == [job_id]
    assert 0 < client.ttl(reply_to) <= 86_400
    (entry,) = stream_entries(client, job_id)
    assert entry[b"ok"] == b"1" and b"reply_error" not in entry
    assert client.get(f"qrw:delivery:{job_id}") == b"enqueue-1"
    assert 0 < client.ttl(f"qrw:delivery:{job_id}") <= client.ttl(f"qrw:result:{job_id}") + 1


def test_running_the_same_job_again_delivers_its_result_only_once(
    publisher: Publisher, client: redis.Redis
) -> None:
    job_id, reply_to = fresh_id(), f"qrw:reply:{fresh_id()}"
    assert publisher.publish(document(job_id, run=1), reply_to, "enqueue-1") is True
    assert publisher.publish(document(job_id, run=2), reply_to, "enqueue-1") is False
    assert [r["run"] for r in replies_on(client, reply_to)] == [1]
    assert stored(client, job_id)["run"] == 1
    assert len(stream_entries(client, job_id)) == 1


def test_a_new_job_reusing_an_id_gets_its_own_result(
    publisher: Publisher, client: redis.Redis
) -> None:
    """Defect 9: the second job under a reused id was taken for a duplicate delivery of the
    first (SET NX) and its result silently dropped."""
    job_id, reply_to = fresh_id(), f"qrw:reply:{fresh_id()}"
    assert publisher.publish(document(job_id, run=1), reply_to, "enqueue-1") is True
    assert publisher.publish(document(job_id, run=2), reply_to, "enqueue-2") is True
    assert [r["run"] for r in replies_on(client, reply_to)] == [1, 2]
    assert stored(client, job_id)["run"] == 2
    assert client.get(f"qrw:delivery:{job_id}") == b"enqueue-2"
    assert len(stream_entries(client, job_id)) == 2


def test_without_a_delivery_token_the_first_result_stays(
    publisher: Publisher, client: redis.Redis
) -> None:
    job_id, reply_to = fresh_id(), f"qrw:reply:{fresh_id()}"
    assert publisher.publish(document(job_id, run=1), reply_to) is True
    assert publisher.publish(document(job_id, run=2), reply_to) is False
    assert [r["run"] for r in replies_on(client, reply_to)] == [1]
    assert client.exists(f"qrw:delivery:{job_id}") == 0


def test_a_reply_list_outside_our_namespace_is_never_written(
    publisher: Publisher, client: redis.Redis
) -> None:
    """Defect 8: another application's list got our result and an EXPIRE (its data gone a
    day later)."""
    theirs = f"app:list:{fresh_id()}"
    client.rpush(theirs, "owner-1", "owner-2")
    job_id = fresh_id()
    assert publisher.publish(document(job_id), theirs, "enqueue-1") is True
    assert client.lrange(theirs, 0, -1) == [b"owner-1", b"owner-2"]
    assert client.ttl(theirs) == -1
    result = stored(client, job_id)
    assert result["reply_error"]["code"] == "reply_outside_namespace"
    assert result["ok"] is True  # the scan itself succeeded; only the reply was refused
    (entry,) = stream_entries(client, job_id)
    assert entry[b"reply_error"] == b"reply_outside_namespace"
    assert json.loads(entry[b"result"]) == result


@pytest.mark.parametrize(
    ("kind", "create", "read"),
    [
        ("string", lambda c, k: c.set(k, "theirs"), lambda c, k: c.get(k)),
        ("hash", lambda c, k: c.hset(k, "field", "theirs"), lambda c, k: c.hgetall(k)),
        ("set", lambda c, k: c.sadd(k, "theirs"), lambda c, k: c.smembers(k)),
        ("zset", lambda c, k: c.zadd(k, {"theirs": 1}), lambda c, k: c.zrange(k, 0, -1)),
        ("stream", lambda c, k: c.xadd(k, {"f": "theirs"}), lambda c, k: c.xlen(k)),
    ],
)
def test_a_reply_key_that_is_not_a_list_is_left_alone_and_the_result_still_delivered(
    publisher: Publisher, client: redis.Redis, kind: str, create: Any, read: Any
) -> None:
    """Defect 8: the script failed half-way (SET and XADD applied, RPUSH not), the job ran
    again and its reply never arrived. Now the type is checked before any write."""
    reply_to = f"qrw:reply:{fresh_id()}"
    create(client, reply_to)
    before = read(client, reply_to)
    job_id = fresh_id()
    assert publisher.publish(document(job_id), reply_to, "enqueue-1") is True
    assert read(client, reply_to) == before
    assert client.ttl(reply_to) == -1
    result = stored(client, job_id)
    assert result["reply_error"]["code"] == "reply_not_a_list"
    assert kind in result["reply_error"]["message"]
    (entry,) = stream_entries(client, job_id)
    assert entry[b"reply_error"] == b"reply_not_a_list"
    # Run again (as RQ would after a failure): still one delivery, nothing half-done.
    assert publisher.publish(document(job_id), reply_to, "enqueue-1") is False
    assert len(stream_entries(client, job_id)) == 1


def test_a_broken_results_stream_fails_the_publish_before_anything_is_written(
    tmp_path: Path, settings: Settings
) -> None:
    """All or nothing: if one write would fail, none is made."""
    server = RedisServer(tmp_path / "redis", persistence=False)
    try:
        client = server.client()
        client.set("qrw:results", "not a stream")
        job_id, reply_to = fresh_id(), f"qrw:reply:{fresh_id()}"
        with pytest.raises(redis.ResponseError, match="qrw:results"):
            Publisher(client, settings).publish(document(job_id), reply_to, "enqueue-1")
        assert client.exists(f"qrw:result:{job_id}", f"qrw:delivery:{job_id}", reply_to) == 0
    finally:
        server.stop()


def test_the_script_is_registered_once_and_run_by_its_digest(
    publisher: Publisher, client: redis.Redis
) -> None:
    def calls(command: str) -> int:
        return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))

    eval_before, evalsha_before = calls("eval"), calls("evalsha")
    for _ in range(3):
        publisher.publish(document(fresh_id()), None, "enqueue-1")
    assert calls("eval") == eval_before
    assert calls("evalsha") >= evalsha_before + 3


def test_the_script_is_loaded_again_when_redis_has_forgotten_it(
    publisher: Publisher, client: redis.Redis
) -> None:
    publisher.publish(document(fresh_id()), None, "enqueue-1")
    client.script_flush()  # what a Redis restart does to the script cache
    job_id = fresh_id()
    assert publisher.publish(document(job_id), None, "enqueue-1") is True
    assert stored(client, job_id)["job_id"] == job_id


def test_a_redis_restart_during_a_publish_is_ridden_out_and_the_script_loaded_again(
    tmp_path: Path, settings: Settings
) -> None:
    server = RedisServer(tmp_path / "restarting")
    try:
        client = server.client()
        publisher = Publisher(client, settings)
        publisher.publish(document(fresh_id()), None, "enqueue-1")
        server.stop()  # and with it the script cache
        restart = threading.Timer(1.0, server.start)
        restart.start()
        job_id = fresh_id()
        assert publisher.publish(document(job_id), None, "enqueue-1") is True
        restart.join()
        assert stored(client, job_id)["job_id"] == job_id
    finally:
        server.stop()


def test_text_that_utf8_cannot_carry_is_published_as_replacement_characters(
    publisher: Publisher, client: redis.Redis
) -> None:
    """A lone surrogate is valid JSON but not UTF-8: it used to crash the worker while the
    result was encoded. It is a bug upstream (request fields are validated), but the
    publisher must still deliver a result that strict JSON parsers read."""
    job_id, reply_to = fresh_id(), f"qrw:reply:{fresh_id()}"
    doc = document(job_id, request_id="a\ud800b", meta={"k\udfff": 1}, timings_ms={"x": math.nan})
    assert publisher.publish(doc, reply_to, "enqueue-1") is True
    raw = client.get(f"qrw:result:{job_id}")
    raw.decode("utf-8")  # strict
    result = json.loads(raw, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert result["request_id"] == "a\ufffdb"
    assert result["meta"] == {"k\ufffd": 1}
    assert result["timings_ms"] == {"x": None}
    assert replies_on(client, reply_to) == [result]


# Through a real worker: jobs enqueued with raw Redis commands, as the Rust producer does.


def enqueue_raw(
    client: redis.Redis,
    queue: str,
    job_id: str,
    payload: dict[str, Any],
    *,
    reuse: bool = False,
    **fields: str,
) -> None:
    stamp = producer.rq_timestamp()
    with client.pipeline(transaction=True) as pipe:
        if reuse:  # as docs/protocol.md says: the finished hash goes, with its TTL
            pipe.delete(f"rq:job:{job_id}")
        pipe.hset(
            f"rq:job:{job_id}",
            mapping={
                "data": json.dumps(["jobs.scan", None, [payload], {}]),
                "origin": queue,
                "status": "queued",
                "created_at": stamp,
                "enqueued_at": stamp,
                "timeout": "60",
                **fields,
            },
        )
        pipe.rpush(f"rq:queue:{queue}", job_id)
        pipe.execute()


@pytest.fixture(scope="module")
def invoice(file_root: Path) -> str:
    path = file_root / "publish.png"
    path.write_bytes(digital_invoice(63).data)
    return f"file://{path}"


def test_a_job_whose_reply_key_holds_a_string_ends_once_with_its_result_stored(
    redis_server: RedisServer, shared_queue: str, invoice: str
) -> None:
    """Defect 8 end to end: the publish failed half-way, the job failed (and, with retries,
    ran again) and the reply never arrived. `retries_left 0` makes the old failure visible
    as RQ's status."""
    client = redis_server.client()
    reply_to = f"qrw:reply:{fresh_id()}"
    client.set(reply_to, "theirs")
    job_id = fresh_id()
    enqueue_raw(
        client, shared_queue, job_id, {"image": invoice, "reply_to": reply_to}, retries_left="0"
    )
    wait_until(lambda: client.exists(f"qrw:result:{job_id}"), 60, "the result")
    wait_until(lambda: client.hget(f"rq:job:{job_id}", "status") != b"started", 30, "job end")
    assert client.hget(f"rq:job:{job_id}", "status") == b"finished"
    result = stored(client, job_id)
    assert result["ok"] is True
    assert result["reply_error"]["code"] == "reply_not_a_list"
    assert client.get(reply_to) == b"theirs"
    assert len(stream_entries(client, job_id)) == 1


def test_a_job_naming_another_applications_list_never_touches_it(
    redis_server: RedisServer, shared_queue: str, invoice: str
) -> None:
    """Defect 8 end to end: an existing `app:list` got our result and an EXPIRE 86400."""
    client = redis_server.client()
    theirs = f"app:list:{fresh_id()}"
    client.rpush(theirs, "owner-1")
    job_id = fresh_id()
    enqueue_raw(client, shared_queue, job_id, {"image": invoice, "reply_to": theirs})
    wait_until(lambda: client.exists(f"qrw:result:{job_id}"), 60, "the result")
    assert client.lrange(theirs, 0, -1) == [b"owner-1"]
    assert client.ttl(theirs) == -1
    assert len(stream_entries(client, job_id)) == 1


# RQ's bookkeeping after a run, against a hash a new job under the same id has taken.

GUARD_QUEUE = "qr-guard-nobody-pops"  # jobs written here are only read, never run


def bookkeeping_after_success(job: QrJob, result_ttl: int = 500) -> None:
    """What RQ's handle_job_success writes to the job hash, after the result is out
    (`result_ttl` 0: it deletes the hash instead)."""
    job.heartbeat(datetime.now(UTC), 60)  # RQ's handle_execution_ended, unpipelined
    with job.connection.pipeline() as pipe:
        if result_ttl:
            job.set_status(JobStatus.FINISHED, pipeline=pipe)
            job.save(pipeline=pipe, include_meta=False, include_result=False)
        job.cleanup(result_ttl, pipeline=pipe, remove_from_queue=False)
        pipe.execute()


@pytest.mark.parametrize("result_ttl", [500, 0])
def test_rqs_writes_after_a_run_leave_a_new_job_under_the_same_id_alone(
    client: redis.Redis, result_ttl: int
) -> None:
    """Defect 9: RQ's bookkeeping rewrote the whole hash after the reply was out, so a job
    written under the id in between became the old one again (its data, created_at, status
    finished, a 500 s TTL) and was never run."""
    job_id = fresh_id()
    enqueue_raw(client, GUARD_QUEUE, job_id, {"image": "file:///a.png", "request_id": "first"})
    job = QrJob.fetch(job_id, connection=client)
    enqueue_raw(client, GUARD_QUEUE, job_id, {"image": "file:///a.png", "request_id": "second"})
    new_job = client.hgetall(f"rq:job:{job_id}")
    assert job.holds_hash() is False
    bookkeeping_after_success(job, result_ttl)
    assert client.hgetall(f"rq:job:{job_id}") == new_job
    assert client.ttl(f"rq:job:{job_id}") == -1


def test_rqs_writes_after_a_run_land_on_the_hash_the_job_was_read_from(
    client: redis.Redis,
) -> None:
    job_id = fresh_id()
    enqueue_raw(client, GUARD_QUEUE, job_id, {"image": "file:///a.png", "request_id": "only"})
    job = QrJob.fetch(job_id, connection=client)
    bookkeeping_after_success(job)
    key = f"rq:job:{job_id}"
    assert client.hget(key, "status") == b"finished"
    assert 0 < client.ttl(key) <= 500
    assert client.hget(key, "last_heartbeat")
    # RQ's save stored `data` compressed; the job still holds its hash, so later writes land.
    assert json.loads(zlib.decompress(client.hget(key, "data")))[2][0]["request_id"] == "only"
    assert job.holds_hash() is True
    job.set_status(JobStatus.FAILED)
    assert client.hget(key, "status") == b"failed"
    bookkeeping_after_success(job, result_ttl=0)
    assert client.exists(key) == 0


def test_rqs_writes_never_bring_back_a_deleted_job_hash(client: redis.Redis) -> None:
    job_id = fresh_id()
    enqueue_raw(client, GUARD_QUEUE, job_id, {"image": "file:///a.png"})
    job = QrJob.fetch(job_id, connection=client)
    client.delete(f"rq:job:{job_id}")
    bookkeeping_after_success(job)
    assert client.exists(f"rq:job:{job_id}") == 0


def test_two_jobs_enqueued_one_after_the_other_under_one_id_both_get_their_result(
    redis_server: RedisServer, shared_queue: str, invoice: str
) -> None:
    """Defect 9 end to end: the second job under a reused id was taken for a re-run of the
    first (SET NX) and its result silently dropped; later, when the producer reused the id as
    soon as the reply arrived, RQ's bookkeeping (after the publish) overwrote the new job.
    The producer here waits for nothing but the reply (docs/protocol.md, Result)."""
    client = redis_server.client()
    patient = redis.Redis(port=redis_server.port, socket_timeout=90)
    job_id, reply_to = fresh_id(), f"qrw:reply:{fresh_id()}"
    for run in ("first", "second"):
        payload = {"image": invoice, "reply_to": reply_to, "request_id": run}
        enqueue_raw(client, shared_queue, job_id, payload, reuse=run == "second")
        popped = patient.blpop([reply_to], timeout=60)
        assert popped is not None, f"no result for the {run} job under {job_id}"
        result = json.loads(popped[1])
        assert (result["job_id"], result["request_id"]) == (job_id, run)
    wait_until(lambda: client.hget(f"rq:job:{job_id}", "status") == b"finished", 30, "RQ to finish")
    assert stored(client, job_id)["request_id"] == "second"
    assert len(stream_entries(client, job_id)) == 2
