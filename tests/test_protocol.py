"""docs/protocol.md, executed: a producer that knows only Redis commands.

The producer side here is `redis-cli` in a subprocess, exactly what a Rust service
would send; nothing on that side imports RQ or our code.
"""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
import zlib
from datetime import UTC, datetime
from pathlib import Path

from models.synth import digital_invoice
from tests.services import RedisServer, wait_until


def redis_cli(server: RedisServer, *args: str, stdin: str | None = None) -> str:
    out = subprocess.run(
        ["redis-cli", "-p", str(server.port), "--raw", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )
    return out.stdout


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_enqueue_and_collect_with_plain_redis_commands(
    redis_server: RedisServer, shared_queue: str, file_root: Path
) -> None:
    sample = digital_invoice(700, payload_kind="utf8")
    (file_root / "protocol.png").write_bytes(sample.data)
    job_id = str(uuid.uuid4())
    reply_to = f"qrw:reply:{uuid.uuid4()}"
    payload = {
        "image": f"file://{file_root}/protocol.png",
        "request_id": "inv-42",
        "reply_to": reply_to,
        "meta": {"tenant": "acme"},
    }
    data = json.dumps(["jobs.scan", None, [payload], {}])
    stamp = now()
    script = "\n".join(
        [
            "MULTI",
            f"HSET rq:job:{job_id} data '{data}' origin {shared_queue} status queued "
            f"created_at {stamp} enqueued_at {stamp} timeout 60",
            f"RPUSH rq:queue:{shared_queue} {job_id}",
            "EXEC",
            "",
        ]
    )
    redis_cli(redis_server, stdin=script)

    key, body = redis_cli(redis_server, "BLPOP", reply_to, "60").splitlines()
    result = json.loads(body)
    assert key == reply_to
    assert result["job_id"] == job_id
    assert result["request_id"] == "inv-42"
    assert result["meta"] == {"tenant": "acme"}
    assert result["ok"] is True
    code = result["codes"][0]
    assert code["text"] == sample.codes[0].payload.decode("utf-8")
    assert base64.b64decode(code["bytes_b64"]) == sample.codes[0].payload
    # The same document stays readable under its key until the TTL ends.
    assert json.loads(redis_cli(redis_server, "GET", f"qrw:result:{job_id}")) == result


def test_zlib_compressed_job_data_is_accepted(
    redis_server: RedisServer, shared_queue: str, file_root: Path
) -> None:
    (file_root / "zlib.png").write_bytes(digital_invoice(701).data)
    job_id = str(uuid.uuid4())
    data = zlib.compress(
        json.dumps(["jobs.scan", None, [{"image": f"file://{file_root}/zlib.png"}], {}]).encode()
    )
    client = redis_server.client()  # binary-safe HSET, as a Rust client would send it
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(
            f"rq:job:{job_id}",
            mapping={
                "data": data,
                "origin": shared_queue,
                "status": "queued",
                "created_at": now(),
                "enqueued_at": now(),
                "timeout": "60",
            },
        )
        pipe.rpush(f"rq:queue:{shared_queue}", job_id)
        pipe.execute()
    body = wait_until(lambda: client.get(f"qrw:result:{job_id}"), 60, "the result")
    assert json.loads(body)["ok"] is True


def test_bulk_consumers_read_the_results_stream_without_polling(
    redis_server: RedisServer, shared_queue: str, file_root: Path
) -> None:
    (file_root / "stream.png").write_bytes(digital_invoice(702).data)
    last_id = redis_cli(redis_server, "XREVRANGE", "qrw:results", "+", "-", "COUNT", "1")
    start = last_id.splitlines()[0] if last_id.strip() else "0"
    job_id = str(uuid.uuid4())
    data = json.dumps(["jobs.scan", None, [{"image": f"file://{file_root}/stream.png"}], {}])
    redis_cli(
        redis_server,
        stdin="\n".join(
            [
                "MULTI",
                f"HSET rq:job:{job_id} data '{data}' origin {shared_queue} status queued "
                f"created_at {now()} enqueued_at {now()} timeout 60",
                f"RPUSH rq:queue:{shared_queue} {job_id}",
                "EXEC",
                "",
            ]
        ),
    )

    def mine() -> dict | None:
        out = redis_cli(redis_server, "XREAD", "BLOCK", "2000", "STREAMS", "qrw:results", start)
        for line in out.splitlines():
            if line.startswith("{") and json.loads(line)["job_id"] == job_id:
                return json.loads(line)
        return None

    assert wait_until(mine, 60, "the stream entry")["ok"] is True


def test_a_job_that_fails_the_envelope_checks_is_answered_at_once(
    redis_server: RedisServer, shared_queue: str
) -> None:
    job_id = str(uuid.uuid4())
    reply_to = f"qrw:reply:{uuid.uuid4()}"
    data = json.dumps(["jobs.scan", None, [{"image": "s3://x/y.png", "reply_to": reply_to}], {}])
    stamp = now()
    redis_cli(
        redis_server,
        stdin="\n".join(
            [
                "MULTI",
                f"HSET rq:job:{job_id} data '{data}' origin {shared_queue} status queued "
                f"created_at {stamp} enqueued_at {stamp} timeout 1.5",
                f"RPUSH rq:queue:{shared_queue} {job_id}",
                "EXEC",
                "",
            ]
        ),
    )
    _, body = redis_cli(redis_server, "BLPOP", reply_to, "60").splitlines()
    result = json.loads(body)
    assert (result["job_id"], result["ok"]) == (job_id, False)
    assert result["error"]["code"] == "invalid_payload"
    assert "timeout" in result["error"]["message"]
    assert redis_cli(redis_server, "HGET", f"rq:job:{job_id}", "status").strip() == "failed"


def test_a_job_whose_id_cannot_name_a_result_lands_on_the_dead_letter_stream(
    redis_server: RedisServer, shared_queue: str
) -> None:
    last = redis_cli(redis_server, "XREVRANGE", "qrw:dead-letter", "+", "-", "COUNT", "1")
    start = last.splitlines()[0] if last.strip() else "0"
    marker = uuid.uuid4().hex[:12]
    job_id = f"invoice:{marker}"  # ':' is outside [A-Za-z0-9_-]
    data = json.dumps(["jobs.scan", None, [{"image": "s3://x/y.png"}], {}])
    redis_cli(
        redis_server,
        stdin="\n".join(
            [
                "MULTI",
                f"HSET rq:job:{job_id} data '{data}' origin {shared_queue} status queued "
                f"created_at {now()} enqueued_at {now()} timeout 60",
                f"RPUSH rq:queue:{shared_queue} {job_id}",
                "EXEC",
                "",
            ]
        ),
    )

    def entry() -> list[str] | None:
        out = redis_cli(
            redis_server, "XREAD", "BLOCK", "2000", "STREAMS", "qrw:dead-letter", start
        ).splitlines()
        return out if any(marker in line for line in out) else None

    lines = wait_until(entry, 60, "the dead-letter entry")
    # --raw prints each entry's fields and values one per line, in the order written,
    # starting with job_id.
    at = next(i for i, line in enumerate(lines) if marker in line) - 1
    fields = dict(zip(lines[at::2][:6], lines[at + 1 :: 2][:6], strict=True))
    assert marker in fields["job_id"]
    assert fields["code"] == "invalid_payload"
    assert fields["queue"] == shared_queue


def test_timestamps_rq_reads_and_the_ones_it_refuses(
    redis_server: RedisServer, shared_queue: str, file_root: Path
) -> None:
    """docs/protocol.md: 0 to 6 fractional digits and a trailing Z are read; nanoseconds
    or an offset make the hash unreadable, and the job is answered without running."""
    (file_root / "stamps.png").write_bytes(digital_invoice(703).data)
    client = redis_server.client()
    base = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    stamps = {
        f"{base}.123456Z": "ok",
        f"{base}Z": "ok",
        f"{base}.5Z": "ok",
        f"{base}.123456789Z": "invalid_payload",
        f"{base}+00:00": "invalid_payload",
    }
    jobs = {}
    for stamp, expected in stamps.items():
        job_id = str(uuid.uuid4())
        jobs[job_id] = (stamp, expected)
        data = json.dumps(["jobs.scan", None, [{"image": f"file://{file_root}/stamps.png"}], {}])
        with client.pipeline(transaction=True) as pipe:
            pipe.hset(
                f"rq:job:{job_id}",
                mapping={
                    "data": data,
                    "origin": shared_queue,
                    "status": "queued",
                    "created_at": stamp,
                    "enqueued_at": stamp,
                    "timeout": "60",
                },
            )
            pipe.rpush(f"rq:queue:{shared_queue}", job_id)
            pipe.execute()
    for job_id, (stamp, expected) in jobs.items():
        body = wait_until(lambda j=job_id: client.get(f"qrw:result:{j}"), 60, "the result")
        result = json.loads(body)
        outcome = "ok" if result["ok"] else result["error"]["code"]
        assert outcome == expected, stamp
