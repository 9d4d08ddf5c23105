"""Two source trees scanning the same images in one session, image by image, so a change of
the machine's speed during the run touches both alike.

    python -m worker.bench.ab OUT.json TREE_A TREE_B [--every N] [--only NAME ...] [--hog]
        [FOLDER ...]                         # default: build/bench-corpus and qr-photos-val
    python -m worker.bench.ab --compare OUT.json [OTHER.json]

Each tree gets a process of its own (its tree first on PYTHONPATH, Settings.from_env(),
warmed up) that scans each image once (Engine.scan on the file's bytes), in turn with the
other's: A then B on one image, B then A on the next. Each record: the codes read (their
bytes), the score against the image's truth (worker.bench.scoring, as `qrw bench` scores),
whether the scan said `complete` and the places it left unread (ScanResult.unread; None
from a tree before them), and the scanning thread's CPU time. `--hog` runs a busy loop a
core (nice 0) throughout. `--compare` prints the codes read per category, misreads, false
reads, CPU median and p95 for each side, every image whose reads differ and every one
whose `complete` or unread places differ; given two runs, it compares the first side of
each (a determinism check: one tree, idle and beside the hog).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_FOLDERS = (Path("build/bench-corpus"), Path("../shared/datasets/qr-photos-val"))


def _serve(folders: list[Path]) -> int:
    """The per-tree process: reads an image index a line, writes its record a line."""
    from worker.bench import scoring, sources
    from worker.bench.readers import Read
    from worker.engine import Engine, deadline
    from worker.settings import Settings

    # A tree from before work units has no counter: its scans' units are None.
    work_done = getattr(deadline, "work_done", None)

    items = [item for folder in folders for item in sources.detect(folder)]
    engine = Engine(Settings.from_env())
    engine.warm_up()
    print(json.dumps({"ready": len(items)}), flush=True)
    for line in sys.stdin:
        item = items[int(line)]
        data = item.path.read_bytes()
        units = work_done() if work_done else None
        cpu, clock = time.thread_time(), time.perf_counter()
        result = engine.scan(data)
        cpu_ms = (time.thread_time() - cpu) * 1000.0
        wall_ms = (time.perf_counter() - clock) * 1000.0
        if work_done and units is not None:
            units = work_done() - units
        reads = [Read(c.data, c.text, c.quad, c.stage) for c in result.codes]
        score = scoring.score(reads, item.truth)
        record = {
            "name": item.name,
            "category": item.category,
            "codes": sorted(base64.b64encode(c.data).decode() for c in result.codes),
            "expected": score.expected,
            "correct": score.correct,
            "misreads": score.misreads,
            "false_reads": score.false_reads,
            "complete": result.complete,
            "unread": _unread(result),
            "cpu_ms": cpu_ms,
            "wall_ms": wall_ms,
            "work_units": units,
        }
        print(json.dumps(record), flush=True)
    return 0


def _unread(result: Any) -> list[dict[str, Any]] | None:
    """The scan's unread places as its JSON says them, sorted; None from a tree before them."""
    unread = getattr(result, "unread", None)
    if unread is None:
        return None
    return sorted((u.to_dict() for u in unread), key=lambda u: json.dumps(u, sort_keys=True))


