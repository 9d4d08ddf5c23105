"""A code's payload wherever results go (issue 12): `codes[].payload` in the engine's result,
the table cells of `qrw scan` and `qrw enqueue --wait`, the OpenAPI schema of the shim, the
backfill's index.csv and summary, and the `qrw_codes_by_scheme_total` metric.

Real codes: the EPC credit transfers the project's own generator emits (models/synth), read
back from a PNG by the engine. The live edges (the shim on a socket, queue workers, the
`qrw` processes) are in test_payload_results_services.py; the images they use come from here.
"""

from __future__ import annotations

import copy
import io
import re
from typing import Any

import jsonschema
import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from models.synth import make_payload
from models.synth.qrcodes import render_code
from worker import console, metrics
from worker.backfill import output, report
from worker.engine import Engine
from worker.engine.results import Code, ScanResult
from worker.http.openapi import DETECT_RESPONSE

NOT_A_SCHEME = "Thank you for shopping with us! See you soon."
QUAD = ((0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0))


def epc_text(seed: int = 0) -> str:
    """An EPC (SEPA credit transfer, "BCD") payload as models/synth/payloads.py emits it."""
    rng = np.random.default_rng(seed)
    while True:
        payload = make_payload(rng, "newline_record")
        if payload.data.startswith(b"BCD\n"):
            return payload.data.decode("utf-8")


def with_bad_iban(text: str) -> str:
    """The same transfer with its IBAN's check digits set to 00, which no IBAN has."""
    lines = text.split("\n")
    lines[6] = lines[6][:2] + "00" + lines[6][4:]
    return "\n".join(lines)


def qr_png(text: str) -> bytes:
    """`text` alone in one clean QR code (UTF-8 with an ECI when it is not ASCII)."""
    rendered = render_code(text.encode("utf-8"), True, module_px=6)
    buffer = io.BytesIO()
    Image.fromarray(rendered.image).save(buffer, format="PNG")
    return buffer.getvalue()


def code(text: str, data: bytes | None = None) -> Code:
    data = text.encode("utf-8") if data is None else data
    return Code(text, data, "QRCode", QUAD, 0, "fast", "zxing-cpp")


def failed(payload: dict[str, Any]) -> list[str]:
    return [check["name"] for check in payload["checks"] if check["outcome"] == "failed"]


# codes[].payload ---------------------------------------------------------------------------


def test_an_epc_transfer_read_from_an_image_carries_its_payload_beside_its_text(
    engine: Engine,
) -> None:
    text = epc_text(1)
    result = engine.scan(qr_png(text)).to_dict()
    assert result["ok"] and len(result["codes"]) == 1
    read = result["codes"][0]
    assert read["text"] == text  # the read itself is what it always was
    payload = read["payload"]
    assert payload["scheme"] == "epc.sct"
    assert payload["ok"] is True, payload
    assert payload["fields"]["iban"] == text.split("\n")[6]
    assert payload["fields"]["currency"] == "EUR"
    assert payload["fields"]["total"] == text.split("\n")[7].removeprefix("EUR")
    assert payload["checks"] and all(c["outcome"] != "failed" for c in payload["checks"])


def test_a_failed_check_is_reported_and_the_code_is_kept_as_read(engine: Engine) -> None:
    text = with_bad_iban(epc_text(2))
    result = engine.scan(qr_png(text)).to_dict()
    assert result["ok"] is True and result["error"] is None
    read = result["codes"][0]
    assert read["text"] == text
    assert read["payload"]["scheme"] == "epc.sct"
    assert read["payload"]["ok"] is False
    assert "iban" in failed(read["payload"])
    assert read["payload"]["fields"]["iban"] == text.split("\n")[6]  # as given, not fixed


def test_text_that_is_no_known_scheme_has_a_null_payload(engine: Engine) -> None:
    result = engine.scan(qr_png(NOT_A_SCHEME)).to_dict()
    assert result["codes"][0]["text"] == NOT_A_SCHEME
    assert result["codes"][0]["payload"] is None


def test_binary_codes_and_empty_text_give_a_payload_or_null_never_an_error() -> None:
    for data in (b"\x00\xff\x01\x02" * 20, b"", bytes(range(256))):
        shaped = code(data.decode("latin-1"), data).to_dict()
        assert shaped["payload"] is None or shaped["payload"]["scheme"]


def test_a_payload_is_parsed_once_per_code_and_leaves_the_code_as_it_was() -> None:
    text = epc_text(3)
    read = code(text)
    first = read.payload
    assert first is not None and read.payload is first  # kept, not parsed again
    assert read.to_dict()["payload"] == read.to_dict()["payload"] == first.to_dict()
    assert read.text == text and read.data == text.encode()
    assert read == code(text)  # the parsed payload takes no part in equality
    assert "_payload" not in repr(read)
    # A copy made before or after parsing still parses, or keeps, the right payload.
    assert copy.deepcopy(code(text)).payload == first
    assert copy.deepcopy(read).payload == first


