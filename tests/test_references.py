"""Which storage references a job may name, decided before any byte is fetched."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.engine.errors import ScanFailed
from worker.queue import payloads
from worker.settings import Settings
from worker.storage import parse_reference


@pytest.fixture
def policy(tmp_path: Path) -> Settings:
    return Settings.from_env(
        {"QRW_S3_BUCKETS": "invoices,archive/2024/", "QRW_FILE_ROOTS": f"{tmp_path}:/nonexistent"}
    )


@pytest.mark.parametrize(
    "ref",
    ["s3://invoices/a/b.jpg", "s3://invoices/x.pdf", "s3://archive/2024/q1/x.png"],
)
def test_allowed_s3_references(policy: Settings, ref: str) -> None:
    assert str(parse_reference(ref, policy)) == ref


@pytest.mark.parametrize(
    ("ref", "code"),
    [
        ("s3://other/a.jpg", "refused_reference"),
        ("s3://archive/2023/a.jpg", "refused_reference"),
        ("s3://archive/2024/../2023/a.jpg", "refused_reference"),
        ("s3://invoices/", "invalid_payload"),
        ("s3:///key", "invalid_payload"),
        ("https://invoices.s3.amazonaws.com/a.jpg", "refused_reference"),
        ("ftp://host/a.jpg", "refused_reference"),
        ("gopher://127.0.0.1:6379/_FLUSHALL", "refused_reference"),
        ("a.jpg", "refused_reference"),
        ("file:///etc/passwd", "refused_reference"),
        ("file://remote-host/share/a.jpg", "invalid_payload"),
        ("", "invalid_payload"),
    ],
)
def test_refused_references(policy: Settings, ref: str, code: str) -> None:
    with pytest.raises(ScanFailed) as caught:
        parse_reference(ref, policy)
    assert caught.value.code == code


def test_files_under_a_root_are_allowed_and_dotdot_is_not(policy: Settings, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"x")
    assert parse_reference(f"file://{tmp_path}/a.png", policy).key == str(tmp_path / "a.png")
    with pytest.raises(ScanFailed):
        parse_reference(f"file://{tmp_path}/../etc/passwd", policy)


def test_no_roots_and_no_buckets_means_nothing_is_allowed(tmp_path: Path) -> None:
    closed = Settings.from_env({})
    for ref in ("s3://invoices/a.jpg", f"file://{tmp_path}/a.png"):
        with pytest.raises(ScanFailed):
            parse_reference(ref, closed)


def test_a_valid_payload_becomes_a_typed_request() -> None:
    request = payloads.parse(
        {
            "images": ["s3://a/b", "s3://a/c"],
            "want": "first",
            "deadline_ms": 500,
            "reply_to": "qrw:reply:1",
            "request_id": "r",
            "meta": [1, 2],
        }
    )
    assert request.batch
    assert request.images == ("s3://a/b", "s3://a/c")
    assert (request.want, request.deadline_ms, request.reply_to) == ("first", 500, "qrw:reply:1")


@pytest.mark.parametrize(
    "reply_to", ["rq:queue:qr", "qrw:result:x", "qrw:results", "has space", "", "x" * 300]
)
def test_reply_lists_that_could_clobber_other_keys_are_refused(reply_to: str) -> None:
    with pytest.raises(ScanFailed):
        payloads.parse({"image": "s3://a/b", "reply_to": reply_to})
