"""What became of each labelled code of a real-photo set: read, located and unread, or never
located (issue 19: "located-but-unread at most 10" on qr-photos-val).

    python -m worker.bench.located [FOLDER]    # default ../shared/datasets/qr-photos-val

The photos' truth is boxes only. A labelled code is *read* when a read code overlaps it with
IoU 0.5 or more (worker.bench.scoring, as the accuracy table's box recall); *located and
unread* when it is not read and an unread region of the result (ScanResult.unread, any reason
but `ruled_out`) overlaps its box; *never located* otherwise. A page whose result says
`complete` with a labelled code never located is counted too: completeness promises that no
located code was left unread, and a code nothing located is the one way it can still miss.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from worker.bench import scoring, sources
from worker.bench.accuracy import DEFAULT_REAL
from worker.bench.readers import Read
from worker.engine import Engine
from worker.engine.cascade import Box, bounds
from worker.engine.results import UnreadReason
from worker.settings import Settings


@dataclass
class Tally:
    labelled: int = 0
    read: int = 0
    located: int = 0
    never: int = 0
    complete_with_a_miss: int = 0

    def add(
        self, boxes: Sequence[Box], found: Sequence[bool], unread: Sequence[Box], complete: bool
    ) -> None:
        """One photo: its labelled boxes, which of them were read, the unread regions of its
        result (not `ruled_out`) and whether the result said complete."""
        for box, was_read in zip(boxes, found, strict=True):
            self.labelled += 1
            if was_read:
                self.read += 1
            elif any(_overlap(box, region) for region in unread):
                self.located += 1
            else:
                self.never += 1
                self.complete_with_a_miss += complete


def _overlap(a: Box, b: Box) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def run(folder: Path, engine: Engine) -> Tally:
    tally = Tally()
    for item in sources.detect(folder):
        result = engine.scan(item.path.read_bytes())
        reads = [Read(c.data, c.text, c.quad, c.stage) for c in result.codes]
        score = scoring.score(reads, item.truth)
        unread = [bounds(u.quad) for u in result.unread if u.reason != UnreadReason.RULED_OUT]
        tally.add(item.truth.boxes, score.found, unread, result.complete)
    return tally


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.bench.located", description=__doc__)
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_REAL)
    args = parser.parse_args(argv)
    engine = Engine(Settings.from_env())
    engine.warm_up()
    tally = run(args.folder, engine)
    print(
        f"{args.folder.name}: {tally.labelled} labelled codes; read {tally.read}, located and "
        f"unread {tally.located}, never located {tally.never}; pages complete with a labelled "
        f"code never located: {tally.complete_with_a_miss} (load {os.getloadavg()[0]:.1f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