def test_a_result_with_codes_of_several_kinds_keeps_each_ones_payload_apart() -> None:
    good, bad = epc_text(4), with_bad_iban(epc_text(5))
    result = ScanResult(codes=[code(good), code(NOT_A_SCHEME), code(bad)]).to_dict()
    payloads = [c["payload"] for c in result["codes"]]
    assert payloads[0]["ok"] is True and payloads[1] is None and payloads[2]["ok"] is False
    assert [c["text"] for c in result["codes"]] == [good, NOT_A_SCHEME, bad]


# The shim's OpenAPI schema -----------------------------------------------------------------


def validate(document: dict[str, Any]) -> None:
    jsonschema.validate(document, DETECT_RESPONSE, cls=jsonschema.Draft202012Validator)


def shim_answer(codes: list[Code]) -> dict[str, Any]:
    scanned = ScanResult(codes=codes, timings_ms={"total": 1.0}).to_dict()
    return {
        "success": True,
        "data": codes[0].text,
        "model": "classical",
        "latency_ms": 1.0,
        "breakdown": {"preprocess_ms": 0.0, "inference_ms": 1.0, "postprocess_ms": 0.0},
        **scanned,
    }


def test_the_openapi_schema_describes_codes_with_a_payload_and_with_none() -> None:
    validate(shim_answer([code(epc_text(6)), code(with_bad_iban(epc_text(7))), code("x")]))
    properties = DETECT_RESPONSE["properties"]["codes"]["items"]
    assert "payload" in properties["required"]
    payload = properties["properties"]["payload"]["oneOf"][1]
    assert set(payload["required"]) == set(code(epc_text(8)).to_dict()["payload"])


def test_the_openapi_schema_refuses_a_code_without_a_payload_or_a_malformed_one() -> None:
    answer = shim_answer([code(epc_text(9))])
    del answer["codes"][0]["payload"]
    with pytest.raises(jsonschema.ValidationError):
        validate(answer)
    answer = shim_answer([code(epc_text(9))])
    answer["codes"][0]["payload"]["checks"][0]["outcome"] = "maybe"
    with pytest.raises(jsonschema.ValidationError):
        validate(answer)


# Table cells -------------------------------------------------------------------------------


def test_a_table_cell_names_the_scheme_and_any_check_that_failed() -> None:
    assert console.scheme(code(epc_text(10)).to_dict()["payload"]) == "epc.sct"
    assert console.scheme(code(with_bad_iban(epc_text(10))).to_dict()["payload"]).startswith(
        "epc.sct (failed: "
    )
    assert "iban" in console.scheme(code(with_bad_iban(epc_text(10))).to_dict()["payload"])
    assert console.scheme(None) == "-"
    problems_only = {"scheme": "x.y", "ok": False, "checks": [], "problems": ["cut short"]}
    assert console.scheme(problems_only) == "x.y (failed: problems)"


def test_the_job_result_table_has_a_schemes_column(capsys: pytest.CaptureFixture[str]) -> None:
    item = ScanResult(codes=[code(epc_text(11)), code("plain")], timings_ms={"total": 2.0})
    console.print_job_results([{"image": "s3://b/inv.png", **item.to_dict()}])
    header, _, row = capsys.readouterr().out.splitlines()
    assert header.split()[3] == "schemes"
    assert "-,epc.sct" in row.split()


