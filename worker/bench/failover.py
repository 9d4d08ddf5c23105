"""Sentinel failover under load: the master SIGKILLed mid-run, again and again, then the
accounting.

    python -m worker.bench.failover [--failovers 5] [--rate 20] [--workers 2]
                                    [--every 20] [--out docs/reliability.md]

Starts a master, one replica and three Sentinels on loopback (`SentinelTopology`, each
node a redis-server with an append-only file, fsync always), `qrw worker --workers N` and a
producer that enqueues `--rate` jobs a second, both finding the master through the
Sentinels (QRW_REDIS_SENTINELS) and both asking one replica to hold each write before it
counts (QRW_REDIS_WAIT_REPLICAS=1: the producer's enqueue is followed by `WAIT 1`, and so
is each result the workers publish; docs/protocol.md, *Replication*). Every `--every`
seconds the master of the moment is SIGKILLed; once the Sentinels have promoted the
replica, the dead node is started again as a replica of the new master (what an
orchestrator restarting the pod does), so the next failover has somewhere to go.

Measured per failover: when the Sentinels named the new master, when the producer's first
write and the workers' first result reached it (all from the SIGKILL). Then the producer
stops, the run waits for the result of every acknowledged job, and counts on the last
master: jobs enqueued (the producer created them), acknowledged (Redis took them and a
replica confirmed, WAIT >= 1), results, duplicates (a job id with more than one result on
the results stream), lost (acknowledged, no result). With `--out`, the report replaces the
`failover` section of that file; it exits 1 when an acknowledged job was lost or
duplicated, a worker process died, or a reconnection outlasted RECONNECT_BOUND_S.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from models.synth import digital_invoice
from worker.bench.report import machine_line, write_section
from worker.harness import Pool, RedisServer, free_port, tail, wait_until
from worker.queue import names, producer, runtime
from worker.settings import Settings

COMMAND = "python -m worker.bench.failover"
QUEUE = "qr-failover"
MASTER_NAME = "mymaster"
# Sentinel's down-after-milliseconds here: a master silent this long is down to a Sentinel.
DOWN_AFTER_MS = 1000
# Sentinel's failover-timeout: also spaces two failovers of one master by twice itself.
FAILOVER_TIMEOUT_MS = 3000
# From the SIGKILL to a client's first write on the promoted replica: down-after (1 s),
# then the Sentinels agree (ODOWN, quorum 2) and elect a leader, which promotes the replica
# (a second or two here, up to the failover timeout when a vote splits), then the client's
# next try: a worker's backed-off retries wait up to 5 s (worker.queue.replies), the
# producer's 0.1 s. Measured here: 2.3 to 4.7 s (docs/reliability.md).
RECONNECT_BOUND_S = DOWN_AFTER_MS / 1000 + FAILOVER_TIMEOUT_MS / 1000 + 6.0
# How long the run waits, after the producer stops, for the last acknowledged job's result.
DRAIN_S = 120.0
# Each replicated write waits at most this long for its replica (QRW_REDIS_WAIT_MS).
WAIT_MS = 1000
PRODUCER_NAME = "qrw-failover-producer"


@dataclass(frozen=True)
class Tls:
    """TLS on every node and Sentinel of a topology (and between them): the certificate and
    key they present, and the CA a client checks it against."""

    ca: Path
    cert: Path
    key: Path

    def server_args(self) -> tuple[str, ...]:
        return (
            *("--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key)),
            *("--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "no"),
            *("--tls-replication", "yes"),
        )

    def client_kwargs(self) -> dict[str, Any]:
        return {"ssl": True, "ssl_ca_certs": str(self.ca)}


class Node(RedisServer):
    """A topology's redis-server: the harness's, speaking only TLS on its port when `tls`
    is set."""

    def __init__(self, folder: Path, extra_args: tuple[str, ...], tls: Tls | None) -> None:
        self.tls = tls
        super().__init__(folder, extra_args=extra_args)

    def start(self) -> None:
        base = self.extra_args
        if self.tls is not None:
            self.extra_args = (*base, "--port", "0", "--tls-port", str(self.port))
            self.extra_args += self.tls.server_args()
        try:
            super().start()
        finally:
            self.extra_args = base

    def client(self, timeout: float = 10) -> redis.Redis:
        tls = self.tls.client_kwargs() if self.tls is not None else {}
        return redis.Redis(port=self.port, socket_timeout=timeout, **tls)

    def _ping(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited: {tail(self.folder / 'redis.log')}")
        try:
            return bool(self.client(timeout=1).ping())
        except redis.ConnectionError:
            return False


class SentinelTopology:
    """A master, a replica and three Sentinels (each a `redis-server --sentinel` process,
    what `redis-sentinel` is) on loopback, each node the harness's RedisServer.

    `down_after_ms` is Sentinel's `down-after-milliseconds`: how long the master must be
    silent before a Sentinel calls it down; a failover follows once two of the three agree
    and elect a leader. `kill_master()` is a machine losing power; `restart()` starts the
    dead node again as a replica of the master of now.
    """

    def __init__(
        self,
        folder: Path,
        *,
        down_after_ms: int = DOWN_AFTER_MS,
        failover_timeout_ms: int = FAILOVER_TIMEOUT_MS,
        node_args: tuple[str, ...] = (),
        sentinel_password: str = "",
        tls: Tls | None = None,
    ) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (make setup installs it)")
        self.folder = folder
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.node_args = node_args
        self.sentinel_password = sentinel_password
        self.tls = tls
        self.nodes: dict[int, RedisServer] = {}
        self.sentinels: list[subprocess.Popen[bytes]] = []
        self.sentinel_ports: list[int] = []
        try:
            first = Node(folder / "node-a", node_args, tls)
            self.nodes[first.port] = first
            second = Node(folder / "node-b", self._replica_of(first.port), tls)
            self.nodes[second.port] = second
            wait_until(lambda: self.in_sync(first.port), 30, "the replica to sync")
            for index in range(3):
                self._start_sentinel(index, first.port)
            wait_until(self._sentinels_agree, 30, "the Sentinels to find each other")
        except BaseException:
            self.stop()
            raise

    def _replica_of(self, port: int) -> tuple[str, ...]:
        return (*self.node_args, "--replicaof", "127.0.0.1", str(port))

    def _start_sentinel(self, index: int, master_port: int) -> None:
        port = free_port()
        folder = self.folder / f"sentinel-{index}"
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "sentinel.conf"  # Sentinel rewrites it as the topology changes
        listen = (
            f"port 0\ntls-port {port}\n"
            + "".join(
                f"{name.removeprefix('--')} {value}\n"
                for name, value in zip(
                    self.tls.server_args()[::2], self.tls.server_args()[1::2], strict=True
                )
            )
            if self.tls is not None
            else f"port {port}\n"
        )
        config.write_text(
            listen + "bind 127.0.0.1\n"
            f"dir {folder}\n"
            f"logfile {folder / 'sentinel.log'}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
            f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            # The Sentinels' own password: clients need it, and so do the Sentinels among
            # themselves.
            + (
                f"requirepass {self.sentinel_password}\n"
                f"sentinel sentinel-pass {self.sentinel_password}\n"
                if self.sentinel_password
                else ""
            )
        )
        process = subprocess.Popen(
            ["redis-server", str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.sentinels.append(process)
        self.sentinel_ports.append(port)

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(
                    f"redis-sentinel on {port} exited: {tail(folder / 'sentinel.log')}"
                )
            try:
                return bool(self.sentinel(port).ping())
            except redis.ConnectionError:
                return False

        wait_until(answers, 30, "a Sentinel to answer")

    def _sentinels_agree(self) -> bool:
        for port in self.sentinel_ports:
            try:
                state = self.sentinel(port).sentinel_master(MASTER_NAME)
            except redis.RedisError:
                return False
            if state["num-other-sentinels"] < 2 or state["num-slaves"] < 1:
                return False
        return True

    def sentinel(self, port: int) -> redis.Redis:
        """A client of one Sentinel, by port."""
        return self.connect(port, 1, password=self.sentinel_password or None)

    def connect(self, port: int, timeout: float, **options: Any) -> redis.Redis:
        """A client of one node or Sentinel, by port, with the topology's TLS."""
        tls = self.tls.client_kwargs() if self.tls is not None else {}
        return redis.Redis(port=port, socket_timeout=timeout, **tls, **options)

    @property
    def sentinels_setting(self) -> str:
        """QRW_REDIS_SENTINELS for this topology."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def env(self) -> dict[str, str]:
        """The settings that reach the master through the Sentinels. REDIS_URL names a port
        nothing listens on: only the Sentinels can lead a client to the master."""
        scheme = "rediss" if self.tls is not None else "redis"
        return {
            "REDIS_URL": f"{scheme}://127.0.0.1:{free_port()}/0",
            **({"QRW_REDIS_CA": str(self.tls.ca)} if self.tls is not None else {}),
            "QRW_REDIS_SENTINELS": self.sentinels_setting,
            "QRW_REDIS_MASTER": MASTER_NAME,
            **(
                {"QRW_REDIS_SENTINEL_PASSWORD": self.sentinel_password}
                if self.sentinel_password
                else {}
            ),
        }

    def master_port(self) -> int:
        """The master's port as a majority of the Sentinels name it now; 0 when they do not
        agree (a failover in progress)."""
        votes: Counter[int] = Counter()
        for port in self.sentinel_ports:
            with contextlib.suppress(redis.RedisError):
                address = self.sentinel(port).sentinel_get_master_addr_by_name(MASTER_NAME)
                if address:
                    votes[int(address[1])] += 1
        best = votes.most_common(1)
        return best[0][0] if best and best[0][1] >= 2 else 0

    def client(self) -> redis.Redis:
        """A client of the master of now, by address: the run's own reads and checks."""
        port = int(wait_until(self.master_port, 30, "the Sentinels to agree on a master"))
        return self.connect(port, 10)

    def in_sync(self, master_port: int) -> bool:
        """Every other node is an online replica of `master_port`, acknowledging within a
        second (its offset is behind while writes flow: they are acknowledged once a
        second)."""
        try:
            info = self.connect(master_port, 1).info("replication")
        except redis.RedisError:
            return False
        replicas = [v for k, v in info.items() if re.fullmatch(r"slave\d+", k)]
        return (
            info.get("role") == "master"
            and len(replicas) == len(self.nodes) - 1
            and all(r.get("state") == "online" and int(r.get("lag", 99)) <= 1 for r in replicas)
        )

    def settled(self) -> bool:
        """The Sentinels agree on a master, and each sees it up and every other node as a
        replica that is up: a node restarted moments ago can still be flagged down by one
        of them, and a failover then would be followed by another (seen here)."""
        master = self.master_port()
        if not master or not self.in_sync(master):
            return False
        for port in self.sentinel_ports:
            try:
                state = self.sentinel(port).sentinel_master(MASTER_NAME)
                replicas = self.sentinel(port).sentinel_slaves(MASTER_NAME)
            except redis.RedisError:
                return False
            if int(state["port"]) != master or state["is_sdown"] or state["is_odown"]:
                return False
            up = [r for r in replicas if not r["is_sdown"] and r["master-link-status"] == "ok"]
            if len(up) < len(self.nodes) - 1:
                return False
        return True

    def kill_master(self) -> RedisServer:
        """SIGKILL the master of now, once the topology has settled: no shutdown, no last
        fsync, no goodbye to anyone."""
        wait_until(self.settled, 60, "the Sentinels to see every node up")
        node = self.nodes[self.master_port()]
        assert node.process is not None
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(10)
        return node

    def wait_failover(self, old_port: int, timeout: float) -> int:
        """Until the Sentinels name another master than `old_port` and it says it is one;
        its port."""

        def promoted() -> int:
            port = self.master_port()
            if port and port != old_port:
                with contextlib.suppress(redis.RedisError):
                    role = self.connect(port, 1).execute_command("ROLE")
                    if role[0] == b"master":
                        return port
            return 0

        return int(wait_until(promoted, timeout, "the Sentinels to promote the replica"))

    def restart(self, node: RedisServer, timeout: float = 60) -> None:
        """Start a dead node again, on its port and over its files, as a replica of the
        master of now; until it holds all the master wrote."""
        master = int(wait_until(self.master_port, 30, "a master"))
        node.extra_args = self._replica_of(master)
        node.start()
        # The master of each moment: the Sentinels may have moved it meanwhile.
        wait_until(lambda: self.in_sync(self.master_port()), timeout, "the old master to rejoin")

    def logs(self) -> str:
        """The Sentinels' last lines, for a failure message."""
        return "\n".join(
            tail(self.folder / f"sentinel-{i}" / "sentinel.log", 8)
            for i in range(len(self.sentinels))
        )

    def stop(self) -> None:
        for process in self.sentinels:
            if process.poll() is None:
                process.terminate()
        for process in self.sentinels:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
        for node in self.nodes.values():
            node.stop()


