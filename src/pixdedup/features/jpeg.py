"""The JPEG quality an image still carries from an earlier, coarser save.

Saving a JPEG again at a higher quality adds bytes, not detail: its DCT coefficients
are multiples of the new, finer quantisation steps, but only of those multiples that
the old, coarser steps lead to.  ``primary_quality`` computes the 8x8 block DCT of the
luma of a central, block-aligned crop of the full-size decode and, for each candidate
earlier quality (IJG tables), the share of the low-frequency coefficients that a save
at that quality followed by this file's could have produced ("reachable"), against
the share of their neighbouring multiples that could (what chance gives for a smooth,
once-saved coefficient distribution).  A re-saved JPEG scores near 1 against near 0;
a once-saved one about the same for both.

``converted_quality`` asks it of a lossless file: a JPEG decoded and saved losslessly
keeps its coefficients on the lattice of the JPEG's steps (off it by the pixels'
rounding only: mean distance below ``LATTICE_DISTANCE`` of a step, where a file that
never was a JPEG shows about 0.25); the best-fitting candidate is its quality.

Measured on the PNG developer photos saved once at 60 to 95 (no false detection) and
twice, 40 to 80 then 70 to 95, ten or more quality points apart (found in 118 of 170;
missed mostly at 95, whose steps of 1 and 2 are too fine for the pixel rounding, and
where the two tables are too alike to tell, such as 60 then 70).  It costs about
1.4 ms per image, and runs only where the decode is full size (JPEGs up to twice the
working size, lossless files): a DCT-scaled decode has no 8x8 blocks left.
"""

from __future__ import annotations

import numpy as np

STD_LUMA = np.array((
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
), dtype=np.float64).reshape(8, 8)
"""IJG standard luminance table (Annex K), natural (row-major) order, as Pillow gives
quantisation tables."""

CROP = 256
"""Side of the central, block-aligned crop that is analysed (1024 blocks)."""
CANDIDATES = np.arange(20, 95, 5)
"""Earlier qualities tried (each at most the file's own quality - 5)."""
MIN_REACHABLE = 0.85
"""Share of the nonzero coefficients an earlier save must explain..."""
MIN_MARGIN = 0.25
"""... this much more than it explains of their neighbouring multiples."""
MIN_STEP_RATIO = 1.5
"""A coefficient position tells only where the earlier step is this much coarser."""
LATTICE_DISTANCE = 0.1
"""Lossless files: mean distance (in steps) to a lattice that they sit on."""
MIN_POSITIONS = 3
MIN_COEFFICIENTS = 100
MAX_COEFFICIENTS = 2500
"""The first this many nonzero coefficients (in block order) are plenty to decide."""

_LOW = np.array([(0, 1), (1, 0), (2, 0), (1, 1), (0, 2), (0, 3), (1, 2), (2, 1), (3, 0),
                 (4, 0), (3, 1), (2, 2), (1, 3), (0, 4)])
"""Low-frequency AC positions (zigzag 1..14): steps small enough to be informative."""


def ijg_table(quality: int) -> np.ndarray:
    """libjpeg's luminance table for ``quality`` (1..100)."""
    scale = 5000.0 / quality if quality < 50 else 200.0 - 2.0 * quality
    return np.clip(np.floor((STD_LUMA * scale + 50.0) / 100.0), 1, 255)


_DCT = np.array([[np.sqrt((1 if k == 0 else 2) / 8.0) * np.cos((2 * n + 1) * k * np.pi / 16.0)
                  for n in range(8)] for k in range(8)])
_STEPS = np.stack([ijg_table(int(q)) for q in CANDIDATES])[:, _LOW[:, 0], _LOW[:, 1]]


