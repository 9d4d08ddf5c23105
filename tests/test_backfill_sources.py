"""What a backfill reads (worker/backfill/sources.py), against moto's S3 server over HTTP:
prefixes listed page by page, manifests (plain lines and S3 Inventories), filters, shards,
positions a run resumes from, the allow-lists, and S3 failing under it."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import s3_client
from tests.s3_faults import FaultyS3, point_at
from tests.services import free_port
from worker import s3 as worker_s3
from worker import storage
from worker.backfill import BackfillError, Counts, Filters, SourceSpec, StoredObject
from worker.backfill.sources import (
    BAD_LINES_KEPT,
    MAX_LINE,
    DryRun,
    Position,
    Retry,
    check_source,
    dry_run,
    iter_objects,
    manifest_line,
    s3_ref,
    shard_of,
)
from worker.settings import Settings

SRC = "bf-src"  # allowed whole
PART = "bf-part"  # only its allowed/ folder is
INV = "bf-inv"  # where the inventory lands; allowed
MISSING = "bf-missing"  # allowed, never created

# Tests must not wait for production backoff; the retries are still real requests.
FAST = Retry(attempts=3, base_s=0.01, cap_s=0.05)
NO_FILTERS = Filters()

WEIRD = "scans/2024/weird name #1?%ü+.png"  # every character a reference must encode


def body_of(index: int) -> bytes:
    return b"x" * (10 + 7 * index)


def archive_keys() -> dict[str, bytes]:
    objects = {
        f"scans/2024/inv-{i:03d}.{('png', 'jpg', 'pdf')[i % 3]}": body_of(i) for i in range(23)
    }
    objects[WEIRD] = b"weird"
    objects["scans/2024/"] = b""  # a console-made "folder"
    objects["scans/2025/jan.png"] = b"2025-a"
    objects["scans/2025/feb.jpg"] = b"2025-bb"
    return objects


@pytest.fixture(scope="module")
def archive(s3_endpoint: str) -> dict[str, bytes]:
    client = s3_client(s3_endpoint)
    for bucket in (SRC, PART, INV):
        client.create_bucket(Bucket=bucket)
    objects = archive_keys()
    for key, body in objects.items():
        client.put_object(Bucket=SRC, Key=key, Body=body)
    client.put_object(Bucket=PART, Key="allowed/a.png", Body=b"a")
    client.put_object(Bucket=PART, Key="allowed-evil/b.png", Body=b"b")
    return objects


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backfill-root")


@pytest.fixture(scope="module")
def policy(root: Path) -> Settings:
    return Settings.from_env(
        {}, s3_buckets=(SRC, f"{PART}/allowed/", INV, MISSING), file_roots=(str(root),)
    )


@pytest.fixture
def s3(
    monkeypatch: pytest.MonkeyPatch, s3_endpoint: str, archive: dict[str, bytes]
) -> Iterator[str]:
    """worker.s3.client() pointed at moto (it is cached per process: cleared around)."""
    point_at(monkeypatch, s3_endpoint)
    yield s3_endpoint
    worker_s3.client.cache_clear()


def take(
    spec: SourceSpec,
    settings: Settings,
    filters: Filters = NO_FILTERS,
    position: Position | None = None,
    counts: Counts | None = None,
    page_size: int = 4,
) -> tuple[list[tuple[StoredObject, Position]], Counts]:
    counts = counts if counts is not None else Counts()
    pairs = list(
        iter_objects(spec, filters, settings, position, counts, retry=FAST, page_size=page_size)
    )
    return pairs, counts


def prefix(path: str, bucket: str = SRC) -> SourceSpec:
    return SourceSpec(prefixes=(f"s3://{bucket}/{path}",))


def listed_2024(archive: dict[str, bytes]) -> list[str]:
    return sorted(
        (k for k in archive if k.startswith("scans/2024/") and not k.endswith("/")),
        key=lambda k: k.encode(),
    )


# --- S3 prefixes ------------------------------------------------------------------------


def test_a_prefix_is_listed_page_by_page_in_key_order_with_what_s3_says_of_each_object(
    s3: str, archive: dict[str, bytes], policy: Settings
) -> None:
    pairs, counts = take(prefix("scans/2024/"), policy, page_size=4)

    keys = [obj.key for obj, _ in pairs]
    assert keys == listed_2024(archive)
    assert len(keys) > 4 * 5  # many pages of 4
    for obj, _ in pairs:
        assert obj.etag == hashlib.md5(archive[obj.key]).hexdigest()  # no quotes
        assert obj.size == len(archive[obj.key])
        assert obj.last_modified is not None
        assert obj.last_modified.tzinfo is not None
    assert counts.skipped == {"folder": 1}
    assert counts.bad_lines == []


def test_every_listed_reference_reads_back_the_very_object_listed_even_with_odd_characters(
    s3: str, archive: dict[str, bytes], policy: Settings
) -> None:
    pairs, _ = take(prefix("scans/2024/weird"), policy)

    [(obj, _)] = pairs
    assert obj.key == WEIRD
    assert obj.ref == s3_ref(SRC, WEIRD)
    reference = storage.parse_reference(obj.ref, policy)
    assert reference.key == WEIRD
    assert storage.fetch(reference, policy) == b"weird"


def test_several_prefixes_are_listed_one_after_another_in_the_order_given(
    s3: str, archive: dict[str, bytes], policy: Settings
) -> None:
    spec = SourceSpec(prefixes=(f"s3://{SRC}/scans/2025/", f"s3://{SRC}/scans/2024/"))
    pairs, _ = take(spec, policy)

    assert [obj.key for obj, _ in pairs] == [
        "scans/2025/feb.jpg",
        "scans/2025/jan.png",
        *listed_2024(archive),
    ]
    assert [pos.source for _, pos in pairs] == [0, 0] + [1] * len(listed_2024(archive))


def test_overlapping_prefixes_are_refused_because_their_common_objects_would_be_read_twice(
    s3: str, policy: Settings
) -> None:
    spec = SourceSpec(prefixes=(f"s3://{SRC}/scans/", f"s3://{SRC}/scans/2024/"))
    with pytest.raises(BackfillError, match="overlap"):
        check_source(spec, policy, retry=FAST)


def test_filters_skip_objects_and_count_each_reason(
    s3: str, archive: dict[str, bytes], policy: Settings
) -> None:
    filters = Filters(include=("*.png", "*.jpg"), max_bytes=100)
    pairs, counts = take(prefix("scans/2024/"), policy, filters)

    listed = listed_2024(archive)
    by_name = [k for k in listed if k.endswith((".png", ".jpg"))]
    expected = [k for k in by_name if len(archive[k]) <= 100]
    assert [obj.key for obj, _ in pairs] == expected
    assert counts.skipped == {
        "folder": 1,
        "include": len(listed) - len(by_name),
        "max_bytes": len(by_name) - len(expected),
    }
    assert all(v > 0 for v in counts.skipped.values())


def test_a_limit_takes_that_many_objects_and_stops_listing(
    s3: str, archive: dict[str, bytes], policy: Settings
) -> None:
    pairs, _ = take(prefix("scans/2024/"), policy, Filters(limit=5))

    assert [obj.key for obj, _ in pairs] == listed_2024(archive)[:5]
    assert [pos.taken for _, pos in pairs] == [1, 2, 3, 4, 5]
    assert take(prefix("scans/2024/"), policy, Filters(limit=5), pairs[-1][1])[0] == []


def test_modified_after_keeps_only_objects_s3_says_were_modified_later(
    s3: str, archive: dict[str, bytes], policy: Settings
) -> None:
    now = datetime.now(UTC)
    everything, _ = take(
        prefix("scans/2025/"), policy, Filters(modified_after=now - timedelta(hours=1))
    )
    nothing, counts = take(
        prefix("scans/2025/"), policy, Filters(modified_after=now + timedelta(hours=1))
    )

    assert len(everything) == 2
    assert nothing == []
    assert counts.skipped == {"modified_after": 2}
    # A date without a zone is UTC.
    naive = (now + timedelta(hours=1)).replace(tzinfo=None)
    assert take(prefix("scans/2025/"), policy, Filters(modified_after=naive))[0] == []


def test_shards_cover_every_object_exactly_once(
    s3: str, archive: dict[str, bytes], policy: Settings
) -> None:
    shares: list[list[str]] = []
    others = 0
    for index in range(3):
        pairs, counts = take(prefix("scans/2024/"), policy, Filters(shard=(index, 3)))
        shares.append([obj.key for obj, _ in pairs])
        others += counts.skipped.get("shard", 0)
        assert all(shard_of(key, 3) == index for key in shares[-1])

    taken = [key for share in shares for key in share]
    assert sorted(taken) == sorted(listed_2024(archive))  # every object once, none twice
    assert all(shares)  # each shard got some
    assert others == 2 * (len(listed_2024(archive)) + 1)  # each object (and folder) skipped twice


def test_a_prefix_outside_the_allow_lists_is_refused_before_anything_is_listed(
    monkeypatch: pytest.MonkeyPatch, policy: Settings
) -> None:
    # Nothing answers here: a refusal that listed first would fail differently.
    point_at(monkeypatch, f"http://127.0.0.1:{free_port()}")
    try:
        for outside in (
            f"s3://{PART}/allowed-evil/",  # whole segments: allowed/ never admits allowed-evil/
            f"s3://{PART}/",  # wider than the allowed folder
            f"s3://{PART}/allowed",  # would list allowed-evil/ too
            "s3://elsewhere/scans/",
        ):
            with pytest.raises(BackfillError, match="not inside QRW_S3_BUCKETS"):
                check_source(SourceSpec(prefixes=(outside,)), policy, retry=FAST)
            with pytest.raises(BackfillError, match="not inside QRW_S3_BUCKETS"):
                iter_objects(SourceSpec(prefixes=(outside,)), Filters(), policy, None, Counts())
        for malformed in (f"https://{SRC}/x/", f"s3://{SRC}/../x/", f"s3://{SRC}/a?b"):
            with pytest.raises(BackfillError, match="--source"):
                check_source(SourceSpec(prefixes=(malformed,)), policy, retry=FAST)
    finally:
        worker_s3.client.cache_clear()


def test_a_prefix_without_its_closing_slash_is_refused_with_a_hint(policy: Settings) -> None:
    with pytest.raises(BackfillError, match="end it with '/'"):
        check_source(prefix("allowed", PART), policy, retry=FAST)


def test_a_whole_allowed_bucket_can_be_listed(
    s3: str, archive: dict[str, bytes], policy: Settings
) -> None:
    pairs, counts = take(SourceSpec(prefixes=(f"s3://{SRC}",)), policy, page_size=10)
    expected = sorted((k for k in archive if not k.endswith("/")), key=lambda k: k.encode())
    assert [obj.key for obj, _ in pairs] == expected
    assert counts.skipped == {"folder": 1}


def test_an_allowed_folder_lists_only_what_lies_inside_it(s3: str, policy: Settings) -> None:
    check_source(prefix("allowed/", PART), policy, retry=FAST)
    pairs, _ = take(prefix("allowed/", PART), policy)
    assert [obj.ref for obj, _ in pairs] == [f"s3://{PART}/allowed/a.png"]


# --- S3 failing under the listing -------------------------------------------------------


# A proxy answering the faults given, worker.s3.client() pointed at it.
MakeProxy = Callable[[list[str]], FaultyS3]


@pytest.fixture
def faulty(monkeypatch: pytest.MonkeyPatch, s3: str) -> Iterator[MakeProxy]:
    """Makes a proxy answering the faults given (tests/s3_faults.py) and points
    worker.s3.client() at it."""
    made: list[FaultyS3] = []

    def make(faults: list[str]) -> FaultyS3:
        proxy = FaultyS3(s3, *faults)
        made.append(proxy)
        point_at(monkeypatch, proxy.url)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


def test_throttling_and_server_errors_while_listing_are_retried_and_the_listing_is_complete(
    faulty: MakeProxy, archive: dict[str, bytes], policy: Settings
) -> None:
    # The first page fails twice, a later page once: each page is retried on its own.
    proxy = faulty(["SlowDown", "InternalError", "pass", "pass", "SlowDown"])
    pairs, counts = take(prefix("scans/2024/"), policy, page_size=4)

    assert [obj.key for obj, _ in pairs] == listed_2024(archive)
    assert counts.skipped == {"folder": 1}
    assert proxy.faults == []


def test_a_listing_that_keeps_failing_ends_in_a_clear_error_after_the_retries(
    faulty: MakeProxy, policy: Settings
) -> None:
    proxy = faulty(["SlowDown"] * 10)
    with pytest.raises(BackfillError, match=r"failed 3 times.*SlowDown"):
        check_source(prefix("scans/2024/"), policy, retry=FAST)
    assert len(proxy.requests) == 3


def test_a_bucket_that_cannot_be_listed_is_refused_at_once_without_retries(
    faulty: MakeProxy, policy: Settings
) -> None:
    proxy = faulty([])
    with pytest.raises(BackfillError, match="NoSuchBucket"):
        check_source(prefix("x/", MISSING), policy, retry=FAST)
    assert len(proxy.requests) == 1

    proxy = faulty(["AccessDenied"])
    with pytest.raises(BackfillError, match="AccessDenied"):
        check_source(prefix("scans/2024/"), policy, retry=FAST)
    assert len(proxy.requests) == 1


def test_an_unreachable_s3_ends_in_a_clear_error_after_the_retries(
    monkeypatch: pytest.MonkeyPatch, policy: Settings
) -> None:
    point_at(monkeypatch, f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(BackfillError, match=r"failed 3 times.*EndpointConnectionError"):
            take(prefix("scans/2024/"), policy)
    finally:
        worker_s3.client.cache_clear()


# --- Plain manifests --------------------------------------------------------------------


def plain_manifest(root: Path) -> tuple[bytes, dict[int, str]]:
    """A manifest with every kind of line; the bad ones by number, with a word of why."""
    (root / "a.png").write_bytes(b"local-a")
    lines: list[bytes] = [
        b"# invoices to re-read",  # 1
        b"",  # 2
        f"s3://{SRC}/scans/2024/inv-000.png".encode(),  # 3
        f"file://{root}/a.png".encode(),  # 4
        b"not a reference",  # 5
        b"http://example.com/x.png",  # 6
        f"s3://{PART}/allowed-evil/b.png".encode(),  # 7
        b"file:///etc/passwd",  # 8
        f's3://{SRC}/scans/2024/inv-001.jpg\t"etag1"\t17\t2026-01-02T03:04:05+00:00'.encode(),  # 9
        f"s3://{SRC}/x.png\tetag\tmany".encode(),  # 10
        b"s3://" + b"x" * (MAX_LINE + 10),  # 11
        f"s3://{SRC}/".encode() + b"\xff.png",  # 12
        f"s3://{SRC}/a\tb\tc\td\te".encode(),  # 13
        f"file://{root}/missing.png".encode(),  # 14
        f"   s3://{SRC}/scans/2024/inv-002.pdf  \r".encode(),  # 15
        f"s3://{SRC}/x.png\t\t\tyesterday".encode(),  # 16
    ]
    bad = {
        5: "only s3:// and file://",
        6: "only s3:// and file://",
        7: "QRW_S3_BUCKETS",
        8: "QRW_FILE_ROOTS",
        10: "not a number",
        11: "longer than",
        12: "not UTF-8",
        13: "at most 4",
        16: "not ISO 8601",
    }
    return b"\n".join(lines) + b"\n", bad


def test_a_plain_manifest_yields_its_references_and_counts_bad_lines_with_their_numbers(
    s3: str, root: Path, policy: Settings, tmp_path: Path
) -> None:
    text, bad = plain_manifest(root)
    path = tmp_path / "manifest.txt"  # the operator's own file: outside the roots is fine
    path.write_bytes(text)

    check_source(SourceSpec(manifest=str(path)), policy, retry=FAST)
    pairs, counts = take(SourceSpec(manifest=str(path)), policy)

    objects = [obj for obj, _ in pairs]
    assert [pos.after for _, pos in pairs] == ["3", "4", "9", "14", "15"]
    local = (root / "a.png").stat()
    assert objects[0] == StoredObject(
        f"s3://{SRC}/scans/2024/inv-000.png", "scans/2024/inv-000.png", "", -1
    )
    assert objects[1].key == str(root / "a.png")
    assert (objects[1].etag, objects[1].size) == (f"{local.st_size}-{local.st_mtime_ns}", 7)
    assert objects[2] == StoredObject(
        f"s3://{SRC}/scans/2024/inv-001.jpg",
        "scans/2024/inv-001.jpg",
        "etag1",
        17,
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    # A missing file is still an object: its job will say not_found, on one output line.
    assert (objects[3].key, objects[3].etag, objects[3].size) == (str(root / "missing.png"), "", -1)
    assert objects[4].ref == f"s3://{SRC}/scans/2024/inv-002.pdf"

    assert [line for line, _ in counts.bad_lines] == sorted(bad)
    for line, reason in counts.bad_lines:
        assert bad[line] in reason, (line, reason)
    assert counts.skipped == {"bad_line": len(bad)}


def test_a_manifest_given_as_a_file_url_or_in_s3_gzipped_reads_the_same(
    s3: str, root: Path, policy: Settings, tmp_path: Path
) -> None:
    text, _ = plain_manifest(root)
    path = tmp_path / "manifest.txt"
    path.write_bytes(text)
    s3_client(s3).put_object(Bucket=INV, Key="lists/manifest.txt.gz", Body=gzip.compress(text))

    local, local_counts = take(SourceSpec(manifest=str(path)), policy)
    as_url, _ = take(SourceSpec(manifest=f"file://{path}"), policy)
    in_s3, s3_counts = take(SourceSpec(manifest=f"s3://{INV}/lists/manifest.txt.gz"), policy)

    assert as_url == local
    assert in_s3 == local
    assert s3_counts == local_counts


def test_a_manifest_in_s3_outside_the_allow_list_or_missing_is_refused(
    s3: str, policy: Settings, tmp_path: Path
) -> None:
    with pytest.raises(BackfillError, match="QRW_S3_BUCKETS"):
        check_source(SourceSpec(manifest=f"s3://{PART}/allowed-evil/b.png"), policy, retry=FAST)
    with pytest.raises(BackfillError, match="NoSuchKey"):
        check_source(SourceSpec(manifest=f"s3://{INV}/lists/nothing.txt"), policy, retry=FAST)
    with pytest.raises(BackfillError, match="cannot be read"):
        check_source(SourceSpec(manifest=str(tmp_path / "nothing.txt")), policy, retry=FAST)
    with pytest.raises(BackfillError, match="one kind of source"):
        check_source(SourceSpec(prefixes=(f"s3://{SRC}/scans/",), manifest=str(tmp_path)), policy)


@pytest.mark.parametrize("zipped", [False, True], ids=["plain", "gzip"])
def test_a_manifest_stream_cut_off_midway_is_opened_again_and_read_on_from_where_it_stopped(
    faulty: MakeProxy, policy: Settings, zipped: bool
) -> None:
    refs = [f"s3://{SRC}/scans/2024/many-{i:05d}.png" for i in range(3000)]
    body = "\n".join(refs).encode()
    proxy = faulty([])
    s3_client(proxy.url).put_object(
        Bucket=INV, Key="lists/long.txt", Body=gzip.compress(body) if zipped else body
    )
    # The first GET reads the beginning (which kind of manifest?); the second is cut.
    proxy.fail_next("pass", "cut")
    pairs, counts = take(SourceSpec(manifest=f"s3://{INV}/lists/long.txt"), policy)

    assert [obj.ref for obj, _ in pairs] == refs  # each line once, in order
    assert [pos.after for _, pos in pairs] == [str(n) for n in range(1, 3001)]
    assert counts == Counts()
    assert proxy.faults == []
    # The beginning read, the cut read, the read going on.
    assert [r.split()[0] for r in proxy.requests] == ["GET"] * 3
    # Plain text goes on from the byte it stopped at; gzip is read again up to it.
    resumed = proxy.ranges[-1]
    assert (resumed is None) if zipped else (resumed or "").startswith("bytes=")


def test_a_manifest_replaced_while_it_is_read_is_a_clear_error_not_a_mixed_listing(
    faulty: MakeProxy, policy: Settings
) -> None:
    refs = [f"s3://{SRC}/scans/2024/many-{i:05d}.png" for i in range(3000)]
    proxy = faulty([])
    client = s3_client(proxy.url)
    client.put_object(Bucket=INV, Key="lists/moving.txt", Body="\n".join(refs).encode())
    proxy.fail_next("pass", "cut")
    objects = iter_objects(
        SourceSpec(manifest=f"s3://{INV}/lists/moving.txt"), NO_FILTERS, policy, None, Counts()
    )
    next(objects)
    client.put_object(Bucket=INV, Key="lists/moving.txt", Body="\n".join(refs[::-1]).encode())
    with pytest.raises(BackfillError, match="PreconditionFailed"):
        list(objects)


def test_manifest_line_writes_a_line_that_reads_back_as_the_same_object(
    s3: str, policy: Settings, tmp_path: Path
) -> None:
    objects = [
        StoredObject(s3_ref(SRC, WEIRD), WEIRD, "abc", 5, datetime(2026, 3, 1, tzinfo=UTC)),
        StoredObject(f"s3://{SRC}/k.png", "k.png", "", -1),
        StoredObject(f"s3://{SRC}/e.png", "e.png", "d41d8", 0),
    ]
    path = tmp_path / "retry.txt"
    path.write_text("".join(manifest_line(obj) + "\n" for obj in objects))

    pairs, counts = take(SourceSpec(manifest=str(path)), policy)
    assert [obj for obj, _ in pairs] == objects
    assert counts == Counts()


def test_only_the_first_bad_lines_are_kept_with_their_numbers_but_all_are_counted(
    s3: str, policy: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "junk.txt"
    path.write_text("junk\n" * (BAD_LINES_KEPT + 5))
    _, counts = take(SourceSpec(manifest=str(path)), policy)
    assert len(counts.bad_lines) == BAD_LINES_KEPT
    assert counts.bad_lines[-1][0] == BAD_LINES_KEPT
    assert counts.skipped == {"bad_line": BAD_LINES_KEPT + 5}


# --- S3 Inventory manifests -------------------------------------------------------------

SCHEMA = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag"


def inventory_row(
    key: str, size: int = 3, latest: str = "true", marker: str = "false", bucket: str = SRC
) -> str:
    date = "2026-01-01T00:00:00.000Z"
    return f'"{bucket}","{key}","v1","{latest}","{marker}","{size}","{date}","e{size}"'


def put_inventory(
    endpoint: str, *, source: str = SRC, file_format: str = "CSV"
) -> tuple[str, dict[str, Any]]:
    """An inventory of two data files, CSV and CSV.gz; returns its manifest's key and JSON."""
    client = s3_client(endpoint)
    first = [
        inventory_row("scans/2024/a+b%2Bc.png", 5),  # form-encoded: "a b+c.png"
        inventory_row("scans/2024/old.png", latest="false"),
        inventory_row("scans/2024/gone.png", marker="true"),
        inventory_row("allowed-evil/x.png", bucket=PART),
        '"bf-src","scans/2024/short.png"',
        inventory_row("scans/2024/k%C3%BC.jpg", 7),
        inventory_row("scans/2024/", 0),
        '"bf-src","scans/2024/s.png","v1","true","false","big","2026-01-01T00:00:00.000Z","e"',
    ]
    second = [inventory_row(f"scans/2024/gz-{i:02d}.png", 100 + i) for i in range(12)]
    base = "inventory/bf-src/daily"
    client.put_object(Bucket=INV, Key=f"{base}/data/one.csv", Body="\n".join(first).encode())
    client.put_object(
        Bucket=INV, Key=f"{base}/data/two.csv.gz", Body=gzip.compress("\n".join(second).encode())
    )
    manifest = {
        "sourceBucket": source,
        "destinationBucket": f"arn:aws:s3:::{INV}",
        "version": "2016-11-30",
        "creationTimestamp": "1767225600000",
        "fileFormat": file_format,
        "fileSchema": SCHEMA,
        "files": [
            {"key": f"{base}/data/one.csv", "size": 1, "MD5checksum": "x"},
            {"key": f"{base}/data/two.csv.gz", "size": 1, "MD5checksum": "x"},
        ],
    }
    key = f"{base}/2026-01-01T00-00Z/manifest.json"
    client.put_object(Bucket=INV, Key=key, Body=json.dumps(manifest, indent=2).encode())
    return key, manifest


