"""Real services for the tests: our own redis-server, moto's S3 server, worker processes.

Nothing is mocked: Redis is a redis-server process on a free port (never the machine's
6379), S3 is moto's HTTP server reached by boto3 over a socket, and workers are
`qrw worker` processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class RedisServer:
    """A redis-server with append-only persistence in its own folder.

    `persistence=False` starts one that keeps nothing across a restart (no AOF, no RDB
    save points), as a careless deployment would; `extra_args` go to redis-server as they
    are (e.g. `("--rename-command", "CONFIG", "")`, as managed Redis services do).
    """

    def __init__(
        self, folder: Path, *, persistence: bool = True, extra_args: tuple[str, ...] = ()
    ) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (make test installs it)")
        self.folder = folder
        self.persistence = persistence
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
                "always",
                "--save",
                "",
                "--logfile",
                str(self.folder / "redis.log"),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._ping, 30, "redis-server to answer")  # a loaded CI machine

    def _ping(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: redis-server flushes its AOF and exits
            self.process.wait(10)


class WorkerProcess:
    """`qrw worker` as ops run it, in its own process group."""

    def __init__(self, env: dict[str, str], queue: str, workers: int = 1, log: Path | None = None):
        self.log = log
        handle = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "worker.cli",
                "worker",
                "--queues",
                queue,
                "--workers",
                str(workers),
            ],
            env={**os.environ, **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def signal(self, sig: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def kill_all(self) -> None:
        """SIGKILL the pool, its workers and their work-horses: a machine losing power.

        RQ puts each work-horse in a session of its own, so killing the process group
        would miss it: walk the tree instead.
        """
        for pid in [*self.descendants(), self.process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(10)

    def descendants(self) -> list[int]:
        found, frontier = [], [self.process.pid]
        while frontier:
            out = subprocess.run(
                ["pgrep", "-P", str(frontier.pop())], capture_output=True, text=True, check=False
            )
            children = [int(pid) for pid in out.stdout.split()]
            found += children
            frontier += children
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill_all()


class ShimProcess:
    """`qrw serve` on a free loopback port, as ops run it; ready when /readyz says so."""

    def __init__(self, env: dict[str, str], log: Path | None = None) -> None:
        self.port = free_port()
        handle = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "serve", "--port", str(self.port)],
            env={**os.environ, **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._ready, 60, "the shim to be ready")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"qrw serve exited with {self.process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
