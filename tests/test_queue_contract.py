"""The job contract at the queue's edge: every job a producer can write with raw Redis
commands ends in exactly one answer, at once, and no worker process dies.

Each hostile job here is written exactly as a buggy or hostile producer would write it
(HSET rq:job:<id> ... and RPUSH rq:queue:<queue> <id>), against one real worker whose
process id must be the same after every test. A job with a usable id gets one published
result under that id; a job whose id is unusable as a key gets one entry on the
dead-letter stream instead.
"""

from __future__ import annotations

import json
import re
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from models.synth import digital_invoice
from tests.conftest import BUCKET, reply_list, s3_client, worker_env
from tests.services import RedisServer, WorkerProcess, wait_until
from worker.queue import envelope, names
from worker.queue.producer import rq_timestamp

QUEUE = "qr-contract"
# Generous: two cores are shared by every test process; the answers come in milliseconds.
ANSWER_S = 45


@dataclass
class Contract:
    client: redis.Redis
    worker: WorkerProcess
    worker_pid: int  # the pool's one worker process (RQ may start a scheduler under it)
    log: Path

    def assert_worker_survived(self) -> None:
        assert self.worker.process.poll() is None, self.log_tail()
        assert pool_children(self.worker) == [self.worker_pid], (
            "the worker process died and was respawned\n" + self.log_tail()
        )

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def pool_children(worker: WorkerProcess) -> list[int]:
    pool = worker.process.pid
    return [pid for pid in worker.descendants() if parent_pid(pid) == pool]


@pytest.fixture(scope="module")
def contract(
    redis_server: RedisServer,
    s3_endpoint: str,
    file_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Contract]:
    log = tmp_path_factory.mktemp("contract-worker") / "worker.log"
    env = worker_env(redis_server.url, s3_endpoint, file_root)
    worker = WorkerProcess(env, QUEUE, 1, log=log)
    client = redis_server.client()
    wait_until(
        lambda: client.scard(names.rq_queue_workers_key(QUEUE)) == 1, 90, "the worker to start"
    )
    children = pool_children(worker)
    assert len(children) == 1
    client_s3 = s3_client(s3_endpoint)
    client_s3.put_object(Bucket=BUCKET, Key="in/contract.png", Body=b"not an image")
    client_s3.put_object(Bucket=BUCKET, Key="in/contract-good.png", Body=digital_invoice(800).data)
    yield Contract(client, worker, children[0], log)
    worker.stop()


def job_data(payload: Any, *, function: str = "jobs.scan", instance: Any = None) -> str:
    return json.dumps([function, instance, [payload], {}])


def push(client: redis.Redis, job_id: str | bytes, *, enqueue: bool = True, **fields: Any) -> None:
    """HSET the job hash (the protocol's fields unless overridden; None leaves one out),
    then RPUSH its id, in one transaction, exactly as docs/protocol.md tells a producer."""
    stamp = rq_timestamp()
    mapping = {
        "data": job_data({"image": f"s3://{BUCKET}/in/contract.png"}),
        "origin": QUEUE,
        "status": "queued",
        "created_at": stamp,
        "enqueued_at": stamp,
        "timeout": "60",
        **fields,
    }
    key = names.RQ_JOB_PREFIX.encode() + (job_id if isinstance(job_id, bytes) else job_id.encode())
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping={k: v for k, v in mapping.items() if v is not None})
        if enqueue:
            pipe.rpush(names.rq_queue_key(QUEUE), job_id)
        pipe.execute()


def new_id() -> str:
    return str(uuid.uuid4())


def result_of(contract: Contract, job_id: str) -> dict[str, Any]:
    raw = wait_until(
        lambda: contract.client.get(names.result_key(job_id)), ANSWER_S, f"the result of {job_id}"
    )
    return json.loads(raw)


