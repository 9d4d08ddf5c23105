"""What each detector runtime costs a worker: ONNX Runtime against PyTorch, same weights.

    python -m worker.bench.runtimes [--images N] [--repeat R] [--out docs/benchmarks.md]

Every configuration runs in a fresh interpreter built exactly as a worker builds its
engine (`Engine(settings)` then `warm_up()`), so the numbers are a worker's:
- start-to-ready: seconds from process start until the engine and its model are loaded
  and warmed;
- RSS: the process's resident memory then, and its peak after the latency runs;
- per-image latency of the detector itself (letterbox, inference, decoding of the maps)
  on real photos (`qr-photos-val`), one intra-op thread, median and p95 over all runs.
The classical engine (no model) is the baseline every row is compared with; the
configurations alternate so that a noisy neighbour hits them all alike. The "arena" rows
are the former ONNX session setting (an arena per session, before issue 11), for the
latency ratio of today's sessions, which share one arena and release it when idle.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from worker.bench.report import machine_line, write_section

CONFIGURATIONS = (
    ("classical", "none", ""),
    ("onnx small", "onnx", "small"),
    ("onnx small, arena (before)", "onnx", "small"),
    ("torch small", "torch", "small"),
    ("onnx medium", "onnx", "medium"),
    ("onnx medium, arena (before)", "onnx", "medium"),
    ("torch medium", "torch", "medium"),
)
ARENA = "arena (before)"

_PROBE = """
import json, os, sys, time
started = float(sys.argv[1])
from worker.procfs import peak_mib, rss_mib
from worker.engine.detector import sessions
sessions.OWN_ARENAS = sys.argv[5] == "arena"
from worker.engine import Engine
from worker.settings import Settings
engine = Engine(Settings.from_env())
engine.warm_up()
ready = time.time() - started
rss = rss_mib(os.getpid())
latencies = []
detectors = [s.detector for s in engine.stages if hasattr(s, 'detector')]
if detectors:
    import cv2
    paths = sorted(__import__('pathlib').Path(sys.argv[2]).glob('*.jpg'))[: int(sys.argv[3])]
    pages = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths]
    detectors[0].detect(pages[0])
    for _ in range(int(sys.argv[4])):
        for page in pages:
            t = time.perf_counter()
            detectors[0].detect(page)
            latencies.append((time.perf_counter() - t) * 1000.0)
print(json.dumps({"ready_s": ready, "rss_mb": rss, "peak_mb": peak_mib(os.getpid()),
                  "latencies_ms": latencies, "torch_loaded": 'torch' in sys.modules}))
"""


def probe(
    backend: str, size: str, images: Path, count: int, repeat: int, arena: bool = False
) -> dict[str, Any]:
    env = {
        **os.environ,
        "QRW_BACKEND": backend,
        "QRW_DETECTOR_MODELS": size or "small",
        "QRW_MODEL_THREADS": "1",
        # One thread everywhere: the worker's throughput setting, and comparable rows.
        "OMP_NUM_THREADS": "1",
    }
    started = time.time()
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _PROBE,
            str(started),
            str(images),
            str(count),
            str(repeat),
            "arena" if arena else "heap",
        ],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if out.returncode != 0:
        return {"absent": (out.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in runs if "absent" not in r]
    if not good:
        return runs[0]
    latencies = sorted(x for r in good for x in r["latencies_ms"])
    row: dict[str, Any] = {
        "ready_s": statistics.median(r["ready_s"] for r in good),
        "rss_mb": statistics.median(r["rss_mb"] for r in good),
        "peak_mb": statistics.median(r["peak_mb"] for r in good),
        "torch_loaded": any(r["torch_loaded"] for r in good),
        "processes": len(good),
    }
    if latencies:
        row["median_ms"] = statistics.median(latencies)
        row["p95_ms"] = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
        row["images"] = len(latencies)
    return row


def render(rows: dict[str, dict[str, Any]], command: str) -> str:
    base = rows.get("classical", {})
    lines = [
        "## ONNX Runtime and PyTorch: what each costs a worker",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine_line()}",
        "",
        "Same weights in both runtimes. Each row is a fresh worker-like process (engine built",
        "from settings and warmed), started several times alternately with the others;",
        "latency is the detector alone (letterbox, inference, map decoding) on real photos",
        "from `qr-photos-val`, one intra-op thread. Ratios are against the classical engine",
        "(no model) measured in the same command.",
        "",
        "The latency ratio compares each ONNX row with the same model's arena row.",
        "",
        "| configuration | detector ms median | p95 | vs arena | start-to-ready s "
        "| vs classical | RSS MB | vs classical | peak MB | torch imported |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        if "absent" in row:
            lines.append(f"| {name} | absent: {row['absent']} | | | | | | | | |")
            continue
        latency = f"{row['median_ms']:.1f} | {row['p95_ms']:.1f}" if "median_ms" in row else "- | -"
        ready_ratio = row["ready_s"] / base["ready_s"] if base.get("ready_s") else float("nan")
        arena = rows.get(f"{name}, {ARENA}", {}) if name.startswith("onnx") else {}
        vs_arena = (
            f"{row['median_ms'] / arena['median_ms']:.2f}x"
            if "median_ms" in row and arena.get("median_ms")
            else "-"
        )
        rss_ratio = row["rss_mb"] / base["rss_mb"] if base.get("rss_mb") else float("nan")
        lines.append(
            f"| {name} | {latency} | {vs_arena} | {row['ready_s']:.2f} | {ready_ratio:.2f}x "
            f"| {row['rss_mb']:.0f} | {rss_ratio:.2f}x | {row['peak_mb']:.0f} "
            f"| {'yes' if row['torch_loaded'] else 'no'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images",
        type=Path,
        default=Path(__file__).resolve().parents[3] / "shared/datasets/qr-photos-val/images",
    )
    parser.add_argument("--count", type=int, default=40, help="photos per latency run")
    parser.add_argument("--repeat", type=int, default=3, help="processes per configuration")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in CONFIGURATIONS}
    for _ in range(args.repeat):
        for name, backend, size in CONFIGURATIONS:
            runs[name].append(probe(backend, size, args.images, args.count, 2, ARENA in name))
    rows = {name: summarise(found) for name, found in runs.items()}
    command = "python -m worker.bench.runtimes" + (f" --out {args.out}" if args.out else "")
    text = render(rows, command)
    print(text)
    if args.out:
        write_section(args.out, "runtimes", text)
        args.out.with_name("benchmarks-runtimes.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
