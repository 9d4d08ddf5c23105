"""Hostile clients against the HTTP shim on a real socket (issue 9, defects 6 and 14).

Slow uploads are written with raw sockets that trickle a body, as an attacker would; the
shim must keep serving everyone else, cut the slow ones off with 408, bound what it
buffers, and say through /readyz when it is saturated. Query parameters follow the
request rules of `worker.rules`, and a client that hangs up mid-upload is one ordinary
event, not an error.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from models.synth import digital_invoice, no_code_invoice
from tests.services import ShimProcess, free_port, wait_until
from worker.engine import Engine, ScanResult
from worker.http.app import create_app
from worker.settings import Settings

MAX_BYTES = 3_000_000
BODY_TIMEOUT = 8.0
SLOT_WAIT_MS = 3000
# str.isdigit() and int() accept these; the request rules do not.
FULL_WIDTH_123 = "".join(chr(0xFF10 + int(d)) for d in "123")
FULL_WIDTH_FIRST = "".join(chr(ord(c) - ord("a") + 0xFF41) for c in "first")


@pytest.fixture(scope="module")
def shim_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile-shim") / "shim.log"


@pytest.fixture(scope="module")
def shim(shim_log: Path) -> Iterator[ShimProcess]:
    server = ShimProcess(
        {
            "QRW_HTTP_CONCURRENCY": "2",
            "QRW_MAX_BYTES": str(MAX_BYTES),
            "QRW_HTTP_BODY_TIMEOUT": str(BODY_TIMEOUT),
            # 1 byte/s over each 5 s window (QRW_HTTP_BODY_RATE_WINDOW's default) keeps a
            # trickle of 2 bytes/s alive until the timeout; the rate cut is shown by a client
            # that sends nothing at all.
            "QRW_HTTP_MIN_BODY_RATE": "1",
            "QRW_HTTP_SLOT_WAIT_MS": str(SLOT_WAIT_MS),
            "QRW_LOG_LEVEL": "info",
            "QRW_LOG_FORMAT": "json",
        },
        log=shim_log,
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(shim: ShimProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shim.url, timeout=60) as http:
        yield http


class RawUpload:
    """A POST /detect written on a raw socket: headers now, the body when the test says."""

    def __init__(self, port: int, length: int, query: str = "") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.started = time.monotonic()
        head = (
            f"POST /detect{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n"
        )
        self.sock.sendall(head.encode("ascii"))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def trickle(self, every: float = 1.0) -> None:
        """One byte every `every` seconds, in the background, until answered or closed."""

        def run() -> None:
            while not self._stop.is_set():
                try:
                    self.sock.send(b"\0")
                except OSError:
                    return
                self._stop.wait(every)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def answered(self) -> bool:
        """True once the server has written something (or closed the connection)."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable)

    def response(self, timeout: float) -> tuple[int, dict[str, str], Any, float]:
        """Status, headers, JSON body and seconds since the request began."""
        self.sock.settimeout(timeout)
        raw = b""
        try:
            while b"\r\n\r\n" not in raw:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                raw += chunk
            head, _, body = raw.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
            }
            length = int(headers.get("content-length", "0"))
            while len(body) < length:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                body += chunk
        finally:
            elapsed = time.monotonic() - self.started
            self.close()
        status = int(lines[0].split()[1])
        return status, headers, json.loads(body) if body else None, elapsed

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert body["error"]["message"]


# --- slow uploads (defect 6) --------------------------------------------------------------


def test_a_normal_client_is_served_while_two_clients_trickle_their_uploads_at_two_bytes_a_second(
    shim: ShimProcess, client: httpx.Client
) -> None:
    slow = [RawUpload(shim.port, length=10_000) for _ in range(2)]
    for upload in slow:
        upload.trickle(every=0.5)
    try:
        time.sleep(0.5)  # both are mid-body: under the old shim, both slots are taken now
        response = client.post("/detect", content=digital_invoice(101).data)
        assert response.status_code == 200, response.text
        assert response.json()["success"] is True
        # ... while the slow clients still hold their connections, unanswered.
        assert not any(upload.answered() for upload in slow)
        assert client.get("/readyz").status_code == 200
    except BaseException:
        for upload in slow:
            upload.close()
        raise
    outcomes = [upload.response(timeout=BODY_TIMEOUT + 30) for upload in slow]
    for status, headers, body, elapsed in outcomes:
        assert status == 408
        assert body["error"]["code"] == "request_timeout"
        assert "QRW_HTTP_BODY_TIMEOUT" in body["error"]["message"]
        assert headers["connection"] == "close"
        assert elapsed >= BODY_TIMEOUT - 0.5


def test_an_upload_that_stalls_is_cut_off_by_the_minimum_rate_before_the_timeout(
    shim: ShimProcess,
) -> None:
    stalled = RawUpload(shim.port, length=10_000)
    status, _, body, elapsed = stalled.response(timeout=BODY_TIMEOUT + 30)
    assert status == 408
    assert body["error"]["code"] == "request_timeout"
    assert "QRW_HTTP_MIN_BODY_RATE" in body["error"]["message"]
    assert elapsed < BODY_TIMEOUT  # about one second: the rate is checked after the first


