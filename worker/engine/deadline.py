"""A monotonic time budget shared by every stage of one scan, and the counter of the work
budgets inside it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# Work budgets (how much effort a place or a page earns: the soft decoder's limit per place,
# the late variants, the fitted outlines and the zoom's reads per page) keep a page of decoys
# from taking a second; the scan's Deadline, on the wall clock, bounds how long a scan takes.
# They are counted in work done, not in time: each costly step charges the work units it
# costs (spend, below), a deterministic function of what it worked on (pixels warped, filtered
# or searched, grids fitted and sampled, Reed-Solomon codewords corrected), so the same image
# earns the same effort, and gives the same result, on any machine at any load. Counted in
# the scanning thread's CPU time, as before, a busy 2-core machine (caches, SMT, frequency)
# stretched it: the same tree scanned the corpus twice at a load of 4-7 and read a different
# number of codes on 6 of 1,850 images (tests/test_work_budgets.py).
#
# A work unit is about a millisecond of the scanning thread's CPU on the 2-core development
# machine at idle, so each budget, in units, allows about the work its milliseconds allowed.
# WORK_COSTS gives each kind of step (named where it is charged) its units a charge and per
# amount (pixels, modules, codewords), calibrated by worker.bench.work_units (its docstring
# says how) over every 4th image of build/bench-corpus and qr-photos-val (463), 2026-12-07
# 10:09-10:12 UTC at a load of 1.0-1.6: `--free`, then twice without ("finder rings" added at
# 10:40, its `--free` line scaled as the other image operations were). Checked at 10:40 (load
# 0.7-1.1), the CPU a unit took in what the budgets bound: 0.99 ms in the decodes, 0.97 in
# the detector stages' reads of a detection, 1.03 in the Micro QR looks, 0.90 in the fitted
# outline reads and 1.05 in the zoom's places; two runs of one table differ by about 5% (the
# machine's speed, not the work).
WORK_COSTS: dict[str, tuple[float, float]] = {
    "bend match": (0.771, 3.68e-05),
    "bend rectify": (0.0364, 2.68e-05),
    "wrap fit": (0.86, 0.0),
    "binarise": (0.0432, 1.59e-06),
    "binarise smoothed": (0.308, 3.64e-06),
    "blob": (0.0836, 2.95e-06),
    "blur": (0.501, 1.66e-06),
    "cepstrum": (0, 2.44e-05),
    "clahe": (0.0598, 4.7e-06),
    "darkest modules": (0.0719, 0.000573),
    "equalised modules": (0.0854, 2.7e-05),
    "erasure set": (0.0542, 0.00116),
    "finder rings": (0.0372, 8.5e-06),
    "finder search": (0.345, 2.35e-06),
    "median": (0.0206, 1.64e-07),
    "modules": (0, 0.000229),
    "outline modules": (0.0975, 1.36e-05),
    "pattern search": (0.13, 0.000112),
    # A born-digital page's region rendered alone (stages.born_digital.render_region): inside
    # no budget of the default cascade, so not in the calibration; pypdfium2 in this process,
    # 10 invoices at 2x and 4x (9.5 Mpx), took 1.4e-05 ms a pixel.
    "render": (0.0, 1.4e-05),
    "resize": (0, 2.43e-06),
    "shake": (0.244, 2.44e-06),
    "stream modules": (0.333, 0.000149),
    "threshold": (0, 3.22e-06),
    "timing modules": (0.201, 2.81e-05),
    "unsharp": (0.131, 2.2e-06),
    "warp": (0.148, 8.45e-06),
    "wiener": (0, 3.04e-05),
    "zxing FixedThreshold+invert": (0.0289, 6.62e-07),
    "zxing GlobalHistogram+invert+downscale": (0.0134, 7.66e-07),
    "zxing LocalAverage": (0.184, 1.02e-06),
    # Read in no budget of the cascade (worker.bench.pdf_floor's lean read), so not in the
    # calibration: two plain passes, as an inverted pass costs about one more (work_kind).
    "zxing LocalAverage+invert": (0.368, 2.04e-06),
    "zxing LocalAverage+invert+downscale": (0, 3.76e-06),
}


# Charges are whole multiples of 1/_GRAIN units: the thread's total is then exact in a float
# (to 2^43 units, centuries of CPU), so the work between two readings is the same whatever
# the thread did before them (summed in floats, 29.1473202 units of a scan came out as
# 29.147320200000046 after other scans).
_GRAIN = 1024


class _Work(threading.local):
    done = 0.0


_work = _Work()
# The calibration's hook (worker.bench.work_units): called with every charge's kind and
# amount. None in a scan.
tracer: Callable[[str, float], None] | None = None


def spend(kind: str, amount: float) -> None:
    """Charge the calling thread for `amount` of a kind of work WORK_COSTS prices."""
    if tracer is not None:
        tracer(kind, amount)
    each, per_amount = WORK_COSTS[kind]
    _work.done += round((each + per_amount * amount) * _GRAIN) / _GRAIN


def work_done() -> float:
    """The work units the calling thread has been charged so far: a budget is the difference
    between two readings, as a CPU time budget was between two readings of its clock."""
    return _work.done


class Deadline:
    def __init__(self, budget_ms: float | None) -> None:
        self.started = time.perf_counter()
        self.budget_ms = budget_ms if budget_ms and budget_ms > 0 else None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0

    def remaining_ms(self) -> float:
        if self.budget_ms is None:
            return float("inf")
        return self.budget_ms - self.elapsed_ms()

    def expired(self) -> bool:
        return self.remaining_ms() <= 0