def _start(tree: Path, folders: list[Path]) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    # This file, run from the tree's root (the tree under test need not have it; as a script
    # its folder would come first on sys.path, and its modules' names would shadow packages).
    serve = (
        f"import runpy, sys; sys.argv[1:] = ['--serve', *{[str(f.resolve()) for f in folders]!r}];"
        f" runpy.run_path({str(Path(__file__).resolve())!r}, run_name='__main__')"
    )
    process = subprocess.Popen(
        [str(tree / ".venv/bin/python"), "-c", serve],
        cwd=tree,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    json.loads(process.stdout.readline())
    return process


def _scan(process: subprocess.Popen[str], index: int) -> dict[str, Any]:
    assert process.stdin is not None
    assert process.stdout is not None
    process.stdin.write(f"{index}\n")
    process.stdin.flush()
    return dict(json.loads(process.stdout.readline()))


def _spin() -> None:
    while True:
        pass


def run(
    out: Path, trees: Sequence[Path], folders: list[Path], every: int, only: set[str], hog: bool
) -> None:
    import multiprocessing

    from worker.bench import sources

    hogs = [
        multiprocessing.get_context("fork").Process(target=_spin, daemon=True)
        for _ in range(os.cpu_count() or 1 if hog else 0)
    ]
    for process in hogs:
        process.start()

    items = [item for folder in folders for item in sources.detect(folder)]
    chosen = [i for i, item in enumerate(items) if (item.name in only if only else i % every == 0)]
    processes = [_start(tree, folders) for tree in trees]
    sides: list[list[dict[str, Any]]] = [[] for _ in trees]
    started = time.time()
    for n, index in enumerate(chosen):
        order = range(len(trees)) if n % 2 == 0 else reversed(range(len(trees)))
        for side in order:
            sides[side].append(_scan(processes[side], index))
    for process in processes:
        assert process.stdin is not None
        process.stdin.close()
        process.wait()
    load = os.getloadavg()[0]
    for process in hogs:
        process.kill()
        process.join()
    out.write_text(
        json.dumps(
            {
                "trees": [str(t) for t in trees],
                "started": started,
                "seconds": time.time() - started,
                "hog": hog,
                "load_at_end": load,
                "sides": sides,
            }
        )
    )


def _percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def compare(path: Path, other: Path | None = None) -> str:
    run = json.loads(path.read_text())
    a, b = run["sides"]
    names = [f"{run['trees'][0]}", f"{run['trees'][1]}"]
    if other is not None:
        second = json.loads(other.read_text())
        b = second["sides"][0]
        names = [f"{path} side A (hog {run['hog']})", f"{other} side A (hog {second['hog']})"]
    lines = [f"{names[0]} (A) against {names[1]} (B), {len(a)} images"]
    lines += [
        "",
        "| category | images | codes | read A | read B | misreads A / B | false reads A / B "
        "| CPU median A / B | CPU p95 A / B |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by_category: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = defaultdict(list)
    for ra, rb in zip(a, b, strict=True):
        by_category[ra["category"]].append((ra, rb))
    by_category["all"] = [pair for pairs in list(by_category.values()) for pair in pairs]
    for category, pairs in sorted(by_category.items()):
        side_a, side_b = [p[0] for p in pairs], [p[1] for p in pairs]

        def total(side: list[dict[str, Any]], key: str) -> int:
            return sum(int(r[key]) for r in side)

        def cpu(side: list[dict[str, Any]], share: float) -> float:
            return _percentile([r["cpu_ms"] for r in side], share)

        lines.append(
            f"| {category} | {len(pairs)} | {total(side_a, 'expected')} "
            f"| {total(side_a, 'correct')} | {total(side_b, 'correct')} "
            f"| {total(side_a, 'misreads')} / {total(side_b, 'misreads')} "
            f"| {total(side_a, 'false_reads')} / {total(side_b, 'false_reads')} "
            f"| {cpu(side_a, 0.5):.1f} / {cpu(side_b, 0.5):.1f} "
            f"| {cpu(side_a, 0.95):.1f} / {cpu(side_b, 0.95):.1f} |"
        )
    counted = [
        (ra, rb)
        for ra, rb in zip(a, b, strict=True)
        if ra.get("work_units") is not None and rb.get("work_units") is not None
    ]
    if counted:
        same = sum(ra["work_units"] == rb["work_units"] for ra, rb in counted)
        lines += ["", f"Work units the same on {same} of {len(counted)} images."]
    differ = [(ra, rb) for ra, rb in zip(a, b, strict=True) if ra["codes"] != rb["codes"]]
    lines += ["", f"{len(differ)} images whose codes differ:"]
    for ra, rb in differ:
        lines.append(
            f"- {ra['name']} ({ra['category']}): A {len(ra['codes'])} codes, {ra['correct']} "
            f"right; B {len(rb['codes'])}, {rb['correct']} right"
        )
    # Records from before `complete` was kept say nothing about it: they are not compared.
    kept = [(ra, rb) for ra, rb in zip(a, b, strict=True) if "complete" in ra and "complete" in rb]
    settled = [
        (ra, rb)
        for ra, rb in kept
        if ra["complete"] != rb["complete"]
        or (None not in (ra["unread"], rb["unread"]) and ra["unread"] != rb["unread"])
    ]
    lines += ["", f"{len(settled)} of {len(kept)} images whose `complete` or unread places differ:"]
    for ra, rb in settled:
        lines.append(
            f"- {ra['name']} ({ra['category']}): A complete {ra['complete']}, "
            f"{_count(ra['unread'])} unread; B complete {rb['complete']}, "
            f"{_count(rb['unread'])} unread"
        )
    return "\n".join(lines)


def _count(unread: list[Any] | None) -> str:
    return "?" if unread is None else str(len(unread))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--serve"]:
        return _serve([Path(f) for f in args[1:]])
    if args[:1] == ["--compare"]:
        print(compare(Path(args[1]), Path(args[2]) if len(args) > 2 else None))
        return 0
    parser = argparse.ArgumentParser(prog="python -m worker.bench.ab", description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("tree_a", type=Path)
    parser.add_argument("tree_b", type=Path)
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=[])
    parser.add_argument("--hog", action="store_true")
    parsed = parser.parse_args(args)
    folders = parsed.folders or [f for f in DEFAULT_FOLDERS if f.is_dir()]
    run(
        parsed.out,
        [parsed.tree_a.resolve(), parsed.tree_b.resolve()],
        folders,
        parsed.every,
        set(parsed.only),
        parsed.hog,
    )
    print(compare(parsed.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
