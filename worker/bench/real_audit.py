"""Which labelled codes of a real-photo set are QR symbols at all (issue 19).

    python -m worker.bench.real_audit [FOLDER] [--peers PEERS.json] [--out real_audit.json]
    python -m worker.bench.real_audit peers [FOLDER] --out PEERS.json   # under a Python with
        # opencv-contrib 4.x (WeChat's CNN decoder), pyzbar and zxing-cpp

Some labelled boxes of qr-photos-val are stock illustrations of QR codes (pay-here icons,
clip art): finder patterns and a module texture, but no Reed-Solomon codeword behind them,
so no reader can ever read them. The audit sets a box aside only on evidence that does not
depend on our cascade reading it:

1. A module grid that fits the symbol, from three finder patterns (as our decoder finds
   them, with their corners for perspective and every alignment pattern of the version),
   every size within two versions of the finder spacing. Its *known-module fit* (finders,
   separators, timing, alignment: the modules every symbol of the version shares) must be
   at least `GRID_FIT`: a wrong size or pitch gets them right by chance (about half). The
   finders must be nearly square to each other (`SKEW`): in strong perspective a grid may
   be off at its far corner for reasons of ours.
2. Sharp enough to judge: the median module confidence (how far each module's value is
   from the local threshold, in half-contrasts) at least `SHARP`, so a sampled module is
   rarely wrong.
3. On such a grid, the data do not form Reed-Solomon codewords: for the format both copies
   name (and the mirrored reading), some block fails to correct even at the code's full
   capacity (errors up to half the parity, and again with the least confident half of the
   parity erased) -- a genuine symbol sampled this cleanly corrects with plenty to spare.
4. No peer reads it: zxing-cpp (1-4x upscaled, inverted too), WeChat's CNN decoder, pyzbar.

The timing fit and the two format copies' distances are recorded beside each verdict.
A box that fails any step (no grid fits, too blurred or skewed to judge, a peer reads it)
counts as genuine: when in doubt, a code counts. Checked against the peers: without the
peer step, the rule sets aside none of the 167 boxes a peer reads (qr-photos-val,
2026-12-06). `qrw bench` reports the plain box recall and the recall over the genuine
boxes, with how many were set aside.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AUDIT_FILE = Path(__file__).with_name("real_audit.json")

# Share of the known modules a grid must sample right to be taken as the symbol's grid.
GRID_FIT = 0.95
# Median module confidence for the sampling to be trusted module by module.
SHARP = 0.6
# Finder spacing at most this far from a square (side ratio - 1 + |cos|): the grid is fitted
# through the finders (and alignment patterns), so in perspective its far corner may be a
# module off and the data wrong for reasons of ours, not the symbol's.
SKEW = 0.08
# Margin around a labelled box when cropping it (fraction of its larger side).
_MARGIN = 0.15
# Crops are resampled to this larger side before the grid search.
_WORK_SIDE = 480


@dataclass(frozen=True, slots=True)
class GridEvidence:
    geometry: str  # "finders"
    size: int
    skew: float  # finder spacing: longer / shorter side - 1, plus |cos| of their angle
    known_fit: float
    timing_fit: float
    confidence: float
    format_distances: tuple[int, int]  # each copy's distance to its nearest codeword
    copies_agree: bool  # both copies nearest the same codeword, each within 3
    rs_blocks_failed: str  # e.g. "2/2" for the best format reading, "" when no format
    rs_corrects: bool  # some format reading corrects every block at full capacity


def labelled_boxes(folder: Path) -> dict[str, list[tuple[float, float, float, float]]]:
    from worker.bench.sources import yolo_folder

    return {item.name: list(item.truth.boxes) for item in yolo_folder(folder)}


def _image(folder: Path, stem: str) -> Path:
    return next(p for p in (folder / "images").iterdir() if p.stem == stem)


def _crop(image: Any, box: tuple[float, float, float, float]) -> Any:
    x0, y0, x1, y1 = box
    margin = _MARGIN * max(x1 - x0, y1 - y0)
    h, w = image.shape[:2]
    return image[
        max(0, int(y0 - margin)) : min(h, int(y1 + margin)),
        max(0, int(x0 - margin)) : min(w, int(x1 + margin)),
    ]


def _full_capacity(dark: Any, confidence: Any, version: int, level: str, mask: int) -> int:
    """How many blocks fail Reed-Solomon at full capacity (no margin)."""
    import numpy as np
    import reedsolo

    from worker.engine.qr import codewords

    stream, conf = codewords.stream(dark, confidence, version, mask)
    layouts, orders = codewords._interleave(version, level)
    failed = 0
    for block, order in zip(layouts, orders, strict=True):
        nsym = block.total - block.data
        received = bytearray(stream[order].tobytes())
        least = conf[order].min(axis=1)
        erase = sorted(int(i) for i in np.argsort(least, kind="stable")[: nsym // 2])
        for erasures in ([], erase):
            try:
                reedsolo.rs_correct_msg(received, nsym, fcr=0, generator=2, erase_pos=erasures)
                break
            except (reedsolo.ReedSolomonError, ValueError, IndexError, ZeroDivisionError):
                continue
        else:
            failed += 1
    return failed


def _evidence(
    work: Any, mapping: Any, size: int, module_px: float, geometry: str, skew: float
) -> GridEvidence:
    import numpy as np

    from worker.engine.qr import grid
    from worker.engine.qr.tables import FORMAT_CODEWORDS, blocks, format_positions, known_modules

    version = (size - 17) // 4
    samples = grid.sample(work, mapping, size, module_px)
    known, known_dark = known_modules(version)
    timing = np.zeros_like(known)
    timing[6, 8 : size - 8] = timing[8 : size - 8, 6] = True
    best: tuple[int, int, bool] | None = None
    rs_corrects = False
    failed_text = ""
    known_fit = float((samples.dark[known] == known_dark[known]).mean())
    readings = ((samples.dark, samples.confidence), (samples.dark.T, samples.confidence.T))
    for dark, confidence in readings:
        first, second = format_positions(size)
        copies = [sum(int(dark[r, c]) << i for i, (r, c) in enumerate(p)) for p in (first, second)]
        nearest = [
            min(FORMAT_CODEWORDS.items(), key=lambda kv, c=c: bin(c ^ kv[1]).count("1"))
            for c in copies
        ]
        distances = tuple(bin(c ^ n[1]).count("1") for c, n in zip(copies, nearest, strict=True))
        agree = nearest[0][0] == nearest[1][0] and max(distances) <= 3
        if best is None or sum(distances) < best[0] + best[1]:
            best = (distances[0], distances[1], agree)
        # Reed-Solomon (slow, pure Python) only where the grid could decide the verdict.
        if known_fit < GRID_FIT:
            continue
        for (level, mask), _ in nearest:
            failed = _full_capacity(dark, confidence, version, level, mask)
            total = len(blocks(version, level))
            if not failed_text or failed < int(failed_text.split("/")[0]):
                failed_text = f"{failed}/{total}"
            rs_corrects |= failed == 0
    assert best is not None
    return GridEvidence(
        geometry=geometry,
        size=size,
        skew=round(skew, 3),
        known_fit=round(known_fit, 3),
        timing_fit=round(float((samples.dark[timing] == known_dark[timing]).mean()), 3),
        confidence=round(float(np.median(samples.confidence)), 3),
        format_distances=(best[0], best[1]),
        copies_agree=best[2],
        rs_blocks_failed=failed_text,
        rs_corrects=rs_corrects,
    )


def grids(crop: Any) -> list[GridEvidence]:
    """Evidence from every grid hypothesis of a crop (gray), best known-module fit first."""
    import cv2
    import numpy as np

    from worker.engine.qr import grid
    from worker.engine.qr.decoder import _sizes
    from worker.engine.qr.tables import alignment_centres

    scale = _WORK_SIDE / max(crop.shape)
    work = cv2.resize(
        crop,
        None,
        fx=scale,
        fy=scale,
        interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA,
    )
    out: list[GridEvidence] = []
    finders: list[grid.Finder] = []
    for dark in grid.binarisations(work):
        for f in grid.find_finders(dark):
            if all(math.hypot(f.x - g.x, f.y - g.y) > 2 * g.module for g in finders):
                finders.append(f)
    for triple in grid.triples(finders):
        span = math.hypot(triple.tr.x - triple.tl.x, triple.tr.y - triple.tl.y)
        down = math.hypot(triple.bl.x - triple.tl.x, triple.bl.y - triple.tl.y)
        cosine = (
            (triple.tr.x - triple.tl.x) * (triple.bl.x - triple.tl.x)
            + (triple.tr.y - triple.tl.y) * (triple.bl.y - triple.tl.y)
        ) / (span * down)
        skew = max(span, down) / min(span, down) - 1 + abs(cosine)
        for estimate in _sizes(triple)[:1]:
            for size in range(max(21, estimate - 8), min(177, estimate + 8) + 1, 4):
                version = (size - 17) // 4
                try:
                    mapping = grid.fit_finders(work, triple, size, alignment_centres(version))
                except (cv2.error, np.linalg.LinAlgError):
                    continue
                out.append(_evidence(work, mapping, size, span / (size - 7), "finders", skew))
    out.sort(key=lambda e: (-e.known_fit, -e.timing_fit))
    return out


def verdict(evidence: list[GridEvidence], peers: dict[str, str]) -> tuple[str, str]:
    """("genuine" | "not_a_symbol", why)."""
    if peers:
        return "genuine", "a peer reads it: " + ", ".join(sorted(peers))
    fitting = [e for e in evidence if e.known_fit >= GRID_FIT]
    if not fitting:
        return "genuine", "no grid fits well enough to judge (when in doubt, genuine)"
    if any(e.rs_corrects for e in fitting):
        return "genuine", "a fitting grid's data correct at full Reed-Solomon capacity"
    sharp = [e for e in fitting if e.confidence >= SHARP]
    if not sharp:
        return "genuine", "too blurred to judge module by module (when in doubt, genuine)"
    sharp = [e for e in sharp if e.skew <= SKEW]
    if not sharp:
        return "genuine", "seen in perspective: a grid from three finders alone may be off"
    e = sharp[0]
    why = (
        f"{e.geometry} grid {e.size}x{e.size}: known modules {e.known_fit:.0%} right, "
        f"median confidence {e.confidence:.2f}, timing {e.timing_fit:.0%}, format copies at "
        f"distance {e.format_distances} {'agree' if e.copies_agree else 'disagree'}, "
        f"Reed-Solomon fails in {e.rs_blocks_failed or 'every'} block(s) at full capacity; "
        "no peer reads it"
    )
    return "not_a_symbol", why


def audit(
    folder: Path, peers: dict[str, dict[str, str]], only: set[str] | None
) -> list[dict[str, Any]]:
    import cv2

    rows = []
    for stem, boxes in sorted(labelled_boxes(folder).items()):
        gray = None
        for index, box in enumerate(boxes):
            key = f"{stem}_{index}"
            if only is not None and key not in only:
                continue
            if gray is None:
                gray = cv2.imread(str(_image(folder, stem)), cv2.IMREAD_GRAYSCALE)
            evidence = grids(_crop(gray, box))
            found = peers.get(key, {})
            decision, why = verdict(evidence, found)
            best = evidence[0] if evidence else None
            rows.append(
                {
                    "image": stem,
                    "box": index,
                    "verdict": decision,
                    "why": why,
                    "peers": found,
                    "best_grid": None if best is None else dataclasses.asdict(best),
                }
            )
            print(key, decision, why, file=sys.stderr)
    return rows


def set_aside(folder_name: str, audit_file: Path = AUDIT_FILE) -> set[tuple[str, int]]:
    """(image stem, box index) of the boxes the audit found are not QR symbols."""
    if not audit_file.exists():
        return set()
    data = json.loads(audit_file.read_text())
    if data.get("folder") != folder_name:
        return set()
    return {(r["image"], r["box"]) for r in data["boxes"] if r["verdict"] == "not_a_symbol"}


def peer_reads(folder: Path, keys: set[str] | None) -> dict[str, dict[str, str]]:
    """What each peer reads in each labelled box's crop (25% margin): needs cv2 with
    wechat_qrcode (opencv-contrib 4.x), pyzbar and zxingcpp."""
    import cv2
    import zxingcpp
    from pyzbar import pyzbar

    models = Path(__file__).resolve().parents[2].parent / "shared/models/wechat_qrcode"
    wechat = cv2.wechat_qrcode_WeChatQRCode(
        *(
            str(models / n)
            for n in ("detect.prototxt", "detect.caffemodel", "sr.prototxt", "sr.caffemodel")
        )
    )
    out: dict[str, dict[str, str]] = {}
    for stem, boxes in sorted(labelled_boxes(folder).items()):
        image = cv2.imread(str(_image(folder, stem)))
        for index, (x0, y0, x1, y1) in enumerate(boxes):
            key = f"{stem}_{index}"
            if keys is not None and key not in keys:
                continue
            m = 0.25 * max(x1 - x0, y1 - y0)
            crop = image[max(0, int(y0 - m)) : int(y1 + m), max(0, int(x0 - m)) : int(x1 + m)]
            gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
            found: dict[str, str] = {}
            for factor in (1, 2, 3, 4):
                g = (
                    gray
                    if factor == 1
                    else cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
                )
                for candidate in (g, 255 - g):
                    for r in zxingcpp.read_barcodes(
                        candidate, formats=zxingcpp.BarcodeFormat.QRCode
                    ):
                        if r.valid:
                            found.setdefault("zxing-cpp", r.text)
                    for r in pyzbar.decode(candidate):
                        found.setdefault("pyzbar", r.data.decode("latin-1"))
            for factor in (1, 2):
                c = (
                    crop
                    if factor == 1
                    else cv2.resize(crop, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
                )
                for candidate in (c, 255 - c):
                    texts, _ = wechat.detectAndDecode(candidate)
                    for text in texts:
                        if text:
                            found.setdefault("wechat", text)
            out[key] = found
            print(key, found, file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    from worker.bench.accuracy import DEFAULT_REAL

    args_in = list(sys.argv[1:] if argv is None else argv)
    peers_mode = args_in[:1] == ["peers"]
    parser = argparse.ArgumentParser(prog="python -m worker.bench.real_audit")
    parser.add_argument("folder", type=Path, nargs="?", default=DEFAULT_REAL)
    parser.add_argument("--peers", type=Path, default=None, help="peer reads (from `peers`)")
    parser.add_argument("--only", nargs="*", default=None, help="IMAGE_BOX keys, e.g. 33_0")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(args_in[1:] if peers_mode else args_in)
    only = set(args.only) if args.only else None
    if peers_mode:
        text = json.dumps(peer_reads(args.folder, only), indent=1, ensure_ascii=False)
        (args.out.write_text(text + "\n") if args.out else print(text))
        return 0
    peers = json.loads(args.peers.read_text()) if args.peers else {}
    rows = audit(args.folder, peers, only)
    document = {
        "folder": args.folder.name,
        "command": "python -m worker.bench.real_audit " + " ".join(args_in),
        "rule": __doc__.split("\n\n", 2)[2].strip() if __doc__ else "",
        "boxes": rows,
    }
    text = json.dumps(document, indent=1, ensure_ascii=False)
    (args.out.write_text(text + "\n") if args.out else print(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
