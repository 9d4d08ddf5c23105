"""From soft module values to corrected data codewords: unmasking, de-interleaving the
blocks, and Reed-Solomon with errors and erasures.

Reed-Solomon is `reedsolo` 1.7 (pure Python, public domain; its Cython build `creedsolo` has
no wheel on the package index here, so the pure-Python one is used). It corrects a block of
versions 1-10 in about 0.3 ms (median, errors or erasures: `python -m worker.bench.false_reads
--rs-speed`), fast enough that a vectorised GF(256) of our own would not pay. A block whose
syndromes are already zero, the common case on a clean symbol, is recognised by a vectorised
syndrome check (0.014 ms) and never reaches the library.

How much correction a block may use (the margin against a misread): a block is accepted only
when

- 2 * errors + erasures <= n - k - p, p the standard's misdecode-protection codewords
  (Table 9: 3 for 1-L, 2 for 1-M and 2-L, 1 for 1-Q, 1-H and 3-L), and
- the chance that a random word decodes this way, V(n - s, e) / 256^(n - k - s) with V the
  number of words within e symbol errors, is at most 2^-30.

The second bound is the one the standard's own p gives its weakest blocks (2 errors in 1-L:
2^-31.7, 4 in 2-L: 2^-31.0), applied to every block and to every mix of errors and erasures:
an erasure-only decode must leave 4 parity codewords unused, a large block may use nearly all
of its parity for errors. Several erasure sets are tried per block (at most _ATTEMPTS), so a
random region passes one block with probability below 2^-27, and then still has to carry a
well-formed bit stream with standard padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import reedsolo

from worker.engine.qr.tables import BlockLayout, blocks, layout

# reedsolo keeps its Galois field tables in module globals; QR's field is GF(256) over
# x^8 + x^4 + x^3 + x^2 + 1 with generator 2 and the first consecutive root 2^0.
reedsolo.init_tables(0x11D)
_PRIM = 0x11D

# A random word must decode with probability at most 2^-_SECURITY_BITS per block.
_SECURITY_BITS = 30.0
# At most this many Reed-Solomon attempts per block (erasure sets), the errors-only one included.
_ATTEMPTS = 6


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


def syndromes_zero(codewords: np.ndarray, nsym: int) -> bool:
    powers = _syndrome_powers(len(codewords), nsym)
    values = codewords.astype(np.int32)
    nonzero = values != 0
    terms = np.where(nonzero[None, :], _EXP[(_LOG[values][None, :] + powers) % 255], 0)
    return not np.bitwise_xor.reduce(terms, axis=1).any()


@lru_cache(maxsize=4096)
def acceptable(n: int, nsym: int, protection: int, errors: int, erasures: int) -> bool:
    """Whether a block of n codewords with nsym parity may be corrected this much (see the
    module docstring for the rule)."""
    if 2 * errors + erasures > nsym - protection:
        return False
    m = n - erasures
    volume = sum(math.comb(m, i) * 255**i for i in range(errors + 1))
    return math.log2(volume) - 8 * (nsym - erasures) <= -_SECURITY_BITS


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
    """The codeword stream read from the module grid (dark: bool (size, size)) and each
    codeword's confidence (its least confident module)."""
    lay = layout(version)
    bits = dark[lay.rows, lay.cols] ^ lay.masks[mask]
    conf = confidence[lay.rows, lay.cols]
    count = len(bits) // 8
    codewords = np.packbits(bits[: count * 8])
    return codewords, conf[: count * 8].reshape(count, 8).min(axis=1)


def correct(
    codewords: np.ndarray, confidence: np.ndarray, version: int, level: str
) -> Corrected | None:
    """Every block corrected within the margin, or None."""
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


def _erasure_sets(confidence: np.ndarray, block: BlockLayout) -> list[list[int]]:
    """Erasure sets to try after errors-only decoding, least confident codewords first,
    growing in size up to what the margin could ever accept."""
    nsym = block.total - block.data
    most = nsym - block.protection
    while most > 0 and not acceptable(block.total, nsym, block.protection, 0, most):
        most -= 1
    order = np.argsort(confidence, kind="stable")
    unsure = int((confidence < 1.0).sum())
    sizes = sorted(
        {min(s, unsure, most) for s in (nsym // 4, nsym // 2, (3 * nsym) // 4, most)} - {0}
    )
    return [sorted(int(i) for i in order[:size]) for size in sizes[: _ATTEMPTS - 1]]


def _correct_block(
    received: np.ndarray, confidence: np.ndarray, block: BlockLayout
) -> tuple[bytes, int, int] | None:
    nsym = block.total - block.data
    if syndromes_zero(received, nsym):
        return received[: block.data].tobytes(), 0, 0
    message = bytearray(received.tobytes())
    for erase in [[], *_erasure_sets(confidence, block)]:
        try:
            fixed, _, _ = reedsolo.rs_correct_msg(
                message, nsym, fcr=0, generator=2, erase_pos=erase
            )
            parity = reedsolo.rs_encode_msg(fixed, nsym, fcr=0, generator=2)
        except (reedsolo.ReedSolomonError, ValueError, IndexError, ZeroDivisionError):
            continue
        corrected = np.frombuffer(bytes(parity), dtype=np.uint8)
        if not syndromes_zero(corrected, nsym):
            # reedsolo keeps its field in module globals: were they ever re-initialised for
            # another field, its "corrections" would not be QR codewords. Checked with ours.
            continue
        changed = corrected != received
        erased = np.zeros(len(received), dtype=bool)
        erased[erase] = True
        errors = int((changed & ~erased).sum())
        if acceptable(block.total, nsym, block.protection, errors, len(erase)):
            return bytes(fixed), errors, len(erase)
    return None
