"""S3 keys are opaque (issue 18, point 1), through real processes: moto's S3 server over HTTP,
a real worker pool and a real `qrw backfill`.

`s3://bucket//c/x.png` names the key `/c/x.png`: an empty first segment, `//` inside and a
trailing `/` are part of a key. The parser used to strip every leading `/`, so a job read
`c/x.png` instead (`not_found`, or another object's codes under the right key and ETag), and
`--source s3://bucket//` listed the whole bucket instead of the keys under the prefix `/`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models.synth import digital_invoice
from tests.conftest import ARCHIVE, BUCKET, reply_list, s3_client, wait_result, worker_env
from tests.services import RedisServer, WorkerProcess
from tests.test_backfill_run import env, lines, qrw
from tests.test_storage_hostile import enqueue_raw
from worker.backfill import BackfillError, Counts, Filters, SourceSpec
from worker.backfill.sources import iter_objects, s3_ref
from worker.settings import Settings

KEYS = "s3keys"  # allowed whole
FOLDER = "s3keys-folder"  # only its folder `c` is allowed
QUEUE = "qr-s3keys"
ALLOWED = f"{BUCKET},{ARCHIVE}/2024/,{KEYS},{FOLDER}/c"

# Each key holds an invoice of its own, so codes say which object was read.
SLASHED = "/c/x.png"  # its twin without the leading slash exists too
TWIN = "c/x.png"
ALONE = "/d/only.png"  # no `d/only.png`: the old parser answered not_found
# Keys the soak found read back exactly, and the ones it did not (a leading `/`, `//`
# inside, a trailing `/`).
ROUND_TRIP = [
    SLASHED,
    ALONE,
    "//c/deep.png",
    "/c//inner.png",
    "/c/folder-like/",
    "c//inner.png",
    "c/trailing/",
    "c/with space.png",
    "c/plus+sign.png",
    "c/per%cent%2F.png",
    "c/ünïcødé/請求書.png",
    "c/hash#and?query.png",
]
UNDER_SLASH = sorted(key for key in ROUND_TRIP if key.startswith("/"))


@pytest.fixture(scope="module")
def objects(s3_endpoint: str) -> dict[tuple[str, str], list[str]]:
    """(bucket, key) -> the texts of the codes its invoice holds."""
    client = s3_client(s3_endpoint)
    for bucket in (KEYS, FOLDER):
        client.create_bucket(Bucket=bucket)
    stored: dict[tuple[str, str], list[str]] = {}
    placed = [(KEYS, key) for key in ROUND_TRIP] + [(KEYS, TWIN), (FOLDER, SLASHED), (FOLDER, TWIN)]
    for seed, (bucket, key) in enumerate(placed, start=1800):
        sample = digital_invoice(seed)
        client.put_object(Bucket=bucket, Key=key, Body=sample.data)
        stored[bucket, key] = [code.payload.decode() for code in sample.codes]
    assert len({tuple(texts) for texts in stored.values()}) == len(stored)
    return stored


@pytest.fixture(scope="module")
def pool(
    redis_server: RedisServer,
    s3_endpoint: str,
    file_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    log = tmp_path_factory.mktemp("s3keys-pool") / "worker.log"
    worker = WorkerProcess(
        worker_env(redis_server.url, s3_endpoint, file_root, QRW_S3_BUCKETS=ALLOWED),
        QUEUE,
        2,
        log=log,
    )
    yield worker
    worker.stop()


def scan(redis_server: RedisServer, ref: str) -> dict[str, Any]:
    """One job naming `ref`, enqueued with the producer's commands (docs/protocol.md)."""
    reply_to = reply_list()
    payload = json.dumps({"image": ref, "reply_to": reply_to})
    job_id = enqueue_raw(redis_server, QUEUE, payload)
    result = wait_result(redis_server, reply_to, timeout=60)
    assert result["job_id"] == job_id
    return result


def texts(result: dict[str, Any]) -> list[str]:
    return [code["text"] for code in result["codes"]]


def test_a_key_with_a_leading_slash_is_read_and_not_its_twin_without_it(
    pool: WorkerProcess, redis_server: RedisServer, objects: dict[tuple[str, str], list[str]]
) -> None:
    # Before the fix `s3://s3keys//c/x.png` read `c/x.png`: the twin's codes under this key.
    slashed = scan(redis_server, f"s3://{KEYS}/{SLASHED}")
    assert slashed["ok"] is True, slashed.get("error")
    assert slashed["image"] == f"s3://{KEYS}/{SLASHED}"
    assert texts(slashed) == objects[KEYS, SLASHED]
    twin = scan(redis_server, f"s3://{KEYS}/{TWIN}")
    assert texts(twin) == objects[KEYS, TWIN]
    # ...and `not_found` where no twin exists.
    alone = scan(redis_server, f"s3://{KEYS}/{ALONE}")
    assert alone["ok"] is True, alone.get("error")
    assert texts(alone) == objects[KEYS, ALONE]


def test_a_folder_in_the_allow_list_does_not_admit_a_key_with_an_empty_first_segment(
    pool: WorkerProcess, redis_server: RedisServer, objects: dict[tuple[str, str], list[str]]
) -> None:
    # `s3keys-folder/c` admits `c/...`; `/c/x.png` is the segments "", "c", "x.png": outside.
    # Before the fix the job was admitted and read `c/x.png`.
    refused = scan(redis_server, f"s3://{FOLDER}/{SLASHED}")
    assert refused["error"]["code"] == "refused_reference"
    inside = scan(redis_server, f"s3://{FOLDER}/{TWIN}")
    assert texts(inside) == objects[FOLDER, TWIN]


