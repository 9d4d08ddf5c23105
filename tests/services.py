"""Real services for the tests: our own redis-server, worker processes and the shim.

Nothing is mocked: Redis is a redis-server process on a free port (never the machine's
6379), workers are `qrw worker` processes and the shim is `qrw serve`, each started by
worker.harness, the one harness the demo and the benchmarks start them with too. The
names here are the ones the tests were written with; moto's S3 server is a fixture
(tests/conftest.py).
"""

from __future__ import annotations

from worker.harness import Pool as WorkerProcess
from worker.harness import RedisServer, free_port, wait_until
from worker.harness import Shim as ShimProcess

__all__ = ["RedisServer", "ShimProcess", "WorkerProcess", "free_port", "wait_until"]
