"""The processes the demo, the benchmarks and the tests start, started one way.

- `RedisServer`, a redis-server on a free loopback port in a folder of its own, and
  `local_redis()`, one in a throwaway folder for as long as a `with` block;
- `Pool`, `qrw worker` as ops run it, and `Shim`, `qrw serve` on a free loopback port,
  each in a session of its own and stopped as ops stop them (SIGTERM, then everything
  below them killed when they do not exit within 30 s);
- `Guard`, a thread that samples the memory of every process a run owns and kills one
  past a ceiling, so that a benchmark of hostile input cannot take a shared machine down.

The demo is part of the runtime (`make run`), so this module is too: it imports neither
the benchmarks nor the tests, which both import it. /proc is read by worker.procfs.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Literal

import redis

from worker import procfs
from worker.queue.names import rq_queue_workers_key

# A loaded 2-core machine takes seconds to start a Python process and minutes to warm
# several engines; a pool that asks for SIGTERM's full grace still exits within this.
STOP_GRACE_S = 30.0
# Every process the harness starts is the program itself, in its own interpreter.
QRW = (sys.executable, "-m", "worker.cli")
# The PDF renderer's command line (worker.engine.isolation runs it as a module).
RENDERER_MODULE = b"worker.engine.isolation"

# Where a child's output goes: a file, this process's own stdout and stderr, or nowhere.
Output = Path | Literal["inherit"] | None


class NotStarted(RuntimeError):
    """A pool or shim exited, or did not become ready in time; says why, with its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> object:
    """Polls `condition` every 50 ms; its first truthy value, or TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def tail(path: Path | None, lines: int = 5) -> str:
    """A log's last lines on one line, for an error message."""
    if path is None:
        return ""
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def child_env(env: Mapping[str, str], *, defaults_only: bool = False) -> dict[str, str]:
    """This process's environment with `env` over it. `defaults_only` drops every QRW_
    setting of this process first, so that a measurement runs on the defaults whatever
    the caller's shell exports, but for those `env` names."""
    inherited = {
        k: v for k, v in os.environ.items() if not (defaults_only and k.startswith("QRW_"))
    }
    return {**inherited, **env}


def spawn(
    argv: list[str],
    env: dict[str, str],
    output: Output,
    *,
    cwd: Path | None = None,
    append: bool = False,
) -> subprocess.Popen[bytes]:
    """`argv` in a session of its own (a signal to the caller's terminal is the caller's
    to pass on), with exactly `env`; `append` keeps what `output` already holds."""
    handle: IO[bytes] | int | None
    with contextlib.ExitStack() as stack:
        if output == "inherit":
            handle = None
        elif output is None:
            handle = subprocess.DEVNULL
        else:
            handle = stack.enter_context(open(output, "ab" if append else "wb"))
        return subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=handle,
            stderr=subprocess.STDOUT if handle is not None else None,
            start_new_session=True,
        )


