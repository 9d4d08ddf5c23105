"""Every Redis client of the runtime is built here, from the settings: the worker pool and
its workers, the CLI's commands (`enqueue`, `status`, `backfill`), the shim's readiness
check and the metrics' scrapes.

- One server: REDIS_URL, redis-py's own URL rules.
- Sentinel (QRW_REDIS_SENTINELS): redis-py's `Sentinel.master_for`, whose connections ask
  the Sentinels for the master each time they connect, so a client finds the promoted
  replica after a failover by itself. REDIS_URL then gives only the scheme, database, user
  and password; the Sentinels' own password is QRW_REDIS_SENTINEL_PASSWORD.
- TLS: a rediss:// URL, checked against QRW_REDIS_CA, with QRW_REDIS_CERT (and
  QRW_REDIS_KEY) as the client's certificate; the Sentinels are spoken to with the same TLS.
- ACL: the URL's user and password, or QRW_REDIS_USERNAME / QRW_REDIS_PASSWORD over them.

A password never leaves this module in text: `describe` is what messages say instead of
the URL. What a job runs against is built once per worker process: see worker.queue.context.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import redis
from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.sentinel import Sentinel

from worker.settings import Settings

# The queue's client: a connection may take 5 s to open, a command has no read timeout
# (a BLPOP waits as long as it asks), and a dead peer is noticed by keepalive and by a
# PING before any command on a connection idle for 15 s. redis-py's own retry policy
# (timeouts and lost connections, with backoff) rides out a restart or a failover.
QUEUE_CLIENT: dict[str, Any] = {
    "socket_connect_timeout": 5,
    "socket_keepalive": True,
    "health_check_interval": 15,
}
# Seconds one Sentinel may take to answer: discovery moves on to the next one, so a dead
# Sentinel costs a client this long at most, not the whole failover.
SENTINEL_TIMEOUT_S = 2.0


def connect(settings: Settings, **options: Any) -> redis.Redis:
    """The client to the Redis the settings name, with the queue's options, `options` (any
    of redis-py's connection options, e.g. `socket_timeout`) over them.

    redis-py pools notice a fork and reconnect in the child, so one per process is safe;
    RQ's WorkerPool rebuilds its workers' clients from this one's pool (see
    worker.queue.supervisor), Sentinel-managed connections included.
    """
    kwargs = {**_server_kwargs(settings), **QUEUE_CLIENT, **options}
    if not settings.redis_sentinels:
        return redis.Redis(**kwargs)
    # Sentinel finds host and port; a connection class of the URL's would bypass it
    # (master_for picks SentinelManagedSSLConnection for ssl=True).
    for key in ("host", "port", "connection_class"):
        kwargs.pop(key, None)
    sentinel = Sentinel(
        [_address(entry) for entry in settings.redis_sentinels],
        sentinel_kwargs=_sentinel_kwargs(settings, kwargs),
    )
    return sentinel.master_for(settings.redis_master, **kwargs)


def _server_kwargs(settings: Settings) -> dict[str, Any]:
    """redis-py's keyword arguments for the data server: REDIS_URL's, the user settings
    over them, and TLS's files."""
    kwargs: dict[str, Any] = parse_url(settings.redis_url)
    if settings.redis_username:
        kwargs["username"] = settings.redis_username
    if settings.redis_password:
        kwargs["password"] = settings.redis_password
    if kwargs.get("connection_class") is SSLConnection:
        # Keyword TLS (what Redis() and master_for both take) instead of the URL's class.
        kwargs.pop("connection_class")
        kwargs.update(_tls_kwargs(settings))
    elif kwargs.get("connection_class") is UnixDomainSocketConnection:
        kwargs["unix_socket_path"] = kwargs.pop("path")
        kwargs.pop("connection_class")
    return kwargs


def _tls_kwargs(settings: Settings) -> dict[str, Any]:
    # redis-py checks the certificate and the host name by default; a URL's own
    # `?ssl_cert_reqs=` stays the URL's.
    tls: dict[str, Any] = {"ssl": True}
    if settings.redis_ca:
        tls["ssl_ca_certs"] = settings.redis_ca
    if settings.redis_cert:
        tls["ssl_certfile"] = settings.redis_cert
        tls["ssl_keyfile"] = settings.redis_key or None
    return tls


def _sentinel_kwargs(settings: Settings, data: dict[str, Any]) -> dict[str, Any]:
    """How to speak to the Sentinels: their own user and password, the data servers' TLS,
    and a timeout of their own (the queue client has no read timeout, and a Sentinel that
    hangs must not hold a reconnecting worker)."""
    timeout = min(SENTINEL_TIMEOUT_S, data.get("socket_timeout") or SENTINEL_TIMEOUT_S)
    kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "socket_keepalive": True,
    }
    if settings.redis_sentinel_username:
        kwargs["username"] = settings.redis_sentinel_username
    if settings.redis_sentinel_password:
        kwargs["password"] = settings.redis_sentinel_password
    if data.get("ssl"):
        kwargs.update(_tls_kwargs(settings))
    return kwargs


def _address(entry: str) -> tuple[str, int]:
    host, _, port = entry.rpartition(":")
    return host.strip("[]"), int(port)


def describe(settings: Settings) -> str:
    """The Redis the settings name, for people: REDIS_URL without its password, and the
    Sentinels and master name when they are used. What every message says instead of the
    URL."""
    parts = urlsplit(settings.redis_url)
    user = settings.redis_username or parts.username or ""
    secret = bool(settings.redis_password or parts.password)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    address = f"{host}:{parts.port}" if parts.port else host
    credentials = f"{quote(user, safe='')}{':***' if secret else ''}@" if user or secret else ""
    if settings.redis_sentinels:
        address = f"sentinel:{settings.redis_master}"
    shown = urlunsplit((parts.scheme, f"{credentials}{address}", parts.path, "", ""))
    if settings.redis_sentinels:
        shown += f" via {','.join(settings.redis_sentinels)}"
    return shown
