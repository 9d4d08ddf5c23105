"""What a work unit costs: each kind of step's units a charge and per amount (worker.engine.
deadline's WORK_COSTS), calibrated to the scanning thread's CPU time on an idle machine.

    python -m worker.bench.work_units --free [--every N] [FOLDER ...]   # 1: each step's shape
    python -m worker.bench.work_units [--every N] [FOLDER ...]          # 2: scaled to the scopes
    # default: every 4th image of build/bench-corpus and qr-photos-val

1. `--free` prices every kind at nothing (no work budget binds) and traces every charge
   (worker.engine.deadline.spend) with the CPU time the thread took since the charge before
   it. Each kind's cost is a line through its times, a part a charge plus a part per amount
   (a zxing-cpp call costs a fixed part, its passes a part per pixel): least absolute
   deviations, refitted without the times over OUTLIER_RATE times the line, since the first
   charge after uncharged work (an image decoded, a detector's inference) carries it. It
   prints that table.
2. With the table in place, the budgets bind as in a scan, and each budgeted scope (each
   decode, each detection the detector stages read, each fitted outline read, each place the
   zoom reads, each page's Micro QR look) is measured: its CPU time and the units each group
   of kinds (DECODER_KINDS, the soft decoder's and the outline fit's steps, and the image
   operations) charged in it. The decoder's kinds are scaled to the decodes' CPU a unit; the
   image operations to what the other scopes' CPU leaves once their decoder's units are
   priced so: what a unit costs where budgets count it, glue included (a regression by kind
   over-fits: kinds that always come together get prices below nothing, and one by group
   over all scopes counts a decode both alone and in its detection). It prints the scopes'
   CPU a unit and the table rescaled; run again with that, the scopes should show about
   1 ms a unit.

Run it on an idle machine: a unit is a millisecond of CPU of this machine, idle.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from worker.bench import sources
from worker.bench.accuracy import DEFAULT_REAL
from worker.bench.tail import DEFAULT_CORPUS
from worker.engine import Engine, deadline, qr
from worker.engine.stages import detect, micro, outlined, zoom
from worker.settings import Settings

# A traced time over this many times its kind's line is left out (see above).
OUTLIER_RATE = 10.0
# The kinds the soft decoder and the outline fit charge (worker.engine.qr, outline.py);
# every other kind is an image operation (zxing-cpp, warps, filters, deconvolution).
DECODER_KINDS = frozenset(
    {
        "binarise",
        "binarise smoothed",
        "finder search",
        "pattern search",
        "modules",
        "stream modules",
        "darkest modules",
        "equalised modules",
        "timing modules",
        "outline modules",
        "erasure set",
        "bend rectify",
        "bend match",
        "wrap fit",
        "blur",
        "resize",
    }
)


class Trace:
    """Every charge's kind, amount and the thread's CPU since the charge before it, and the
    units by kind charged inside each budgeted scope."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)  # ms
        self.amounts: dict[str, list[float]] = defaultdict(list)
        self.last = time.thread_time()
        self.open: list[dict[str, float]] = []
        self.scopes: list[tuple[str, float, dict[str, float]]] = []  # name, CPU ms, units

    def __call__(self, kind: str, amount: float) -> None:
        now = time.thread_time()
        self.times[kind].append((now - self.last) * 1000.0)
        self.amounts[kind].append(amount)
        each, per_amount = deadline.WORK_COSTS[kind]
        for scope in self.open:
            scope[kind] = scope.get(kind, 0.0) + each + per_amount * amount
        # The tracer's own time is left to no step.
        self.last = time.thread_time()

    def restart(self) -> None:
        self.last = time.thread_time()

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def measured(*args: Any, **kwargs: Any) -> Any:
            units: dict[str, float] = {}
            self.open.append(units)
            cpu = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.scopes.append((name, (time.thread_time() - cpu) * 1000.0, units))
                self.open.remove(units)

        return measured

    def patch(self) -> None:
        qr.decode = self.wrap("decode", qr.decode)  # type: ignore[assignment]
        outlined.read = self.wrap("outline read", outlined.read)  # type: ignore[assignment]
        read = detect.DetectorStage._read
        detect.DetectorStage._read = self.wrap("detection", read)  # type: ignore[method-assign]
        zoom.ZoomStage._read = self.wrap("zoom place", zoom.ZoomStage._read)  # type: ignore[method-assign]
        micro.look = self.wrap("micro look", micro.look)  # type: ignore[assignment]

    def steps(self) -> dict[str, tuple[float, float, int, int, float]]:
        """Each kind's (ms a charge, ms per amount, charges kept, charges, ms kept)."""
        out = {}
        for kind, listed in self.times.items():
            times = np.array(listed)
            amounts = np.array(self.amounts[kind], np.float64)
            keep = np.ones(len(times), bool)
            each, rate = 0.0, float(np.median(times / np.maximum(amounts, 1.0)))
            for _ in range(4):
                predicted = np.maximum(each + rate * amounts, 1e-3)
                keep = times <= OUTLIER_RATE * predicted
                each, rate = _line(times[keep], amounts[keep])
            out[kind] = (each, rate, int(keep.sum()), len(times), float(times[keep].sum()))
        return out

    def scope_report(self) -> list[str]:
        lines = ["| scope | count | CPU ms | work units | CPU ms a unit |", "|---|---|---|---|---|"]
        for name in sorted({s[0] for s in self.scopes}):
            mine = [s for s in self.scopes if s[0] == name]
            cpu = sum(s[1] for s in mine)
            units = sum(sum(s[2].values()) for s in mine)
            lines.append(
                f"| {name} | {len(mine)} | {cpu:.0f} | {units:.0f} "
                f"| {cpu / units if units else float('nan'):.3f} |"
            )
        return lines

    def multipliers(self) -> tuple[float, float]:
        """The decoder's kinds' and the image operations' CPU ms a unit in the scopes."""
        decodes = [s for s in self.scopes if s[0] == "decode"]
        decoder = sum(s[1] for s in decodes) / sum(sum(s[2].values()) for s in decodes)
        others = [s for s in self.scopes if s[0] != "decode"]
        cpu = sum(s[1] for s in others)
        in_decoder = sum(u for s in others for k, u in s[2].items() if k in DECODER_KINDS)
        in_image = sum(u for s in others for k, u in s[2].items() if k not in DECODER_KINDS)
        return decoder, (cpu - decoder * in_decoder) / in_image


