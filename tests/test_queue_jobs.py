"""Jobs through a real Redis and real workers: images from S3 (moto over HTTP) and
from allowed folders, results collected the way docs/protocol.md says."""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path

import pytest
import redis

from models.synth import digital_invoice, no_code_invoice
from tests.conftest import ARCHIVE, BUCKET, reply_list, s3_client, wait_result, wait_results
from tests.services import RedisServer, wait_until
from worker.queue import producer


@pytest.fixture(scope="module")
def objects(s3_endpoint: str, file_root: Path) -> dict[str, bytes]:
    """Invoices in the bucket and in the file root, by name; payloads by the same name."""
    client = s3_client(s3_endpoint)
    samples = {
        "one.png": digital_invoice(100),
        "two.jpg": digital_invoice(101, fmt="jpeg", n_codes=2),
        "doc.pdf": digital_invoice(102, fmt="pdf", pages=2, n_codes=2),
        "blank.png": no_code_invoice(103),
    }
    payloads: dict[str, bytes] = {}
    for name, sample in samples.items():
        client.put_object(Bucket=BUCKET, Key=f"in/{name}", Body=sample.data)
        (file_root / name).write_bytes(sample.data)
        payloads[name] = sample.codes[0].payload if sample.codes else b""
    client.put_object(Bucket=BUCKET, Key="in/corrupt.jpg", Body=samples["two.jpg"].data[:3000])
    client.put_object(Bucket=ARCHIVE, Key="2024/old.png", Body=samples["one.png"].data)
    client.put_object(Bucket=ARCHIVE, Key="2023/older.png", Body=samples["one.png"].data)
    return payloads


def run_job(redis_server: RedisServer, queue: str, payload: dict) -> dict:
    reply_to = reply_list()
    job_id = producer.enqueue(redis_server.client(), {**payload, "reply_to": reply_to}, queue=queue)
    result = wait_result(redis_server, reply_to)
    assert result["job_id"] == job_id
    return result


def test_a_single_image_job_returns_codes_and_a_timing_breakdown(
    redis_server: RedisServer, shared_queue: str, objects: dict[str, bytes]
) -> None:
    result = run_job(
        redis_server,
        shared_queue,
        {"image": f"s3://{BUCKET}/in/one.png", "request_id": "r-1", "meta": {"invoice": 7}},
    )
    assert result["ok"] is True
    assert result["error"] is None
    assert result["request_id"] == "r-1"
    assert result["meta"] == {"invoice": 7}
    assert base64.b64decode(result["codes"][0]["bytes_b64"]) == objects["one.png"]
    assert result["backend"] == "onnx"
    assert result["model"] == "qr-det-small,qr-det-medium"
    assert result["worker"]
    timings = result["timings_ms"]
    assert {"queue_wait", "fetch", "decode_image", "fast", "total"} <= set(timings)
    assert timings["total"] >= timings["fetch"]


def test_the_result_is_also_stored_under_its_key_and_streamed(
    redis_server: RedisServer, shared_queue: str, objects: dict[str, bytes]
) -> None:
    result = run_job(redis_server, shared_queue, {"image": f"s3://{BUCKET}/in/two.jpg"})
    client = redis_server.client()
    stored = json.loads(client.get(f"qrw:result:{result['job_id']}"))
    assert stored == result
    assert 0 < client.ttl(f"qrw:result:{result['job_id']}") <= 86_400
    entries = client.xrevrange("qrw:results", count=50)
    mine = [fields for _, fields in entries if fields[b"job_id"].decode() == result["job_id"]]
    assert len(mine) == 1
    assert json.loads(mine[0][b"result"]) == result
    assert mine[0][b"ok"] == b"1"


