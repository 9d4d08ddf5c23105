"""What a backfill writes (worker/backfill/output.py, report.py; docs/backfill.md, Output):
JSONL.gz parts written whole or not at all, read back in order; one line per object from a
job's result; index.csv that a spreadsheet opens without running anything; the report's
numbers. Local folders, and S3 over real HTTP (moto's server)."""

from __future__ import annotations

import base64
import csv
import gzip
import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BUCKET, s3_client
from tests.services import wait_until
from worker import s3 as worker_s3
from worker.backfill import BackfillError, StoredObject, output, report
from worker.backfill.output import ResultMismatch, object_lines, open_output
from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def obj(n: int, size: int = 100) -> StoredObject:
    key = f"in/2024/inv-{n:04d}.png"
    return StoredObject(f"s3://{BUCKET}/{key}", key, f"etag{n}", size)


def item(
    ref: str,
    *,
    codes: list[dict[str, Any]] | None = None,
    error: str | None = None,
    total: float = 10.0,
    stages: tuple[str, ...] = ("fast",),
) -> dict[str, Any]:
    return {
        "image": ref,
        "ok": error is None,
        "codes": codes or [],
        "error": {"code": error, "message": f"{error} happened"} if error else None,
        "format": "png",
        "width": 100,
        "height": 80,
        "pages": 1,
        "page_kinds": [],
        "complete": True,
        "unread": [],
        "stages_run": list(stages),
        "timings_ms": {"fetch": 1.5, "read": 0.1, "fast": 3.0, "total": total},
    }


def code(text: str, stage: str = "fast") -> dict[str, Any]:
    return {"text": text, "bytes_b64": "", "format": "QRCode", "stage": stage, "page": 0}


def batch_result(items: list[dict[str, Any]], job_id: str = "bf-1") -> dict[str, Any]:
    return {
        "job_id": job_id,
        "request_id": "run",
        "meta": None,
        "worker": "host/1",
        "backend": "onnx",
        "model": "qr-det-small",
        "ok": all(i["ok"] for i in items),
        "error": next((i["error"] for i in items if i["error"]), None),
        "items": items,
        "finished_at": "2026-12-02T10:00:00.000000+00:00",
        "timings_ms": {"queue_wait": 2.0, "total": 30.0},
    }


def local(tmp_path: Path, settings: Settings) -> output.Output:
    return open_output(f"file://{tmp_path}/out", settings)


# Parts, locally ----------------------------------------------------------------------------


def test_a_part_is_gzipped_compact_utf8_json_one_object_per_line(tmp_path, settings):
    out = local(tmp_path, settings)
    lines = [
        {"key": "a", "text": "Zaplaťte 1 200 Kč"},
        {"key": "b", "text": "line one\nline two\r\u2028\u2029 end"},
    ]
    out.write_part(0, lines)
    raw = gzip.decompress((tmp_path / "out" / "part-000000.jsonl.gz").read_bytes())
    assert raw.split(b"\n") == [
        '{"key":"a","text":"Zaplaťte 1 200 Kč"}'.encode(),
        b'{"key":"b","text":"line one\\nline two\\r\xe2\x80\xa8\xe2\x80\xa9 end"}',
        b"",
    ]
    assert list(out.iter_lines()) == lines


def test_parts_are_read_back_in_sequence_order_whatever_order_they_were_written(tmp_path, settings):
    out = local(tmp_path, settings)
    for seq in (2, 0, 10, 1):
        out.write_part(seq, [{"seq": seq, "n": n} for n in range(3)])
    assert out.parts() == [0, 1, 2, 10]
    assert [(line["seq"], line["n"]) for line in out.iter_lines()] == [
        (seq, n) for seq in (0, 1, 2, 10) for n in range(3)
    ]
    # `below`: parts the run has not recorded yet (written just before a crash) are left out.
    assert {line["seq"] for line in out.iter_lines(below=2)} == {0, 1}