@dataclass
class Books:
    """What the producer was told, shared by the run's threads (wall-clock seconds)."""

    created: int = 0
    acked: dict[str, float] = field(default_factory=dict)  # job id -> acknowledged at
    refused: Counter[str] = field(default_factory=Counter)  # failed sends, by error
    lock: threading.Lock = field(default_factory=threading.Lock)


class Producer(threading.Thread):
    """Enqueues at a steady rate through the Sentinels, each job with `WAIT 1`. A send that
    fails (no master yet, a replica that did not confirm) is sent again, the same job id
    and `created_at`, until it is acknowledged or the run stops."""

    def __init__(self, settings: Settings, ref: str, rate: float, books: Books) -> None:
        super().__init__(name="producer", daemon=True)
        # Named, so that the run can see it connect to the promoted replica (CLIENT LIST).
        self.connection = runtime.connect(settings, client_name=PRODUCER_NAME)
        self.settings = settings
        self.ref = ref
        self.period = 1.0 / rate
        self.books = books
        self.stopping = threading.Event()

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stopping.is_set():
            job_id, created_at = str(uuid.uuid4()), producer.rq_timestamp()
            with self.books.lock:
                self.books.created += 1
            while not self.stopping.is_set() and not self.send(job_id, created_at):
                time.sleep(0.1)
            next_at += self.period
            self.stopping.wait(max(0.0, next_at - time.monotonic()))

    def send(self, job_id: str, created_at: str) -> bool:
        try:
            producer.enqueue(
                self.connection,
                {"image": self.ref},
                queue=QUEUE,
                job_id=job_id,
                created_at=created_at,
                replicas=self.settings.redis_wait_replicas,
                replicas_timeout_ms=self.settings.redis_wait_ms,
            )
        except producer.NotReplicated:
            with self.books.lock:
                self.books.refused["NotReplicated"] += 1
            return False
        except redis.RedisError as exc:
            with self.books.lock:
                self.books.refused[type(exc).__name__] += 1
            return False
        with self.books.lock:
            self.books.acked[job_id] = time.time()
        return True


