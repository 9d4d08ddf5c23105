"""ACL: the least-privilege users of docs/operations.md (*ACL: one user per role*), created
from the `ACL SETUSER` lines written there, each role run with its own user, as real
processes: a worker pool (worker), `qrw enqueue --wait` (producer), a shim whose /readyz
needs Redis (shim), a backfill (backfill) and `qrw status` (dashboard). Each works, each is
refused FLUSHALL, CONFIG SET and a key outside `rq:*`/`qrw:*` (the dashboard any write at
all), and no role touched anything its user denies (Redis's ACL LOG stays empty of them).
No password appears in anything a run printed: logs, outputs, error messages, metrics.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from models.synth import digital_invoice
from tests.redis_topologies import acl_lines, create_users
from worker.harness import Pool, RedisServer, Shim, free_port, request, wait_until
from worker.queue import runtime
from worker.settings import Settings

QUEUE = "qr-acl"
ROLES = ("producer", "worker", "shim", "backfill", "dashboard")
ADMIN_PASSWORD = "admin-Pa55-7f3e9c1d"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    folder = tmp_path_factory.mktemp("acl-redis")
    redis_server = RedisServer(folder)
    yield redis_server
    redis_server.stop()


@pytest.fixture(scope="module")
def passwords(server: RedisServer) -> dict[str, str]:
    """Each role's user, from docs/operations.md, with a password of its own; then the
    default user (the harness's and this test's admin) gets a password too, as it must."""
    secrets = {role: f"{role}-Pa55-{os.urandom(6).hex()}" for role in ROLES}
    admin = server.client()
    create_users(admin, secrets)
    admin.execute_command("ACL", "SETUSER", "default", "on", "resetpass", f">{ADMIN_PASSWORD}")
    return secrets


def admin(server: RedisServer) -> redis.Redis:
    return redis.Redis(port=server.port, password=ADMIN_PASSWORD, socket_timeout=10)


def as_role(server: RedisServer, passwords: dict[str, str], role: str) -> redis.Redis:
    return redis.Redis(port=server.port, username=role, password=passwords[role], socket_timeout=10)


def in_url(server: RedisServer, passwords: dict[str, str], role: str) -> dict[str, str]:
    """The user and password in REDIS_URL, as many deployments write them."""
    return {"REDIS_URL": f"redis://{role}:{passwords[role]}@127.0.0.1:{server.port}/0"}


def in_settings(server: RedisServer, passwords: dict[str, str], role: str) -> dict[str, str]:
    """The user and password in their own settings, out of the URL."""
    return {
        "REDIS_URL": server.url,
        "QRW_REDIS_USERNAME": role,
        "QRW_REDIS_PASSWORD": passwords[role],
    }


def qrw(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_documented_users_are_one_per_role() -> None:
    assert sorted(acl_lines()) == sorted(ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_each_user_is_refused_what_no_role_needs(
    server: RedisServer, passwords: dict[str, str], role: str
) -> None:
    client = as_role(server, passwords, role)
    for command in (("FLUSHALL",), ("CONFIG", "SET", "appendonly", "no"), ("SET", "bank:x", "1")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.get("other:key")  # a key outside rq:* and qrw:*
    assert admin(server).config_get("appendonly") == {"appendonly": "yes"}


def test_the_dashboard_user_reads_and_writes_nothing(
    server: RedisServer, passwords: dict[str, str]
) -> None:
    client = as_role(server, passwords, "dashboard")
    assert client.llen(f"rq:queue:{QUEUE}") >= 0
    for write in (
        lambda: client.rpush(f"rq:queue:{QUEUE}", "x"),
        lambda: client.delete("qrw:results"),
        lambda: client.hset("rq:job:x", "status", "queued"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            write()


def test_the_producer_can_neither_pop_nor_drop_a_queue_or_the_results(
    server: RedisServer, passwords: dict[str, str]
) -> None:
    client = as_role(server, passwords, "producer")
    admin(server).rpush(f"rq:queue:{QUEUE}-probe", "someone-elses-job")
    for taking in (
        lambda: client.lpop(f"rq:queue:{QUEUE}-probe"),
        lambda: client.delete(f"rq:queue:{QUEUE}-probe"),
        lambda: client.delete("qrw:results"),
        lambda: client.xadd("qrw:results", {"job_id": "forged"}),
        lambda: client.set("qrw:result:forged", "{}"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            taking()
    assert admin(server).lrange(f"rq:queue:{QUEUE}-probe", 0, -1) == [b"someone-elses-job"]
    # What it may do to a job hash: delete one, as a reused id asks (docs/protocol.md).
    admin(server).hset("rq:job:reused", "status", "finished")
    assert client.delete("rq:job:reused") == 1


def test_every_role_works_with_its_own_user_and_no_secret_is_printed(
    server: RedisServer, passwords: dict[str, str], tmp_path: Path
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    refs = []
    for n in range(4):
        path = images / f"invoice-{n}.png"
        path.write_bytes(digital_invoice(7400 + n, fmt="png", megapixels=1.0).data)
        refs.append(f"file://{path}")
    base = {
        "QRW_FILE_ROOTS": str(images),
        "QRW_BACKEND": "none",
        "QRW_LOG_LEVEL": "info",
    }
    metrics_port = free_port()
    printed: dict[str, str] = {}
    admin(server).acl_log_reset()

    # worker: a pool, its user in the URL, its maintenance (and RQ's scheduler) every second.
    pool = Pool(
        {
            **base,
            **in_url(server, passwords, "worker"),
            "QRW_METRICS_PORT": str(metrics_port),
            "QRW_RECOVERY_INTERVAL": "1",
        },
        QUEUE,
        1,
        tmp_path / "pool.log",
    )
    try:
        pool.wait_ready(admin(server), timeout=180)

        # producer: `qrw enqueue --wait`, its user in its own settings.
        enqueued = qrw(
            {**base, **in_settings(server, passwords, "producer")},
            *("enqueue", "--queue", QUEUE, "--wait", "60", "--json", refs[0]),
        )
        printed["enqueue"] = enqueued.stdout + enqueued.stderr
        assert enqueued.returncode == 0, enqueued.stderr
        assert json.loads(enqueued.stdout)["ok"] is True

        # backfill: a run over a manifest, through to its summary.
        manifest = tmp_path / "manifest.txt"
        manifest.write_text("".join(f"{ref}\n" for ref in refs))
        out = tmp_path / "out"
        backfill = qrw(
            {**base, **in_settings(server, passwords, "backfill")},
            *("backfill", "start", "acl-run", "--manifest", str(manifest)),
            *("--out", f"file://{out}", "--queue", QUEUE),
        )
        printed["backfill"] = backfill.stdout + backfill.stderr
        assert backfill.returncode == 0, backfill.stderr
        assert sorted(line["image"] for line in lines(out)) == sorted(refs)

        # dashboard: `qrw status`, which reads and writes nothing.
        status = qrw({**base, **in_settings(server, passwords, "dashboard")}, "status", "--json")
        printed["status"] = status.stdout + status.stderr
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert any(q["queue"] == QUEUE for q in report["queues"])
        assert len(report["workers"]) == 1
        # CONFIG is no dashboard's business: persistence is "unknown", not an error.
        assert report["persistence"]["mode"] == "unknown"

        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            printed["pool metrics"] = r.read().decode()
        assert "qrw_redis_up 1.0" in printed["pool metrics"]
        wait_until(
            lambda: "cleaning registries" in (tmp_path / "pool.log").read_text(),
            60,
            "a maintenance pass",
        )
    finally:
        pool.stop()

    # shim: /readyz needs Redis, which answers its user's PING.
    shim = Shim(
        {**base, **in_url(server, passwords, "shim"), "QRW_READY_NEEDS_REDIS": "true"},
        tmp_path / "shim.log",
    )
    try:
        shim.wait_ready(timeout=120)
        assert request("GET", shim.port, "/readyz")[0] == 200
        with urllib.request.urlopen(f"{shim.url}/metrics", timeout=10) as answer:
            printed["shim metrics"] = answer.read().decode()
        assert "qrw_redis_up 1.0" in printed["shim metrics"]
    finally:
        shim.stop()

    # No role met a refusal but the persistence check's CONFIG GET, which no user is given
    # (it would show the passwords in the configuration): each holds what its role sends.
    refused = [
        (entry["username"], entry["reason"], entry["object"])
        for entry in admin(server).acl_log(count=100)
        if entry["username"] in ROLES and entry["object"] != "config|get"
    ]
    assert not refused, refused

    # A wrong password: the error names the server and the user, never the password.
    wrong = qrw(
        {**in_settings(server, passwords, "dashboard"), "QRW_REDIS_PASSWORD": "not-it-9d8e7f"},
        "status",
    )
    printed["wrong password"] = wrong.stdout + wrong.stderr
    assert wrong.returncode == 1
    assert "unreachable" in wrong.stdout

    printed["pool log"] = (tmp_path / "pool.log").read_text()
    printed["shim log"] = (tmp_path / "shim.log").read_text()
    for what, text in printed.items():
        for role, secret in passwords.items():
            assert secret not in text, f"{role}'s password in the {what}"
        assert "not-it-9d8e7f" not in text, f"the wrong password in the {what}"


def test_messages_name_the_server_without_its_password() -> None:
    settings = Settings.from_env({"REDIS_URL": "redis://worker:hunter2-secret@10.0.0.1:6379/0"})
    assert runtime.describe(settings) == "redis://worker:***@10.0.0.1:6379/0"
    assert "hunter2" not in repr(settings)
    sentinel = Settings.from_env(
        {
            "REDIS_URL": "rediss://worker@unused/0",
            "QRW_REDIS_PASSWORD": "hunter2-secret",
            "QRW_REDIS_SENTINELS": "10.0.0.11:26379,10.0.0.12:26379",
            "QRW_REDIS_SENTINEL_PASSWORD": "sentinel-secret",
        }
    )
    assert runtime.describe(sentinel) == (
        "rediss://worker:***@sentinel:mymaster/0 via 10.0.0.11:26379,10.0.0.12:26379"
    )
    assert "secret" not in repr(sentinel)


def lines(out: Path) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    for part in sorted(out.glob("part-*.jsonl.gz")):
        with gzip.open(part, "rt", encoding="utf-8") as handle:
            found += [json.loads(line) for line in handle]
    return found