def test_rewriting_a_part_replaces_it(tmp_path, settings):
    out = local(tmp_path, settings)
    out.write_part(0, [{"key": "a"}, {"key": "b"}, {"key": "c"}])
    out.write_part(0, [{"key": "a"}, {"key": "b"}])
    assert list(out.iter_lines()) == [{"key": "a"}, {"key": "b"}]
    assert sorted(os.listdir(tmp_path / "out")) == ["part-000000.jsonl.gz"]


def test_a_part_that_fails_half_way_leaves_the_previous_part_and_no_temp_file(tmp_path, settings):
    out = local(tmp_path, settings)
    out.write_part(0, [{"key": "old"}])
    with pytest.raises(TypeError):
        out.write_part(0, [{"key": "new"}, {"key": object()}])
    assert list(out.iter_lines()) == [{"key": "old"}]
    assert os.listdir(tmp_path / "out") == ["part-000000.jsonl.gz"]


def test_a_process_killed_mid_write_leaves_no_partial_part_and_its_temp_file_is_never_read(
    tmp_path, settings
):
    folder = tmp_path / "out"
    open_output(f"file://{folder}", settings).write_part(0, [{"key": "done"}])
    ready = tmp_path / "ready"
    # A writer that stalls after 1000 lines, its temp file half written, until it is killed.
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from worker.backfill.output import open_output
        from worker.settings import Settings

        class Stalling(list):
            def __iter__(self):
                for n in range(1000):
                    yield {{"key": f"k{{n}}", "pad": "x" * 200}}
                Path({str(ready)!r}).write_text("1")
                time.sleep(120)

        open_output("file://{folder}", Settings.from_env({{}})).write_part(1, Stalling())
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        wait_until(ready.exists, 60, "the writer to stall mid-part")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    leftovers = [name for name in os.listdir(folder) if name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".part-000001.jsonl.gz.")
    assert not (folder / "part-000001.jsonl.gz").exists()
    out = open_output(f"file://{folder}", settings)
    assert out.parts() == [0]
    assert list(out.iter_lines()) == [{"key": "done"}]
    out.write_index()  # the index is built from parts only, too
    assert (folder / "index.csv").read_text("utf-8-sig").splitlines()[1:] == [
        "done,false,0,,,,,,,,,,,"
    ]


def test_lines_are_read_lazily_part_by_part(tmp_path, settings):
    out = local(tmp_path, settings)
    out.write_part(0, [{"n": 0}])
    out.write_part(1, [{"n": 1}])
    lines = out.iter_lines()
    assert next(lines) == {"n": 0}
    out.write_part(1, [{"n": "rewritten"}])  # part 1 is opened only when part 0 is done
    assert list(lines) == [{"n": "rewritten"}]


def test_a_truncated_part_is_a_clear_error_not_a_short_read(tmp_path, settings):
    out = local(tmp_path, settings)
    out.write_part(0, [{"n": n, "pad": os.urandom(8).hex()} for n in range(100)])
    path = tmp_path / "out" / "part-000000.jsonl.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(BackfillError, match=r"part-000000\.jsonl\.gz cannot be read"):
        list(out.iter_lines())


def test_the_summary_is_written_whole_and_read_back(tmp_path, settings):
    out = local(tmp_path, settings)
    assert out.read_summary() is None
    out.write_summary({"objects": 3, "name": "run-ü"})
    assert out.read_summary() == {"objects": 3, "name": "run-ü"}
    assert json.loads((tmp_path / "out" / "summary.json").read_text("utf-8"))["objects"] == 3


# Opening and checking an output ------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/out/",
        "/tmp/out",
        "out",
        "file://host/tmp/out",
        "file://tmp/out",
        "file:///tmp/../etc/",
        "s3:///prefix/",
        "s3://bucket/a/../b/",
        "s3://bucket/out/?x=1",
        "s3://bucket/out\n/",
        "",
    ],
)
def test_an_output_that_is_neither_a_local_folder_nor_an_s3_prefix_is_refused(url, settings):
    with pytest.raises(BackfillError) as raised:
        open_output(url, settings)
    assert "\n" not in str(raised.value)


