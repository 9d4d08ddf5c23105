"""S3 failing for a moment under each of its three users, all through worker.s3: the workers'
fetch (worker.storage), what a backfill lists (worker.backfill.sources) and what it writes
and reads back (worker.backfill.output).

moto's server cannot be told to fail, so a real HTTP proxy of ours (tests/s3_faults.py)
stands in front of it: it answers the next requests with the faults it is given, then
forwards every request to moto. Each kind of transient failure S3 (or a gateway before it)
gives is ridden out with a retry; a refusal is not retried; a deadline stops the retries
before their count does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import s3_client
from tests.s3_faults import FaultyS3, point_at
from worker import s3, storage
from worker.backfill import BackfillError, Counts, Filters, SourceSpec
from worker.backfill.output import open_output
from worker.backfill.sources import iter_objects
from worker.errors import ErrorCode, ScanFailed
from worker.settings import Settings

# Every kind of "try again" the three users must ride out, one per rule that makes it one:
# a bare status (429 with no code, 503 with no code), S3's throttling code, the throttling
# code of AWS's JSON services (sent by some gateways with a 400), and the connection reset
# before any answer.
TRANSIENT = ("429", "503", "SlowDown", "ThrottlingException", "reset")

# The backfill's listing, retried without production's patience; still real requests.
FAST = s3.Retry(attempts=3, base_s=0.01, cap_s=0.05)


@pytest.fixture(scope="module")
def flaky(s3_endpoint: str) -> Iterator[FaultyS3]:
    proxy = FaultyS3(s3_endpoint)
    yield proxy
    proxy.close()


@pytest.fixture
def via_proxy(monkeypatch: pytest.MonkeyPatch, flaky: FaultyS3) -> Iterator[FaultyS3]:
    """worker.s3.client() talking to moto through the proxy, as a worker configures it."""
    point_at(monkeypatch, flaky.url)
    flaky.fail_next()
    yield flaky
    s3.client.cache_clear()


@pytest.fixture(scope="module")
def bucket(s3_endpoint: str) -> str:
    name = f"flaky-{uuid.uuid4().hex[:8]}"
    client = s3_client(s3_endpoint)
    client.create_bucket(Bucket=name)
    for n in range(5):
        client.put_object(Bucket=name, Key=f"in/inv-{n}.png", Body=b"image %d" % n)
    return name


@pytest.fixture(scope="module")
def policy(bucket: str) -> Settings:
    return Settings.from_env({}, s3_buckets=(bucket,), fetch_attempts=4)


# The workers' fetch -------------------------------------------------------------------------


@pytest.mark.parametrize("fault", TRANSIENT)
def test_a_fetch_rides_out_a_transient_failure_and_reads_the_object(
    via_proxy: FaultyS3, bucket: str, policy: Settings, fault: str
) -> None:
    via_proxy.fail_next(fault, fault)
    ref = storage.parse_reference(f"s3://{bucket}/in/inv-1.png", policy)

    assert storage.fetch(ref, policy) == b"image 1"
    assert len(via_proxy.requests) == 3  # two failures, then the read


def test_a_fetch_whose_body_is_cut_off_half_way_reads_the_object_again(
    via_proxy: FaultyS3, bucket: str, policy: Settings
) -> None:
    via_proxy.fail_next("cut")
    ref = storage.parse_reference(f"s3://{bucket}/in/inv-2.png", policy)

    assert storage.fetch(ref, policy) == b"image 2"
    assert len(via_proxy.requests) == 2


def test_a_fetch_refused_is_not_retried(via_proxy: FaultyS3, bucket: str, policy: Settings) -> None:
    via_proxy.fail_next("AccessDenied", "AccessDenied")
    ref = storage.parse_reference(f"s3://{bucket}/in/inv-1.png", policy)

    with pytest.raises(ScanFailed) as raised:
        storage.fetch(ref, policy)
    assert raised.value.code is ErrorCode.READ_FAILED
    assert "AccessDenied" in raised.value.message
    assert len(via_proxy.requests) == 1


def test_a_fetch_that_keeps_failing_is_storage_unavailable_after_its_attempts(
    via_proxy: FaultyS3, bucket: str, policy: Settings
) -> None:
    via_proxy.fail_next(*["SlowDown"] * 10)
    ref = storage.parse_reference(f"s3://{bucket}/in/inv-1.png", policy)

    with pytest.raises(ScanFailed) as raised:
        storage.fetch(ref, policy)
    assert raised.value.code is ErrorCode.STORAGE_UNAVAILABLE
    assert "failed 4 times; the last: SlowDown" in raised.value.message
    assert len(via_proxy.requests) == policy.fetch_attempts


def test_a_deadline_ends_the_retries_before_their_count_does(
    via_proxy: FaultyS3, bucket: str, policy: Settings
) -> None:
    patient = Settings.from_env({}, s3_buckets=(bucket,), fetch_attempts=10)
    via_proxy.fail_next(*["503"] * 20)
    ref = storage.parse_reference(f"s3://{bucket}/in/inv-1.png", patient)
    started = time.monotonic()

    with pytest.raises(ScanFailed) as raised:
        storage.fetch(ref, patient, deadline=started + 1.0)
    # No try is started past the deadline: the last one came in before it (give or take
    # its way to the proxy on a busy machine).
    assert max(via_proxy.arrived) < started + 1.0 + 0.1
    assert raised.value.code is ErrorCode.STORAGE_UNAVAILABLE
    assert "before its deadline" in raised.value.message
    assert 1 <= len(via_proxy.requests) < 10


# A backfill's listing -----------------------------------------------------------------------


def listed(bucket: str, policy: Settings) -> list[str]:
    spec = SourceSpec(prefixes=(f"s3://{bucket}/in/",))
    pairs = iter_objects(spec, Filters(), policy, None, Counts(), retry=FAST, page_size=2)
    return [obj.key for obj, _ in pairs]


@pytest.mark.parametrize("fault", TRANSIENT)
def test_a_backfill_listing_rides_out_a_transient_failure_and_lists_everything(
    via_proxy: FaultyS3, bucket: str, policy: Settings, fault: str
) -> None:
    # The first page fails twice, then a later page once: each page is retried on its own.
    via_proxy.fail_next(fault, fault, "pass", fault)

    assert listed(bucket, policy) == [f"in/inv-{n}.png" for n in range(5)]
    assert len(via_proxy.requests) == 3 + 3  # three pages of two, three failures


def test_a_backfill_listing_refused_is_not_retried(
    via_proxy: FaultyS3, bucket: str, policy: Settings
) -> None:
    via_proxy.fail_next("AccessDenied")

    with pytest.raises(BackfillError, match="AccessDenied"):
        listed(bucket, policy)
    assert len(via_proxy.requests) == 1


# A backfill's output ------------------------------------------------------------------------


LINES = [{"key": f"in/inv-{n}.png", "ok": True, "codes": []} for n in range(3)]


@pytest.mark.parametrize("fault", TRANSIENT)
def test_a_backfill_output_rides_out_a_transient_failure_writing_and_reading_a_part(
    via_proxy: FaultyS3, bucket: str, settings: Settings, fault: str
) -> None:
    out = open_output(f"s3://{bucket}/runs/{uuid.uuid4().hex[:8]}/", settings)
    via_proxy.fail_next(fault, fault)
    out.write_part(0, LINES)
    assert [r.split()[0] for r in via_proxy.requests] == ["PUT", "PUT", "PUT"]

    # Listing the parts fails once, reading the part once more.
    via_proxy.fail_next(fault, "pass", fault)
    assert list(out.iter_lines()) == LINES
    assert [r.split()[0] for r in via_proxy.requests] == ["GET"] * 4


def test_a_backfill_output_part_cut_off_half_way_is_read_again(
    via_proxy: FaultyS3, bucket: str, settings: Settings
) -> None:
    out = open_output(f"s3://{bucket}/runs/{uuid.uuid4().hex[:8]}/", settings)
    out.write_part(0, LINES)
    via_proxy.fail_next("pass", "cut")  # the listing, then the part

    assert list(out.iter_lines()) == LINES
    assert len(via_proxy.requests) == 3


def test_a_backfill_output_refused_is_not_retried(
    via_proxy: FaultyS3, bucket: str, settings: Settings
) -> None:
    out = open_output(f"s3://{bucket}/runs/{uuid.uuid4().hex[:8]}/", settings)
    via_proxy.fail_next("AccessDenied")

    with pytest.raises(BackfillError, match="AccessDenied"):
        out.write_part(0, LINES)
    assert len(via_proxy.requests) == 1