def assert_answered_once_and_never_run(contract: Contract, job_id: str, code: str) -> dict:
    """One result with `code`, one stream entry, the hash failed and never run: out of RQ's
    queue and started registry, and in its failed registry only with our failure text."""
    result = result_of(contract, job_id)
    assert result["ok"] is False
    assert result["error"]["code"] == code, result["error"]
    assert result["error"]["message"]
    client = contract.client
    streamed = [
        fields
        for _, fields in client.xrange(names.RESULTS_STREAM)
        if fields[b"job_id"] == job_id.encode()
    ]
    assert len(streamed) == 1
    job_key = names.rq_job_key(job_id)
    wait_until(lambda: client.hget(job_key, "status") == b"failed", 10, "the job marked failed")
    # RQ never ran it: no run was counted, and it is in none of RQ's lists or registries.
    assert client.hget(job_key, "number_of_retries") is None
    assert client.hget(job_key, "started_at") in (None, b"")
    queue_key = names.rq_queue_key(QUEUE)
    for listed in (queue_key, f"{queue_key}:intermediate"):
        assert job_id.encode() not in client.lrange(listed, 0, -1)
    started = client.zrange(names.rq_started_key(QUEUE), 0, -1)
    assert not [m for m in started if m.startswith(job_id.encode())]
    # A refused hash RQ's tools can read is listed in RQ's failed registry, as any failed
    # job is (issue 17, point 14), with the code and message as its failure text.
    if client.zscore(names.rq_failed_key(QUEUE), job_id) is not None:
        job = Job.fetch(job_id, connection=client, serializer=JSONSerializer)
        latest = job.latest_result()
        assert latest is not None and json.loads(latest.exc_string) == result["error"]
    contract.assert_worker_survived()
    return result


def dead_letters(client: redis.Redis, marker: str) -> list[dict[bytes, bytes]]:
    return [
        fields
        for _, fields in client.xrange(names.DEAD_LETTER_STREAM)
        if marker.encode() in fields.get(b"job_id", b"")
    ]


# -- defect 2: ids RQ cannot prepare -------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    ["a b-{m}", "x:y-{m}", "ü-{m}", "../x-{m}", "*-{m}", "a\nb-{m}", "{m}-" + "a" * 300],
    ids=["space", "colon", "non-ascii", "dot-dot-slash", "star", "newline", "too-long"],
)
def test_a_job_id_outside_the_allowed_characters_goes_to_the_dead_letter_stream(
    contract: Contract, shape: str
) -> None:
    marker = uuid.uuid4().hex[:12]
    job_id = shape.format(m=marker)
    push(contract.client, job_id)
    entries = wait_until(
        lambda: dead_letters(contract.client, marker), ANSWER_S, "the dead-letter entry"
    )
    assert len(entries) == 1
    entry = entries[0]
    assert entry[b"code"] == b"invalid_payload"
    assert entry[b"queue"] == QUEUE.encode()
    assert b"job id" in entry[b"message"]
    assert len(entry[b"job_id"]) <= 100  # quoted, and cut short when long
    assert contract.client.hget(names.rq_job_key(job_id), "status") == b"failed"
    assert contract.client.llen(f"{names.rq_queue_key(QUEUE)}:intermediate") == 0
    contract.assert_worker_survived()


@pytest.mark.parametrize("raw_id", [b"left behind", b"\xff-left-behind"], ids=["space", "not-utf8"])
def test_an_unusable_id_left_on_rqs_intermediate_list_is_dead_lettered_by_maintenance(
    contract: Contract, raw_id: bytes
) -> None:
    # A worker that died between popping an id and answering for it leaves the id on
    # RQ's intermediate list, where RQ's maintenance would raise on it in every worker.
    marker = uuid.uuid4().hex[:12]
    raw_id += marker.encode()
    contract.client.rpush(f"{names.rq_queue_key(QUEUE)}:intermediate", raw_id)
    entries = wait_until(
        lambda: dead_letters(contract.client, marker), 60, "maintenance to dead-letter it"
    )
    assert len(entries) == 1
    assert entries[0][b"code"] == b"invalid_payload"
    assert raw_id not in contract.client.lrange(f"{names.rq_queue_key(QUEUE)}:intermediate", 0, -1)
    contract.assert_worker_survived()


def test_a_job_id_that_is_not_utf8_goes_to_the_dead_letter_stream(contract: Contract) -> None:
    marker = uuid.uuid4().hex[:12]
    push(contract.client, b"\xff\xfe-" + marker.encode())
    entries = wait_until(
        lambda: dead_letters(contract.client, marker), ANSWER_S, "the dead-letter entry"
    )
    assert len(entries) == 1
    assert entries[0][b"code"] == b"invalid_payload"
    assert entries[0][b"job_id"].decode("ascii")  # quoted safely: plain ASCII
    contract.assert_worker_survived()


