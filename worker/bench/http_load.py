"""Load test of the HTTP shim on loopback: requests per second and latency, 1 vs 2 processes.

    python -m worker.bench.http_load [--seconds 20] [--images 40] [--flood 32]
                                     [--out docs/benchmarks.md]

For each process count, `qrw serve` is started as ops run it (QRW_HTTP_PROCESSES), and
a bounded closed loop of client threads (two per process, so the shim is kept busy
without being asked for more than its slots) posts generated digital invoices for a
fixed time. Each request opens its own connection, so the kernel spreads them over the
processes. The one-process run is the baseline the two-process run is compared with,
in the same command.

`--flood N` adds a run of N clients against one process with its default slots (far more
clients than slots, each posting again as soon as it is answered, 503s included): its
successful requests per second, against the one-process closed loop, is the goodput the
shim keeps under a burst.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from worker.bench.report import machine_line, percentile, write_section
from worker.harness import NotStarted, Shim

_CLIENTS_PER_PROCESS = 2


def _start(processes: int, concurrency: int | None) -> Shim:
    env = {"QRW_HTTP_PROCESSES": str(processes), "QRW_LOG_LEVEL": "warning"}
    if concurrency is not None:
        env["QRW_HTTP_CONCURRENCY"] = str(concurrency)
    shim = Shim(env, wait=False)
    try:
        shim.wait_ready(120)
    except NotStarted:
        shim.stop()
        raise
    return shim


def run(
    processes: int, images: list[bytes], seconds: float, flood: int | None = None
) -> dict[str, Any]:
    """A closed loop of two clients per process, or, with `flood`, that many clients
    against the shim's default slots."""
    clients = flood or _CLIENTS_PER_PROCESS * processes
    # Closed loop: slots for every client in each process, as the kernel may send several
    # to one process. Flood: the slots ops get by default, far fewer than the clients.
    shim = _start(processes, concurrency=None if flood else clients)
    url = shim.url
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(offset: int) -> None:
        index = offset
        with httpx.Client(timeout=60, headers={"Connection": "close"}) as http:
            while time.monotonic() < stop_at:
                body = images[index % len(images)]
                index += clients
                started = time.perf_counter()
                try:
                    status = http.post(f"{url}/detect", content=body).status_code
                except httpx.TransportError:
                    status = 0  # reset or refused under the flood: counted, not fatal
                elapsed = (time.perf_counter() - started) * 1000.0
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == 200:
                        latencies.append(elapsed)

    try:
        # Warm each process's caches before the clock starts.
        for body in images[:4]:
            httpx.post(f"{url}/detect", content=body, timeout=60)
        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
    finally:
        shim.stop()
    return {
        "mode": "flood" if flood else "closed loop",
        "processes": processes,
        "clients": clients,
        "seconds": wall,
        "requests": sum(statuses.values()),
        "ok": len(latencies),
        "statuses": statuses,
        "rps": len(latencies) / wall,
        "median_ms": statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": percentile(latencies, 99) if latencies else float("nan"),
    }


def render(rows: list[dict[str, Any]], command: str, images: int) -> str:
    base = rows[0]["rps"]
    lines = [
        "## HTTP shim under load",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine_line()}",
        "",
        f"`qrw serve` on loopback, {images} generated digital invoices (PNG and JPEG, 2 MP)",
        f"posted in a closed loop by {_CLIENTS_PER_PROCESS} client threads per shim process, one",
        "connection per request; the clients run on the same cores as the shim. Latency as the",
        "client saw it.",
        "",
        "| processes | clients | requests/s | vs 1 process | median ms | p99 ms | statuses |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(row["statuses"].items()))
        lines.append(
            f"| {row['processes']} | {row['clients']} | {row['rps']:.1f} "
            f"| {row['rps'] / base:.2f}x | {row['median_ms']:.1f} | {row['p99_ms']:.1f} "
            f"| {statuses} |"
        )
    return "\n".join(lines)


def render_flood(base: dict[str, Any], flood: dict[str, Any]) -> str:
    """Goodput under a flood, against the one-process closed loop of the same command."""
    lines = [
        "| run | clients | requests/s answered 200 | vs closed loop | statuses |",
        "|---|---|---|---|---|",
    ]
    for row in (base, flood):
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(row["statuses"].items()))
        lines.append(
            f"| {row['mode']}, {row['processes']} process | {row['clients']} | {row['rps']:.1f} "
            f"| {row['rps'] / base['rps']:.2f}x | {statuses} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from models.synth import digital_invoice

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--flood", type=int, default=0, help="also run this many clients against one process"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.flood and 1 not in args.processes:
        parser.error("--flood is compared with the one-process closed loop: keep 1 in --processes")
    images = [
        digital_invoice(5000 + k, fmt="png" if k % 2 else "jpeg").data for k in range(args.images)
    ]
    rows = [run(count, images, args.seconds) for count in args.processes]
    command = "python -m worker.bench.http_load " + " ".join(argv or sys.argv[1:])
    text = render(rows, command.strip(), args.images)
    if args.flood:
        flood = run(1, images, args.seconds, flood=args.flood)
        base = next(row for row in rows if row["processes"] == 1)
        text += "\n\n" + render_flood(base, flood)
        rows.append(flood)
    print(text)
    if args.out:
        write_section(args.out, "http", text)
        args.out.with_name("benchmarks-http.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