def test_uploads_held_at_once_are_bounded_in_bytes_and_released_when_their_clients_leave(
    shim: ShimProcess, client: httpx.Client
) -> None:
    # The budget is (concurrency + 2) bodies of QRW_MAX_BYTES: four nearly whole uploads,
    # each stalled just before its end, leave no room for a fifth body of any size.
    held = [RawUpload(shim.port, length=MAX_BYTES) for _ in range(4)]
    try:
        for upload in held:
            upload.send(b"\0" * (MAX_BYTES - 1000))
        wait_until(lambda: uploads(client)["bytes"] == 4 * (MAX_BYTES - 1000), 30, "uploads held")
        # Still ready: a replica whose budget is held by open uploads is healthy, and
        # refuses only the uploads that do not fit (issue 17, point 6).
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["uploads"]["bytes"] == 4 * (MAX_BYTES - 1000)
        assert client.get("/healthz").status_code == 200
        refused = client.post("/detect", content=digital_invoice(102).data)
        assert_error(refused, 503, "busy")
        assert refused.headers["Retry-After"] == "1"
    finally:
        for upload in held:
            upload.close()
    wait_until(lambda: uploads(client)["bytes"] == 0, 30, "uploads released")
    assert client.get("/readyz").status_code == 200
    assert client.post("/detect", content=digital_invoice(102).data).status_code == 200


def uploads(client: httpx.Client) -> dict[str, int]:
    return client.get("/readyz").json()["uploads"]


def test_readiness_is_503_while_every_slot_is_taken_and_requests_wait_and_the_waiter_is_served(
    client: httpx.Client,
) -> None:
    photo = no_code_invoice(77, fmt="jpeg", megapixels=8.0, photo=True).data
    statuses: dict[str, int] = {}

    def post(name: str, body: bytes) -> None:
        statuses[name] = client.post("/detect", content=body).status_code

    # Two slow scans (the whole cascade over a photo without a code) take both slots.
    slow = [threading.Thread(target=post, args=(f"slow{k}", photo)) for k in range(2)]
    for thread in slow:
        thread.start()
    wait_until(lambda: client.get("/readyz").json()["slots"]["taken"] == 2, 30, "slots taken")
    waiter = threading.Thread(target=post, args=("waiter", digital_invoice(103).data))
    waiter.start()
    saturated = wait_until(
        lambda: (r := client.get("/readyz")).status_code == 503 and r.json(), 10, "readyz 503"
    )
    assert "slots" in saturated["reason"]
    assert saturated["ready"] is False
    assert saturated["slots"]["waiting"] >= 1
    assert client.get("/healthz").status_code == 200  # liveness is not readiness
    for thread in [*slow, waiter]:
        thread.join()
    # The waiter got a slot within QRW_HTTP_SLOT_WAIT_MS instead of being refused at once.
    assert statuses == {"slow0": 200, "slow1": 200, "waiter": 200}
    assert client.get("/readyz").status_code == 200


# --- request parameters (defect 14) -----------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["²", FULL_WIDTH_123, "9" * 5000, "0", "600001", "-5", " 5", "1e3", ""],
    ids=[
        "superscript",
        "full-width",
        "5000-digits",
        "zero",
        "over",
        "negative",
        "space",
        "exp",
        "empty",
    ],
)
def test_a_deadline_that_is_not_ascii_digits_from_1_to_600000_is_a_json_400(
    client: httpx.Client, raw: str
) -> None:
    response = client.post(
        "/detect", params={"deadline_ms": raw}, content=digital_invoice(104).data
    )
    assert_error(response, 400, "invalid_request")
    assert len(response.json()["error"]["message"]) < 300  # the 5,000 digits are not echoed


def test_a_deadline_at_either_end_of_its_range_is_accepted(client: httpx.Client) -> None:
    for raw in ("1", "600000"):
        response = client.post(
            "/detect", params={"deadline_ms": raw}, content=digital_invoice(105).data
        )
        assert response.status_code in (200, 504), response.text


def test_want_other_than_all_or_first_is_a_json_400(client: httpx.Client) -> None:
    for raw in ("ALL", "first ", FULL_WIDTH_FIRST, ""):
        response = client.post("/detect", params={"want": raw}, content=b"x")
        assert_error(response, 400, "invalid_request")


def test_a_client_that_hangs_up_mid_upload_is_one_event_below_error_and_is_counted(
    shim: ShimProcess, shim_log: Path, client: httpx.Client
) -> None:
    before = closed_count(client)
    upload = RawUpload(shim.port, length=100_000, query="?want=first")
    upload.send(b"\0" * 1000)
    time.sleep(0.3)
    upload.close()
    wait_until(lambda: closed_count(client) == before + 1, 30, "the closed request counted")
    events = [
        json.loads(line) for line in shim_log.read_text().splitlines() if line.startswith("{")
    ]
    assert not [e for e in events if e.get("level") in ("error", "critical")], events
    closed = [e for e in events if e.get("status") == 499]
    assert len(closed) == before + 1
    assert closed[-1]["event"] == "detect"
    assert closed[-1]["error"] == "client_closed"


def closed_count(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith('qrw_http_requests_total{route="/detect",status="499"}'):
            return float(line.split()[1])
    return 0.0


# --- anything unexpected is still JSON ---------------------------------------------------------


class _FailingEngine(Engine):
    """A real engine whose scan meets a bug: the shim's last line of defence is what is tested."""

    def scan(self, *args: Any, **kwargs: Any) -> ScanResult:
        raise RuntimeError("a bug in the engine")


def test_an_unexpected_exception_in_detect_is_a_json_500_internal_error() -> None:
    settings = Settings.from_env({}, backend="none")
    app = create_app(settings, engine=_FailingEngine(settings))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 30, "uvicorn to start")
        response = httpx.post(
            f"http://127.0.0.1:{port}/detect", content=digital_invoice(106).data, timeout=30
        )
        assert_error(response, 500, "internal_error")
        assert "RuntimeError" in response.json()["error"]["message"]
    finally:
        server.should_exit = True
        thread.join(30)
