"""From soft module values to corrected data codewords: unmasking, de-interleaving the
blocks, and Reed-Solomon with errors and erasures.

Reed-Solomon is `reedsolo` 1.7 (pure Python, public domain; its Cython build `creedsolo` has
no wheel on the package index here, so the pure-Python one is used). A block whose syndromes
are already zero, the common case on a clean symbol, is recognised by a vectorised syndrome
check (0.014 ms) and never reaches the library. Otherwise the block's syndromes are computed
once, vectorised, for all its erasure sets, and each set goes through reedsolo's Forney
syndromes, Berlekamp-Massey and Forney magnitudes, with the Chien search vectorised here:
`rs_correct_msg` spends most of its time on the syndromes and the root search, in pure
Python, for each set anew (a version 5-L block that no set corrects, 24 attempts: 26 ms
through `rs_correct_msg`, 5 ms this way, CPU time on the 2 shared cores at a load of 19).

How much correction a block may use (the margin against a misread): a block is accepted only
when

- 2 * errors + erasures <= n - k - p, p the standard's misdecode-protection codewords
  (Table 9: 3 for 1-L, 2 for 1-M and 2-L, 1 for 1-Q, 1-H and 3-L), and
- the chance that a random word decodes this way, V(n - s, e) / 256^(n - k - s) with V the
  number of words within e symbol errors, is at most 2^-30 (2^-32 for the later erasure
  sets, below).

2^-30 is what the standard's own p gives its weakest blocks (2 errors in 1-L: 2^-31.7, 4 in
2-L: 2^-31.0), applied to every block and to every mix of errors and erasures: an
erasure-only decode must leave 4 parity codewords unused, a large block may use nearly all
of its parity for errors.

A block gets an errors-only attempt and erasure sets in two rounds. The first: the least
confident codewords (by their least confident module) in four sizes, a quarter, half and
three quarters of the parity and the most the margin accepts, each at 2^-30. The second
(generalised minimum distance decoding over two rankings): every second size down from that
most (an error costs two erasures, so sizes one apart mostly decide alike), the least
confident codewords by their least confident module and by the product of their modules'
confidences (the chance that all eight are right, taken as independent), each set not tried
before, at most _LATE_SETS of them, each at 2^-32. A random word therefore passes one block
with probability below 5 * 2^-30 + 8 * 2^-32 < 2^-27.1 (2^-27.4 with the first round alone),
and a symbol then still has to carry a well-formed bit stream with standard padding.

Why the product: a stain, a pen stroke or a speck flips one or two modules of a codeword,
which its least confident module ranks; a glare spot washes out a whole area, where a
codeword whose eight modules are all half sure is likelier wrong than one with a single
doubtful module. Measured against the first round alone, from each code's true outline
(python -m worker.bench.false_reads --corpus reads them so): models.synth's glare and damaged
photos of the benchmark (seed 0) 4 and 2 more of 100 each, seed 7 none more, glare seed 11
one more; none lost. Through the engine, the same tree with and without the second round
(cascade onnx, seed 0, run side by side): glare 74 -> 77, damaged 82 -> 83 of 100; digital,
blurred and lowres unchanged (100, 95, 80); no misread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import reedsolo

from worker.engine.deadline import spend
from worker.engine.qr.tables import BlockLayout, blocks, layout

# reedsolo keeps its Galois field tables in module globals; QR's field is GF(256) over
# x^8 + x^4 + x^3 + x^2 + 1 with generator 2 and the first consecutive root 2^0.
reedsolo.init_tables(0x11D)
_PRIM = 0x11D

# A random word must decode with probability at most 2^-bits per attempt: the errors-only
# attempt and the first round of erasure sets, and the second round (see the module
# docstring for the sum over a block's attempts).
_SECURITY_BITS = 30.0
_LATE_SECURITY_BITS = 32.0
# At most this many erasure sets in the second round.
_LATE_SETS = 8
# Its set sizes are this far apart (an error costs two erasures).
_SIZE_STEP = 2


def _field() -> tuple[np.ndarray, np.ndarray]:
    exp = np.zeros(512, dtype=np.int32)
    log = np.zeros(256, dtype=np.int32)
    value = 1
    for i in range(255):
        exp[i] = value
        log[value] = i
        value <<= 1
        if value & 0x100:
            value ^= _PRIM
    exp[255:510] = exp[:255]
    return exp, log


_EXP, _LOG = _field()


@lru_cache(maxsize=256)
def _syndrome_powers(n: int, nsym: int) -> np.ndarray:
    """log(alpha^(j * (n - 1 - i))) for syndrome j and codeword position i, mod 255."""
    j = np.arange(nsym)[:, None]
    i = np.arange(n)[None, :]
    return (j * (n - 1 - i)) % 255


def syndromes(codewords: np.ndarray, nsym: int) -> np.ndarray:
    """The block's syndromes S_j = c(alpha^j), j = 0..nsym - 1 (reedsolo's, less its
    leading 0), vectorised: most of what reedsolo spends on a block is these sums."""
    powers = _syndrome_powers(len(codewords), nsym)
    values = codewords.astype(np.int32)
    nonzero = values != 0
    terms = np.where(nonzero[None, :], _EXP[(_LOG[values][None, :] + powers) % 255], 0)
    return np.bitwise_xor.reduce(terms, axis=1)


def syndromes_zero(codewords: np.ndarray, nsym: int) -> bool:
    return not syndromes(codewords, nsym).any()


def _roots(locator: list[int], n: int) -> list[int] | None:
    """The positions (0..n - 1, first codeword first) where the errata locator (reedsolo's
    order, highest degree first) has its roots, as reedsolo's Chien search finds them but
    evaluated at all n points at once; None unless there are exactly as many as its degree."""
    coefficients = np.array(locator[::-1], dtype=np.int32)  # as reedsolo.rs_find_errors takes it
    degree = len(coefficients) - 1
    i = np.arange(n)[:, None]
    k = np.arange(degree + 1)[None, :]
    nonzero = coefficients != 0
    exponent = (_LOG[coefficients][None, :] + i * (degree - k)) % 255
    values = np.bitwise_xor.reduce(np.where(nonzero[None, :], _EXP[exponent], 0), axis=1)
    found = np.flatnonzero(values == 0)
    if len(found) != degree:
        return None
    return [int(n - 1 - p) for p in found]


@lru_cache(maxsize=4096)
def acceptable(
    n: int, nsym: int, protection: int, errors: int, erasures: int, bits: float = _SECURITY_BITS
) -> bool:
    """Whether a block of n codewords with nsym parity may be corrected this much, a random
    word decoding so with probability at most 2^-bits (see the module docstring)."""
    if 2 * errors + erasures > nsym - protection:
        return False
    m = n - erasures
    volume = sum(math.comb(m, i) * 255**i for i in range(errors + 1))
    return math.log2(volume) - 8 * (nsym - erasures) <= -bits


@dataclass(frozen=True, slots=True)
class Corrected:
    data: bytes  # the data codewords of every block, in order
    errors: int
    erasures: int


@lru_cache(maxsize=160)
def _interleave(version: int, level: str) -> tuple[list[BlockLayout], list[np.ndarray]]:
    """The blocks of a symbol and, per block, the indices of its codewords in the stream."""
    layouts = blocks(version, level)
    data_order: list[list[int]] = [[] for _ in layouts]
    position = 0
    for i in range(max(b.data for b in layouts)):
        for index, block in enumerate(layouts):
            if i < block.data:
                data_order[index].append(position)
                position += 1
    nsym = layouts[0].total - layouts[0].data
    for _ in range(nsym):
        for index in range(len(layouts)):
            data_order[index].append(position)
            position += 1
    return layouts, [np.array(order, dtype=np.intp) for order in data_order]


def stream(
    dark: np.ndarray, confidence: np.ndarray, version: int, mask: int
) -> tuple[np.ndarray, np.ndarray]:
    """The codeword stream read from the module grid (dark: bool (size, size)) and its
    modules' confidences, (codewords, 8) in bit order."""
    lay = layout(version)
    bits = dark[lay.rows, lay.cols] ^ lay.masks[mask]
    conf = confidence[lay.rows, lay.cols]
    count = len(bits) // 8
    codewords = np.packbits(bits[: count * 8])
    return codewords, conf[: count * 8].reshape(count, 8)