def test_an_s3_output_whose_first_folder_is_empty_is_refused_not_written_elsewhere(settings):
    # S3 keys are opaque: s3://b//run/ names keys starting "/run/". The parser stripped every
    # leading "/" and wrote under "run/" instead; an empty folder is refused, first or not.
    for url in ("s3://results//run/", "s3://results///run/", "s3://results/%2Frun/"):
        with pytest.raises(BackfillError, match=r"empty or '\.\.' folders"):
            open_output(url, settings)
    assert open_output("s3://results/run/", settings).url == "s3://results/run/"
    assert open_output("s3://results/", settings).url == "s3://results/"


def test_a_local_output_folder_is_created_when_checked(tmp_path, settings):
    out = open_output(f"file://{tmp_path}/a/b/c/", settings)
    assert not (tmp_path / "a").exists()
    out.check_writable(fresh=True)
    assert (tmp_path / "a" / "b" / "c").is_dir()
    assert os.listdir(tmp_path / "a" / "b" / "c") == []  # the probe is gone


def test_a_local_output_that_cannot_be_a_folder_fails_the_check_in_one_line(tmp_path, settings):
    (tmp_path / "file").write_text("not a folder")
    out = open_output(f"file://{tmp_path}/file", settings)
    with pytest.raises(BackfillError, match="is not writable") as raised:
        out.check_writable()
    assert "\n" not in str(raised.value)


def test_a_fresh_run_refuses_an_output_that_already_holds_a_run(tmp_path, settings):
    out = local(tmp_path, settings)
    out.check_writable(fresh=True)
    out.write_part(0, [{"key": "a"}])
    out.check_writable()  # resume: the run's own parts are expected
    with pytest.raises(BackfillError, match=r"already holds .*part-000000\.jsonl\.gz"):
        out.check_writable(fresh=True)
    other = open_output(f"file://{tmp_path}/other", settings)
    other.write_summary({})
    with pytest.raises(BackfillError, match=r"summary\.json"):
        other.check_writable(fresh=True)


# Lines from results ------------------------------------------------------------------------


def test_each_object_gets_its_item_plus_key_etag_size_and_the_job_fields(settings):
    objects = [obj(1, 2048), obj(2, 4096)]
    result = batch_result(
        [
            item(objects[0].ref, codes=[code("SPD*1.0*ACC:CZ58")]),
            item(objects[1].ref, error="corrupt_image"),
        ]
    )
    first, second = object_lines(result, objects)
    assert first == {
        "key": "in/2024/inv-0001.png",
        "etag": "etag1",
        "size": 2048,
        **item(objects[0].ref, codes=[code("SPD*1.0*ACC:CZ58")]),
        "job_id": "bf-1",
        "worker": "host/1",
        "backend": "onnx",
        "model": "qr-det-small",
        "finished_at": "2026-12-02T10:00:00.000000+00:00",
    }
    assert second["ok"] is False
    assert second["error"]["code"] == "corrupt_image"
    assert (second["key"], second["size"], second["codes"]) == ("in/2024/inv-0002.png", 4096, [])
    assert "items" not in first and "request_id" not in first and "meta" not in first


def test_a_job_that_failed_before_scanning_gives_every_object_a_line_with_its_error(settings):
    objects = [obj(1), obj(2), obj(3)]
    result = {
        "job_id": "bf-2",
        "request_id": "run",
        "meta": None,
        "worker": "host/2",
        "backend": "onnx",
        "model": "m",
        "ok": False,
        "error": {"code": "worker_lost", "message": "the worker died on every attempt"},
        "codes": [],
        "finished_at": "2026-12-02T10:00:01+00:00",
        "timings_ms": {},
    }
    lines = object_lines(result, objects)
    assert [line["key"] for line in lines] == [o.key for o in objects]
    for line, stored in zip(lines, objects, strict=True):
        assert line["image"] == stored.ref
        assert line["ok"] is False and line["codes"] == [] and line["stages_run"] == []
        assert line["error"]["code"] == "worker_lost"
        assert line["job_id"] == "bf-2" and line["etag"] == stored.etag
        # the same fields as a scanned item, so every line reads the same way
        assert set(line) == set(object_lines(batch_result([item(stored.ref)]), [stored])[0])


