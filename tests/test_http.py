"""The HTTP shim on a real socket: `qrw serve` answered by an HTTP client, as callers do."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import hypothesis
import jsonschema
import pytest
from hypothesis import strategies as st

from models.synth import digital_invoice, no_code_invoice
from tests.services import ShimProcess, wait_until
from worker.bench.hostile_files import png_bomb

MAX_BYTES = 3_000_000
# Short enough that a request waiting behind the slow photo (seconds) gives up first.
SLOT_WAIT_MS = 100


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShimProcess]:
    log = tmp_path_factory.mktemp("shim") / "shim.log"
    server = ShimProcess(
        {
            "QRW_HTTP_CONCURRENCY": "2",
            "QRW_MAX_BYTES": str(MAX_BYTES),
            "QRW_HTTP_SLOT_WAIT_MS": str(SLOT_WAIT_MS),
            "QRW_LOG_LEVEL": "warning",
        },
        log=log,
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(shim: ShimProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shim.url, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def slow_photo() -> bytes:
    """A large photo with no code: every stage runs, so a scan takes a while."""
    return no_code_invoice(77, fmt="jpeg", megapixels=8.0, photo=True).data


def test_a_posted_image_comes_back_in_the_original_services_shape(client: httpx.Client) -> None:
    sample = digital_invoice(11)
    response = client.post("/detect", content=sample.data)
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["data"] == body["codes"][0]["text"]
    assert read_bytes(body) == sample.codes[0].payload
    assert body["model"]
    assert body["latency_ms"] > 0
    assert set(body["breakdown"]) == {"preprocess_ms", "inference_ms", "postprocess_ms"}
    # ... and the full result beside it.
    assert body["codes"][0]["stage"] == "fast"
    assert body["timings_ms"]["total"] > 0
    assert body["error"] is None


def test_a_multipart_upload_works_like_a_raw_body(client: httpx.Client) -> None:
    sample = digital_invoice(12, fmt="jpeg")
    response = client.post("/detect", files={"file": ("invoice.jpg", sample.data, "image/jpeg")})
    assert response.status_code == 200
    assert read_bytes(response.json()) == sample.codes[0].payload


def test_a_pdf_is_read_page_by_page(client: httpx.Client) -> None:
    sample = digital_invoice(13, fmt="pdf")
    response = client.post("/detect", content=sample.data, params={"want": "all"})
    assert response.status_code == 200
    assert response.json()["format"] == "pdf"
    assert response.json()["success"] is True


def test_an_image_without_a_code_is_a_successful_empty_scan(client: httpx.Client) -> None:
    response = client.post("/detect", content=no_code_invoice(14).data)
    assert response.status_code == 200
    assert response.json()["success"] is False
    assert response.json()["data"] is None
    assert response.json()["error"] is None


def read_bytes(body: dict) -> bytes:
    return base64.b64decode(body["codes"][0]["bytes_b64"])


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert body["error"]["message"]


def test_a_body_over_the_limit_is_refused_from_its_declared_length(client: httpx.Client) -> None:
    response = client.post("/detect", content=b"\xff" * (MAX_BYTES + 1))
    assert_error(response, 413, "image_too_large")


def test_a_chunked_body_is_cut_off_as_it_crosses_the_limit(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(200):  # 200 x 64 KiB, no Content-Length: over four times the limit
            yield b"\0" * 65536

    try:
        response = client.post("/detect", content=chunks())
    except httpx.TransportError:
        pass  # the server may close the connection as soon as it has answered
    else:
        assert_error(response, 413, "image_too_large")
    assert client.get("/healthz").status_code == 200


def test_a_decompression_bomb_is_refused_before_decoding(client: httpx.Client) -> None:
    started = time.monotonic()
    assert_error(client.post("/detect", content=png_bomb()), 413, "image_too_large")
    assert time.monotonic() - started < 5


def test_what_is_not_an_image_is_415(client: httpx.Client) -> None:
    assert_error(client.post("/detect", content=b"hello, world"), 415, "unsupported_format")


def test_a_broken_image_is_422(client: httpx.Client) -> None:
    data = digital_invoice(15).data
    assert_error(client.post("/detect", content=data[: len(data) // 3]), 422, "corrupt_image")


def test_an_empty_body_and_bad_parameters_are_400(client: httpx.Client) -> None:
    assert_error(client.post("/detect", content=b""), 400, "empty_input")
    image = digital_invoice(16).data
    assert_error(client.post("/detect?want=some", content=image), 400, "invalid_request")
    assert_error(client.post("/detect?deadline_ms=-5", content=image), 400, "invalid_request")
    assert_error(client.post("/detect?deadline_ms=soon", content=image), 400, "invalid_request")
    # 0 once meant "no deadline" here, which the queue refuses: one rule for both now.
    assert_error(client.post("/detect?deadline_ms=0", content=image), 400, "invalid_request")


def test_a_multipart_body_without_a_file_is_400(client: httpx.Client) -> None:
    response = client.post("/detect", data={"note": "no file here"}, files={})
    assert response.status_code in (400, 415)


def test_the_deadline_is_504(client: httpx.Client, slow_photo: bytes) -> None:
    response = client.post("/detect", content=slow_photo, params={"deadline_ms": 1})
    assert_error(response, 504, "deadline_exceeded")


def test_past_the_concurrency_limit_a_request_waits_briefly_for_a_slot_then_is_refused(
    client: httpx.Client, slow_photo: bytes
) -> None:
    statuses: list[int] = []

    def slow() -> None:
        statuses.append(client.post("/detect", content=slow_photo).status_code)

    threads = [threading.Thread(target=slow) for _ in range(2)]
    for thread in threads:
        thread.start()
    wait_until(lambda: in_flight(client) == 2, 30, "both slots to be taken")
    started = time.monotonic()
    refused = client.post("/detect", content=digital_invoice(17).data)
    waited = time.monotonic() - started
    for thread in threads:
        thread.join()
    assert_error(refused, 503, "busy")
    assert "QRW_HTTP_SLOT_WAIT_MS" in refused.json()["error"]["message"]
    assert refused.headers["Retry-After"] == "1"
    assert waited >= SLOT_WAIT_MS / 1000  # refused only after its bounded wait
    assert statuses == [200, 200]
    # The slots are free again.
    assert client.post("/detect", content=digital_invoice(17).data).status_code == 200


def in_flight(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("qrw_http_scans_in_flight "):
            return float(line.split()[1])
    return 0.0


def test_health_readiness_and_the_openapi_document(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"alive": True}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert "/detect" in document["paths"]


def test_metrics_count_requests_stages_outcomes_and_the_model(client: httpx.Client) -> None:
    client.post("/detect", content=digital_invoice(18).data)
    client.post("/detect", content=b"not an image")
    text = client.get("/metrics").text
    assert 'qrw_scans_total{outcome="ok",source="http"}' in text
    assert 'qrw_scan_seconds_bucket{le="0.05",source="http",stage="fast"}' in text
    assert 'qrw_codes_read_total{source="http",stage="fast"}' in text
    assert 'qrw_codes_by_scheme_total{scheme="' in text  # test_payload_results_services.py
    assert 'qrw_http_requests_total{route="/detect",status="415"}' in text
    # Created at 0 when the shim starts, so an alert's increase() sees the first 500.
    assert 'qrw_http_requests_total{route="/detect",status="500"} 0.0' in text
    assert 'qrw_scans_total{outcome="internal_error",source="http"} 0.0' in text
    assert "qrw_model_info{backend=" in text
    assert "qrw_http_scans_in_flight" in text


def test_readiness_fails_while_a_required_redis_is_away(tmp_path: Path) -> None:
    dead_redis = "redis://127.0.0.1:1/0"
    server = ShimProcess(
        {"QRW_READY_NEEDS_REDIS": "true", "REDIS_URL": dead_redis, "QRW_BACKEND": "none"},
        log=tmp_path / "shim.log",
    )
    try:
        response = httpx.get(f"{server.url}/readyz", timeout=10)
        assert response.status_code == 503
        assert response.json()["redis"] is False
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    finally:
        server.stop()


# --- the API as its OpenAPI document describes it --------------------------------------


def _strategy(schema: dict) -> st.SearchStrategy:
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if schema.get("type") == "integer":
        return st.integers(schema.get("minimum", -(2**31)), schema.get("maximum", 2**31))
    return st.text(max_size=12)


def _requests(document: dict) -> st.SearchStrategy:
    operation = document["paths"]["/detect"]["post"]
    query = st.fixed_dictionaries(
        {},
        optional={
            p["name"]: st.one_of(_strategy(p["schema"]), st.text(max_size=8))
            for p in operation["parameters"]
        },
    )
    images = [digital_invoice(40).data, digital_invoice(41, fmt="jpeg").data]
    bodies = st.one_of(
        st.binary(max_size=4096),
        st.sampled_from(images),
        st.tuples(st.sampled_from(images), st.floats(0.0, 1.0)).map(
            lambda pair: pair[0][: int(len(pair[0]) * pair[1])]
        ),
    )
    return st.tuples(query, bodies)


@pytest.fixture(scope="module")
def document(client: httpx.Client) -> dict:
    return client.get("/openapi.json").json()


def test_every_response_is_one_the_openapi_document_promises(
    client: httpx.Client, document: dict
) -> None:
    responses = document["paths"]["/detect"]["post"]["responses"]

    @hypothesis.settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[hypothesis.HealthCheck.too_slow],
    )
    @hypothesis.given(_requests(document))
    def check(request: tuple[dict, bytes]) -> None:
        query, body = request
        response = client.post("/detect", params=query, content=body)
        promised = responses.get(str(response.status_code))
        assert promised is not None, f"undocumented status {response.status_code}"
        schema = promised["content"]["application/json"]["schema"]
        jsonschema.validate(response.json(), schema, cls=jsonschema.Draft202012Validator)
        assert response.status_code != 500, response.text

    check()


def test_several_shim_processes_share_the_port_and_report_metrics_together(
    tmp_path: Path,
) -> None:
    server = ShimProcess({"QRW_HTTP_PROCESSES": "2"}, log=tmp_path / "shim.log")
    try:
        wait_until(
            lambda: httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200, 60, "ready"
        )
        image = digital_invoice(19).data
        for _ in range(6):  # new connections: the kernel spreads them over both processes
            response = httpx.post(f"{server.url}/detect", content=image, timeout=30)
            assert response.status_code == 200
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
        # Whichever process answers the scrape, it counts every process's requests.
        assert 'qrw_scans_total{outcome="ok",source="http"} 6.0' in text
    finally:
        server.stop()
