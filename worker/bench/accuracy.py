"""`qrw bench`: decode rate, misreads, speed, memory and start-up of every configuration
and peer, on the synthetic corpus and on real photos, measured by one harness.

    qrw bench [--quick] [--per-category N] [--readers ...] [--keep] [--real FOLDER ...]
              [--out FILE]

Each reader runs in a process of its own (start-up and memory are per process), over
the same files. The corpus is generated once into a folder (deterministic from the
seed) and reused while its parameters match. Every reader's run is stored beside the
corpus; `--keep` reports the stored runs of the readers not named in `--readers` (same
corpus, same options) instead of running them again, so a change to our cascade is
measured without re-measuring the peers, and the report says which rows are stored.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from worker.bench.readers import READERS
from worker.bench.report import machine_line, percentile, plots_missing, write_section
from worker.console import STAGES

# Left out of --quick unless named: one of them alone takes longer than a quick run may.
SLOW_READERS = ("arbez",)

DEFAULT_REAL = Path(__file__).resolve().parents[2].parent / "shared/datasets/qr-photos-val"


def ensure_corpus(folder: Path, per_category: int, seed: int) -> Path:
    from models.synth.corpus import CATEGORIES, write_corpus

    stamp = folder / "corpus.json"
    wanted = {"per_category": per_category, "seed": seed, "categories": list(CATEGORIES)}
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    write_corpus(folder, CATEGORIES, per_category, seed)
    stamp.write_text(json.dumps(wanted))
    return folder


def _run_file(corpus: Path, name: str) -> Path:
    slug = "".join(c if c.isalnum() else "-" for c in name).strip("-")
    # Beside their own corpus: a --quick run must never replace the full run's results.
    return corpus.parent / f"{corpus.name}-runs" / f"{slug}.json"


def store_run(corpus: Path, run: dict[str, Any], key: dict[str, Any]) -> None:
    path = _run_file(corpus, run["reader"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "run": run}))


def stored_run(corpus: Path, name: str, key: dict[str, Any]) -> dict[str, Any] | None:
    path = _run_file(corpus, name)
    if not path.exists():
        return None
    stored = json.loads(path.read_text())
    return stored["run"] if stored["key"] == key else None


def run_reader(name: str, folders: list[Path], limit: int | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker.bench.reader_process",
            name,
            *(["--limit", str(limit)] if limit else []),
            *map(str, folders),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    run: dict[str, Any] = {"reader": name, "images": []}
    for line in process.stdout:
        record = json.loads(line)
        kind = record.pop("type")
        if kind == "absent":
            run["absent"] = record["reason"]
        elif kind == "ready":
            run["ready_s"] = time.perf_counter() - started
            run["ready_rss_mb"] = record["rss_mb"]
        elif kind == "image":
            run["images"].append(record)
        elif kind == "end":
            run["peak_rss_mb"] = record["peak_rss_mb"]
    process.wait()
    print(
        f"{name}: {len(run['images'])} images"
        + (f", absent ({run['absent']})" if "absent" in run else ""),
        file=sys.stderr,
    )
    return run


def summarise(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    by_category: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for image in run["images"]:
        by_category[image["category"]].append(image)
    rows = {}
    for category, images in sorted(by_category.items()):
        with_codes = [i for i in images if i["content"] and i["expected"]]
        box_only = [i for i in images if not i["content"]]
        times = [i["ms"] for i in images]
        stages = Counter(stage for i in images for stage in i["stages"])
        rows[category] = {
            "images": len(images),
            "decode_rate": (sum(i["decoded"] for i in with_codes) / len(with_codes))
            if with_codes
            else None,
            "box_recall": (
                sum(i["correct"] for i in box_only) / sum(i["expected"] for i in box_only)
            )
            if box_only and sum(i["expected"] for i in box_only)
            else None,
            # Over the labelled codes that are QR symbols at all (worker.bench.real_audit).
            **_audited(box_only),
            "misreads": sum(i["misreads"] for i in images),
            "false_reads": sum(i["false_reads"] for i in images),
            "errors": sum(1 for i in images if i["error"]),
            "median_ms": percentile(times, 50),
            "p95_ms": percentile(times, 95),
            "p99_ms": percentile(times, 99),
            "stages": dict(stages),
        }
    return rows


def _audited(images: list[dict[str, Any]], audit_file: Path | None = None) -> dict[str, Any]:
    """Box recall over the labelled boxes the audit did not set aside as stock
    illustrations of QR codes (worker/bench/real_audit.json), with what was set aside."""
    from worker.bench.real_audit import AUDIT_FILE, set_aside

    if not images or any("found" not in i for i in images):
        return {}
    sources = {i["source"] for i in images}
    aside = set().union(*(set_aside(source, audit_file or AUDIT_FILE) for source in sources))
    kept = read = 0
    dropped = []
    for image in images:
        for index, hit in enumerate(image["found"]):
            if (image["name"], index) in aside:
                dropped.append(f"{image['name']}_{index}")
                continue
            kept += 1
            read += hit
    return {"symbol_recall": read / kept if kept else None, "set_aside": sorted(dropped)}


def render(
    runs: list[dict[str, Any]],
    summaries: dict[str, dict[str, dict[str, Any]]],
    args: argparse.Namespace,
    command: str,
) -> str:
    present = [r for r in runs if "absent" not in r]
    categories = sorted({c for s in summaries.values() for c in s})
    lines = [
        "## Accuracy, speed and memory: the cascade against the peers",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine_line()}",
        "",
        "Every reader runs in its own process over the same files. *Decode rate*: images",
        "whose every code was read with the exact bytes. *Box recall* (real photos with",
        "boxes only): labelled codes that a read code overlaps with IoU >= 0.5, so it",
        "counts codes found *and* decoded. *Misreads*: codes read with content that is",
        "not on the page (must be 0). *False reads*: codes read on pages without one.",
        "Peers get the page decoded full size by OpenCV (PDF pages rasterised by our loader).",
        "",
        "When each reader was measured (`--keep` reports stored runs of the same corpus and",
        "options): "
        + "; ".join(
            f"{r['reader']}: {r.get('measured_at', 'now')}{' (stored)' if r.get('stored') else ''}"
            for r in runs
        )
        + ".",
        "",
        "### Decode rate (box recall for real photos) by category",
        "",
        "| category | " + " | ".join(r["reader"] for r in present) + " |",
        "|---|" + "---|" * len(present),
    ]
    for category in categories:
        cells = []
        for run in present:
            row = summaries[run["reader"]].get(category)
            if row is None:
                cells.append("")
                continue
            value = row["decode_rate"] if row["decode_rate"] is not None else row["box_recall"]
            text = "-" if value is None else f"{100 * value:.0f}%"
            if row["misreads"] or row["false_reads"]:
                text += f" ({row['misreads'] + row['false_reads']} wrong)"
            cells.append(text)
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    audited = [
        (category, run["reader"], summaries[run["reader"]][category])
        for category in categories
        for run in present
        if summaries[run["reader"]].get(category, {}).get("symbol_recall") is not None
    ]
    if audited:
        lines += [
            "",
            "Real photos, over the labelled codes that are QR symbols at all: the audit",
            "(`python -m worker.bench.real_audit`, its rule and every verdict in",
            "worker/bench/real_audit.json) sets aside boxes whose fitted grid is sharp and",
            "right on every known module yet whose data are no Reed-Solomon codeword at full",
            "capacity, and that no peer reads (stock illustrations of QR codes).",
            "",
            "| category | reader | box recall | over QR symbols | set aside |",
            "|---|---|---|---|---|",
        ]
        for category, reader, row in audited:
            aside = row["set_aside"]
            lines.append(
                f"| {category} | {reader} | {100 * row['box_recall']:.1f}% "
                f"| {100 * row['symbol_recall']:.1f}% "
                f"| {len(aside)}{': ' + ', '.join(aside) if aside else ''} |"
            )
    lines += [
        "",
        "### Speed, memory and start-up",
        "",
        "| reader | median ms | p95 ms | p99 ms | misreads | false reads | peak RSS MB "
        "| RSS when ready MB | start-to-ready s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in present:
        times = [i["ms"] for i in run["images"]]
        rows = summaries[run["reader"]].values()
        nan = float("nan")
        lines.append(
            f"| {run['reader']} | {percentile(times, 50):.1f} | {percentile(times, 95):.1f} "
            f"| {percentile(times, 99):.1f} | {sum(r['misreads'] for r in rows)} "
            f"| {sum(r['false_reads'] for r in rows)} | {run.get('peak_rss_mb', nan):.0f} "
            f"| {run.get('ready_rss_mb', nan):.0f} | {run.get('ready_s', nan):.2f} |"
        )
    absent = [r for r in runs if "absent" in r]
    if absent:
        lines += [
            "",
            "Absent (not installed or not startable here, so not scored): "
            + "; ".join(f"{r['reader']}: {r['absent']}" for r in absent),
        ]
    for reader, cascade in summaries.items():
        if not reader.startswith("cascade"):
            continue
        # The stages that read a code for this reader, in the cascade's order where it is
        # known (a stage added later, such as the zoom, gets its column without an edit).
        seen = {name for row in cascade.values() for name in row["stages"]}
        stage_names = [name for name in STAGES if name in seen] + sorted(seen - set(STAGES))
        lines += [
            "",
            f"### Which stage read the codes: {reader}",
            "",
            "| category | " + " | ".join(stage_names) + " |",
            "|---|" + "---|" * len(stage_names),
        ]
        for category, row in cascade.items():
            total = sum(row["stages"].values()) or 1
            shares = [f"{100 * row['stages'].get(name, 0) / total:.0f}%" for name in stage_names]
            lines.append(f"| {category} | " + " | ".join(shares) + " |")
    lines += [
        "",
        "### ONNX Runtime and PyTorch",
        "",
        "The cascade rows above run the same detector weights under each runtime; what each",
        "runtime costs a worker (detector latency, memory, start-up) is measured on its own",
        "in the section *ONNX Runtime and PyTorch: what each costs a worker* below",
        "(`python -m worker.bench.runtimes`, part of `make bench`).",
        "",
        "![decode rate by category](benchmarks-decode-rate.png)",
        "![latency distributions](benchmarks-latency.png)",
    ]
    return "\n".join(lines)


def plot(
    runs: list[dict[str, Any]], summaries: dict[str, dict[str, dict[str, Any]]], folder: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    present = [r for r in runs if "absent" not in r]
    categories = sorted({c for s in summaries.values() for c in s})
    figure, axis = plt.subplots(figsize=(14, 5))
    width = 0.8 / max(1, len(present))
    for k, run in enumerate(present):
        values = []
        for category in categories:
            row = summaries[run["reader"]].get(category, {})
            value = row.get("decode_rate")
            value = row.get("box_recall") if value is None else value
            values.append(100 * (value or 0))
        axis.bar(np.arange(len(categories)) + k * width, values, width, label=run["reader"])
    axis.set_xticks(
        np.arange(len(categories)) + width * (len(present) - 1) / 2,
        categories,
        rotation=40,
        ha="right",
    )
    axis.set_ylabel("% decoded (box recall for real photos)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(folder / "benchmarks-decode-rate.png", dpi=90)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(10, 4))
    axis.boxplot([[i["ms"] for i in r["images"]] for r in present], showfliers=False)
    axis.set_xticks(range(1, len(present) + 1), [r["reader"] for r in present], rotation=20)
    axis.set_yscale("log")
    axis.set_ylabel("ms per image (log)")
    figure.tight_layout()
    figure.savefig(folder / "benchmarks-latency.png", dpi=90)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qrw bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about 10 images per category")
    parser.add_argument("--per-category", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="default: build/bench-corpus (build/bench-corpus-quick with --quick, so a quick "
        "run never regenerates the full corpus)",
    )
    parser.add_argument(
        "--real",
        type=Path,
        nargs="*",
        default=None,
        help="folders of real photos (name.txt texts, or YOLO images/+labels/)",
    )
    parser.add_argument(
        "--readers",
        nargs="+",
        default=None,
        choices=list(READERS),
        help="default: all (with --quick, all but arbez, whose ~0.7 s per image alone would "
        "take the two minutes)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="report stored runs (same corpus and options) of the readers not in --readers",
    )
    parser.add_argument("--out", type=Path, default=None, help="markdown file to update")
    args = parser.parse_args(argv)
    no_plots = plots_missing() if args.out else None
    if no_plots:
        print(f"qrw bench: {no_plots}", file=sys.stderr)
    per_category = args.per_category or (10 if args.quick else 100)
    if args.readers is None:
        args.readers = [r for r in READERS if not (args.quick and r in SLOW_READERS)]
    if args.corpus is None:
        args.corpus = Path("build/bench-corpus-quick" if args.quick else "build/bench-corpus")
    real = args.real if args.real is not None else ([DEFAULT_REAL] if DEFAULT_REAL.is_dir() else [])
    folders = [ensure_corpus(args.corpus, per_category, args.seed), *real]
    # --quick must finish in about two minutes: it samples the real photos too.
    limit = max(per_category, 30) if args.quick else None
    key = {"folders": [str(f.resolve()) for f in folders], "limit": limit, "seed": args.seed}
    key["per_category"] = per_category
    runs = []
    for name in READERS:
        if name in args.readers:
            run = run_reader(name, folders, limit)
            run["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            store_run(args.corpus, run, key)
        elif args.keep:
            run = stored_run(args.corpus, name, key)
            if run is None:
                continue
            run["stored"] = True
        else:
            continue
        runs.append(run)
    summaries = {r["reader"]: summarise(r) for r in runs if "absent" not in r}
    command = "qrw bench " + " ".join(argv if argv is not None else sys.argv[1:])
    text = render(runs, summaries, args, command.strip())
    print(text)
    if args.out:
        write_section(args.out, "accuracy", text)
        (args.out.parent / "benchmarks-accuracy.json").write_text(
            json.dumps(
                {
                    "runs": [{k: v for k, v in r.items() if k != "images"} for r in runs],
                    "summaries": summaries,
                },
                indent=2,
            )
            + "\n"
        )
        if no_plots:
            print(f"qrw bench: plots skipped: {no_plots}", file=sys.stderr)
        else:
            plot(runs, summaries, args.out.parent)
    return 0
