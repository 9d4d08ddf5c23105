"""The QR Code model 2 tables (ISO/IEC 18004:2015) and the symbol layout derived from them.

Block structure (Table 9), alignment pattern centres (Annex E) and the misdecode-protection
codewords of the small symbols (Table 9's `p`) are literal; format and version information
codewords are computed from their BCH generators (Annex C and D), and the layout of each
version (function patterns, data modules in placement order, mask patterns) is computed once
per version and cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

LEVELS = ("L", "M", "Q", "H")
# The two error-correction-level bits of the format information, per level.
_LEVEL_BITS = {"L": 0b01, "M": 0b00, "Q": 0b11, "H": 0b10}

# Per level, per version 1..40: (number of blocks, codewords per block, data codewords per block).
_BLOCKS: dict[str, tuple[tuple[tuple[int, int, int], ...], ...]] = {
    "L": (
        ((1, 26, 19),),  # 1
        ((1, 44, 34),),
        ((1, 70, 55),),
        ((1, 100, 80),),
        ((1, 134, 108),),  # 5
        ((2, 86, 68),),
        ((2, 98, 78),),
        ((2, 121, 97),),
        ((2, 146, 116),),
        ((2, 86, 68), (2, 87, 69)),  # 10
        ((4, 101, 81),),
        ((2, 116, 92), (2, 117, 93)),
        ((4, 133, 107),),
        ((3, 145, 115), (1, 146, 116)),
        ((5, 109, 87), (1, 110, 88)),  # 15
        ((5, 122, 98), (1, 123, 99)),
        ((1, 135, 107), (5, 136, 108)),
        ((5, 150, 120), (1, 151, 121)),
        ((3, 141, 113), (4, 142, 114)),
        ((3, 135, 107), (5, 136, 108)),  # 20
        ((4, 144, 116), (4, 145, 117)),
        ((2, 139, 111), (7, 140, 112)),
        ((4, 151, 121), (5, 152, 122)),
        ((6, 147, 117), (4, 148, 118)),
        ((8, 132, 106), (4, 133, 107)),  # 25
        ((10, 142, 114), (2, 143, 115)),
        ((8, 152, 122), (4, 153, 123)),
        ((3, 147, 117), (10, 148, 118)),
        ((7, 146, 116), (7, 147, 117)),
        ((5, 145, 115), (10, 146, 116)),  # 30
        ((13, 145, 115), (3, 146, 116)),
        ((17, 145, 115),),
        ((17, 145, 115), (1, 146, 116)),
        ((13, 145, 115), (6, 146, 116)),
        ((12, 151, 121), (7, 152, 122)),  # 35
        ((6, 151, 121), (14, 152, 122)),
        ((17, 152, 122), (4, 153, 123)),
        ((4, 152, 122), (18, 153, 123)),
        ((20, 147, 117), (4, 148, 118)),
        ((19, 148, 118), (6, 149, 119)),  # 40
    ),
    "M": (
        ((1, 26, 16),),  # 1
        ((1, 44, 28),),
        ((1, 70, 44),),
        ((2, 50, 32),),
        ((2, 67, 43),),  # 5
        ((4, 43, 27),),
        ((4, 49, 31),),
        ((2, 60, 38), (2, 61, 39)),
        ((3, 58, 36), (2, 59, 37)),
        ((4, 69, 43), (1, 70, 44)),  # 10
        ((1, 80, 50), (4, 81, 51)),
        ((6, 58, 36), (2, 59, 37)),
        ((8, 59, 37), (1, 60, 38)),
        ((4, 64, 40), (5, 65, 41)),
        ((5, 65, 41), (5, 66, 42)),  # 15
        ((7, 73, 45), (3, 74, 46)),
        ((10, 74, 46), (1, 75, 47)),
        ((9, 69, 43), (4, 70, 44)),
        ((3, 70, 44), (11, 71, 45)),
        ((3, 67, 41), (13, 68, 42)),  # 20
        ((17, 68, 42),),
        ((17, 74, 46),),
        ((4, 75, 47), (14, 76, 48)),
        ((6, 73, 45), (14, 74, 46)),
        ((8, 75, 47), (13, 76, 48)),  # 25
        ((19, 74, 46), (4, 75, 47)),
        ((22, 73, 45), (3, 74, 46)),
        ((3, 73, 45), (23, 74, 46)),
        ((21, 73, 45), (7, 74, 46)),
        ((19, 75, 47), (10, 76, 48)),  # 30
        ((2, 74, 46), (29, 75, 47)),
        ((10, 74, 46), (23, 75, 47)),
        ((14, 74, 46), (21, 75, 47)),
        ((14, 74, 46), (23, 75, 47)),
        ((12, 75, 47), (26, 76, 48)),  # 35
        ((6, 75, 47), (34, 76, 48)),
        ((29, 74, 46), (14, 75, 47)),
        ((13, 74, 46), (32, 75, 47)),
        ((40, 75, 47), (7, 76, 48)),
        ((18, 75, 47), (31, 76, 48)),  # 40
    ),
    "Q": (
        ((1, 26, 13),),  # 1
        ((1, 44, 22),),
        ((2, 35, 17),),
        ((2, 50, 24),),
        ((2, 33, 15), (2, 34, 16)),  # 5
        ((4, 43, 19),),
        ((2, 32, 14), (4, 33, 15)),
        ((4, 40, 18), (2, 41, 19)),
        ((4, 36, 16), (4, 37, 17)),
        ((6, 43, 19), (2, 44, 20)),  # 10
        ((4, 50, 22), (4, 51, 23)),
        ((4, 46, 20), (6, 47, 21)),
        ((8, 44, 20), (4, 45, 21)),
        ((11, 36, 16), (5, 37, 17)),
        ((5, 54, 24), (7, 55, 25)),  # 15
        ((15, 43, 19), (2, 44, 20)),
        ((1, 50, 22), (15, 51, 23)),
        ((17, 50, 22), (1, 51, 23)),
        ((17, 47, 21), (4, 48, 22)),
        ((15, 54, 24), (5, 55, 25)),  # 20
        ((17, 50, 22), (6, 51, 23)),
        ((7, 54, 24), (16, 55, 25)),
        ((11, 54, 24), (14, 55, 25)),
        ((11, 54, 24), (16, 55, 25)),
        ((7, 54, 24), (22, 55, 25)),  # 25
        ((28, 50, 22), (6, 51, 23)),
        ((8, 53, 23), (26, 54, 24)),
        ((4, 54, 24), (31, 55, 25)),
        ((1, 53, 23), (37, 54, 24)),
        ((15, 54, 24), (25, 55, 25)),  # 30
        ((42, 54, 24), (1, 55, 25)),
        ((10, 54, 24), (35, 55, 25)),
        ((29, 54, 24), (19, 55, 25)),
        ((44, 54, 24), (7, 55, 25)),
        ((39, 54, 24), (14, 55, 25)),  # 35
        ((46, 54, 24), (10, 55, 25)),
        ((49, 54, 24), (10, 55, 25)),
        ((48, 54, 24), (14, 55, 25)),
        ((43, 54, 24), (22, 55, 25)),
        ((34, 54, 24), (34, 55, 25)),  # 40
    ),
    "H": (
        ((1, 26, 9),),  # 1
        ((1, 44, 16),),
        ((2, 35, 13),),
        ((4, 25, 9),),
        ((2, 33, 11), (2, 34, 12)),  # 5
        ((4, 43, 15),),
        ((4, 39, 13), (1, 40, 14)),
        ((4, 40, 14), (2, 41, 15)),
        ((4, 36, 12), (4, 37, 13)),
        ((6, 43, 15), (2, 44, 16)),  # 10
        ((3, 36, 12), (8, 37, 13)),
        ((7, 42, 14), (4, 43, 15)),
        ((12, 33, 11), (4, 34, 12)),
        ((11, 36, 12), (5, 37, 13)),
        ((11, 36, 12), (7, 37, 13)),  # 15
        ((3, 45, 15), (13, 46, 16)),
        ((2, 42, 14), (17, 43, 15)),
        ((2, 42, 14), (19, 43, 15)),
        ((9, 39, 13), (16, 40, 14)),
        ((15, 43, 15), (10, 44, 16)),  # 20
        ((19, 46, 16), (6, 47, 17)),
        ((34, 37, 13),),
        ((16, 45, 15), (14, 46, 16)),
        ((30, 46, 16), (2, 47, 17)),
        ((22, 45, 15), (13, 46, 16)),  # 25
        ((33, 46, 16), (4, 47, 17)),
        ((12, 45, 15), (28, 46, 16)),
        ((11, 45, 15), (31, 46, 16)),
        ((19, 45, 15), (26, 46, 16)),
        ((23, 45, 15), (25, 46, 16)),  # 30
        ((23, 45, 15), (28, 46, 16)),
        ((19, 45, 15), (35, 46, 16)),
        ((11, 45, 15), (46, 46, 16)),
        ((59, 46, 16), (1, 47, 17)),
        ((22, 45, 15), (41, 46, 16)),  # 35
        ((2, 45, 15), (64, 46, 16)),
        ((24, 45, 15), (46, 46, 16)),
        ((42, 45, 15), (32, 46, 16)),
        ((10, 45, 15), (67, 46, 16)),
        ((20, 45, 15), (61, 46, 16)),  # 40
    ),
}

# Alignment pattern centre coordinates (rows and columns alike), versions 2..40.
_ALIGNMENT: tuple[tuple[int, ...], ...] = (
    (),
    (6, 18),
    (6, 22),
    (6, 26),
    (6, 30),
    (6, 34),
    (6, 22, 38),
    (6, 24, 42),
    (6, 26, 46),
    (6, 28, 50),
    (6, 30, 54),
    (6, 32, 58),
    (6, 34, 62),
    (6, 26, 46, 66),
    (6, 26, 48, 70),
    (6, 26, 50, 74),
    (6, 30, 54, 78),
    (6, 30, 56, 82),
    (6, 30, 58, 86),
    (6, 34, 62, 90),
    (6, 28, 50, 72, 94),
    (6, 26, 50, 74, 98),
    (6, 30, 54, 78, 102),
    (6, 28, 54, 80, 106),
    (6, 32, 58, 84, 110),
    (6, 30, 58, 86, 114),
    (6, 34, 62, 90, 118),
    (6, 26, 50, 74, 98, 122),
    (6, 30, 54, 78, 102, 126),
    (6, 26, 52, 78, 104, 130),
    (6, 30, 56, 82, 108, 134),
    (6, 34, 60, 86, 112, 138),
    (6, 30, 58, 86, 114, 142),
    (6, 34, 62, 90, 118, 146),
    (6, 30, 54, 78, 102, 126, 150),
    (6, 24, 50, 76, 102, 128, 154),
    (6, 28, 54, 80, 106, 132, 158),
    (6, 32, 58, 84, 110, 136, 162),
    (6, 26, 54, 82, 110, 138, 166),
    (6, 30, 58, 86, 114, 142, 170),
)

# Table 9's misdecode-protection codewords: error correction codewords the small symbols
# keep back from correction, so that a corrected word is still checked by some parity.
_PROTECTION = {(1, "L"): 3, (1, "M"): 2, (1, "Q"): 1, (1, "H"): 1, (2, "L"): 2, (3, "L"): 1}


def _bch(value: int, generator: int, degree: int) -> int:
    """`value` followed by its BCH remainder modulo `generator` (degree `degree`)."""
    remainder = value << degree
    top = generator.bit_length() - 1
    for shift in range(remainder.bit_length() - 1, top - 1, -1):
        if remainder >> shift & 1:
            remainder ^= generator << (shift - top)
    return value << degree | remainder


# Format information: (level, mask) -> the 15-bit masked codeword (Annex C).
FORMAT_CODEWORDS: dict[tuple[str, int], int] = {
    (level, mask): _bch(_LEVEL_BITS[level] << 3 | mask, 0x537, 10) ^ 0x5412
    for level in LEVELS
    for mask in range(8)
}
# Version information of versions 7..40: the 18-bit codeword (Annex D).
VERSION_CODEWORDS: dict[int, int] = {v: _bch(v, 0x1F25, 12) for v in range(7, 41)}


def dimension(version: int) -> int:
    return 17 + 4 * version


def alignment_centres(version: int) -> list[tuple[int, int]]:
    """(row, col) of every alignment pattern's centre module, finder corners excluded."""
    positions = _ALIGNMENT[version - 1]
    last = positions[-1] if positions else 0
    return [
        (r, c)
        for r in positions
        for c in positions
        if not ((r == 6 and c == 6) or (r == 6 and c == last) or (r == last and c == 6))
    ]