def test_an_s3_inventory_is_read_from_its_csv_and_gzipped_csv_data_files(
    s3: str, policy: Settings
) -> None:
    key, _ = put_inventory(s3)
    spec = SourceSpec(manifest=f"s3://{INV}/{key}")
    check_source(spec, policy, retry=FAST)
    pairs, counts = take(spec, policy)

    objects = [obj for obj, _ in pairs]
    assert [obj.key for obj in objects] == [
        "scans/2024/a b+c.png",
        "scans/2024/kü.jpg",
        *(f"scans/2024/gz-{i:02d}.png" for i in range(12)),
    ]
    first = objects[0]
    assert (first.ref, first.etag, first.size) == (s3_ref(SRC, "scans/2024/a b+c.png"), "e5", 5)
    assert first.last_modified == datetime(2026, 1, 1, tzinfo=UTC)
    assert storage.parse_reference(first.ref, policy).key == "scans/2024/a b+c.png"
    assert [(pos.source, pos.after) for _, pos in pairs[:3]] == [(0, "1"), (0, "6"), (1, "1")]
    assert counts.skipped == {
        "old_version": 1,
        "delete_marker": 1,
        "outside_allow_list": 1,
        "folder": 1,
        "bad_line": 2,
    }
    assert [line for line, _ in counts.bad_lines] == [5, 8]
    assert all(reason.startswith("one.csv: ") for _, reason in counts.bad_lines)