@pytest.mark.parametrize("timeout", ["1.5", "abc", "99999999999", "0", "-1", "1h", " 60"])
def test_a_timeout_that_is_not_a_whole_number_of_seconds_in_range_is_invalid(
    contract: Contract, timeout: str
) -> None:
    job_id = new_id()
    reply_to = reply_list()
    push(
        contract.client,
        job_id,
        data=job_data({"image": f"s3://{BUCKET}/in/contract.png", "reply_to": reply_to}),
        timeout=timeout,
    )
    result = assert_answered_once_and_never_run(contract, job_id, "invalid_payload")
    assert "timeout" in result["error"]["message"]
    # The producer waiting on its reply list hears about it too.
    assert json.loads(contract.client.lpop(reply_to)) == result


# -- defect 1: job data size, stored and inflated ------------------------------------------


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def peak_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]


def test_zlib_data_inflating_past_the_job_limit_is_refused_without_inflating_it(
    contract: Contract,
) -> None:
    # About 260 KB stored that would inflate to 256 MiB: the limit (1 MiB) stops it early.
    deflate = zlib.compressobj(9)
    parts = [deflate.compress(b'["jobs.scan",null,[{"image":"s3://invoices/in/')]
    chunk = b"a" * (1 << 20)
    parts += [deflate.compress(chunk) for _ in range(256)]
    parts += [deflate.compress(b'.png"}],{}]'), deflate.flush()]
    bomb = b"".join(parts)
    assert len(bomb) < 1_048_576
    before = peak_rss_kib(contract.worker_pid)
    job_id = new_id()
    push(contract.client, job_id, data=bomb)
    result = assert_answered_once_and_never_run(contract, job_id, "invalid_payload")
    assert "inflate" in result["error"]["message"]
    assert len(json.dumps(result)) < 4096
    assert peak_rss_kib(contract.worker_pid) - before < 64 * 1024


def test_a_zlib_bomb_in_rqs_traceback_field_is_refused_too(contract: Contract) -> None:
    # RQ inflates `exc_info` as it inflates `data`; a producer can write either.
    deflate = zlib.compressobj(9)
    parts = [deflate.compress(b"x" * (1 << 20)) for _ in range(256)] + [deflate.flush()]
    before = peak_rss_kib(contract.worker_pid)
    job_id = new_id()
    push(contract.client, job_id, exc_info=b"".join(parts))
    result = assert_answered_once_and_never_run(contract, job_id, "invalid_payload")
    assert "inflate" in result["error"]["message"]
    assert peak_rss_kib(contract.worker_pid) - before < 64 * 1024


def test_job_data_stored_larger_than_the_limit_is_refused_unread(contract: Contract) -> None:
    # Valid JSON (whitespace padding) that would otherwise run: 2 MiB stored.
    padded = job_data({"image": f"s3://{BUCKET}/in/contract.png"}) + " " * (2 << 20)
    job_id = new_id()
    push(contract.client, job_id, data=padded)
    result = assert_answered_once_and_never_run(contract, job_id, "invalid_payload")
    assert "bytes" in result["error"]["message"]


# -- defects 13 and 15: the shape of `data` ------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        json.dumps(["jobs.scan", {"self": 1}, [{"image": "s3://invoices/in/a.png"}], {}]),
        json.dumps(["jobs.scan", None, [{"image": "s3://invoices/in/a.png"}, 2], {}]),
        json.dumps(["jobs.scan", None, [], {}]),
        json.dumps(["jobs.scan", None, {"image": "s3://invoices/in/a.png"}, {}]),
        json.dumps(["jobs.scan", None, [{"image": "s3://invoices/in/a.png"}], {"x": 1}]),
        json.dumps(["jobs.scan", None, [{"image": "s3://invoices/in/a.png"}], []]),
        json.dumps(["jobs.scan", None, [{"image": "s3://invoices/in/a.png"}]]),
        json.dumps({"function": "jobs.scan"}),
        json.dumps([42, None, [{}], {}]),
        "not json",
        "",
    ],
    ids=[
        "instance",
        "two-args",
        "no-args",
        "args-not-a-list",
        "kwargs",
        "kwargs-not-an-object",
        "three-items",
        "an-object",
        "function-not-a-string",
        "not-json",
        "empty",
    ],
)
def test_data_of_the_wrong_shape_is_invalid_at_once(contract: Contract, data: str) -> None:
    job_id = new_id()
    push(contract.client, job_id, data=data)
    assert_answered_once_and_never_run(contract, job_id, "invalid_payload")