def test_a_batch_job_reads_every_image_in_order(
    redis_server: RedisServer, shared_queue: str, objects: dict[str, bytes]
) -> None:
    refs = [f"s3://{BUCKET}/in/{name}" for name in ("one.png", "doc.pdf", "blank.png")]
    result = run_job(redis_server, shared_queue, {"images": refs, "want": "all"})
    assert result["ok"] is True
    assert [item["image"] for item in result["items"]] == refs
    assert [len(item["codes"]) for item in result["items"]] == [1, 2, 0]
    assert all("fetch" in item["timings_ms"] for item in result["items"])


def test_a_batch_with_one_bad_image_reports_it_and_keeps_the_rest(
    redis_server: RedisServer, shared_queue: str, objects: dict[str, bytes]
) -> None:
    refs = [f"s3://{BUCKET}/in/one.png", f"s3://{BUCKET}/in/missing.png"]
    result = run_job(redis_server, shared_queue, {"images": refs})
    assert result["ok"] is False
    assert result["error"]["code"] == "not_found"
    assert result["items"][0]["ok"] is True
    assert result["items"][1]["error"]["code"] == "not_found"


def test_local_files_under_an_allowed_folder(
    redis_server: RedisServer, shared_queue: str, objects: dict[str, bytes], file_root: Path
) -> None:
    result = run_job(redis_server, shared_queue, {"image": f"file://{file_root}/one.png"})
    assert base64.b64decode(result["codes"][0]["bytes_b64"]) == objects["one.png"]


def test_a_bucket_folder_limits_which_keys_are_allowed(
    redis_server: RedisServer, shared_queue: str, objects: dict[str, bytes]
) -> None:
    allowed = run_job(redis_server, shared_queue, {"image": f"s3://{ARCHIVE}/2024/old.png"})
    refused = run_job(redis_server, shared_queue, {"image": f"s3://{ARCHIVE}/2023/older.png"})
    assert allowed["ok"] is True
    assert refused["error"]["code"] == "refused_reference"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"image": f"s3://{BUCKET}/in/missing.png"}, "not_found"),
        ({"image": f"s3://{BUCKET}/in/corrupt.jpg"}, "corrupt_image"),
        ({"image": "s3://someone-elses-bucket/in/one.png"}, "refused_reference"),
        ({"image": "https://example.com/invoice.png"}, "refused_reference"),
        ({"image": "http://169.254.169.254/latest/meta-data/"}, "refused_reference"),
        ({"image": "file:///etc/passwd"}, "refused_reference"),
        ({"image": "/etc/passwd"}, "refused_reference"),
        ({"image": f"s3://{BUCKET}/in/../in/one.png"}, "refused_reference"),
        ({"image": 42}, "invalid_payload"),
        ({"images": []}, "invalid_payload"),
        ({"image": "s3://a/b", "images": ["s3://a/b"]}, "invalid_payload"),
        ({"image": f"s3://{BUCKET}/in/one.png", "want": "most"}, "invalid_payload"),
        ({"image": f"s3://{BUCKET}/in/one.png", "deadline_ms": -5}, "invalid_payload"),
        ({"image": f"s3://{BUCKET}/in/one.png", "surprise": 1}, "invalid_payload"),
    ],
)
def test_every_failure_ends_in_a_result_with_its_code(
    redis_server: RedisServer,
    shared_queue: str,
    objects: dict[str, bytes],
    payload: dict,
    code: str,
) -> None:
    result = run_job(redis_server, shared_queue, payload)
    assert result["ok"] is False
    assert result["error"]["code"] == code
    assert result["error"]["message"]


def test_a_file_reference_escaping_its_root_through_a_symlink_is_refused(
    redis_server: RedisServer, shared_queue: str, file_root: Path
) -> None:
    link = file_root / "sneaky.png"
    if not link.exists():
        link.symlink_to("/etc/hostname")
    result = run_job(redis_server, shared_queue, {"image": f"file://{link}"})
    assert result["error"]["code"] == "refused_reference"