def test_a_local_inventory_manifest_reads_its_data_files_from_s3(
    s3: str, policy: Settings, tmp_path: Path
) -> None:
    key, manifest = put_inventory(s3)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))

    local, _ = take(SourceSpec(manifest=str(path)), policy)
    remote, _ = take(SourceSpec(manifest=f"s3://{INV}/{key}"), policy)
    assert local == remote


def test_an_inventory_of_another_bucket_or_format_or_with_missing_data_files_is_refused(
    s3: str, policy: Settings, tmp_path: Path
) -> None:
    key, manifest = put_inventory(s3, source="elsewhere")
    with pytest.raises(BackfillError, match="sourceBucket"):
        check_source(SourceSpec(manifest=f"s3://{INV}/{key}"), policy, retry=FAST)
    key, manifest = put_inventory(s3, file_format="Parquet")
    with pytest.raises(BackfillError, match="fileFormat"):
        check_source(SourceSpec(manifest=f"s3://{INV}/{key}"), policy, retry=FAST)

    key, manifest = put_inventory(s3)
    manifest["files"].append({"key": "inventory/bf-src/daily/data/lost.csv.gz"})
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    with pytest.raises(BackfillError, match=r"lost\.csv\.gz.*(404|Not Found|NoSuchKey)"):
        check_source(SourceSpec(manifest=str(path)), policy, retry=FAST)
    manifest["destinationBucket"] = f"arn:aws:s3:::{PART}"
    path.write_text(json.dumps(manifest))
    with pytest.raises(BackfillError, match=r"data file.*QRW_S3_BUCKETS"):
        check_source(SourceSpec(manifest=str(path)), policy, retry=FAST)


