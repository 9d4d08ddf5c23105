"""What parsing a code's payload costs: `worker.schemes.parse` per code, in microseconds.

    python -m worker.bench.schemes [--count N] [--repeat R] [--out docs/benchmarks.md]

Sets: each payload maker of the synthetic generator (models/synth/payloads.py), i.e. every
invoice/payment scheme it emits and the texts and bytes that are no scheme; the mixed
payload kinds as `make_payload` draws them; micro-QR references; and the digest's
synthetic examples. Every code is parsed `--repeat` times and its median kept; the table
gives mean, p50 and p95 over the codes. The target (issue 12) is a mean under 100 µs per
code, and far less for texts that are no scheme. A reference operation (`json.dumps` of a
typical code record, which every result pays anyway) is timed in the same run, so the
figures can be read against the machine's speed at the time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from models.synth.digest_examples import DIGEST_EXAMPLES
from models.synth.payloads import _MAKERS, PAYLOAD_KINDS, make_payload, micro_payload
from worker.bench.report import machine_line, percentile, write_section
from worker.schemes import parse

COMMAND = "python -m worker.bench.schemes"
Code = tuple[str | None, bytes]

_REFERENCE_RECORD = {
    "text": "https://www2.agenciatributaria.gob.es/wlpl/TIKE-CONT/ValidarQR?nif=B12345674",
    "format": "QRCode",
    "quad": [[10.5, 20.25], [110.5, 20.25], [110.5, 120.25], [10.5, 120.25]],
    "page": 0,
    "valid": True,
}


def _as_code(value: str | bytes) -> Code:
    if isinstance(value, bytes):
        # A decoder gives byte-mode content as bytes and a guessed (Latin-1) text.
        return value.decode("latin-1"), value
    return value, value.encode("utf-8")


def code_sets(count: int, seed: int = 1) -> dict[str, list[Code]]:
    rng = np.random.default_rng(seed)
    sets: dict[str, list[Code]] = {}
    for kind in PAYLOAD_KINDS:
        for maker in _MAKERS[kind]:
            name = f"{kind}: {maker.__name__.lstrip('_')}"
            sets[name] = [_as_code(maker(rng)) for _ in range(count)]
    mixed = [make_payload(rng) for _ in range(count * 5)]
    sets["all kinds, as make_payload draws them"] = [
        _as_code(p.data if not p.is_text else p.data.decode("utf-8")) for p in mixed
    ]
    sets["micro-QR references (no scheme)"] = [
        _as_code(micro_payload(rng).data.decode("ascii")) for _ in range(count)
    ]
    return sets


def _digest_examples() -> list[Code]:
    return [_as_code(text) for text, _ in DIGEST_EXAMPLES.values()]


def time_each(
    codes: list[Code], fn: Callable[[str | None, bytes], object], repeat: int
) -> list[float]:
    """Per code, the median over `repeat` calls, in microseconds."""
    out = []
    clock = time.perf_counter_ns
    for text, data in codes:
        runs = []
        for _ in range(repeat):
            t = clock()
            fn(text, data)
            runs.append(clock() - t)
        out.append(statistics.median(runs) / 1000)
    return out


def measure(sets: dict[str, list[Code]], repeat: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for name, codes in sets.items():
        for text, data in codes:  # warm-up: first-call costs are start-up, not parsing
            parse(text, data)
        micros = time_each(codes, parse, repeat)
        schemes = sorted({p.scheme for t, d in codes if (p := parse(t, d)) is not None})
        claimed = sum(parse(t, d) is not None for t, d in codes)
        rows.append(
            {
                "set": name,
                "codes": len(codes),
                "claimed": claimed,
                "schemes": ", ".join(schemes) or "none",
                "mean_us": round(statistics.fmean(micros), 2),
                "p50_us": round(percentile(micros, 50), 2),
                "p95_us": round(percentile(micros, 95), 2),
            }
        )
    return rows


def reference_us(repeat: int) -> float:
    dumps = json.dumps
    runs = time_each([(None, b"")] * 200, lambda _t, _d: dumps(_REFERENCE_RECORD), repeat)
    return round(statistics.median(runs), 2)


def render(rows: list[dict[str, object]], reference: float, count: int, repeat: int) -> str:
    lines = [
        "## Payload parsing cost",
        "",
        f"Command: `{COMMAND} --count {count} --repeat {repeat}`  ",
        f"Machine: {machine_line()}",
        "",
        "`worker.schemes.parse(text, data)` per code: the median of the repeats, then the",
        "mean, median and 95th percentile over the codes, in microseconds. `claimed`: codes",
        "recognised as a scheme. Target: a mean under 100 µs per code, far less for texts",
        "that are no scheme. Reference in the same run: `json.dumps` of a code record,",
        f"{reference} µs.",
        "",
        "| set | codes | claimed | schemes | mean µs | p50 µs | p95 µs |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['codes']} | {r['claimed']} | {r['schemes']} "
            f"| {r['mean_us']} | {r['p50_us']} | {r['p95_us']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="codes per maker")
    parser.add_argument("--repeat", type=int, default=15, help="timed calls per code")
    parser.add_argument("--out", type=Path, default=None, help="markdown file to update")
    args = parser.parse_args(argv)

    sets = code_sets(args.count)
    examples = _digest_examples()
    if examples:
        sets["the digest's synthetic examples"] = examples
    rows = measure(sets, args.repeat)
    text = render(rows, reference_us(args.repeat), args.count, args.repeat)
    print(text)
    if args.out:
        write_section(args.out, "schemes", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