def _line(times: np.ndarray, amounts: np.ndarray) -> tuple[float, float]:
    """The least-absolute-deviations (a charge, per amount) through the times, neither
    negative (iteratively reweighted least squares)."""
    if len(times) == 0:
        return 0.0, 0.0
    if np.ptp(amounts) == 0:
        return float(np.median(times)), 0.0
    columns = np.stack([amounts, np.ones_like(amounts)], axis=1)
    weights = np.ones_like(times)
    rate, each = 0.0, 0.0
    for _ in range(30):
        root = np.sqrt(weights)[:, None]
        (rate, each), *_ = np.linalg.lstsq(columns * root, times * root[:, 0], rcond=None)
        if each < 0:
            each = 0.0
            rate = float(np.median(times / np.maximum(amounts, 1e-9)))
        rate = max(0.0, float(rate))
        weights = 1.0 / np.maximum(np.abs(times - each - rate * amounts), 1e-3)
    return float(each), float(rate)


def _table(costs: dict[str, tuple[float, float]], kept: Collection[str] = ()) -> list[str]:
    return [
        "WORK_COSTS = {",
        *(
            f'    "{kind}": ({each:.3g}, {rate:.3g}),'
            + ("  # not charged in this run: its price as it was" if kind in kept else "")
            for kind, (each, rate) in sorted(costs.items())
        ),
        "}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.bench.work_units", description=__doc__)
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--free", action="store_true")
    args = parser.parse_args(argv)
    folders = args.folders or [f for f in (DEFAULT_CORPUS, DEFAULT_REAL) if f.is_dir()]
    priced = dict(deadline.WORK_COSTS)
    if args.free:
        deadline.WORK_COSTS = defaultdict(lambda: (0.0, 0.0))  # type: ignore[assignment]
    engine = Engine(Settings.from_env())
    engine.warm_up()
    trace = Trace()
    trace.patch()
    deadline.tracer = trace
    started = time.process_time()
    images = 0
    try:
        for folder in folders:
            for item in itertools.islice(sources.detect(folder), 0, None, args.every):
                data = item.path.read_bytes()
                trace.restart()
                engine.scan(data)
                images += 1
    finally:
        deadline.tracer = None
    print(
        f"{images} images, {time.process_time() - started:.0f} s of CPU, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    if args.free:
        steps = trace.steps()
        print("| kind | ms a charge | ms per amount | charges kept / all | ms kept |")
        print("|---|---|---|---|---|")
        for kind, (each, rate, kept, charges, spent) in sorted(
            steps.items(), key=lambda kv: -kv[1][4]
        ):
            print(f"| {kind} | {each:.3g} | {rate:.3g} | {kept} / {charges} | {spent:.0f} |")
        # A kind no scan here charged (one only a benchmark's read pays, or no default budget
        # holds) keeps its price: the table is pasted whole over WORK_COSTS.
        unseen = {kind: cost for kind, cost in priced.items() if kind not in steps}
        fitted = {k: v[:2] for k, v in steps.items()}
        print("\n".join(["", *_table({**unseen, **fitted}, kept=set(unseen))]))
        return 0
    print("\n".join(trace.scope_report()))
    decoder, image = trace.multipliers()
    print(f"\nCPU ms a unit in the scopes: the decoder's kinds {decoder:.3f}, the rest {image:.3f}")
    scaled = {
        kind: (each * factor, rate * factor)
        for kind, (each, rate) in deadline.WORK_COSTS.items()
        for factor in [decoder if kind in DECODER_KINDS else image]
    }
    print("\n".join(["", *_table(scaled)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