# --- Positions --------------------------------------------------------------------------


@pytest.fixture
def sources(s3: str, root: Path, tmp_path: Path) -> dict[str, SourceSpec]:
    text, _ = plain_manifest(root)
    (tmp_path / "plain.txt").write_bytes(text)
    key, _ = put_inventory(s3)
    return {
        "prefixes": SourceSpec(prefixes=(f"s3://{SRC}/scans/2025/", f"s3://{SRC}/scans/2024/")),
        "plain": SourceSpec(manifest=str(tmp_path / "plain.txt")),
        "inventory": SourceSpec(manifest=f"s3://{INV}/{key}"),
    }


@pytest.mark.parametrize("kind", ["prefixes", "plain", "inventory"])
def test_resuming_from_every_position_yields_exactly_the_objects_after_it_and_the_same_counts(
    kind: str, sources: dict[str, SourceSpec], policy: Settings
) -> None:
    spec = sources[kind]
    filters = Filters(include=("*.png", "*.pdf"), limit=20)
    counts = Counts()
    pairs: list[tuple[StoredObject, Position]] = []
    snapshots: list[Counts] = []  # what a runner stores with each position
    for obj, position in iter_objects(spec, filters, policy, None, counts, retry=FAST, page_size=3):
        pairs.append((obj, position))
        snapshots.append(Counts(dict(counts.skipped), list(counts.bad_lines)))
    assert len(pairs) >= 4

    for at, (_, position) in enumerate(pairs):
        stored = Position.from_json(position.to_json())
        assert stored == position
        resumed = snapshots[at]
        rest, _ = take(spec, policy, filters, stored, resumed, page_size=3)
        assert rest == pairs[at + 1 :], f"resumed after object {at}"
        assert resumed == counts, f"counts resumed after object {at}"