def test_an_item_for_another_image_is_a_bug_and_raises(settings):
    objects = [obj(1), obj(2)]
    swapped = batch_result([item(objects[1].ref), item(objects[0].ref)])
    with pytest.raises(ResultMismatch, match="item 0"):
        object_lines(swapped, objects)
    with pytest.raises(ResultMismatch, match="1 items for 2 objects"):
        object_lines(batch_result([item(objects[0].ref)]), objects)
    with pytest.raises(ResultMismatch, match="neither items nor"):
        object_lines({"job_id": "x", "ok": True, "error": None, "codes": []}, objects)


def test_a_reference_longer_than_the_echo_matches_its_cut_echo_and_the_line_keeps_it_whole():
    key = "in/" + "k" * 1500 + ".png"
    stored = StoredObject(f"s3://{BUCKET}/{key}", key, "e", 1)
    echoed = stored.ref[:1021] + "..."
    (line,) = object_lines(batch_result([item(echoed)]), [stored])
    assert line["image"] == stored.ref


# index.csv ---------------------------------------------------------------------------------

HOSTILE_TEXTS = [
    '=HYPERLINK("http://evil","x")',
    "+1+1",
    "-2+3",
    "@SUM(A1)",
    "\t=1",
    "\r=1",
]


def test_the_index_opens_as_csv_and_no_cell_can_run_as_a_formula(tmp_path, settings):
    out = local(tmp_path, settings)
    objects = [obj(n) for n in range(len(HOSTILE_TEXTS) + 3)]
    items = [item(o.ref, codes=[code(t)]) for o, t in zip(objects, HOSTILE_TEXTS, strict=False)]
    n = len(HOSTILE_TEXTS)
    items.append(
        item(
            objects[n].ref,
            codes=[code('a,b "c"\nd\x00e', "detector"), code("x")],
            stages=("fast", "detector"),
            total=12.345,
        )
    )
    items.append(item(objects[n + 1].ref, error="not_found"))
    items.append(item(objects[n + 2].ref))
    out.write_part(0, object_lines(batch_result(items[:4]), objects[:4]))
    out.write_part(1, object_lines(batch_result(items[4:]), objects[4:]))
    hostile_key = StoredObject("file:///r/=cmd|x", "=cmd|x", "e", 1)
    out.write_part(2, object_lines(batch_result([item(hostile_key.ref)]), [hostile_key]))

    assert out.write_index() == len(objects) + 1
    data = (tmp_path / "out" / "index.csv").read_bytes()
    assert data.startswith(b"\xef\xbb\xbfkey,ok,codes,")  # a BOM: Excel reads it as UTF-8
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert rows[0] == [
        *("key", "ok", "codes", "first_code_text", "error_code", "stages", "total_ms"),
        *("scheme", "issuer_tax_id", "issue_date", "total", "currency", "payload_ok"),
        "content_type",
    ]
    no_payload = [""] * 6  # these codes carry none: the payload columns stay empty
    body = rows[1:]
    # Tab and CR are escaped (one row, one line), so those two no longer start the cell.
    assert [row[3] for row in body[:n]] == [
        *("'" + text for text in HOSTILE_TEXTS[:4]),
        *("\\t=1", "\\r=1"),
    ]
    assert body[n] == [
        objects[n].key,
        "true",
        "2",
        'a,b "c"\\nd\\u0000e',
        "",
        "fast+detector",
        "12.3",
        *no_payload,
        "",
    ]
    assert body[n + 1] == [
        *(objects[n + 1].key, "false", "0", "", "not_found", "fast", "10.0"),
        *no_payload,
        "",
    ]
    assert body[n + 2] == [
        *(objects[n + 2].key, "true", "0", "", "", "fast", "10.0"),
        *no_payload,
        "",
    ]
    assert body[n + 3][0] == "'=cmd|x"  # keys are outsiders' text too
    for row in body:
        for value in row:
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r"))