def test_a_job_hash_without_data_gets_a_result_and_a_log_line(contract: Contract) -> None:
    job_id = new_id()
    push(contract.client, job_id, data=None)
    result = assert_answered_once_and_never_run(contract, job_id, "invalid_payload")
    assert "data" in result["error"]["message"]
    wait_until(lambda: job_id in contract.log.read_text(errors="replace"), 10, "a log line")


def test_a_queued_id_without_a_job_hash_gets_a_result(contract: Contract) -> None:
    job_id = new_id()
    contract.client.rpush(names.rq_queue_key(QUEUE), job_id)
    result = result_of(contract, job_id)
    assert result["error"]["code"] == "invalid_payload"
    assert "no job hash" in result["error"]["message"]
    contract.assert_worker_survived()


def test_a_job_key_that_is_not_a_hash_gets_a_result(contract: Contract) -> None:
    job_id = new_id()
    contract.client.set(names.rq_job_key(job_id), "a string, not a hash")
    contract.client.rpush(names.rq_queue_key(QUEUE), job_id)
    result = result_of(contract, job_id)
    assert result["error"]["code"] == "invalid_payload"
    assert "not a job hash" in result["error"]["message"]
    assert contract.client.get(names.rq_job_key(job_id)) == b"a string, not a hash"
    contract.assert_worker_survived()


@pytest.mark.parametrize(
    "fields",
    [
        {"success_callback_name": "os.system"},
        {"failure_callback_name": "os.system"},
        {"webhooks": json.dumps([{"url": "http://127.0.0.1:9/hook"}])},
        {"dependency_ids": json.dumps(["other"])},
        {"repeats_left": "5"},
    ],
    ids=["success-callback", "failure-callback", "webhook", "dependency", "repeat"],
)
def test_rq_options_that_would_run_other_code_or_reach_other_hosts_are_refused(
    contract: Contract, fields: dict[str, str]
) -> None:
    job_id = new_id()
    push(contract.client, job_id, **fields)
    result = assert_answered_once_and_never_run(contract, job_id, "refused_job")
    assert next(iter(fields)) in result["error"]["message"]


def test_an_unreadable_rq_field_is_invalid_rather_than_a_crash(contract: Contract) -> None:
    job_id = new_id()
    push(contract.client, job_id, created_at="yesterday", result_ttl="forever")
    assert_answered_once_and_never_run(contract, job_id, "invalid_payload")


