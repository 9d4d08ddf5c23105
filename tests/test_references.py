"""Which storage references a job may name, decided before any byte is fetched."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from worker.engine.errors import ScanFailed
from worker.queue import payloads
from worker.settings import Settings
from worker.storage import FolderCache, fetch, parse_reference


@pytest.fixture
def policy(tmp_path: Path) -> Settings:
    (tmp_path / "second-root").mkdir()
    return Settings.from_env(
        {
            "QRW_S3_BUCKETS": "invoices,archive/2024/,scans/in",
            "QRW_FILE_ROOTS": f"{tmp_path}:{tmp_path / 'second-root'}",
        }
    )


@pytest.mark.parametrize(
    "ref",
    [
        "s3://invoices/a/b.jpg",
        "s3://invoices/x.pdf",
        "s3://archive/2024/q1/x.png",
        "s3://scans/in/x.png",
        "s3://scans/in/deeper/x.png",
    ],
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
        # Issue 9, defect 10: a folder given without its trailing slash (scans/in) is still a
        # folder: whole path segments only.
        ("s3://scans/in-evil/a.png", "refused_reference"),
        ("s3://scans/inside.png", "refused_reference"),
        ("s3://scans/in", "refused_reference"),
        ("s3://archive/2024-evil/a.png", "refused_reference"),
        # Issue 9, defect 13: a NUL byte or a lone surrogate cannot name a file or a key.
        ("s3://invoices/a\x00.png", "invalid_payload"),
        ("s3://invoices/a%00.png", "invalid_payload"),
        ("s3://invoices/\ud800.png", "invalid_payload"),
        ("s3://invoices/a%ff.png", "invalid_payload"),
        ("file:///tmp/a\x00.png", "invalid_payload"),
        ("file:///tmp/a%00.png", "invalid_payload"),
        ("file:///tmp/\ud800.png", "invalid_payload"),
        ("file:///tmp/b\udcff.png", "invalid_payload"),
        ("file:///tmp/%ff.png", "invalid_payload"),
        ("s3://invoices\x00/a.png", "invalid_payload"),
        # urlsplit silently drops tabs and newlines, so these would name another object.
        ("s3://invoices/a\nb.png", "invalid_payload"),
        ("file:///tmp/a\tb.png", "invalid_payload"),
        ("s3://invoices/a\x7fb.png", "invalid_payload"),
        ("s3://invoices/a%0Ab.png", "invalid_payload"),
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


def test_a_file_root_admits_whole_path_segments_only(tmp_path: Path) -> None:
    for folder in ("in", "in-evil"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.png").write_bytes(b"x")
    policy = Settings.from_env({"QRW_FILE_ROOTS": str(tmp_path / "in")})
    assert parse_reference(f"file://{tmp_path}/in/a.png", policy).key == f"{tmp_path}/in/a.png"
    with pytest.raises(ScanFailed) as refused:
        parse_reference(f"file://{tmp_path}/in-evil/a.png", policy)
    assert refused.value.code == "refused_reference"


@pytest.mark.parametrize("cached", [False, True], ids=["uncached", "folder-cache"])
def test_symlinks_are_resolved_so_a_link_inside_a_root_cannot_lead_out(
    tmp_path: Path, cached: bool
) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "real").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"x")
    (root / "real" / "a.png").write_bytes(b"x")
    (root / "real" / "leak.png").symlink_to(outside / "secret.png")
    (root / "linked").symlink_to(outside)
    (root / "alias").symlink_to(root / "real")
    policy = Settings.from_env({"QRW_FILE_ROOTS": str(root)})
    folders = FolderCache() if cached else None

    def key(path: Path) -> str:
        return parse_reference(f"file://{path}", policy, folders=folders).key

    # Twice each: the second answer comes from the cache when there is one.
    for _ in range(2):
        assert key(root / "real" / "a.png") == str(root / "real" / "a.png")
        assert key(root / "alias" / "a.png") == str(root / "real" / "a.png")
        assert key(root / "real" / "missing.png") == str(root / "real" / "missing.png")
        for escape in (root / "real" / "leak.png", root / "linked" / "secret.png"):
            with pytest.raises(ScanFailed) as refused:
                key(escape)
            assert refused.value.code == "refused_reference"


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


def _fetch_within(ref: str, policy: Settings, seconds: float = 20) -> ScanFailed:
    """fetch() in a thread, so a read that blocks fails the test instead of hanging it."""
    outcome: list[BaseException | bytes] = []

    def read() -> None:
        try:
            outcome.append(fetch(parse_reference(ref, policy), policy))
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"fetch({ref}) still blocked after {seconds} s"
    assert isinstance(outcome[0], ScanFailed), outcome[0]
    return outcome[0]


def test_a_fifo_under_a_root_is_refused_without_blocking(policy: Settings, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.png")
    failure = _fetch_within(f"file://{tmp_path}/pipe.png", policy)
    assert failure.code == "read_failed" and "not a regular file" in failure.message


def test_a_socket_or_a_folder_under_a_root_is_not_read(policy: Settings, tmp_path: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock.png"))
    (tmp_path / "folder.png").mkdir()
    try:
        for name in ("sock.png", "folder.png"):
            assert _fetch_within(f"file://{tmp_path}/{name}", policy).code == "read_failed"
    finally:
        server.close()


def test_a_file_swapped_for_a_symlink_after_the_check_is_not_followed(
    policy: Settings, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside") / "secret.png"
    outside.write_bytes(b"secret")
    inside = tmp_path / "a.png"
    inside.write_bytes(b"x")
    ref = parse_reference(f"file://{inside}", policy)
    inside.unlink()
    inside.symlink_to(outside)
    with pytest.raises(ScanFailed) as caught:
        fetch(ref, policy)
    assert caught.value.code == "read_failed"


def test_a_regular_file_under_a_root_is_read(policy: Settings, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"png bytes")
    assert fetch(parse_reference(f"file://{tmp_path}/a.png", policy), policy) == b"png bytes"


# Issue 18, point 1: S3 keys are opaque. Everything after `s3://bucket/` is the key, percent-
# decoded and nothing else: an empty first segment, `//` inside and a trailing `/` are part
# of it (the parser stripped every leading `/`, so `s3://invoices//c/x.png` read `c/x.png`).
@pytest.mark.parametrize(
    ("ref", "key"),
    [
        ("s3://invoices//c/x.png", "/c/x.png"),
        ("s3://invoices///c/x.png", "//c/x.png"),
        ("s3://invoices/c//x.png", "c//x.png"),
        ("s3://invoices/c/x/", "c/x/"),
        ("s3://invoices//", "/"),
        ("s3://invoices/c/./x.png", "c/./x.png"),
        ("s3://invoices/%2Fc/x.png", "/c/x.png"),
        ("s3://invoices/a b+c%25%C3%BC.png", "a b+c%ü.png"),
        ("s3://scans/in//x.png", "in//x.png"),
        ("s3://scans/in/x/", "in/x/"),
    ],
)
def test_an_s3_key_is_exactly_what_follows_the_bucket(policy: Settings, ref: str, key: str) -> None:
    parsed = parse_reference(ref, policy)
    assert parsed.key == key
    # One identity per key (the backfill's duplicate check compares these texts).
    assert str(parsed) == f"s3://{parsed.bucket}/{key}"


@pytest.mark.parametrize(
    ("ref", "code"),
    [
        # A folder admits whole segments: the segments of `/in/x.png` are "", "in", "x.png",
        # so it is not under the folder `in` (before the fix it was read as `in/x.png`).
        ("s3://scans//in/x.png", "refused_reference"),
        ("s3://archive//2024/x.png", "refused_reference"),
        ("s3://scans/in-evil//x.png", "refused_reference"),
        # `..` stays refused wherever the empty segments are.
        ("s3://invoices//../x.png", "refused_reference"),
        ("s3://invoices/a//..//x.png", "refused_reference"),
        ("s3://invoices/c/..", "refused_reference"),
    ],
)
def test_empty_segments_open_no_way_out_of_a_folder(policy: Settings, ref: str, code: str) -> None:
    with pytest.raises(ScanFailed) as caught:
        parse_reference(ref, policy)
    assert caught.value.code == code


@pytest.mark.parametrize(
    "ref",
    ["s3://invoices/a#b.png", "s3://invoices/a?b.png", "s3://invoices/a.png#", "file:///tmp/a#b"],
)
def test_a_literal_question_mark_or_hash_is_refused_instead_of_cutting_the_name(
    policy: Settings, ref: str
) -> None:
    # urlsplit took them for a query or a fragment, and the parser dropped the rest:
    # `s3://invoices/a#b.png` read the object `a`.
    with pytest.raises(ScanFailed) as caught:
        parse_reference(ref, policy)
    assert caught.value.code == "invalid_payload"
    assert "%23" in caught.value.message


def test_an_encoded_question_mark_or_hash_is_part_of_the_key(policy: Settings) -> None:
    assert parse_reference("s3://invoices/a%23b%3F.png", policy).key == "a#b?.png"


def test_a_file_path_keeps_its_normalisation_so_slashes_lead_nowhere_new(
    policy: Settings, tmp_path: Path
) -> None:
    # file:// paths are paths, not keys: `//` is `/`, and the roots still hold.
    (tmp_path / "a.png").write_bytes(b"x")
    assert parse_reference(f"file://{tmp_path}//a.png", policy).key == str(tmp_path / "a.png")
    assert parse_reference(f"file://{tmp_path}/a.png/", policy).key == str(tmp_path / "a.png")
    for ref in ("file:////etc/passwd", f"file://{tmp_path}//..//etc/passwd", "file:///"):
        with pytest.raises(ScanFailed) as caught:
            parse_reference(ref, policy)
        assert caught.value.code == "refused_reference", ref