# What a scanner reads off real invoices: payloads of several lines, codes holding bytes that
# are no text, and text that a spreadsheet would run or display reversed.
QR_BILL = (
    "SPC\r\n0200\r\n1\r\nCH4431999123000889012\r\nS\r\nRobert Schneider AG\r\nRue du Lac\r\n"
    "1268\r\n2501\r\nBiel\r\nCH\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n1949.75\r\nCHF\r\nEPD"
)
EPC = "BCD\n002\n1\nSCT\nBPOTBEB1\nRed Cross\nBE72000000001616\nEUR1\n\n\nUrgency fund"
GOST = "ST00012|Name=ООО «Три кита»|PersonalAcc=40702810138250123017|Sum=100000\r\n"  # noqa: RUF001
BINARY = b'\x89PNG\r\n\x1a\n\x00\x01\xfe\xff,"\n'
TRICKY_TEXTS = [
    '\uff1dHYPERLINK("http://evil","x")',  # fullwidth equals: Excel runs it as "="
    "\uff0b1\uff0b1",
    "\uff0d2",
    "\uff20SUM(A1)",
    "\u202egnp.exe",  # right-to-left override: shows as "exe.png"
    "'=already quoted",
    "C:\\temp\\new\u2028next",  # a backslash, and a separator some tools break lines at
]


def test_every_index_row_is_one_physical_line_that_csv_readers_and_line_tools_agree_on(
    tmp_path, settings
):
    out = local(tmp_path, settings)
    texts = [QR_BILL, EPC, GOST, *TRICKY_TEXTS]
    objects = [obj(n) for n in range(len(texts) + 2)]
    items = [
        item(o.ref, codes=[{**code(text), "content_type": "Text"}])
        for o, text in zip(objects, texts, strict=False)
    ]
    binary = {
        **code(BINARY.decode("latin-1")),  # what zxing-cpp makes of bytes: mojibake
        "bytes_b64": base64.b64encode(BINARY).decode(),
        "content_type": "Binary",
    }
    items.append(item(objects[len(texts)].ref, codes=[binary]))
    items.append(item(objects[len(texts) + 1].ref, error="not_found"))
    out.write_part(0, object_lines(batch_result(items), objects))
    assert out.write_index() == len(objects)
    path = tmp_path / "out" / "index.csv"

    def tool(command: str) -> str:
        ran = subprocess.run(
            ["sh", "-c", command, "sh", str(path)], capture_output=True, text=True, check=True
        )
        return ran.stdout.strip()

    # One line per row (and the header), whatever the payloads hold.
    assert tool('wc -l < "$1"') == str(1 + len(objects))
    assert tool('awk "END { print NR }" "$1"') == str(1 + len(objects))
    assert tool('grep -c "BCD" "$1"') == "1"
    assert tool('grep -c "Robert Schneider AG" "$1"') == "1"
    assert tool("grep -c 'PersonalAcc=40702810138250123017' \"$1\"") == "1"
    assert tool('awk -F, \'$2 == "false"\' "$1" | wc -l') == "1"
    assert tool('awk -F, \'$NF == "Binary"\' "$1" | wc -l') == "1"
    assert tool('awk -F, \'$NF == "Text"\' "$1" | wc -l') == str(len(texts))

    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(objects)
    assert [row["content_type"] for row in rows] == ["Text"] * len(texts) + ["Binary", ""]
    shown = [row["first_code_text"] for row in rows]
    for cell_text in shown:
        assert "\n" not in cell_text and "\r" not in cell_text and "\u2028" not in cell_text
        assert not cell_text.startswith(
            ("=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20", "\u202e")
        )
    # Line breaks and other invisible characters are escaped, and read back exactly.
    assert shown[1] == EPC.replace("\n", "\\n")
    assert shown[3:8] == [
        '\'\uff1dHYPERLINK("http://evil","x")',
        "'\uff0b1\uff0b1",
        "'\uff0d2",
        "'\uff20SUM(A1)",
        "\\u202egnp.exe",
    ]
    assert [output.unescape_cell(text) for text in shown[: len(texts)]] == texts
    # Bytes that are no text are shown as what they are, marked: never as mojibake.
    assert shown[len(texts)] == "base64:" + base64.b64encode(BINARY).decode()
    assert base64.b64decode(shown[len(texts)].removeprefix("base64:")) == BINARY
    assert shown[-1] == ""