def low_coefficients(luma: np.ndarray) -> np.ndarray:
    """(blocks, 14) low-frequency DCT coefficients of ``luma`` (starts on a block
    corner; trailing partial blocks are ignored)."""
    h, w = luma.shape[0] // 8 * 8, luma.shape[1] // 8 * 8
    blocks = luma[:h, :w].astype(np.float64).reshape(h // 8, 8, w // 8, 8)
    blocks = blocks.swapaxes(1, 2).reshape(-1, 8, 8) - 128.0
    rows = _DCT[:5]  # u, v <= 4 is all _LOW needs
    return (rows @ blocks @ rows.T)[:, _LOW[:, 0], _LOW[:, 1]]


def central_crop(width: int, height: int) -> tuple[int, int, int, int] | None:
    """The block-aligned central box (left, top, right, bottom) that is analysed, or
    None for an image too small to tell."""
    side_x, side_y = min(CROP, width) // 8 * 8, min(CROP, height) // 8 * 8
    if side_x < 64 or side_y < 64:
        return None
    x0, y0 = (width - side_x) // 2 // 8 * 8, (height - side_y) // 2 // 8 * 8
    return x0, y0, x0 + side_x, y0 + side_y


def _reachable(multiple: np.ndarray, own: np.ndarray, earlier: np.ndarray) -> np.ndarray:
    """Could a save with steps ``earlier`` then one with steps ``own`` give this
    (nonzero) multiple of ``own``?  Zero is left out: it is reachable from anything."""
    value = multiple * own
    return (np.abs(value - np.round(value / earlier) * earlier) <= own / 2 + 0.01) & \
        (multiple != 0)


def converted_quality(luma: np.ndarray) -> int | None:
    """The IJG quality of the JPEG that a lossless image's pixels (``luma``: a
    block-aligned crop, ``central_crop``) were decoded from, or None."""
    coef = low_coefficients(luma)
    best: tuple[float, int] | None = None
    for steps, candidate in zip(_STEPS, CANDIDATES, strict=True):
        usable = steps >= 4
        ratio = coef[:, usable] / steps[usable]
        counted = np.abs(ratio) > 0.5  # zeros sit on every lattice
        if int(counted.sum()) < MIN_COEFFICIENTS:
            continue
        distance = float(np.abs(ratio - np.round(ratio))[counted].mean())
        if distance < LATTICE_DISTANCE and (best is None or distance < best[0]):
            best = (distance, int(candidate))
    return None if best is None else best[1]


def primary_quality(luma: np.ndarray, table: np.ndarray, quality: int) -> int | None:
    """The earlier, lower IJG quality whose quantisation the coefficients of ``luma``
    (a full-size, block-aligned luma crop, ``central_crop``) still carry, or None.
    ``table``: the file's own luminance table (8x8 or 64, natural order), ``quality``
    its quality."""
    own = np.asarray(table, dtype=np.float64).reshape(8, 8)[_LOW[:, 0], _LOW[:, 1]]
    k = np.round(low_coefficients(luma) / own)  # each coefficient, in this file's steps
    blocks, positions = np.nonzero(k)  # zero is reachable from anything: left out
    blocks, positions = blocks[:MAX_COEFFICIENTS], positions[:MAX_COEFFICIENTS]
    m = k[blocks, positions]
    o = own[positions]
    tried = CANDIDATES <= quality - 5
    steps = _STEPS[tried]  # (candidates, 14)
    usable = (steps >= MIN_STEP_RATIO * own) & (steps >= 4)
    s = steps[:, positions]  # (candidates, coefficients)
    counted = usable[:, positions]
    n = counted.sum(axis=1)
    share = (_reachable(m, o, s) & counted).sum(axis=1) / np.maximum(n, 1)
    around = (_reachable(m - 1, o, s) & counted).sum(axis=1) + \
        (_reachable(m + 1, o, s) & counted).sum(axis=1)
    neighbours = ((m - 1 != 0).astype(np.int64) + (m + 1 != 0))[None, :] * counted
    chance = around / np.maximum(neighbours.sum(axis=1), 1)
    ok = (usable.sum(axis=1) >= MIN_POSITIONS) & (n >= MIN_COEFFICIENTS) & \
        (share >= MIN_REACHABLE) & (share - chance >= MIN_MARGIN)
    if not ok.any():
        return None
    margin = np.where(ok, share - chance, -np.inf)
    return int(CANDIDATES[tried][int(np.argmax(margin))])