def test_a_position_survives_json_and_a_garbled_one_is_a_clear_error() -> None:
    position = Position(2, 'scans/2024/ü "x".png', 41)
    assert Position.from_json(position.to_json()) == position
    for garbled in (
        "",
        "[]",
        '{"source": -1, "after": "", "taken": 0}',
        '{"source": 0}',
        '{"source": true, "after": "", "taken": 0}',
    ):
        with pytest.raises(BackfillError, match="position"):
            Position.from_json(garbled)


# --- Dry runs ---------------------------------------------------------------------------


def test_a_dry_run_counts_objects_bytes_skips_and_bad_lines(
    sources: dict[str, SourceSpec], archive: dict[str, bytes], policy: Settings
) -> None:
    report = dry_run(
        SourceSpec(prefixes=(f"s3://{SRC}/scans/2024/",)),
        Filters(include=("*.png",)),
        policy,
        retry=FAST,
    )
    pngs = [k for k in listed_2024(archive) if k.endswith(".png")]
    assert report == DryRun(
        objects=len(pngs),
        bytes=sum(len(archive[k]) for k in pngs),
        unsized=0,
        skipped={"folder": 1, "include": len(listed_2024(archive)) - len(pngs)},
        bad_lines=[],
    )

    plain = dry_run(sources["plain"], Filters(), policy, retry=FAST)
    assert (plain.objects, plain.unsized, plain.bytes) == (5, 3, 7 + 17)
    assert plain.to_json()["bad_lines"][0] == {"line": 5, "reason": plain.bad_lines[0][1]}
    assert plain.skipped == {"bad_line": len(plain.bad_lines)}
    json.dumps(plain.to_json())


