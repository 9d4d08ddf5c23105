"""worker.harness and worker.procfs: how the demo, the benchmarks and the tests start,
watch and stop processes, on real processes (redis-server, `qrw worker`, `qrw serve`).

/proc lists a child under the thread that started it, so a reader of the main thread's
list alone misses what a scan thread starts (the shim's PDF renderers): every reader here
reads every thread's list.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests import services
from worker import harness, procfs
from worker.harness import Guard, NotStarted, Pool, RedisServer, Shim, local_redis, wait_until
from worker.queue import names

# A stand-in for a PDF renderer: `sleep`, run under the renderer's module name as its
# argv[0], which is what /proc/PID/cmdline shows.
RENDERER_NAME = harness.RENDERER_MODULE.decode()


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _sleeper(seconds: int = 60, name: str = "sleep") -> subprocess.Popen[bytes]:
    return subprocess.Popen([name, str(seconds)], executable=shutil.which("sleep"))


@contextlib.contextmanager
def from_a_thread(name: str = "sleep") -> Iterator[subprocess.Popen[bytes]]:
    """A child started by a thread that lives on (as the shim's scan threads do): /proc
    lists it under that thread until the thread exits and hands it to another."""
    started: list[subprocess.Popen[bytes]] = []
    done = threading.Event()

    def run() -> None:
        started.append(_sleeper(name=name))
        done.wait(60)

    thread = threading.Thread(target=run)
    thread.start()
    wait_until(lambda: started, 10, "the thread's child")
    try:
        yield started[0]
    finally:
        done.set()
        thread.join()
        started[0].kill()
        started[0].wait()


# --------------------------------------------------------------------------- /proc


def test_children_are_read_from_every_thread_not_only_the_main_one() -> None:
    from_main = _sleeper()
    try:
        with from_a_thread() as from_thread:
            me = os.getpid()
            main_only = Path(f"/proc/{me}/task/{me}/children").read_text().split()
            # The disagreement the one reader ends: the main thread's list lacks the second.
            assert str(from_main.pid) in main_only and str(from_thread.pid) not in main_only
            assert {from_main.pid, from_thread.pid} <= set(procfs.children(me))
    finally:
        from_main.kill()
        from_main.wait()


def test_a_tree_holds_grandchildren_and_reads_as_nothing_once_gone() -> None:
    shell = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"])
    try:
        found = wait_until(lambda: len(procfs.descendants(shell.pid)) == 2, 10, "two sleeps")
        assert found
        assert procfs.tree(shell.pid)[0] == shell.pid and len(procfs.tree(shell.pid)) == 3
        assert b"sleep" in procfs.cmdline(procfs.descendants(shell.pid)[0])
    finally:
        harness.kill_tree(shell)
    assert procfs.children(shell.pid) == [] and procfs.cmdline(shell.pid) == b""
    assert procfs.status_kib(shell.pid, "VmRSS") is None
    assert procfs.usage(shell.pid) == procfs.Usage() and procfs.cpu_ticks(shell.pid) == 0


def test_memory_and_cpu_of_a_living_process() -> None:
    me = os.getpid()
    mine = procfs.usage(me)
    assert 0 < mine.pss <= mine.rss and 0 < mine.private <= mine.rss
    assert procfs.total([me, me]).rss == pytest.approx(2 * mine.rss, rel=0.2)
    rss = procfs.rss_mib(me)
    assert rss is not None and rss == pytest.approx(mine.rss, rel=0.2)
    # A peak above the current size comes back down to it once reset.
    ballast = b"\1" * (64 * 2**20)
    del ballast
    before = procfs.peak_mib(me)
    procfs.reset_peak(me)
    after = procfs.peak_mib(me)
    assert before is not None and after is not None and after < before
    ticks = procfs.cpu_ticks(me)
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    assert procfs.cpu_ticks(me) > ticks


# --------------------------------------------------------------------------- stopping


def test_stop_asks_with_sigterm_and_kills_the_tree_of_what_ignores_it(tmp_path: Path) -> None:
    stubborn = harness.spawn(
        [
            sys.executable,
            "-c",
            "import signal, subprocess, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "subprocess.Popen(['sleep', '60'])\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n",
        ],
        dict(os.environ),
        tmp_path / "stubborn.log",
    )
    polite = harness.spawn(["sleep", "60"], dict(os.environ), None)
    wait_until(lambda: procfs.descendants(stubborn.pid), 10, "the stubborn child's sleep")
    grandchild = procfs.descendants(stubborn.pid)[0]
    # In a session of its own: a Ctrl-C at the caller's terminal is the caller's to pass on.
    assert os.getsid(stubborn.pid) == stubborn.pid != os.getsid(0)
    began = time.monotonic()
    harness.stop(stubborn, polite, grace_s=1.0)
    assert time.monotonic() - began < 10
    assert polite.returncode == -signal.SIGTERM
    assert stubborn.returncode == -signal.SIGKILL
    wait_until(lambda: not _alive(grandchild), 10, "the grandchild to die")
    assert (tmp_path / "stubborn.log").read_text() == "ready\n"


# --------------------------------------------------------------------------- Redis


def test_redis_keeps_an_append_only_file_and_comes_back_with_it(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    try:
        client = server.client()
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        client.set("kept", "1")
        port = server.port
        server.stop()
        with pytest.raises(redis.ConnectionError):
            server.client().ping()
        server.start()
        assert server.port == port and server.client().get("kept") == b"1"
        assert (tmp_path / "redis" / "redis.log").stat().st_size > 0
    finally:
        server.stop()


def test_a_careless_redis_keeps_nothing(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", persistence=False)
    try:
        server.client().set("lost", "1")
        server.stop()
        server.start()
        assert server.client().get("lost") is None
    finally:
        server.stop()


def test_local_redis_lives_for_its_block_and_syncs_every_second() -> None:
    with local_redis() as url:
        client = redis.Redis.from_url(url, socket_timeout=5)
        assert client.ping()
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        folder = client.config_get("dir")["dir"]
    assert not Path(folder).exists()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()


# --------------------------------------------------------------------------- pool and shim


def test_a_pool_is_ready_once_its_workers_register_and_stops_on_sigterm(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    queue = f"harness-{uuid.uuid4().hex[:8]}"
    env = {
        "REDIS_URL": redis_server.url,
        "QRW_BACKEND": "none",
        "QRW_METRICS_PORT": "0",
        "QRW_LOG_LEVEL": "warning",
    }
    pool = Pool(env, queue, 2, tmp_path / "pool.log")
    try:
        seconds = pool.wait_ready(redis_server.client(), timeout=120)
        assert seconds > 0
        workers = pool.worker_pids()
        assert len(workers) == 2
        assert set(workers) <= set(pool.descendants())
        assert pool.all_pids() == [pool.process.pid, *workers]
        assert redis_server.client().scard(names.rq_queue_workers_key(queue)) == 2
    finally:
        pool.stop()
    assert pool.process.returncode == 0
    assert not any(_alive(pid) for pid in workers)


def test_a_pool_that_exits_says_so_with_its_log(redis_server: RedisServer, tmp_path: Path) -> None:
    env = {"REDIS_URL": redis_server.url, "QRW_WORKER_CLASS": "bogus"}
    pool = Pool(env, "harness-bogus", 1, tmp_path / "pool.log")
    with pytest.raises(NotStarted, match="QRW_WORKER_CLASS must be one of"):
        pool.wait_ready(redis_server.client(), timeout=60)
    assert pool.process.returncode == 2


def test_a_measurement_can_leave_the_callers_qrw_settings_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A measurement must not take the caller's QRW_ settings: here one that fails at once.
    monkeypatch.setenv("QRW_WORKER_CLASS", "bogus")
    inherits = harness.child_env({"QRW_LOG_LEVEL": "info"})
    assert inherits["QRW_WORKER_CLASS"] == "bogus" and inherits["QRW_LOG_LEVEL"] == "info"
    defaults = harness.child_env({"QRW_LOG_LEVEL": "info"}, defaults_only=True)
    assert "QRW_WORKER_CLASS" not in defaults and defaults["QRW_LOG_LEVEL"] == "info"
    assert defaults["PATH"] == os.environ["PATH"]


def test_a_shim_listens_is_ready_and_comes_back_on_its_port_after_a_death(
    tmp_path: Path,
) -> None:
    log = tmp_path / "shim.log"
    shim = Shim({"QRW_BACKEND": "none", "QRW_LOG_LEVEL": "info"}, log)
    try:
        assert shim.alive() and shim.starts == 1
        assert shim.wait_ready(60) >= 0
        assert harness.request("GET", shim.port, "/healthz", timeout=10)[0] == 200
        first = log.read_text()
        assert first
        os.kill(shim.pid, signal.SIGKILL)
        shim.process.wait(10)  # type: ignore[union-attr]
        assert shim.pids() == []
        shim.start()
        assert shim.wait_ready(60) >= 0 and shim.starts == 2
        assert log.read_text().startswith(first)  # the restart appended
    finally:
        shim.stop()
    # Stopped by its SIGTERM, not killed: uvicorn shuts down, then re-raises the signal.
    assert shim.process is not None and shim.process.returncode == -signal.SIGTERM


def test_a_shim_that_cannot_start_says_so(tmp_path: Path) -> None:
    with pytest.raises(NotStarted, match="QRW_BACKEND"):
        Shim({"QRW_BACKEND": "bogus"}, tmp_path / "shim.log")


# --------------------------------------------------------------------------- the guard


def test_the_guard_kills_a_process_past_its_ceiling_and_remembers_every_pid() -> None:
    hungry = subprocess.Popen(
        [sys.executable, "-c", "import time; b = b'1' * (300 * 2**20); time.sleep(60)"]
    )
    modest = _sleeper()
    guard = Guard(ceiling_mib=150)
    guard.watch("test", lambda: [p.pid for p in (hungry, modest) if p.poll() is None])
    began = time.time()
    guard.start()
    try:
        assert hungry.wait(30) == -signal.SIGKILL
        assert modest.poll() is None
        kills = guard.kills_since(began)
        assert [(k["label"], k["pid"]) for k in kills] == [("test", hungry.pid)]
        assert kills[0]["rss_mib"] > 150
        assert guard.seen["test"] >= {hungry.pid, modest.pid}
    finally:
        guard.stopped.set()
        guard.join(5)
        modest.kill()
        modest.wait()


def test_the_guard_reads_the_peaks_of_renderers_started_from_any_thread() -> None:
    other = _sleeper()
    try:
        with from_a_thread(name=RENDERER_NAME) as renderer:
            me = os.getpid()
            # (This process may hold a real renderer too: the session's engine read a PDF.)
            found = harness.renderers(me)
            assert renderer.pid in found and other.pid not in found
            guard = Guard(ceiling_mib=10_000)
            guard.watch("me", lambda: [me])
            guard.start()
            wait_until(lambda: (me, renderer.pid) in guard.renderer_rss, 10, "a sample")
            guard.stopped.set()
            guard.join(5)
            assert guard.renderer_rss[(me, renderer.pid)] > 0
            assert len(guard.renderer_peaks(me)) == len(found)
            assert min(guard.renderer_peaks(me)) > 0
            guard.reset_renderers([me])
            assert guard.renderer_rss == {}
    finally:
        other.kill()
        other.wait()


# --------------------------------------------------------------------------- the names


def test_the_tests_start_their_services_with_the_harness() -> None:
    assert services.RedisServer is RedisServer
    assert services.WorkerProcess is Pool
    assert services.ShimProcess is Shim
    assert services.free_port is harness.free_port
    assert services.wait_until is harness.wait_until