def test_a_reply_list_may_not_alias_the_queue(redis_server: RedisServer, shared_queue: str) -> None:
    client = redis_server.client()
    job_id = producer.enqueue(
        client,
        {"image": f"s3://{BUCKET}/in/one.png", "reply_to": f"rq:queue:{shared_queue}"},
        queue=shared_queue,
    )
    raw = client.blpop([f"qrw:reply:none-{job_id}"], timeout=0.01)  # nothing is pushed anywhere
    assert raw is None
    stored = wait_until(lambda: client.get(f"qrw:result:{job_id}"), 60, "the stored result")
    assert json.loads(stored)["error"]["code"] == "invalid_payload"


def enqueue_raw(client: redis.Redis, queue: str, data: str | bytes) -> str:
    """A job whose `data` field is exactly `data`, as a hostile or buggy producer writes it.

    It is written on a queue nobody serves and only then moved onto the live one, so no
    worker can take it before its data is replaced.
    """
    job_id = producer.enqueue(client, {}, queue=f"{queue}-parked")
    client.hset(f"rq:job:{job_id}", mapping={"data": data, "origin": queue})
    client.lrem(f"rq:queue:{queue}-parked", 1, job_id)
    client.rpush(f"rq:queue:{queue}", job_id)
    return job_id


def test_a_job_naming_another_function_is_refused_and_never_run(
    redis_server: RedisServer, shared_queue: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    # The payload is the shell command os.system would run.
    data = json.dumps(["os.system", None, [f"touch {marker}"], {}])
    job_id = enqueue_raw(redis_server.client(), shared_queue, data)
    stored = wait_until(
        lambda: redis_server.client().get(f"qrw:result:{job_id}"), 60, "the refusal result"
    )
    result = json.loads(stored)
    assert result["ok"] is False
    assert result["error"]["code"] == "refused_job"
    assert "os.system" in result["error"]["message"]
    assert not marker.exists()
    assert redis_server.client().hget(f"rq:job:{job_id}", "status") == b"failed"


def test_a_job_whose_data_is_not_json_fails_cleanly(
    redis_server: RedisServer, shared_queue: str
) -> None:
    client = redis_server.client()
    # A pickle, as RQ's default serializer would have written: it must never be unpickled.
    job_id = enqueue_raw(
        client, shared_queue, zlib.compress(b"\x80\x04\x95\x10\x00\x00\x00cos\nsystem\n.")
    )
    stored = wait_until(lambda: client.get(f"qrw:result:{job_id}"), 60, "the failure result")
    assert json.loads(stored)["error"]["code"] == "invalid_payload"


def test_two_workers_share_a_queue_without_running_a_job_twice(
    redis_server: RedisServer, shared_queue: str, objects: dict[str, bytes]
) -> None:
    client = redis_server.client()
    reply_to = reply_list()
    job_ids = [
        producer.enqueue(
            client,
            {"image": f"s3://{BUCKET}/in/blank.png", "reply_to": reply_to},
            queue=shared_queue,
        )
        for _ in range(16)
    ]
    results = wait_results(redis_server, reply_to, 16)
    assert sorted(r["job_id"] for r in results) == sorted(job_ids)
    assert len({r["worker"] for r in results}) == 2
    streamed = [f[b"job_id"].decode() for _, f in client.xrange("qrw:results")]
    assert all(streamed.count(job_id) == 1 for job_id in job_ids)


def test_qrw_enqueue_waits_for_its_results(
    redis_server: RedisServer, shared_queue: str, objects: dict[str, bytes], file_root: Path
) -> None:
    import os
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker.cli",
            "enqueue",
            "--queue",
            shared_queue,
            "--wait",
            "60",
            "--json",
            f"file://{file_root}/one.png",
            f"s3://{BUCKET}/in/missing.png",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "REDIS_URL": redis_server.url},
    )
    assert out.returncode == 1  # one of the two failed
    results = {r["image"].rsplit("/", 1)[-1]: r for r in map(json.loads, out.stdout.splitlines())}
    assert results["one.png"]["ok"] is True
    assert results["missing.png"]["error"]["code"] == "not_found"
