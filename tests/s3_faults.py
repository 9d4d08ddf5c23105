"""S3 failing on cue: a real HTTP server of ours in front of moto's S3 server.

moto's server cannot be told to fail, so the tests of S3's users (the workers' fetch, a
backfill's listing, manifests and output) put this proxy between them and moto: it answers
the next requests with the faults it is given, then forwards every request to moto
untouched. It records what came in, so that a test can say how many tries were made, which
byte a read went on from, and when each try arrived.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from worker import s3

# A fault named by an S3 error code -> the HTTP status S3 sends it with; the body is S3's
# XML error carrying that code. A fault that is a bare status ("429", "503", "500", "403")
# is answered with that status and an empty body, as a gateway before S3 does.
CODES: dict[str, int] = {
    "SlowDown": 503,
    "InternalError": 500,
    "AccessDenied": 403,
    # The throttling code of AWS's JSON services, sent by some gateways with a 400.
    "ThrottlingException": 400,
}

# Not forwarded either way: each side of the proxy has a connection of its own.
_HOP_BY_HOP = ("content-length", "transfer-encoding", "connection", "date", "server")


class FaultyS3:
    """Each request takes the next fault in `faults`:

    - an error answer: an S3 error code of CODES, or a bare HTTP status;
    - "reset": the connection closed with a TCP reset, no answer at all;
    - "cut": moto's answer, half its body sent, then the connection closed;
    - "pass": moto's answer, untouched.

    Once the list is used up every request is passed on. Every request, faulted or not, is
    recorded: `requests` ("METHOD path"), `ranges` (its Range header, None without one) and
    `arrived` (its time.monotonic())."""

    def __init__(self, upstream: str, *faults: str) -> None:
        self.upstream = urlsplit(upstream)
        self.faults: list[str] = []
        self.requests: list[str] = []
        self.ranges: list[str | None] = []
        self.arrived: list[float] = []
        self.lock = threading.Lock()
        self.fail_next(*faults)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.1, so that a PutObject's `Expect: 100-continue` is answered at once
            # (HTTP/1.0 ignores it and botocore would wait a second before every upload).
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def answer(self) -> None:
                outer.answer(self)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A reset connection makes the handler's last flush fail: expected, not news.
        self.server.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fail_next(self, *faults: str) -> None:
        """The next requests take these faults; the records start afresh."""
        unknown = [f for f in faults if not _known(f)]
        if unknown:
            raise ValueError(f"faults {unknown}: not an S3 error code, a status or a kind")
        with self.lock:
            self.faults = list(faults)
            self.requests = []
            self.ranges = []
            self.arrived = []

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self.lock:
            self.requests.append(f"{handler.command} {handler.path}")
            self.ranges.append(handler.headers.get("Range"))
            self.arrived.append(time.monotonic())
            fault = self.faults.pop(0) if self.faults else "pass"
        if fault == "reset":
            _reset(handler)
            return
        if fault in CODES or fault.isdigit():
            _error(handler, fault)
            return
        status, headers, data = self.forward(handler, body)
        handler.send_response(status)
        for name, value in headers:
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if handler.command == "HEAD":
            return
        if fault == "cut":
            # Closed, not reset: a reset throws away what is still in the send buffer, and
            # the half sent must arrive for a reader to go on from where it stopped.
            handler.wfile.write(data[: len(data) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return
        handler.wfile.write(data)

    def forward(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        upstream = http.client.HTTPConnection(
            self.upstream.hostname, self.upstream.port, timeout=10
        )
        try:
            # The proxy has answered any `Expect: 100-continue` itself and holds the body.
            sent = {
                n: v
                for n, v in handler.headers.items()
                if n.lower() not in ("expect", "connection")
            }
            upstream.request(handler.command, handler.path, body, sent)
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        headers = [(n, v) for n, v in response.getheaders() if n.lower() not in _HOP_BY_HOP]
        return response.status, headers, data

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def point_at(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """worker.s3.client() talking to `endpoint` (moto, or a proxy before it), configured as
    a worker's environment does; the client is cached per process, so the cache is cleared
    (clear it again once the test is done)."""
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    s3.client.cache_clear()


def _known(fault: str) -> bool:
    return fault in CODES or fault.isdigit() or fault in ("reset", "cut", "pass")


def _error(handler: BaseHTTPRequestHandler, fault: str) -> None:
    status = CODES.get(fault) or int(fault)
    error = b""
    if fault in CODES:
        error = f"<Error><Code>{fault}</Code><Message>a fault</Message></Error>".encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/xml")
    handler.send_header("Content-Length", str(len(error)))
    handler.end_headers()
    handler.wfile.write(error)


def _reset(handler: BaseHTTPRequestHandler) -> None:
    # SO_LINGER 0: close() sends a TCP reset, as a load balancer dropping a connection does.
    handler.wfile.flush()
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.close_connection = True
    with contextlib.suppress(OSError):
        handler.connection.close()
