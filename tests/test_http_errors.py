"""Every error the shim answers has one JSON shape, whoever produced it (issue 20 point 7).

`{"success": false, "error": {"code": ..., "message": ...}}` with `application/json`: a scan
that fails, a route that does not exist, a method a route does not take, a bug outside
/detect. Starlette answers the framework's own errors in plain text unless told otherwise,
so a caller that parses every error body broke on `GET /detect`. The shim runs as
`qrw serve`, a real process on a real socket.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest

from models.synth import digital_invoice
from tests.services import ShimProcess


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShimProcess]:
    # The errors do not depend on the detector: the classical cascade starts fastest.
    server = ShimProcess(
        {"QRW_BACKEND": "none", "QRW_LOG_LEVEL": "warning"},
        log=tmp_path_factory.mktemp("shim") / "shim.log",
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(shim: ShimProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shim.url, timeout=60) as http:
        yield http


def assert_json_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json", response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body


def detect_count(client: httpx.Client, status: int) -> float:
    prefix = f'qrw_http_requests_total{{route="/detect",status="{status}"}} '
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[1])
    return 0.0


def test_get_on_detect_is_a_json_405_naming_the_method_to_use(client: httpx.Client) -> None:
    response = client.get("/detect")
    body = assert_json_error(response, 405, "invalid_request")
    assert response.headers["allow"] == "POST"
    assert "GET" in body["error"]["message"]
    assert "POST" in body["error"]["message"]


def test_a_path_the_shim_does_not_serve_is_a_json_404(client: httpx.Client) -> None:
    body = assert_json_error(client.get("/v2/detect"), 404, "invalid_request")
    assert "/v2/detect" in body["error"]["message"]


def test_a_method_the_operational_endpoints_do_not_take_is_a_json_405(
    client: httpx.Client,
) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert_json_error(client.post(path, content=b"x"), 405, "invalid_request")


def test_the_openapi_document_describes_the_404_and_405_answers(client: httpx.Client) -> None:
    # Any path and any method a client may try: described once, as reusable responses,
    # with the schema the real answers validate against.
    document = client.get("/openapi.json").json()
    described = document["components"]["responses"]
    for name, response in (
        ("NotFound", client.get("/v2/detect")),
        ("MethodNotAllowed", client.get("/detect")),
    ):
        schema = described[name]["content"]["application/json"]["schema"]
        jsonschema.validate(response.json(), schema, cls=jsonschema.Draft202012Validator)
    assert "404" in document["info"]["description"]
    assert "405" in document["info"]["description"]


def test_a_framework_error_leaves_the_connection_serving_the_next_request(
    client: httpx.Client,
) -> None:
    client.put("/detect", content=digital_invoice(60).data)  # a body the shim never reads
    response = client.post("/detect", content=digital_invoice(61).data)
    assert response.status_code == 200
    assert response.json()["success"] is True


def test_every_answer_to_detect_is_counted_once_under_its_status(client: httpx.Client) -> None:
    ok, refused, wrong_method = (detect_count(client, s) for s in (200, 415, 405))
    client.post("/detect", content=digital_invoice(62).data)
    client.post("/detect", content=b"not an image")
    client.get("/detect")
    assert detect_count(client, 200) == ok + 1
    assert detect_count(client, 415) == refused + 1
    assert detect_count(client, 405) == wrong_method + 1


def test_answers_on_other_routes_are_not_counted_as_detect(client: httpx.Client) -> None:
    before = client.get("/metrics").text.count('route="/detect"')
    client.get("/nowhere")
    client.get("/healthz")
    after = client.get("/metrics").text
    assert after.count('route="/detect"') == before
    assert 'route="/nowhere"' not in after
    assert 'route="/healthz"' not in after


def test_a_bug_outside_detect_is_a_json_500_and_the_shim_goes_on(tmp_path: Path) -> None:
    """/metrics of a shim whose metrics folder was removed under it (a /tmp cleaner, say)
    cannot be built: a 500 in the same shape as /detect's own, its trace in the log, and
    /detect still answers."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    server = ShimProcess(
        {"QRW_BACKEND": "none", "PROMETHEUS_MULTIPROC_DIR": str(folder)},
        log=tmp_path / "shim.log",
    )
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            # A shim that has served: each metric's file exists before the folder goes.
            assert http.post("/detect", content=digital_invoice(63).data).status_code == 200
            assert http.get("/metrics").status_code == 200
            shutil.rmtree(folder)
            body = assert_json_error(http.get("/metrics"), 500, "internal_error")
            assert "ValueError" in body["error"]["message"]
            assert http.post("/detect", content=digital_invoice(64).data).status_code == 200
    finally:
        server.stop()
    # "The shim's log holds the details": the trace, as the error event of the request.
    lines = (tmp_path / "shim.log").read_text().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    errors = [event for event in events if event.get("level") == "error"]
    assert any("MultiProcessCollector" in json.dumps(event) for event in errors), errors