def test_every_kind_of_key_comes_back_in_its_result_exactly(
    pool: WorkerProcess, redis_server: RedisServer, objects: dict[tuple[str, str], list[str]]
) -> None:
    for key in ROUND_TRIP:
        # The reference a producer writes: only what a URL would read otherwise is encoded.
        ref = s3_ref(KEYS, key)
        result = scan(redis_server, ref)
        assert result["ok"] is True, (key, result.get("error"))
        assert result["image"] == ref
        assert texts(result) == objects[KEYS, key], key


def test_a_backfill_over_the_prefix_slash_lists_and_reads_only_the_keys_under_it(
    pool: WorkerProcess,
    redis_server: RedisServer,
    s3_endpoint: str,
    file_root: Path,
    objects: dict[tuple[str, str], list[str]],
    tmp_path: Path,
) -> None:
    # Before the fix `--source s3://s3keys//` listed the whole bucket, and the line for
    # `/c/x.png` carried its ETag and the codes of `c/x.png`.
    out = tmp_path / "out"
    name = f"s3keys-{uuid.uuid4().hex[:6]}"
    environ = env(redis_server.url, s3_endpoint, file_root, QRW_S3_BUCKETS=ALLOWED)
    ran = qrw(
        environ, "start", name, "--source", f"s3://{KEYS}//", "--out", f"file://{out}",
        "--queue", QUEUE, "--batch", "2",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    written = lines(out)
    # A key ending in `/` is a console-made folder to a listing, skipped as before.
    files = [key for key in UNDER_SLASH if not key.endswith("/")]
    assert sorted(line["key"] for line in written) == files
    s3 = s3_client(s3_endpoint)
    for line in written:
        key = line["key"]
        assert line["image"] == s3_ref(KEYS, key)
        assert line["etag"] == s3.head_object(Bucket=KEYS, Key=key)["ETag"].strip('"')
        assert line["ok"] is True, (key, line.get("error"))
        assert texts(line) == objects[KEYS, key], key
    status = json.loads(qrw(environ, "status", name, "--json").stdout)
    assert status["skipped_by"] == {"folder": 1}


def test_a_backfill_manifest_keeps_a_key_and_its_twin_without_the_slash_apart(
    pool: WorkerProcess,
    redis_server: RedisServer,
    s3_endpoint: str,
    file_root: Path,
    objects: dict[tuple[str, str], list[str]],
    tmp_path: Path,
) -> None:
    # The run's identity of an object is the parser's: before the fix both lines were one
    # object, the second skipped as a duplicate.
    refs = [f"s3://{KEYS}/{SLASHED}", f"s3://{KEYS}/{TWIN}", f"s3://{KEYS}/c//inner.png"]
    manifest = tmp_path / "manifest.txt"
    manifest.write_text("".join(f"{ref}\n" for ref in refs))
    out = tmp_path / "out"
    name = f"s3keys-{uuid.uuid4().hex[:6]}"
    environ = env(redis_server.url, s3_endpoint, file_root, QRW_S3_BUCKETS=ALLOWED)
    ran = qrw(
        environ, "start", name, "--manifest", str(manifest), "--out", f"file://{out}",
        "--queue", QUEUE, "--batch", "1",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    by_image = {line["image"]: line for line in lines(out)}
    assert sorted(by_image) == sorted(refs)
    for key in (SLASHED, TWIN, "c//inner.png"):
        assert texts(by_image[f"s3://{KEYS}/{key}"]) == objects[KEYS, key], key
    status = json.loads(qrw(environ, "status", name, "--json").stdout)
    assert status["skipped_by"] == {}


def take_source(source: str) -> None:
    """Checks a --source against the allow-list (no listing happens before the first item)."""
    settings = Settings.from_env({"QRW_S3_BUCKETS": ALLOWED})
    iter_objects(SourceSpec(prefixes=(source,)), Filters(), settings, None, Counts())


@pytest.mark.parametrize(
    "source", [f"s3://{FOLDER}//", f"s3://{FOLDER}//c/", f"s3://{FOLDER}/c//../x/"]
)
def test_a_source_prefix_with_an_empty_first_segment_is_outside_a_folder(source: str) -> None:
    # Before the fix `s3://s3keys-folder//c/` was taken as the allowed prefix `c/`.
    with pytest.raises(BackfillError, match=r"QRW_S3_BUCKETS|'\.\.'"):
        take_source(source)


def test_the_prefix_slash_is_inside_the_whole_bucket_and_within_the_bucket_prefix() -> None:
    take_source(f"s3://{KEYS}//")
    take_source(f"s3://{FOLDER}/c//")
    # The whole bucket holds the prefix `/`: listing both would read its objects twice.
    settings = Settings.from_env({"QRW_S3_BUCKETS": ALLOWED})
    spec = SourceSpec(prefixes=(f"s3://{KEYS}/", f"s3://{KEYS}//"))
    with pytest.raises(BackfillError, match="overlap"):
        iter_objects(spec, Filters(), settings, None, Counts())