def test_the_job_result_table_shows_the_time_of_every_stage_the_engine_runs(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    # The zoom stage (the last look at a photo nothing else read) ran without a column: a
    # `none` photo's stage times did not add up to its job's in `qrw demo` and `qrw scan`.
    names = [stage.name for stage in engine.stages]
    assert "zoom" in names
    timings = {name: 10.0 + index for index, name in enumerate(names)}
    item = ScanResult(stages_run=names, timings_ms={**timings, "total": 99.0})
    console.print_job_results([{"image": "s3://b/photo.jpg", **item.to_dict()}])
    header, rule, row = capsys.readouterr().out.splitlines()
    # Columns as the rule under the header spans them (cells hold spaces: "queue ms").
    spans = [(m.start(), m.end()) for m in re.finditer(r"-+", rule)]
    shown = {header[a:b].strip(): row[a:b].strip() for a, b in spans}
    for name, value in timings.items():
        assert shown.get(name) == f"{value:.1f}", (name, header)


# index.csv and the report ------------------------------------------------------------------


def line(key: str, *codes: Code) -> dict[str, Any]:
    scanned = ScanResult(codes=list(codes), stages_run=["fast"], timings_ms={"total": 3.0})
    return {"key": key, **scanned.to_dict()}


def row(line: dict[str, Any]) -> dict[str, str]:
    return dict(zip(output.INDEX_COLUMNS, output.index_row(line), strict=True))


def test_index_rows_show_the_first_code_with_a_payload() -> None:
    text = epc_text(12)
    shown = row(line("a.png", code(NOT_A_SCHEME), code(text)))
    assert shown["first_code_text"] == NOT_A_SCHEME  # the first code, whatever it is
    assert shown["scheme"] == "epc.sct"
    assert shown["total"] == text.split("\n")[7].removeprefix("EUR")
    assert shown["currency"] == "EUR"
    assert shown["issuer_tax_id"] == shown["issue_date"] == ""  # EPC carries neither
    assert shown["payload_ok"] == "true"
    assert row(line("b.png", code(with_bad_iban(text))))["payload_ok"] == "false"


def tax_url(scheme: str) -> str:
    """A tax-authority URL of `scheme` as models/synth/payloads.py emits it."""
    rng = np.random.default_rng(0)
    while True:
        text = make_payload(rng, "tax_url").data.decode("utf-8")
        parsed = code(text).payload
        if parsed is not None and parsed.scheme == scheme:
            return text


def test_index_rows_show_an_invoices_issuer_date_and_total() -> None:
    text = tax_url("es.verifactu")  # ...ValidarQR?nif=B78533445&...&fecha=04-11-2021&importe=...
    fields = code(text).to_dict()["payload"]["fields"]
    shown = row(line("v.png", code(text)))
    assert shown["scheme"] == "es.verifactu" and shown["payload_ok"] == "true"
    assert shown["issuer_tax_id"] == fields["issuer_tax_id"] != ""
    assert shown["issue_date"] == fields["issue_date"]
    assert shown["issue_date"][4] == "-"  # ISO 8601, as the payload gives it
    assert shown["total"] == fields["total"] != ""


def test_index_rows_without_a_payload_leave_the_payload_columns_empty() -> None:
    for shown in (row(line("c.png", code(NOT_A_SCHEME))), row(line("d.png"))):
        payload_columns = ("scheme", *output.INDEX_PAYLOAD_FIELDS, "payload_ok")
        assert [shown[name] for name in payload_columns] == [""] * 6
    failed_job = {"key": "e.png", "ok": False, "codes": [], "error": {"code": "worker_lost"}}
    assert row(failed_job)["scheme"] == ""


def test_payload_cells_cannot_run_as_formulas() -> None:
    hostile = {
        "scheme": "=cmd|' /C calc'!A0",
        "ok": True,
        "fields": {"issuer_tax_id": "@SUM(1+1)", "total": "-12.50", "currency": "\x07EUR"},
        "checks": [],
        "problems": [],
    }
    shown = row({"key": "f.png", "ok": True, "codes": [{"text": "t", "payload": hostile}]})
    assert shown["scheme"] == "'=cmd|' /C calc'!A0"
    assert shown["issuer_tax_id"] == "'@SUM(1+1)"
    assert shown["total"] == "'-12.50"
    # A control character is spelled out (index.csv is one physical line per row), and
    # unescape_cell gives the payload's text back.
    assert shown["currency"] == "\\u0007EUR"
    assert output.unescape_cell(shown["currency"]) == "\x07EUR"


def test_the_report_counts_codes_by_scheme_and_failed_checks_by_kind() -> None:
    lines = [
        line("a.png", code(epc_text(13)), code(NOT_A_SCHEME)),
        line("b.png", code(with_bad_iban(epc_text(14)))),
        line("c.png", code(with_bad_iban(epc_text(15)))),
        line("d.png"),
        {"key": "e.png", "ok": False, "codes": [], "error": {"code": "corrupt_image"}},
    ]
    summary = report.build(lines, {"name": "r", "state": "done"})
    assert summary["codes_by_scheme"] == {"epc.sct": 3, "none": 1}
    assert summary["failed_checks_by_kind"]["iban"] == 2
    assert summary["codes"] == 4 and summary["read"] == 3  # a failed check loses no read
    text = report.render(summary)
    assert "epc.sct" in text and "iban" in text


def test_a_report_of_codes_without_payloads_has_empty_counts_and_prints_no_scheme_lines() -> None:
    summary = report.build([line("a.png", code(NOT_A_SCHEME))], {})
    assert summary["codes_by_scheme"] == {"none": 1}
    assert summary["failed_checks_by_kind"] == {}
    assert "by scheme" not in report.render(summary)
    # Lines written before payloads existed (no `payload` key) count as none.
    old = {"key": "o.png", "ok": True, "codes": [{"text": "t", "stage": "fast"}]}
    assert report.build([old], {})["codes_by_scheme"] == {"none": 1}


# The metric --------------------------------------------------------------------------------


def by_scheme(source: str, scheme: str) -> float:
    value = REGISTRY.get_sample_value(
        "qrw_codes_by_scheme_total", {"source": source, "scheme": scheme}
    )
    return value or 0.0


def test_codes_are_counted_by_scheme_from_a_result_or_its_json_form() -> None:
    before = (by_scheme("unit", "epc.sct"), by_scheme("unit", "none"))
    result = ScanResult(codes=[code(epc_text(16)), code(with_bad_iban(epc_text(17)))])
    metrics.observe_scan(result, "unit")
    metrics.observe_scan(ScanResult(codes=[code(NOT_A_SCHEME)]).to_dict(), "unit")
    assert by_scheme("unit", "epc.sct") == before[0] + 2
    assert by_scheme("unit", "none") == before[1] + 1
