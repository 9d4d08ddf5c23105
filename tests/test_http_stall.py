"""Uploads that arrive in a burst and then stall, against the shim on a real socket (issue 17,
point 6).

Each client sends nearly all of its body at once, then one byte a second. Its average rate
since the start stays far above QRW_HTTP_MIN_BODY_RATE for minutes, so a rate measured
since the start never cuts it, and while the stalled bodies fill the upload budget no other
upload fits. The rate is measured over the last QRW_HTTP_BODY_RATE_WINDOW seconds instead:
a stalled upload is cut within one window of its stall, whatever it sent before.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from models.synth import digital_invoice
from tests.services import ShimProcess, wait_until
from tests.test_http_hostile import RawUpload

MAX_BYTES = 1_000_000
# Far beyond the bound asserted below: only the windowed rate can cut the stalled uploads.
BODY_TIMEOUT = 30.0
MIN_RATE = 16_384
WINDOW = 1.0
# A stalled upload is answered within one window of its stall, plus this much for a CPU
# shared with other test runs.
MARGIN = 3.0
# Room left under the full budget by each stalled body, as in the report (50 MiB - 2 KB).
SHORT_BY = 2_000


@pytest.fixture(scope="module")
def shim() -> Iterator[ShimProcess]:
    server = ShimProcess(
        {
            "QRW_HTTP_CONCURRENCY": "1",
            "QRW_MAX_BYTES": str(MAX_BYTES),
            "QRW_HTTP_BODY_TIMEOUT": str(BODY_TIMEOUT),
            "QRW_HTTP_MIN_BODY_RATE": str(MIN_RATE),
            "QRW_HTTP_BODY_RATE_WINDOW": str(WINDOW),
        }
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(shim: ShimProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shim.url, timeout=30) as http:
        yield http


def uploads_held(client: httpx.Client) -> int:
    return int(client.get("/readyz").json()["uploads"]["bytes"])


def test_uploads_that_burst_then_stall_are_cut_within_a_window_while_the_shim_keeps_answering(
    shim: ShimProcess, client: httpx.Client
) -> None:
    # The upload budget holds (QRW_HTTP_CONCURRENCY + 2) bodies: three stalled ones fill it.
    stalled = [RawUpload(shim.port, length=MAX_BYTES) for _ in range(3)]
    try:
        for upload in stalled:
            upload.send(b"\0" * (MAX_BYTES - SHORT_BY))
        wait_until(
            lambda: uploads_held(client) == 3 * (MAX_BYTES - SHORT_BY), 30, "the bursts held"
        )
        stall_began = time.monotonic()
        for upload in stalled:
            upload.trickle(every=1.0)

        # While they are held, the shim still answers: readiness says ready (a full upload
        # budget is not a reason to leave the balancer), a scan is refused at once with 503
        # and Retry-After, never left waiting.
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["uploads"]["bytes"] >= 3 * (MAX_BYTES - SHORT_BY)
        asked = time.monotonic()
        refused = client.post("/detect", content=digital_invoice(171).data)
        assert time.monotonic() - asked < 2.0
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "busy"
        assert refused.headers["Retry-After"] == "1"
    except BaseException:
        for upload in stalled:
            upload.close()
        raise

    for upload in stalled:
        status, headers, body, _ = upload.response(timeout=BODY_TIMEOUT + 10)
        assert status == 408
        assert body["error"]["code"] == "request_timeout"
        assert "QRW_HTTP_MIN_BODY_RATE" in body["error"]["message"]
        assert "QRW_HTTP_BODY_RATE_WINDOW" in body["error"]["message"]
        assert headers["connection"] == "close"
    cut_after = time.monotonic() - stall_began
    assert cut_after < WINDOW + MARGIN, f"the stalled uploads were cut {cut_after:.1f} s in"

    wait_until(lambda: uploads_held(client) == 0, 10, "the budget released")
    served = client.post("/detect", content=digital_invoice(172).data)
    assert served.status_code == 200, served.text
    assert served.json()["success"] is True


def test_a_steady_upload_at_twice_the_least_rate_is_served_in_full(shim: ShimProcess) -> None:
    # About two windows of body, every window of it well above the least rate: a slow but
    # honest client is not cut.
    data = digital_invoice(173).data
    step = 2 * MIN_RATE // 10
    upload = RawUpload(shim.port, length=len(data))
    for start in range(0, len(data), step):
        upload.send(data[start : start + step])
        time.sleep(0.1)
    status, _, body, elapsed = upload.response(timeout=30)
    assert status == 200, body
    assert body["success"] is True
    assert elapsed > WINDOW  # the body really took more than one window to arrive
