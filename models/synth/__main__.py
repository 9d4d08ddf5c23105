"""Write a synthetic sample set to a folder.

Each sample becomes ``name.ext`` plus ``name.json`` (ground truth) and, when
it holds exactly one text code, ``name.txt`` with the expected text: the
layout zxing's own test images use, so the same folder feeds either tool.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from .pdfs import ALL_KINDS, Sample, any_sample_set


def write_sample(sample: Sample, outdir: Path) -> list[Path]:
    stem = outdir / sample.name
    written = [stem.with_suffix(f".{sample.extension}"), stem.with_suffix(".json")]
    written[0].write_bytes(sample.data)
    written[1].write_text(
        json.dumps(sample.ground_truth(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    if len(sample.codes) == 1 and (text := sample.codes[0].text) is not None:
        txt = stem.with_suffix(".txt")
        # newline="" keeps CR LF inside payloads (Swiss QR-bills) byte-exact.
        with txt.open("w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        written.append(txt)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.synth", description=__doc__.splitlines()[0]
    )
    parser.add_argument("outdir", type=Path, help="folder to write into (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="set seed (default 0)")
    parser.add_argument("--count", type=int, default=20, help="number of samples (default 20)")
    parser.add_argument(
        "--kind", choices=ALL_KINDS, default="mixed", help="sample kind (default mixed)"
    )
    args = parser.parse_args(argv)
    if args.seed < 0 or args.count < 0:
        parser.error("--seed and --count must not be negative")
    args.outdir.mkdir(parents=True, exist_ok=True)
    samples = any_sample_set(args.seed, args.count, args.kind)
    for sample in samples:
        write_sample(sample, args.outdir)
    codes = sum(len(sample.codes) for sample in samples)
    print(f"wrote {len(samples)} samples with {codes} codes to {args.outdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