def test_an_index_from_the_spool_of_the_parts_a_driver_wrote_is_the_index_of_a_full_pass(
    tmp_path, settings
):
    # The driver keeps the rows of the parts it wrote and reads again only the others (a
    # resumed run's earlier parts): the index must come out byte for byte the same.
    out = local(tmp_path, settings)
    texts = [*HOSTILE_TEXTS, "plain", "ünïcødé", 'a,b "c"\nd']
    parts = []
    for seq in range(5):
        objects = [obj(seq * 10 + n) for n in range(len(texts))]
        items = [item(o.ref, codes=[code(t)]) for o, t in zip(objects, texts, strict=True)]
        parts.append(object_lines(batch_result(items), objects))
        out.write_part(seq, parts[-1])
    assert out.write_index() == 5 * len(texts)
    full = (tmp_path / "out" / "index.csv").read_bytes()

    spool = output.IndexSpool()
    for seq in (2, 3, 4):
        spool.add(seq, parts[seq])
    assert spool.start(below=5) == 2
    earlier = out.iter_lines(below=spool.start(below=5))
    assert out.write_index(lines=earlier, spool=spool) == 5 * len(texts)
    assert (tmp_path / "out" / "index.csv").read_bytes() == full
    # Written twice (a finish retried after a pause), the same bytes again.
    out.write_index(lines=out.iter_lines(below=2), spool=spool)
    assert (tmp_path / "out" / "index.csv").read_bytes() == full


def test_a_spool_with_a_gap_or_past_its_limit_does_not_stand_in_for_the_parts(monkeypatch):
    lines = [{"key": f"k{n}", "ok": True, "codes": []} for n in range(100)]
    gap = output.IndexSpool()
    gap.add(0, lines)
    gap.add(2, lines)  # part 1 was written by a driver that lost the confirmation
    assert gap.start(below=3) is None
    behind = output.IndexSpool()
    behind.add(0, lines)
    assert behind.start(below=2) is None  # part 1 is not in it
    monkeypatch.setattr(output.IndexSpool, "LIMIT", 1000)
    big = output.IndexSpool()
    big.add(0, [{"key": uuid.uuid4().hex, "ok": True, "codes": []} for _ in range(2000)])
    assert big.start(below=1) is None and not list(big._packed)


# S3 over HTTP -------------------------------------------------------------------------------


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """worker.s3.client() pointed at moto's server, as a backfill process configures it."""
    for name, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    worker_s3.client.cache_clear()
    yield s3_client(s3_endpoint)
    worker_s3.client.cache_clear()


@pytest.fixture
def out_bucket(s3) -> str:
    # Not in QRW_S3_BUCKETS: that list bounds what jobs read, not where a backfill writes.
    bucket = f"results-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    return bucket