class _Shell:
    """What a pickle-speaking attacker writes: unpickling it runs a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return (os.system, (self.command,))


@pytest.mark.parametrize("field", ["meta", "result"])
def test_a_pickle_in_an_rq_field_is_never_loaded_even_by_rqs_maintenance(
    contract: Contract, tmp_path: Path, field: str
) -> None:
    import pickle

    marker = tmp_path / "pwned"
    job_id = new_id()
    # A job that looks abandoned (in RQ's started registry, its lease long expired): RQ's
    # maintenance reads the hash back with the queue's serializer, which is RQ's pickle
    # unless every queue the worker builds is JSON-only.
    shell = pickle.dumps(_Shell(f"touch {marker}"))
    push(contract.client, job_id, enqueue=False, status="started", **{field: shell})
    contract.client.zadd(names.rq_started_key(QUEUE), {f"{job_id}:abandoned": 1})
    wait_until(
        lambda: not contract.client.zscore(names.rq_started_key(QUEUE), f"{job_id}:abandoned"),
        60,
        "maintenance to handle the abandoned job",
    )
    result_of(contract, job_id)  # it was run again (a worker died, as far as RQ knows)
    assert not marker.exists()
    contract.assert_worker_survived()


# -- defects 3 and 7: only what passed validation is echoed --------------------------------


@pytest.mark.parametrize(
    "raw_payload",
    [
        '{"image": "s3://invoices/in/contract.png", "request_id": "\\ud800"}',
        '{"image": "s3://invoices/in/contract.png", "meta": {"note": "\\udfff"}}',
        '{"image": "s3://invoices/in/contract\\ud800.png"}',
    ],
    ids=["request_id", "meta", "image"],
)
def test_a_lone_surrogate_is_an_invalid_payload_at_once(
    contract: Contract, raw_payload: str
) -> None:
    job_id = new_id()
    push(contract.client, job_id, data=f'["jobs.scan", null, [{raw_payload}], {{}}]')
    result = result_of(contract, job_id)
    assert result["error"]["code"] == "invalid_payload"
    assert result["request_id"] is None
    assert result["meta"] is None
    assert contract.client.hget(names.rq_job_key(job_id), "number_of_retries") is None
    contract.assert_worker_survived()


def test_an_oversized_meta_is_refused_and_not_echoed(contract: Contract) -> None:
    job_id = new_id()
    reply_to = reply_list()
    payload = {
        "image": f"s3://{BUCKET}/in/contract.png",
        "request_id": "inv-7",
        "reply_to": reply_to,
        "meta": {"blob": "m" * 500_000},
    }
    push(contract.client, job_id, data=job_data(payload))
    result = result_of(contract, job_id)
    assert result["error"]["code"] == "invalid_payload"
    assert result["meta"] is None
    assert result["request_id"] == "inv-7"  # it passed its own rule, so it is echoed
    for stored in (
        contract.client.get(names.result_key(job_id)),
        contract.client.lindex(reply_to, 0),
    ):
        assert stored is not None and len(stored) < 4096


def test_an_oversized_image_reference_is_refused_and_quoted_short(contract: Contract) -> None:
    job_id = new_id()
    ref = f"s3://{BUCKET}/in/" + "r" * 500_000 + ".png"
    push(contract.client, job_id, data=job_data({"image": ref}))
    result = result_of(contract, job_id)
    assert result["error"]["code"] == "invalid_payload"
    assert len(contract.client.get(names.result_key(job_id))) < 4096


def test_an_image_reference_is_echoed_in_its_item_at_most_truncated(contract: Contract) -> None:
    job_id = new_id()
    ref = f"s3://someone-elses-bucket/{'k' * 3000}.png"
    push(contract.client, job_id, data=job_data({"images": [ref, ref]}))
    result = result_of(contract, job_id)
    assert [item["error"]["code"] for item in result["items"]] == ["refused_reference"] * 2
    for item in result["items"]:
        assert len(item["image"]) == 1024
        assert ref.startswith(item["image"].removesuffix("..."))
        assert len(item["error"]["message"]) < 600
    assert len(contract.client.get(names.result_key(job_id))) < 16_384


# -- defect 8, the payload side: reply lists live in their own namespace -------------------


@pytest.mark.parametrize("reply_to", ["app:list", "app-results", "qrw:result:x", "rq:queue:qr"])
def test_a_reply_list_outside_the_reply_namespace_is_refused_and_left_alone(
    contract: Contract, reply_to: str
) -> None:
    client = contract.client
    owner_key = f"{reply_to}-{uuid.uuid4().hex[:8]}"
    client.rpush(owner_key, "the owner's item")
    job_id = new_id()
    push(
        client,
        job_id,
        data=job_data({"image": f"s3://{BUCKET}/in/contract.png", "reply_to": owner_key}),
    )
    result = result_of(contract, job_id)
    assert result["error"]["code"] == "invalid_payload"
    assert "reply_to" in result["error"]["message"]
    assert client.lrange(owner_key, 0, -1) == [b"the owner's item"]
    assert client.ttl(owner_key) == -1


# -- defect 9: a new job reusing an id, and a job popped again ----------------------------


def test_a_job_reusing_an_id_right_after_the_first_reply_gets_its_own_result(
    contract: Contract, redis_server: RedisServer
) -> None:
    """Defect 9, the race left once results carried a delivery token: the result is published
    before RQ's own bookkeeping, which rewrote the whole job hash (the first job's data and
    created_at, status finished, a 500 s TTL). A producer that reused the id as soon as the
    reply arrived lost its new job to that rewrite: popped with the first job's token, it was
    taken for a re-run and nothing was published (10 of 10 times with one worker). Here the
    producer never waits for RQ's status; the second reuse replaces the hash with DEL, the
    third writes over it with a plain HSET."""
    patient = redis.Redis(port=redis_server.port, socket_timeout=90)
    reply_to, job_id = reply_list(), new_id()
    ref = f"s3://{BUCKET}/in/contract-good.png"
    for run in ("first", "second", "third"):
        if run == "second":
            contract.client.delete(names.rq_job_key(job_id))
        payload = {"image": ref, "reply_to": reply_to, "request_id": run}
        push(contract.client, job_id, data=job_data(payload))
        popped = patient.blpop([reply_to], timeout=ANSWER_S)
        assert popped is not None, f"no result for the {run} job under {job_id}\n" + (
            contract.log_tail()
        )
        result = json.loads(popped[1])
        assert (result["job_id"], result["request_id"], result["ok"]) == (job_id, run, True)
    job_key = names.rq_job_key(job_id)
    wait_until(lambda: contract.client.hget(job_key, "status") == b"finished", 30, "RQ's end")
    stored = envelope.inflate(contract.client.hget(job_key, "data"), 1 << 20)
    assert json.loads(stored)[2][0]["request_id"] == "third"  # the last job's, not clobbered
    assert contract.client.llen(reply_to) == 0
    assert not dead_letters(contract.client, job_id)
    contract.assert_worker_survived()


@pytest.mark.parametrize("status", ["finished", "failed", "started"])
def test_an_id_popped_again_while_its_hash_is_not_waiting_is_dead_lettered_not_run(
    contract: Contract, status: str
) -> None:
    """A second RPUSH of one enqueue (a producer retrying its push, a clobbered reuse): its
    result was delivered, or a worker is running it and will deliver one, so it is not run
    again. A second result would reach a producer that already has its one; instead one
    `duplicate_job` entry goes to the dead-letter stream and the hash is left alone."""
    job_id, reply_to = new_id(), reply_list()
    data = job_data({"image": f"s3://{BUCKET}/in/contract-good.png", "reply_to": reply_to})
    push(contract.client, job_id, data=data, status=status)
    job_key = names.rq_job_key(job_id)
    before = contract.client.hgetall(job_key)
    (entry,) = wait_until(
        lambda: dead_letters(contract.client, job_id), ANSWER_S, "the dead-letter entry"
    )
    assert entry[b"job_id"] == job_id.encode()
    assert entry[b"code"] == b"duplicate_job"
    assert status.encode() in entry[b"message"]
    assert contract.client.hgetall(job_key) == before
    assert contract.client.exists(names.result_key(job_id), reply_to) == 0
    assert contract.client.llen(f"{names.rq_queue_key(QUEUE)}:intermediate") == 0
    contract.assert_worker_survived()


# -- and after all that, the same worker still serves good jobs ----------------------------


def test_the_same_worker_still_reads_a_good_job(contract: Contract) -> None:
    job_id = new_id()
    ref = f"s3://{BUCKET}/in/contract-good.png"
    push(contract.client, job_id, data=job_data({"image": ref, "request_id": "good"}))
    result = result_of(contract, job_id)
    assert result["ok"] is True, result["error"]
    assert (result["image"], result["request_id"]) == (ref, "good")
    assert len(result["codes"]) == 1
    contract.assert_worker_survived()


# -- the envelope rules, one by one (no Redis) ---------------------------------------------


def test_inflation_stops_at_the_limit_and_plain_data_passes_through() -> None:
    from worker.queue import envelope

    text = b'["jobs.scan",null,[{"image":"s3://a/b"}],{}]'
    assert envelope.inflate(text, 100) == text
    assert envelope.inflate(zlib.compress(text), 100) == text
    assert envelope.inflate(zlib.compress(text)[:-6], 100) == zlib.compress(text)[:-6]
    with pytest.raises(envelope.InvalidJob, match="inflate"):
        envelope.inflate(zlib.compress(b" " * 101), 100)


def test_a_delivery_is_the_same_for_every_run_and_new_for_a_reused_id() -> None:
    from worker.queue import envelope

    data = b'["jobs.scan",null,[{"image":"s3://a/b"}],{}]'
    first = envelope.delivery("2026-12-02T09:00:00.000000Z", data)
    assert envelope.delivery("2026-12-02T09:00:00.000000Z", data) == first
    assert envelope.delivery("2026-12-02T09:00:01.000000Z", data) != first
    assert envelope.delivery("2026-12-02T09:00:00.000000Z", data.replace(b"b", b"c")) != first


@pytest.mark.parametrize(
    ("raw", "usable"),
    [
        (b"0f8c3b7e-1d2a-4c5b-9e6f-7a8b9c0d1e2f", True),
        (b"job_1", True),
        (b"a" * 128, True),
        (b"a" * 129, False),
        (b"", False),
        (b"x:y", False),
        ("ü".encode(), False),
        (b"\xff", False),
    ],
)
def test_a_job_id_is_usable_only_as_letters_digits_dash_and_underscore(
    raw: bytes, usable: bool
) -> None:
    from worker.queue import envelope

    if usable:
        assert envelope.job_id(raw) == raw.decode()
    else:
        with pytest.raises(envelope.UnusableJobId):
            envelope.job_id(raw)
        assert envelope.quote_id(raw).isascii()