def test_a_dry_run_checks_the_source_first(s3: str, policy: Settings) -> None:
    with pytest.raises(BackfillError, match="NoSuchBucket"):
        dry_run(prefix("x/", MISSING), Filters(), policy, retry=FAST)
    with pytest.raises(BackfillError, match="shard"):
        dry_run(prefix("scans/2024/"), Filters(shard=(3, 3)), policy, retry=FAST)


def test_filters_that_cannot_select_anything_sensible_are_refused(policy: Settings) -> None:
    for filters in (
        Filters(shard=(0, 0)),
        Filters(limit=0),
        Filters(max_bytes=-1),
        Filters(include=("scans/*.png",)),
    ):
        with pytest.raises(BackfillError):
            iter_objects(prefix("scans/"), filters, policy, None, Counts())


def test_a_plain_manifest_starting_with_a_byte_order_mark_reads_its_first_line(
    s3: str, policy: Settings, tmp_path: Path
) -> None:
    # Notepad and Excel's "CSV UTF-8" write a BOM first: it is not part of the reference.
    refs = [f"s3://{SRC}/scans/2024/inv-003.png", f"s3://{SRC}/scans/2024/inv-004.jpg"]
    text = "\ufeff" + "".join(f"{ref}\n" for ref in refs)
    path = tmp_path / "manifest.txt"
    path.write_bytes(text.encode())
    s3_client(s3).put_object(Bucket=INV, Key="lists/bom.txt.gz", Body=gzip.compress(text.encode()))

    for spec in (
        SourceSpec(manifest=str(path)),
        SourceSpec(manifest=f"s3://{INV}/lists/bom.txt.gz"),
    ):
        pairs, counts = take(spec, policy)
        assert [obj.ref for obj, _ in pairs] == refs
        assert counts.skipped == {} and counts.bad_lines == []
        # Resumed after the first line, the second is read as it was.
        rest, _ = take(spec, policy, position=pairs[0][1])
        assert [obj.ref for obj, _ in rest] == refs[1:]