@dataclass(frozen=True, slots=True)
class BlockLayout:
    total: int  # codewords in the block
    data: int  # of which data codewords
    protection: int  # misdecode-protection codewords (Table 9's p), never used to correct


def blocks(version: int, level: str) -> list[BlockLayout]:
    protection = _PROTECTION.get((version, level), 0)
    return [
        BlockLayout(total, data, protection)
        for count, total, data in _BLOCKS[level][version - 1]
        for _ in range(count)
    ]


# Format information bit positions (row, col); bit i of the codeword, i = 0 the least
# significant. The first copy runs around the top-left finder, the second is split between
# the top-right and bottom-left finders.
def format_positions(size: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    first = [(i, 8) for i in range(6)] + [(7, 8), (8, 8), (8, 7)]
    first += [(8, 14 - i) for i in range(9, 15)]
    second = [(8, size - 1 - i) for i in range(8)] + [(size - 15 + i, 8) for i in range(8, 15)]
    return first, second


def version_positions(size: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Version information bit positions: the block above the bottom-left finder and the one
    left of the top-right finder, bit i = 0 the least significant."""
    top_right = [(i // 3, size - 11 + i % 3) for i in range(18)]
    bottom_left = [(size - 11 + i % 3, i // 3) for i in range(18)]
    return top_right, bottom_left


@dataclass(frozen=True, slots=True)
class Layout:
    version: int
    size: int
    function: np.ndarray  # bool (size, size): modules that carry no data
    rows: np.ndarray  # data modules in placement order (most significant bit first)
    cols: np.ndarray
    masks: np.ndarray  # bool (8, n_data_modules): where each data mask inverts


@lru_cache(maxsize=40)
def layout(version: int) -> Layout:
    size = dimension(version)
    function = np.zeros((size, size), dtype=bool)
    function[:9, :9] = True  # finder, separator, format information
    function[:9, size - 8 :] = True
    function[size - 8 :, :9] = True
    function[6, :] = True  # timing patterns
    function[:, 6] = True
    for r, c in alignment_centres(version):
        function[r - 2 : r + 3, c - 2 : c + 3] = True
    if version >= 7:
        function[:6, size - 11 : size - 8] = True
        function[size - 11 : size - 8, :6] = True
    rows: list[int] = []
    cols: list[int] = []
    right = size - 1
    while right >= 1:
        if right == 6:
            right = 5
        upward = ((right + 1) & 2) == 0
        for step in range(size):
            row = size - 1 - step if upward else step
            for col in (right, right - 1):
                if not function[row, col]:
                    rows.append(row)
                    cols.append(col)
        right -= 2
    r = np.array(rows, dtype=np.intp)
    c = np.array(cols, dtype=np.intp)
    masks = np.stack(
        [
            (r + c) % 2 == 0,
            r % 2 == 0,
            c % 3 == 0,
            (r + c) % 3 == 0,
            (r // 2 + c // 3) % 2 == 0,
            (r * c) % 2 + (r * c) % 3 == 0,
            ((r * c) % 2 + (r * c) % 3) % 2 == 0,
            ((r + c) % 2 + (r * c) % 3) % 2 == 0,
        ]
    )
    return Layout(version, size, function, r, c, masks)


@lru_cache(maxsize=40)
def inner_patterns(version: int) -> np.ndarray:
    """The timing and alignment pattern modules (bool (size, size)): the known modules away
    from the finders, so they say whether the grid's size and pitch are right."""
    size = dimension(version)
    inner = np.zeros((size, size), dtype=bool)
    inner[6, 8 : size - 8] = True
    inner[8 : size - 8, 6] = True
    for r, c in alignment_centres(version):
        inner[r - 2 : r + 3, c - 2 : c + 3] = True
    return inner


@lru_cache(maxsize=40)
def known_modules(version: int) -> tuple[np.ndarray, np.ndarray]:
    """(known, dark): the modules whose colour every symbol of `version` shares (finder
    patterns and their separators, timing patterns, alignment patterns, the dark module)."""
    size = dimension(version)
    known = np.zeros((size, size), dtype=bool)
    dark = np.zeros((size, size), dtype=bool)
    finder = np.ones((7, 7), dtype=bool)
    finder[1:6, 1:6] = False
    finder[2:5, 2:5] = True
    for r, c in ((0, 0), (0, size - 7), (size - 7, 0)):
        dark[r : r + 7, c : c + 7] = finder
        known[max(r - 1, 0) : r + 8, max(c - 1, 0) : c + 8] = True  # with the separator
    for i in range(8, size - 8):
        known[6, i] = known[i, 6] = True
        dark[6, i] = dark[i, 6] = i % 2 == 0
    pattern = np.ones((5, 5), dtype=bool)
    pattern[1:4, 1:4] = False
    pattern[2, 2] = True
    for r, c in alignment_centres(version):
        known[r - 2 : r + 3, c - 2 : c + 3] = True
        dark[r - 2 : r + 3, c - 2 : c + 3] = pattern
    known[size - 8, 8] = dark[size - 8, 8] = True
    return known, dark