def kill_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process and everything below it: a machine losing power.

    RQ puts each work-horse in a session of its own, so killing the process group would
    miss it: the tree is read from /proc instead, before anything in it dies."""
    for pid in [*procfs.descendants(process.pid), process.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(10)


def stop(*processes: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM, as ops stop them, all at once; what is left after `grace_s` is killed with
    everything below it."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            kill_tree(process)


# --------------------------------------------------------------------------- Redis


class RedisServer:
    """A redis-server with append-only persistence in its own folder.

    `persistence=False` starts one that keeps nothing across a restart (no AOF, no RDB
    save points), as a careless deployment would; `fsync` is its appendfsync; `extra_args`
    go to redis-server as they are (e.g. `("--rename-command", "CONFIG", "")`, as managed
    Redis services do). `start()` after `stop()` (or a kill) starts it again on the same
    port, over the same files.
    """

    def __init__(
        self,
        folder: Path,
        *,
        persistence: bool = True,
        fsync: Literal["always", "everysec", "no"] = "always",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (make setup installs it)")
        self.folder = folder
        self.persistence = persistence
        self.fsync = fsync
        self.extra_args = extra_args
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=10)

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--appendonly",
                "yes" if self.persistence else "no",
                "--appendfsync",
                self.fsync,
                "--save",
                "",
                "--logfile",
                str(self.folder / "redis.log"),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(self._ping, 30, "redis-server to answer")  # a loaded CI machine
        except TimeoutError:
            self.stop()
            raise

    def _ping(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited: {tail(self.folder / 'redis.log')}")
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: redis-server flushes its AOF and exits
            self.process.wait(10)


@contextlib.contextmanager
def local_redis() -> Iterator[str]:
    """A redis-server in a throwaway folder for the block; yields its URL.

    It keeps an append-only file, as production Redis must (docs/operations.md): workers
    check persistence at start and would otherwise, rightly, log an error on every demo
    and benchmark run. Synced every second, not at every write: the demo and the
    benchmarks measure the worker, not the disk.
    """
    with tempfile.TemporaryDirectory(prefix="qrw-redis-") as folder:
        server = RedisServer(Path(folder), fsync="everysec")
        try:
            yield server.url
        finally:
            server.stop()


@contextlib.contextmanager
def moto_s3(buckets: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """moto's S3 server (a test and benchmark dependency) on a free loopback port, in this
    process, for the block, with these buckets; yields its endpoint and its in-memory
    backend (a benchmark fills large buckets straight into it, far faster than PUTs)."""
    import logging

    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
        for bucket in buckets:
            backend.create_bucket(bucket, "us-east-1")
        yield f"http://127.0.0.1:{port}", backend
    finally:
        server.stop()


# --------------------------------------------------------------------------- the pool


class Pool:
    """`qrw worker --queues QUEUE --workers N` as ops run it, in its own session.

    `env` goes over this process's environment (see `child_env`); `queue` None leaves
    the queues to QRW_QUEUES in `env`. `cwd` runs another checkout's code (with its
    PYTHONPATH in `env`), for a before/after comparison.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        queue: str | None,
        workers: int = 1,
        log: Output = None,
        *,
        cwd: Path | None = None,
        defaults_only: bool = False,
    ) -> None:
        self.log = log if isinstance(log, Path) else None
        self.queue = queue
        self.workers = workers
        argv = [*QRW, "worker", *(["--queues", queue] if queue else []), "--workers", str(workers)]
        self.process = spawn(argv, child_env(env, defaults_only=defaults_only), log, cwd=cwd)

    def signal(self, sig: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def worker_pids(self) -> list[int]:
        # The pool's forks share its command line; a helper it runs briefly (a library
        # probing with a subprocess) does not, and is no worker.
        return [
            pid for pid in procfs.children(self.process.pid) if b"worker.cli" in procfs.cmdline(pid)
        ]

    def all_pids(self) -> list[int]:
        return [self.process.pid, *self.worker_pids()]

    def descendants(self) -> list[int]:
        return procfs.descendants(self.process.pid)

    def wait_ready(
        self, client: redis.Redis, timeout: float = 180, queue: str | None = None
    ) -> float:
        """Until every worker has registered on `queue` (the pool's own by default): each
        builds and warms its engine first. The seconds it took; NotStarted if the pool
        exits or the time runs out. A Redis restarting meanwhile is waited for."""
        queue = queue or self.queue
        if not queue:
            raise ValueError("a pool started on QRW_QUEUES needs the queue to wait on")
        started = time.monotonic()
        key = rq_queue_workers_key(queue)
        while True:
            with contextlib.suppress(redis.RedisError):
                if client.scard(key) >= self.workers:
                    return time.monotonic() - started
            if self.process.poll() is not None:
                raise NotStarted(
                    f"qrw worker exited with {self.process.returncode}: {tail(self.log)}"
                )
            if time.monotonic() - started > timeout:
                raise NotStarted(f"workers did not register in {timeout:g} s: {tail(self.log)}")
            time.sleep(0.02)

    def kill_all(self) -> None:
        """SIGKILL the pool, its workers and their children: a machine losing power."""
        kill_tree(self.process)

    def stop(self) -> None:
        stop(self.process)


# --------------------------------------------------------------------------- the shim


def request(
    method: str, port: int, path: str, body: bytes | None = None, timeout: float = 120
) -> tuple[int, dict[str, Any]]:
    """One HTTP request to a loopback port: the status and the JSON document answered
    (`{"text": ...}` when the answer is not JSON)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        try:
            document = json.loads(raw)
        except ValueError:
            document = {"text": raw[:200].decode(errors="replace")}
        return response.status, document if isinstance(document, dict) else {}
    finally:
        connection.close()


class Shim:
    """`qrw serve` on a free loopback port, as ops run it, in its own session.

    Started at once; with `wait` (the default) the constructor returns once the port
    accepts connections, which uvicorn does only after the lifespan built and warmed the
    engine. `wait_ready` waits for /readyz to say 200 instead (Redis too, when required).
    `start()` after a death starts it again on the same port, appending to the same log.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log: Output = None,
        *,
        cwd: Path | None = None,
        defaults_only: bool = False,
        wait: bool = True,
    ) -> None:
        self.output = log
        self.log = log if isinstance(log, Path) else None
        self.env = child_env(env, defaults_only=defaults_only)
        self.cwd = cwd
        self.port = free_port()
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.start()
        if wait:
            self.wait_listening(60)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self.starts += 1
        argv = [*QRW, "serve", "--port", str(self.port)]
        # A restart appends: the log keeps what the shim said before it died.
        self.process = spawn(argv, self.env, self.output, cwd=self.cwd, append=self.starts > 1)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def pids(self) -> list[int]:
        return [self.pid] if self.alive() else []

    def _exited(self) -> NotStarted:
        assert self.process is not None
        return NotStarted(f"qrw serve exited with {self.process.returncode}: {tail(self.log)}")

    def wait_listening(self, timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if not self.alive():
                raise self._exited()
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return time.monotonic() - started
            time.sleep(0.05)
        raise NotStarted(f"qrw serve did not listen in {timeout:g} s: {tail(self.log)}")

    def wait_ready(self, timeout: float = 180) -> float:
        """Until /readyz answers 200; the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if not self.alive():
                raise self._exited()
            with contextlib.suppress(OSError, http.client.HTTPException):
                if request("GET", self.port, "/readyz", timeout=2)[0] == 200:
                    return time.monotonic() - started
            time.sleep(0.2)
        raise NotStarted(f"the shim did not become ready in {timeout:g} s: {tail(self.log)}")

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


# --------------------------------------------------------------------------- the guard


def renderers(pid: int) -> list[int]:
    """The PDF renderer children of a worker or shim process (worker.engine.isolation)."""
    return [c for c in procfs.children(pid) if RENDERER_MODULE in procfs.cmdline(c)]


class Guard(threading.Thread):
    """Samples every process the run owns; kills one whose RSS passes the ceiling, so a
    pre-fix run (5.9 GB for one job) cannot take a shared machine down. Also records every
    pid it saw, so a worker that died and was respawned between two looks is still noticed."""

    def __init__(self, ceiling_mib: float) -> None:
        super().__init__(name="memory-guard", daemon=True)
        self.ceiling_mib = ceiling_mib
        self.watched: dict[str, Callable[[], list[int]]] = {}
        self.seen: dict[str, set[int]] = {}
        self.kills: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        # (parent, pid) -> highest RSS sampled, for the PDF renderer children: one killed at
        # its address-space limit leaves no VmHWM to read afterwards.
        self.renderer_rss: dict[tuple[int, int], float] = {}

    def watch(self, label: str, pids: Callable[[], list[int]]) -> None:
        with self.lock:
            self.watched[label] = pids
            self.seen.setdefault(label, set())

    def reset_renderers(self, parents: list[int]) -> None:
        """Forget the renderers' sampled peaks and reset their VmHWM, before an input."""
        with self.lock:
            self.renderer_rss = {k: v for k, v in self.renderer_rss.items() if k[0] not in parents}
        for parent in parents:
            for renderer in renderers(parent):
                procfs.reset_peak(renderer)

    def renderer_peaks(self, parent: int) -> list[float]:
        """The peak of each of `parent`'s renderer children since the last reset, largest
        first: VmHWM for the living, the highest RSS sampled (every 50 ms) for one that
        was killed (at its address-space limit, or at the deadline)."""
        with self.lock:
            peaks = {k[1]: v for k, v in self.renderer_rss.items() if k[0] == parent}
        for renderer in renderers(parent):
            peaks[renderer] = max(peaks.get(renderer, 0.0), procfs.peak_mib(renderer) or 0.0)
        return sorted(peaks.values(), reverse=True)

    def kills_since(self, moment: float) -> list[dict[str, Any]]:
        with self.lock:
            return [k for k in self.kills if k["at"] >= moment]

    def run(self) -> None:
        while not self.stopped.wait(0.05):
            with self.lock:
                watched = list(self.watched.items())
            for label, provider in watched:
                for pid in provider():
                    with self.lock:
                        self.seen[label].add(pid)
                    for renderer in renderers(pid):
                        sampled = procfs.rss_mib(renderer) or 0.0
                        key = (pid, renderer)
                        with self.lock:
                            self.renderer_rss[key] = max(self.renderer_rss.get(key, 0.0), sampled)
                    rss = procfs.rss_mib(pid)
                    if rss is not None and rss > self.ceiling_mib:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                        with self.lock:
                            self.kills.append(
                                {"at": time.time(), "label": label, "pid": pid, "rss_mib": rss}
                            )
