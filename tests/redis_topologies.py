"""Redis as production runs it, on loopback, for the tests.

- `SentinelTopology`: a master, one replica and three Sentinels; the failover benchmark
  runs it too, so it lives there (worker/bench/failover.py: the benchmarks never import
  the tests);
- `make_certificates` and `TlsRedis`: a CA, a server and a client certificate made with
  openssl, and a redis-server speaking only TLS (`--port 0 --tls-port`);
- `acl_lines`: the `ACL SETUSER` lines of docs/operations.md, so that the tests run the
  users the operators are told to create, not a copy of them.

worker.harness starts the processes the runtime starts (pools, shims, one redis-server);
these topologies are only ever test and benchmark fixtures, so they live here.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import redis

from worker.bench.failover import SentinelTopology
from worker.harness import RedisServer, free_port, tail

__all__ = [
    "Certificates",
    "SentinelTopology",
    "TlsRedis",
    "acl_lines",
    "create_users",
    "make_certificates",
]

OPERATIONS_MD = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


# --------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed none of these: a client trusting it must refuse


def make_certificates(folder: Path) -> Certificates:
    """A CA, a server certificate for 127.0.0.1 and localhost, a client certificate, and an
    unrelated CA, all made here with openssl (RSA 2048, a day long)."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    for name in ("ca", "other-ca"):
        openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN=qrw test {name}",
        )  # fmt: skip
    (folder / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    (folder / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN=qrw test {name}",
        )  # fmt: skip
        openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-out", f"{name}.crt", "-extfile", f"{name}.ext",
        )  # fmt: skip
    for key in folder.glob("*.key"):
        key.chmod(0o600)
    return Certificates(
        ca=folder / "ca.crt",
        server_cert=folder / "server.crt",
        server_key=folder / "server.key",
        client_cert=folder / "client.crt",
        client_key=folder / "client.key",
        other_ca=folder / "other-ca.crt",
    )


class TlsRedis(RedisServer):
    """A redis-server that speaks only TLS (no plain port), `client_certificates` whether it
    requires a client certificate (`tls-auth-clients yes`) or takes clients without one."""

    def __init__(self, folder: Path, certs: Certificates, *, client_certificates: bool) -> None:
        self.certs = certs
        self.tls_port = free_port()
        tls = (
            "--port", "0", "--tls-port", str(self.tls_port),
            "--tls-cert-file", str(certs.server_cert), "--tls-key-file", str(certs.server_key),
            "--tls-ca-cert-file", str(certs.ca),
            "--tls-auth-clients", "yes" if client_certificates else "no",
        )  # fmt: skip
        super().__init__(folder, extra_args=tls)

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.tls_port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(
            port=self.tls_port,
            socket_timeout=10,
            ssl=True,
            ssl_ca_certs=str(self.certs.ca),
            ssl_certfile=str(self.certs.client_cert),
            ssl_keyfile=str(self.certs.client_key),
        )

    def _ping(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited: {tail(self.folder / 'redis.log')}")
        try:
            return bool(self.client().ping())
        except redis.ConnectionError:
            return False


# --------------------------------------------------------------------------- ACL


def acl_lines(path: Path = OPERATIONS_MD) -> dict[str, str]:
    """The `ACL SETUSER <user> ...` lines of docs/operations.md, by user, as written there
    (with the `<password>` placeholder still in them)."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = re.match(r"ACL SETUSER (\S+) .*", line.strip())
        if match:
            found[match.group(1)] = match.group(0)
    return found


def create_users(admin: redis.Redis, passwords: dict[str, str]) -> None:
    """Every user of docs/operations.md on the server, each with its password from
    `passwords` in place of the placeholder."""
    for user, line in acl_lines().items():
        # As redis-cli reads the line: a quoted selector is one argument.
        admin.execute_command(*shlex.split(line.replace("<password>", passwords[user])))