class Watch(threading.Thread):
    """Every worker pid the pool ever had: a worker that died and was respawned shows as
    a third pid."""

    def __init__(self, pool: Pool) -> None:
        super().__init__(name="pool-watch", daemon=True)
        self.pool = pool
        self.seen: set[int] = set()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.2):
            self.seen.update(self.pool.worker_pids())


class FailoverRun:
    def __init__(self, folder: Path, workers: int, rate: float) -> None:
        self.folder = folder
        self.rate = rate
        # The Sentinels require a password, as production ones should: every client passes it
        # (QRW_REDIS_SENTINEL_PASSWORD), and none prints it.
        self.sentinel_password = f"sentinel-{secrets.token_hex(8)}"
        self.topology = SentinelTopology(folder / "redis", sentinel_password=self.sentinel_password)
        self.pool: Pool | None = None
        try:
            images = folder / "images"
            images.mkdir()
            image = images / "invoice.png"
            image.write_bytes(digital_invoice(7100, fmt="png", megapixels=0.5).data)
            self.ref = f"file://{image}"
            self.env = {
                **self.topology.env(),
                "QRW_FILE_ROOTS": str(images),
                "QRW_REDIS_WAIT_REPLICAS": "1",
                "QRW_REDIS_WAIT_MS": str(WAIT_MS),
                "QRW_RECOVERY_INTERVAL": "5",
                "QRW_METRICS_PORT": str(free_port()),
                "QRW_LOG_LEVEL": "info",
            }
            self.log = folder / "pool.log"
            self.pool = Pool(self.env, QUEUE, workers, self.log, defaults_only=True)
            self.pool.wait_ready(self.topology.client(), timeout=300)
            self.watch = Watch(self.pool)
            self.watch.start()
            self.books = Books()
            self.producer = Producer(Settings.from_env(self.env), self.ref, rate, self.books)
        except BaseException:
            self.close()
            raise

    def run(self, failovers: int, every: float) -> list[dict[str, Any]]:
        """Load, and a failover every `every` seconds; then `every` more seconds of load."""
        self.producer.start()
        done = []
        for _ in range(failovers):
            time.sleep(every)
            done.append(self.failover())
        time.sleep(every)
        self.producer.stopping.set()
        self.producer.join(30)
        return done

    def failover(self) -> dict[str, Any]:
        topology = self.topology
        wait_until(topology.settled, 60, "the Sentinels to see every node up")
        old_port = topology.master_port()
        node = topology.kill_master()
        # Taken once the old master is dead and reaped: whatever carries a later time on
        # the promoted replica (a stream entry id) was written there, not replicated to it.
        killed_at = time.time()
        new_port = topology.wait_failover(old_port, 60)
        promoted_s = time.time() - killed_at
        client = topology.connect(new_port, 10)
        producer_s = self._connected(client, killed_at)
        topology.restart(node)
        # The workers' first result on the promoted replica: its stream ids are its clock.
        wait_until(
            lambda: client.xrange(names.RESULTS_STREAM, min=f"{int(killed_at * 1000)}-0", count=1),
            60,
            "a worker's result on the new master",
        )
        first = client.xrange(names.RESULTS_STREAM, min=f"{int(killed_at * 1000)}-0", count=1)
        worker_s = int(first[0][0].decode().split("-")[0]) / 1000 - killed_at
        wait_until(lambda: self._acked_since(killed_at), 60, "an acknowledged job again")
        with self.books.lock:
            acked_s = min(t for t in self.books.acked.values() if t > killed_at) - killed_at
        return {
            "killed": old_port,
            "promoted": new_port,
            "promoted_s": promoted_s,
            "producer_s": producer_s,
            "workers_s": worker_s,
            "acked_s": acked_s,
        }

    @staticmethod
    def _connected(client: redis.Redis, killed_at: float) -> float:
        """Seconds from the SIGKILL to the producer's connection to the promoted replica: it
        is first seen in CLIENT LIST (polled every 50 ms), less the age it has there."""

        def seen() -> list[float]:
            for entry in client.client_list():
                if entry.get("name") == PRODUCER_NAME:
                    return [max(0.0, time.time() - int(entry["age"]) - killed_at)]
            return []

        (seconds,) = wait_until(seen, 60, "the producer on the new master")  # type: ignore[misc]
        return float(seconds)

    def _acked_since(self, moment: float) -> bool:
        with self.books.lock:
            return any(t > moment for t in self.books.acked.values())

    def accounting(self) -> dict[str, Any]:
        """On the last master: every acknowledged job's result, waited for, and counted."""
        client = self.topology.client()
        with self.books.lock:
            acked = list(self.books.acked)
            created = self.books.created

        def missing() -> list[str]:
            with client.pipeline(transaction=False) as pipe:
                for job_id in acked:
                    pipe.exists(names.result_key(job_id))
                found = pipe.execute()
            return [job_id for job_id, there in zip(acked, found, strict=True) if not there]

        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not missing(), DRAIN_S, "every acknowledged job's result")
        entries: defaultdict[str, int] = defaultdict(int)
        for _, fields in client.xrange(names.RESULTS_STREAM):
            entries[fields[b"job_id"].decode()] += 1
        lost = missing()
        return {
            "enqueued": created,
            "acknowledged": len(acked),
            "results": len(entries),
            "duplicates": sum(1 for count in entries.values() if count > 1),
            "lost": lost,
            "answered_unacknowledged": len(set(entries) - set(acked)),
            "refused": dict(self.books.refused),
            "worker_pids": len(self.watch.seen),
            "pool_alive": self.pool is not None and self.pool.process.poll() is None,
        }

    def close(self) -> None:
        with contextlib.suppress(AttributeError):
            self.producer.stopping.set()
            self.watch.stopping.set()
        if self.pool is not None:
            self.pool.stop()
        self.topology.stop()


