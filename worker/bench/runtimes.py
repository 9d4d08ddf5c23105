"""What a detection runtime costs a worker process before our own model exists.

    python -m worker.bench.runtimes [--onnx MODEL.onnx] [--out docs/benchmarks.md]

Each measurement runs in a fresh interpreter: the time from process start until the
runtime is imported (and, for ONNX Runtime, a session created and one inference run on
a 640x640 input), and the process's resident memory then. The cascade's own process
(engine loaded and warmed) is the baseline. PyTorch is measured when it is installed
(`pip install torch==2.13.0`), and reported absent otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from worker.bench.report import machine_line, write_section

_RSS = """
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
"""

PROBES = {
    "python + numpy (floor)": "import numpy",
    "cascade engine, warmed": ("from worker.engine import Engine\nEngine().warm_up()"),
    "onnxruntime, imported": "import onnxruntime",
    "onnxruntime, session + 1 inference": (
        "import numpy as np, onnxruntime as ort\n"
        "options = ort.SessionOptions(); options.intra_op_num_threads = 1\n"
        "s = ort.InferenceSession(MODEL, options, providers=['CPUExecutionProvider'])\n"
        "i = s.get_inputs()[0]\n"
        "shape = [d if isinstance(d, int) else 1 for d in i.shape]\n"
        "s.run(None, {i.name: np.zeros(shape, np.float32)})"
    ),
    "torch, imported": "import torch\ntorch.set_num_threads(1)",
}


def probe(code: str, model: str) -> dict[str, float | str]:
    script = f"MODEL = {model!r}\n{_RSS}\n{code}\nprint(rss())"
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        return {"absent": (out.stderr.strip().splitlines() or ["failed"])[-1][:160]}
    return {"ready_s": elapsed, "rss_mb": float(out.stdout.strip().splitlines()[-1])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, default=None, help="an ONNX model to load")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    model = str(args.onnx) if args.onnx else ""
    rows = {}
    for name, code in PROBES.items():
        if "MODEL" in code and not model:
            continue
        runs = [probe(code, model) for _ in range(args.repeat)]
        good = [r for r in runs if "absent" not in r]
        rows[name] = (
            {
                "ready_s": sorted(r["ready_s"] for r in good)[len(good) // 2],  # type: ignore[type-var]
                "rss_mb": sorted(r["rss_mb"] for r in good)[len(good) // 2],
            }  # type: ignore[type-var]
            if good
            else runs[0]
        )
    lines = [
        "## Runtime cost: ONNX Runtime and PyTorch in a worker process",
        "",
        f"Command: `python -m worker.bench.runtimes{' --onnx ' + model if model else ''}`  ",
        f"Machine: {machine_line()}",
        "",
        "Fresh process each time (median of 3): seconds from process start to ready, and",
        "resident memory then. Our detector does not exist yet, so the ONNX session is a",
        "stand-in model (named in the command); the rows will be redone with our own weights,",
        "and PyTorch with the same model, by the detector issue.",
        "",
        "| process | start-to-ready s | RSS MB |",
        "|---|---|---|",
    ]
    for name, row in rows.items():
        if "absent" in row:
            lines.append(f"| {name} | absent: {row['absent']} | |")
        else:
            lines.append(f"| {name} | {row['ready_s']:.2f} | {row['rss_mb']:.0f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        write_section(args.out, "runtimes", text)
        args.out.with_name("benchmarks-runtimes.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