def test_inventory_rows_with_extra_columns_or_keys_that_are_not_text_are_bad_lines(
    s3: str, policy: Settings
) -> None:
    # Issue 18 point 6: the row with a ninth column was read as an object, and the key that
    # URL-decodes to bytes that are not UTF-8 was counted under bad_key with no line number.
    rows = [
        inventory_row("scans/2024/fine.png"),
        inventory_row("scans/2024/extra.png") + ',"one more"',
        inventory_row("scans/2024/%FF%FE.png"),
        inventory_row("scans/2024/bell%07.png"),  # a control character: bad_key, by design
        inventory_row("scans/2024/../2023/x.png"),  # a `..` segment: bad_key, by design
    ]
    client = s3_client(s3)
    base = "inventory/bf-src/rows"
    client.put_object(Bucket=INV, Key=f"{base}/data/rows.csv", Body="\n".join(rows).encode())
    manifest = {
        "sourceBucket": SRC,
        "destinationBucket": f"arn:aws:s3:::{INV}",
        "fileFormat": "CSV",
        "fileSchema": SCHEMA,
        "files": [{"key": f"{base}/data/rows.csv", "size": 1, "MD5checksum": "x"}],
    }
    key = f"{base}/manifest.json"
    client.put_object(Bucket=INV, Key=key, Body=json.dumps(manifest).encode())

    pairs, counts = take(SourceSpec(manifest=f"s3://{INV}/{key}"), policy)
    assert [obj.key for obj, _ in pairs] == ["scans/2024/fine.png"]
    assert [line for line, _ in counts.bad_lines] == [2, 3]
    extra, undecodable = (reason for _, reason in counts.bad_lines)
    assert extra == "rows.csv: expected 8 UTF-8 columns, got 9"
    assert undecodable.startswith("rows.csv: Key ") and "UTF-8" in undecodable
    assert counts.skipped == {"bad_line": 2, "bad_key": 2}