def correct(
    codewords: np.ndarray, confidence: np.ndarray, version: int, level: str
) -> Corrected | None:
    """Every block corrected within the margin, or None (confidence: each codeword's module
    confidences, (codewords, 8), as `stream` gives them)."""
    layouts, orders = _interleave(version, level)
    data = bytearray()
    errors = erasures = 0
    for block, order in zip(layouts, orders, strict=True):
        result = _correct_block(codewords[order], confidence[order], block)
        if result is None:
            return None
        block_data, block_errors, block_erasures = result
        data += block_data
        errors += block_errors
        erasures += block_erasures
    return Corrected(bytes(data), errors, erasures)


def _erasure_sets(confidence: np.ndarray, block: BlockLayout) -> list[tuple[list[int], float]]:
    """Erasure sets to try after errors-only decoding, each with the security bits it is
    accepted at (confidence: the block's codewords' module confidences, (n, 8)): the two
    rounds of the module docstring."""
    nsym = block.total - block.data
    most = _most_erasures(block, _SECURITY_BITS)
    least = confidence.min(axis=1)
    # A module sure to be right still counts: log(0) would rank every codeword holding one
    # fully doubtful module alike.
    together = np.log(np.clip(confidence, 1e-3, 1.0)).sum(axis=1)
    by_least = np.argsort(least, kind="stable")
    unsure = int((least < 1.0).sum())
    first = sorted({min(s, unsure, most) for s in (nsym // 4, nsym // 2, (3 * nsym) // 4, most)})
    sets = [(sorted(int(i) for i in by_least[:size]), _SECURITY_BITS) for size in first if size]
    seen = {tuple(erase) for erase, _ in sets}
    late = _most_erasures(block, _LATE_SECURITY_BITS)
    orders = [by_least, np.argsort(together, kind="stable")]
    added = 0
    for size in range(min(late, unsure), 0, -_SIZE_STEP):
        for order in orders:
            erase = sorted(int(i) for i in order[:size])
            if added < _LATE_SETS and tuple(erase) not in seen:
                seen.add(tuple(erase))
                sets.append((erase, _LATE_SECURITY_BITS))
                added += 1
    return sets


@lru_cache(maxsize=512)
def _most_erasures(block: BlockLayout, bits: float) -> int:
    """The most erasures (and no error) the margin accepts in the block at 2^-bits."""
    nsym = block.total - block.data
    most = nsym - block.protection
    while most > 0 and not acceptable(block.total, nsym, block.protection, 0, most, bits):
        most -= 1
    return most


def _correct_block(
    received: np.ndarray, confidence: np.ndarray, block: BlockLayout
) -> tuple[bytes, int, int] | None:
    nsym = block.total - block.data
    found = syndromes(received, nsym)
    if not found.any():
        return received[: block.data].tobytes(), 0, 0
    # reedsolo.rs_correct_msg's steps, with the syndromes computed once for every erasure set
    # (it computes them per call, and zeroes the erased codewords first, which the errata
    # locator makes unnecessary) and the Chien search vectorised: a block of 134 codewords
    # costs a few ms for all its sets instead of about 1 ms a set.
    synd = [0, *(int(v) for v in found)]
    message = bytearray(received.tobytes())
    n = len(message)
    for erase, bits in [([], _SECURITY_BITS), *_erasure_sets(confidence, block)]:
        spend("erasure set", n)
        try:
            forney = reedsolo.rs_forney_syndromes(synd, erase, n, 2)
            locator = reedsolo.rs_find_error_locator(forney, nsym, erase_count=len(erase))
            located = _roots(locator, n)
            if located is None:
                continue
            repaired = reedsolo.rs_correct_errata(message, synd, erase + located, 0, 2)
        except (reedsolo.ReedSolomonError, ValueError, IndexError, ZeroDivisionError):
            continue
        corrected = np.frombuffer(bytes(repaired), dtype=np.uint8)
        fixed = corrected[: block.data].tobytes()
        if not syndromes_zero(corrected, nsym):
            # reedsolo keeps its field in module globals: were they ever re-initialised for
            # another field, its "corrections" would not be QR codewords. Checked with ours.
            continue
        changed = corrected != received
        erased = np.zeros(len(received), dtype=bool)
        erased[erase] = True
        errors = int((changed & ~erased).sum())
        if acceptable(block.total, nsym, block.protection, errors, len(erase), bits):
            return bytes(fixed), errors, len(erase)
    return None
