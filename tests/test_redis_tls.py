"""TLS: `rediss://` with QRW_REDIS_CA and a client certificate, against a redis-server that
speaks only TLS (`--port 0 --tls-port`) and requires a client certificate, with a CA, server
and client certificates made here by openssl. A pool, `qrw enqueue` and `qrw status` work
over it; a server whose certificate another CA signed, and a client without a certificate,
are refused; TLS files with a plain `redis://` URL are a configuration error at start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.synth import digital_invoice
from tests.redis_topologies import Certificates, TlsRedis, make_certificates
from worker.bench.failover import SentinelTopology, Tls
from worker.harness import Pool, free_port
from worker.queue import runtime
from worker.settings import Settings, SettingsError

QUEUE = "qr-tls"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, certs: Certificates) -> Iterator[TlsRedis]:
    tls = TlsRedis(tmp_path_factory.mktemp("tls-redis"), certs, client_certificates=True)
    yield tls
    tls.stop()


def tls_env(server: TlsRedis, certs: Certificates, **extra: str) -> dict[str, str]:
    return {
        "REDIS_URL": server.url,
        "QRW_REDIS_CA": str(certs.ca),
        "QRW_REDIS_CERT": str(certs.client_cert),
        "QRW_REDIS_KEY": str(certs.client_key),
        **extra,
    }


def qrw(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_pool_and_a_producer_work_over_tls_with_a_client_certificate(
    server: TlsRedis, certs: Certificates, tmp_path: Path
) -> None:
    image = tmp_path / "invoice.png"
    image.write_bytes(digital_invoice(7300, fmt="png", megapixels=1.0).data)
    env = tls_env(
        server,
        certs,
        QRW_FILE_ROOTS=str(tmp_path),
        QRW_BACKEND="none",
        QRW_METRICS_PORT=str(free_port()),
    )
    pool = Pool(env, QUEUE, 1, tmp_path / "pool.log")
    try:
        pool.wait_ready(server.client(), timeout=180)
        enqueued = qrw(
            env, "enqueue", "--queue", QUEUE, "--wait", "60", "--json", f"file://{image}"
        )
        assert enqueued.returncode == 0, enqueued.stderr
        result = json.loads(enqueued.stdout)
        assert result["ok"] is True
        assert result["codes"], "the invoice's code was read"
    finally:
        pool.stop()
    # The pool found its Redis persistent over TLS too (its check reads CONFIG).
    assert "redis_persistence" in (tmp_path / "pool.log").read_text()


def test_status_speaks_tls_and_says_where_without_secrets(
    server: TlsRedis, certs: Certificates
) -> None:
    status = qrw(tls_env(server, certs), "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["redis"] == "ok"


def test_a_server_certificate_from_another_ca_is_refused(
    server: TlsRedis, certs: Certificates
) -> None:
    status = qrw(tls_env(server, certs, QRW_REDIS_CA=str(certs.other_ca)), "status")
    assert status.returncode == 1
    assert "redis: unreachable" in status.stdout
    assert "certificate verify failed" in status.stdout


def test_a_client_without_a_certificate_is_refused_where_one_is_required(
    server: TlsRedis, certs: Certificates
) -> None:
    env = tls_env(server, certs)
    del env["QRW_REDIS_CERT"], env["QRW_REDIS_KEY"]
    status = qrw(env, "status")
    assert status.returncode == 1
    assert "redis: unreachable" in status.stdout


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"REDIS_URL": "redis://127.0.0.1:6379/0", "QRW_REDIS_CA": "{ca}"},
            "QRW_REDIS_CA is set, but REDIS_URL is not rediss:// (TLS)",
        ),
        (
            {"REDIS_URL": "rediss://127.0.0.1:6379/0", "QRW_REDIS_KEY": "{key}"},
            "QRW_REDIS_KEY is set without QRW_REDIS_CERT",
        ),
        (
            {"REDIS_URL": "rediss://127.0.0.1:6379/0", "QRW_REDIS_CA": "/nonexistent/ca.pem"},
            "QRW_REDIS_CA names a file that does not exist: '/nonexistent/ca.pem'",
        ),
        (
            {"REDIS_URL": "unix:///run/redis.sock", "QRW_REDIS_SENTINELS": "127.0.0.1:26379"},
            "QRW_REDIS_SENTINELS needs a redis:// or rediss:// REDIS_URL",
        ),
        (
            {"QRW_REDIS_SENTINELS": "127.0.0.1"},
            "QRW_REDIS_SENTINELS must hold host:port entries, got '127.0.0.1'",
        ),
    ],
    ids=["ca-without-tls", "key-without-cert", "missing-ca", "sentinel-unix", "sentinel-no-port"],
)
def test_a_tls_or_sentinel_setting_that_cannot_work_is_one_line_at_start(
    certs: Certificates, environ: dict[str, str], message: str
) -> None:
    environ = {k: v.format(ca=certs.ca, key=certs.client_key) for k, v in environ.items()}
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(environ)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)
    # And the command line says so in one line, status 2, before connecting anywhere.
    ran = qrw(environ, "status")
    assert ran.returncode == 2
    assert ran.stderr.strip() == f"qrw: error: {raised.value}"


def test_sentinels_over_tls_lead_every_client_to_the_master(
    certs: Certificates, tmp_path: Path
) -> None:
    """A master, a replica and three Sentinels all speaking only TLS (replication and the
    Sentinels' own links too): a rediss:// client asks the Sentinels over TLS, with the same
    CA, and reaches the master; one speaking plain text finds no master."""
    topology = SentinelTopology(
        tmp_path / "topology",
        tls=Tls(ca=certs.ca, cert=certs.server_cert, key=certs.server_key),
        sentinel_password="sentinel-over-tls-2b7c",
    )
    try:
        env = topology.env()
        assert env["REDIS_URL"].startswith("rediss://")
        connection = runtime.connect(Settings.from_env(env))
        assert connection.set("qrw:test:tls-sentinel", "1")
        assert topology.client().get("qrw:test:tls-sentinel") == b"1"  # on the master

        status = qrw(env, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["redis"] == "ok"

        in_plain_text = {k: v for k, v in env.items() if k != "QRW_REDIS_CA"}
        in_plain_text["REDIS_URL"] = env["REDIS_URL"].replace("rediss://", "redis://")
        plain = qrw(in_plain_text, "status")
        assert plain.returncode == 1
        assert "unreachable: No master found for 'mymaster'" in plain.stdout
        for ran in (status, plain):
            assert "sentinel-over-tls-2b7c" not in ran.stdout + ran.stderr
    finally:
        topology.stop()