def keys(s3, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_an_s3_output_writes_parts_summary_and_index_under_its_prefix(s3, out_bucket, settings):
    out = open_output(f"s3://{out_bucket}/runs/r1", settings)  # a prefix is a folder
    out.check_writable(fresh=True)
    assert keys(s3, out_bucket) == []  # the probe is gone
    objects = [obj(n) for n in range(5)]
    out.write_part(1, object_lines(batch_result([item(o.ref) for o in objects[3:]]), objects[3:]))
    out.write_part(0, object_lines(batch_result([item(o.ref) for o in objects[:3]]), objects[:3]))
    out.write_part(0, object_lines(batch_result([item(o.ref) for o in objects[:3]]), objects[:3]))
    assert [line["key"] for line in out.iter_lines()] == [o.key for o in objects]
    out.write_summary(report.build(out.iter_lines(), {"name": "r1"}))
    assert out.write_index() == 5
    assert sorted(keys(s3, out_bucket)) == [
        "runs/r1/index.csv",
        "runs/r1/part-000000.jsonl.gz",
        "runs/r1/part-000001.jsonl.gz",
        "runs/r1/summary.json",
    ]
    assert out.read_summary()["objects"] == 5
    body = s3.get_object(Bucket=out_bucket, Key="runs/r1/part-000000.jsonl.gz")["Body"].read()
    assert len(gzip.decompress(body).splitlines()) == 3
    with pytest.raises(BackfillError, match="already holds"):
        out.check_writable(fresh=True)
    # another run's prefix next to it is its own
    open_output(f"s3://{out_bucket}/runs/r10/", settings).check_writable(fresh=True)


def test_a_large_index_goes_up_as_one_multipart_object(s3, out_bucket, settings, monkeypatch):
    monkeypatch.setattr(output, "UPLOAD_CHUNK", 5 * 1024 * 1024)  # S3's smallest chunk
    out = open_output(f"s3://{out_bucket}/big/", settings)
    objects = [obj(n) for n in range(900)]
    text = "Q" * 7000  # about 6.3 MB of index: two chunks
    for seq in range(0, 900, 300):
        part = objects[seq : seq + 300]
        out.write_part(
            seq, object_lines(batch_result([item(o.ref, codes=[code(text)]) for o in part]), part)
        )
    assert out.write_index() == 900
    head = s3.head_object(Bucket=out_bucket, Key="big/index.csv")
    assert head["ContentLength"] > 5 * 1024 * 1024
    assert "-2" in head["ETag"]  # a multipart object of two parts
    data = s3.get_object(Bucket=out_bucket, Key="big/index.csv")["Body"].read()
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert [row[0] for row in rows[1:]] == [o.key for o in objects]
    assert s3.list_multipart_uploads(Bucket=out_bucket).get("Uploads", []) == []


def test_an_s3_output_that_cannot_be_written_fails_the_check_in_one_line(s3, settings):
    out = open_output(f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/out/", settings)
    with pytest.raises(BackfillError, match="NoSuchBucket") as raised:
        out.check_writable()
    assert "\n" not in str(raised.value)


def test_an_unreachable_s3_endpoint_fails_the_check_in_one_line(monkeypatch, settings, s3):
    from tests.services import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr(output, "S3_ATTEMPTS", 2)
    worker_s3.client.cache_clear()
    started = time.monotonic()
    with pytest.raises(BackfillError, match="not writable") as raised:
        open_output(f"s3://{BUCKET}/out/", settings).check_writable()
    assert "\n" not in str(raised.value)
    assert time.monotonic() - started < 60


# The report ---------------------------------------------------------------------------------


def synthetic_lines() -> list[dict[str, Any]]:
    lines = []
    for n in range(100):
        stored = obj(n, size=1000 + n)
        if n < 60:
            found = [code(f"c{n}", "fast")] + ([code("d", "detector")] if n % 10 == 0 else [])
            doc = item(stored.ref, codes=found, total=float(n + 1))
        elif n < 90:
            doc = item(stored.ref, total=float(n + 1))
        elif n < 97:
            doc = item(stored.ref, error="corrupt_image", total=float(n + 1))
        else:
            doc = {**item(stored.ref, error="worker_lost"), "timings_ms": {}}
        lines += object_lines(batch_result([doc]), [stored])
    lines[-1]["size"] = -1  # a manifest line that did not say
    return lines


def test_the_report_counts_reads_misses_failures_codes_by_stage_and_bytes():
    summary = report.build(
        iter(synthetic_lines()),
        {
            "name": "r",
            "state": "done",
            "started_at": "2026-12-02T10:00:00Z",
            "finished_at": "2026-12-02T10:00:20Z",
        },
    )
    assert summary["name"] == "r" and summary["state"] == "done"
    assert (summary["objects"], summary["read"], summary["no_code"], summary["failed"]) == (
        100,
        60,
        30,
        10,
    )
    assert summary["failed_by_code"] == {"corrupt_image": 7, "worker_lost": 3}
    assert summary["codes"] == 66
    assert summary["codes_by_stage"] == {"fast": 60, "detector": 6}
    assert summary["bytes"] == sum(1000 + n for n in range(99))
    assert summary["objects_without_size"] == 1
    assert summary["elapsed_s"] == 20.0
    assert summary["images_per_s"] == 5.0
    total = summary["timings_ms"]["total"]
    assert total["count"] == 97  # the 3 lost before scanning have no timings
    assert total["p50"] == pytest.approx(49, rel=0.005)
    assert total["p95"] == pytest.approx(93, rel=0.005)
    assert total["max"] == 97.0
    assert summary["timings_ms"]["fetch"]["p50"] == pytest.approx(1.5, rel=0.005)
    json.dumps(summary, allow_nan=False)  # summary.json is plain JSON
    text = report.render(summary)
    assert "p95" in text and "corrupt_image" in text


def test_the_report_keeps_what_the_run_skipped_or_cancelled_from_its_state():
    state = {
        "name": "r",
        "state": "cancelled",
        "skipped": 4,
        "skipped_by": {"include": 4},
        "cancelled": 20,
        "bad_lines": 1,
        "bad_line_list": [[7, "not a reference"]],
        "position": "{}",
        "driver": None,
    }
    summary = report.build(synthetic_lines(), state)
    assert summary["skipped_by"] == {"include": 4} and summary["cancelled"] == 20
    assert summary["bad_line_list"] == [[7, "not a reference"]]
    assert "position" not in summary and "driver" not in summary
    assert "cancelled  20" in report.render(summary)


def test_images_per_second_falls_back_to_the_lines_when_the_run_has_no_end_yet():
    lines = synthetic_lines()
    for n, line in enumerate(lines):
        line["finished_at"] = f"2026-12-02T10:00:{n // 10:02d}+00:00"
    ten_to = datetime(2026, 12, 2, 9, 59, 50, tzinfo=UTC).timestamp()
    summary = report.build(lines, {"started_at": str(ten_to)})  # Unix seconds, as text
    assert summary["elapsed_s"] == 19.0  # up to the last line: the run has not finished
    assert summary["images_per_s"] == round(100 / 19, 3)
    summary = report.build(lines, {})
    assert summary["elapsed_s"] == 9.0
    assert report.build([], {})["images_per_s"] is None


def test_percentiles_stay_within_half_a_percent_in_a_few_hundred_buckets():
    histogram = report.Histogram()
    values = [0.05 * 1.0007**n for n in range(20_000)]  # 0.05 ms .. about 60 s
    for value in values:
        histogram.add(value)
    ordered = sorted(values)
    for p in (50, 95, 99):
        exact = ordered[max(0, -(-p * len(values) // 100) - 1)]
        assert histogram.percentile(p) == pytest.approx(exact, rel=0.005)
    assert len(histogram.buckets) < 1500


# The documentation ---------------------------------------------------------------------------


def documented(heading: str) -> set[str]:
    """The backticked names in the first column of the table under `heading` in the Output
    section of docs/backfill.md (`timings_ms.total` names `timings_ms`)."""
    text = (ROOT / "docs" / "backfill.md").read_text()
    section = text[text.index("<!-- begin:output -->") : text.index("<!-- end:output -->")]
    table = section[section.index(heading) :].split("\n###")[0]
    names: set[str] = set()
    for row in table.splitlines():
        if row.startswith("| `"):
            first = row.split("|")[1]
            names.update(name.split(".")[0] for name in re.findall(r"`([^`]+)`", first))
    return names


def test_the_documented_line_fields_are_the_fields_a_line_has():
    objects = [obj(1)]
    line = object_lines(batch_result([item(objects[0].ref, codes=[code("x")])]), objects)[0]
    real_item = output.ScanResult().to_dict()
    assert documented("### One line per object") == set(line) | set(real_item)


def test_the_documented_summary_and_index_fields_are_the_ones_written():
    state = {name: None for name in report.STATE_FIELDS}
    assert documented("### summary.json") == set(report.build([], state))
    assert documented("### index.csv") == set(output.INDEX_COLUMNS)