def render(
    args: argparse.Namespace,
    started: datetime,
    elapsed: float,
    failovers: list[dict[str, Any]],
    books: dict[str, Any],
) -> str:
    worst = {
        key: max((f[key] for f in failovers), default=0.0)
        for key in ("promoted_s", "producer_s", "workers_s", "acked_s")
    }
    lines = [
        "## Sentinel failover under load",
        "",
        f"Produced by `{command(args)}`, {started:%Y-%m-%d %H:%M} UTC, in "
        f"{elapsed / 60:.1f} min.  ",
        f"Machine: {machine_line()}",
        "",
        "A master, one replica and three Sentinels on loopback (down-after-milliseconds "
        f"{DOWN_AFTER_MS}, failover-timeout {FAILOVER_TIMEOUT_MS}, quorum 2, a password of "
        "their own; append-only files, fsync always), "
        f"`qrw worker --workers {args.workers}` and a producer at {args.rate:g} jobs/s, both "
        "through the Sentinels, both with QRW_REDIS_WAIT_REPLICAS=1 "
        f"(WAIT 1, {WAIT_MS} ms). Every {args.every:g} s the master was SIGKILLed, and "
        "started again as a replica of the new one once the Sentinels had promoted it. "
        f"Then every acknowledged job's result was waited for ({DRAIN_S:g} s at most). "
        "Acknowledged: Redis took the job and a replica confirmed it (WAIT >= 1).",
        "",
        "| enqueued | acknowledged | results | duplicates | lost | worker processes | "
        "sends refused |",
        "|---|---|---|---|---|---|---|",
        f"| {books['enqueued']} | {books['acknowledged']} | {books['results']} | "
        f"{books['duplicates']} | {len(books['lost'])} | {books['worker_pids']} "
        f"(pool {'up' if books['pool_alive'] else 'DOWN'}) | "
        f"{', '.join(f'{k} {v}' for k, v in sorted(books['refused'].items())) or 'none'} |",
        "",
        f"Results also came for {books['answered_unacknowledged']} job(s) the producer was "
        "still sending again when it stopped (never acknowledged, so never counted as lost).",
        "",
        "Each failover, seconds from the SIGKILL (bound for the clients' reconnection: "
        f"{RECONNECT_BOUND_S:g} s, down-after + failover timeout + the workers' retry "
        "backoff). The producer's connection is seen in the new master's CLIENT LIST; the "
        "workers' first result is the first entry of its results stream. The first job "
        "acknowledged again waits for a replica too: with one, for the killed node to be "
        "back and synced (WAIT 1).",
        "",
        "| # | Sentinels named the new master | producer connected there | "
        "workers' first result there | first job acknowledged again |",
        "|---|---|---|---|---|",
        *(
            f"| {i + 1} | {f['promoted_s']:.1f} | {f['producer_s']:.1f} | "
            f"{f['workers_s']:.1f} | {f['acked_s']:.1f} |"
            for i, f in enumerate(failovers)
        ),
        f"| worst | {worst['promoted_s']:.1f} | {worst['producer_s']:.1f} | "
        f"{worst['workers_s']:.1f} | {worst['acked_s']:.1f} |",
    ]
    if books["lost"]:
        lines += ["", f"Lost (first 10): {', '.join(books['lost'][:10])}"]
    return "\n".join(lines)


def command(args: argparse.Namespace) -> str:
    text = f"{COMMAND} --failovers {args.failovers}"
    if args.rate != 20:
        text += f" --rate {args.rate:g}"
    if args.workers != 2:
        text += f" --workers {args.workers}"
    if args.every != 20:
        text += f" --every {args.every:g}"
    if args.out:
        text += f" --out {args.out}"
    return text


def verdict(failovers: list[dict[str, Any]], books: dict[str, Any], workers: int) -> list[str]:
    """What went wrong, one line each; empty when nothing did."""
    wrong = []
    if books["lost"]:
        wrong.append(f"{len(books['lost'])} acknowledged job(s) lost")
    if books["duplicates"]:
        wrong.append(f"{books['duplicates']} job(s) with more than one result")
    if books["worker_pids"] != workers or not books["pool_alive"]:
        wrong.append(f"a worker process died ({books['worker_pids']} pids for {workers})")
    for f in failovers:
        if max(f["producer_s"], f["workers_s"]) > RECONNECT_BOUND_S:
            wrong.append(f"a reconnection past {RECONNECT_BOUND_S:g} s: {f}")
    return wrong


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--failovers", type=int, default=5)
    parser.add_argument("--rate", type=float, default=20.0, help="jobs per second")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--every", type=float, default=20.0, help="seconds between failovers")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    # Two failovers of one master name must be twice the failover timeout apart.
    if args.failovers < 1 or args.rate <= 0 or args.workers < 1:
        parser.error("--failovers >= 1, --rate > 0, --workers >= 1")
    if args.every < 2 * FAILOVER_TIMEOUT_MS / 1000:
        parser.error(f"--every must be at least {2 * FAILOVER_TIMEOUT_MS / 1000:g} s")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = datetime.now(UTC)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="qrw-failover-") as tmp:
        try:
            run = FailoverRun(Path(tmp), args.workers, args.rate)
        except RuntimeError as exc:
            print(f"failover: {exc}", file=sys.stderr)
            return 2
        try:
            failovers = run.run(args.failovers, args.every)
            books = run.accounting()
        finally:
            run.close()
    text = render(args, started, time.monotonic() - began, failovers, books)
    print(text)
    if args.out:
        write_section(args.out, "failover", text)
    wrong = verdict(failovers, books, args.workers)
    for line in wrong:
        print(f"failover: {line}", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
