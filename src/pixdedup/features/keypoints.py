"""Local features: ORB keypoints, RANSAC alignment and an aligned pixel comparison.

Works on the small greyscale thumbnails made during extraction (never on a second
read of the original).  ``align`` estimates a similarity transform (rotation, scale,
translation: crops, resizes, borders and small rotations are all of this form);
``compare_aligned`` warps one image onto the other and measures how well the pixels
agree after removing brightness/contrast differences, globally (normalised
correlation) and per cell (so a moved subject in a burst shot shows up even when
most of the frame is static).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

ORB_FEATURES = 700
ORB_EDGE = 15
MIN_KEYPOINT_SIDE = 2 * ORB_EDGE + 1
"""ORB finds no keypoint within ``ORB_EDGE`` pixels of the border, so a smaller image
has none (and OpenCV's pyramid fails on a side of one or two pixels): it is not asked."""
RATIO_TEST = 0.8
RANSAC_REPROJECTION_PX = 3.0
GRID = 12
BLUR_SIGMA = 1.2
CELL_MAX_DIFFERENCE = 0.4
COARSE_FACTOR = 4
COARSE_REJECT = 0.5
"""At 1/4 scale a pair correlating below this is rejected without the full-size
comparison: duplicates correlate more, not less, once detail is averaged away, and
the full-size overall similarity must reach 0.85."""
"""Mean absolute difference of standardised pixels above which a cell disagrees."""


@dataclass(frozen=True, slots=True)
class LocalFeatures:
    grey: np.ndarray
    points: np.ndarray
    """float32 N x 2 (x, y) in thumbnail pixels."""
    descriptors: np.ndarray | None
    """uint8 N x 32 ORB descriptors, None when no keypoint was found."""


@dataclass(frozen=True, slots=True)
class Alignment:
    matrix: np.ndarray
    """2 x 3 affine matrix mapping points of B into A."""
    inliers: int
    matches: int

    @property
    def scale(self) -> float:
        return float(math.hypot(self.matrix[0, 0], self.matrix[1, 0]))

    @property
    def rotation_degrees(self) -> float:
        return float(math.degrees(math.atan2(self.matrix[1, 0], self.matrix[0, 0])))


@dataclass(frozen=True, slots=True)
class Comparison:
    similarity: float
    """Normalised correlation of the overlapping pixels, -1..1."""
    clean_similarity: float
    """The same, leaving out the cells that disagree (an overlaid caption)."""
    bad_cell_fraction: float
    """Fraction of grid cells whose pixels disagree."""
    overlap: float
    """Fraction of the smaller image covered by the other one."""


_orb: Any = None


def _detector() -> Any:
    global _orb
    if _orb is None:
        _orb = cv2.ORB_create(  # type: ignore[attr-defined]
            nfeatures=ORB_FEATURES, scaleFactor=1.2, nlevels=6, edgeThreshold=ORB_EDGE,
            patchSize=15, fastThreshold=12,
        )
    return _orb


def local_features(grey: np.ndarray) -> LocalFeatures:
    if grey.ndim != 2 or min(grey.shape) < MIN_KEYPOINT_SIDE:
        return LocalFeatures(grey=grey, points=np.zeros((0, 2), np.float32), descriptors=None)
    keypoints, descriptors = _detector().detectAndCompute(grey, None)
    points = np.array([kp.pt for kp in keypoints], dtype=np.float32).reshape(-1, 2)
    return LocalFeatures(grey=grey, points=points, descriptors=descriptors)


def align(a: LocalFeatures, b: LocalFeatures, min_inliers: int = 12) -> Alignment | None:
    """RANSAC similarity transform B -> A from ratio-tested ORB matches, or None."""
    if a.descriptors is None or b.descriptors is None:
        return None
    if len(a.descriptors) < 2 or len(b.descriptors) < 2:
        return None
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    pairs = matcher.knnMatch(b.descriptors, a.descriptors, k=2)
    good = [m[0] for m in pairs if len(m) == 2 and m[0].distance < RATIO_TEST * m[1].distance]
    if len(good) < min_inliers:
        return None
    src = b.points[[m.queryIdx for m in good]]
    dst = a.points[[m.trainIdx for m in good]]
    matrix, mask = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_REPROJECTION_PX,
        maxIters=2000, confidence=0.995,
    )
    if matrix is None or mask is None:
        return None
    inliers = int(mask.sum())
    if inliers < min_inliers:
        return None
    return Alignment(matrix=matrix, inliers=inliers, matches=len(good))


ECC_LEVELS = 3
ECC_MIN_SIDE = 16
"""The coarsest level of the intensity alignment keeps at least this many pixels a side."""
MOTION_CELL_MIN = 12
"""Pixels a side a motion cell needs (``moved_cells``)."""
ECC_GATE = 0.9
"""Correlation the coarsest level must reach for the finer ones to be tried: copies
reach 0.96-1.0 there, different calibration shots of one chessboard at most 0.82, the
two views of a stereo pair 0.90 (those go on and fail the pixel test)."""
ECC_ITERATIONS = (50, 15)
"""ECC iterations on the coarsest level, and on each finer one (which starts from the
level above, a pixel or less away)."""


def align_intensity(a: np.ndarray, b: np.ndarray, start: np.ndarray | None = None
                    ) -> np.ndarray | None:
    """An affine B -> A that maximises the correlation of the pixels (OpenCV's ECC,
    coarse to fine over a pyramid), started from ``start`` (a B -> A matrix: the
    keypoints' alignment, refined over the two finest levels) or else from B stretched
    onto A; None when it does not converge or the coarsest level correlates below
    ECC_GATE.

    For what keypoints cannot align: repetitive patterns (a chessboard, foliage, bark)
    whose ORB matches fail the ratio test.  Only for thumbnails of at least
    ``MOTION_GRID * MOTION_CELL_MIN`` pixels a side (see below).  It finds
    the small turns, crops and shifts of a copy whose content is roughly where the
    stretch puts it; large transforms are the keypoints' job."""
    if a.ndim != 2 or b.ndim != 2:
        return None
    if min(*a.shape, *b.shape) < MOTION_GRID * MOTION_CELL_MIN:
        # An affine fitted to the pixels also lays two pieces of one texture on each
        # other; only where the motion check can measure (it vetoes such fits) is it
        # trusted.  On 22,486 real 96x72 tiles it merged four times as many unrelated
        # pairs as keypoints alone.
        return None
    levels = ECC_LEVELS if start is None else min(2, ECC_LEVELS)
    while levels > 1 and min(*a.shape, *b.shape) >> (levels - 1) < ECC_MIN_SIDE:
        levels -= 1
    if min(*a.shape, *b.shape) < ECC_MIN_SIDE:
        return None
    pa: list[np.ndarray] = [a.astype(np.float32)]
    pb: list[np.ndarray] = [b.astype(np.float32)]
    for _ in range(levels - 1):
        pa.append(cv2.pyrDown(pa[-1]))
        pb.append(cv2.pyrDown(pb[-1]))
    # ECC's warp maps A's pixels into B; the translation is per level
    if start is None:
        start = identity_alignment(a.shape, b.shape)
    warp = cv2.invertAffineTransform(np.asarray(start, np.float64)).astype(np.float32)
    warp[:, 2] /= 2 ** (levels - 1)
    for level in range(levels - 1, -1, -1):
        steps = ECC_ITERATIONS[0] if level == levels - 1 else ECC_ITERATIONS[1]
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, steps, 1e-4)
        try:
            cc, warp = cv2.findTransformECC(  # type: ignore[call-overload]  # no mask
                pa[level], pb[level], warp, cv2.MOTION_AFFINE, criteria, None, 3)
        except cv2.error:  # did not converge, or a flat image
            return None
        if level == levels - 1 and cc < ECC_GATE:
            return None
        if level:
            warp[:, 2] *= 2
    matrix = cv2.invertAffineTransform(warp.astype(np.float64))
    det = float(np.linalg.det(matrix[:, :2]))
    if not 1 / 16 < det < 16:  # not a copy's transform
        return None
    return matrix


def describe_matrix(matrix: np.ndarray) -> str:
    """``describe`` for a 2 x 3 matrix: its scale (square root of the area change) and
    rotation."""
    scale = math.sqrt(abs(float(np.linalg.det(matrix[:, :2]))))
    rotation = math.degrees(math.atan2(matrix[1, 0] - matrix[0, 1], matrix[0, 0] + matrix[1, 1]))
    return f"scale {scale:.2f}, rotation {rotation:+.1f} deg"


def identity_alignment(a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> np.ndarray:
    """The matrix that stretches B onto A (same content, different size)."""
    ha, wa = a_shape[:2]
    hb, wb = b_shape[:2]
    return np.array([[wa / wb, 0.0, 0.0], [0.0, ha / hb, 0.0]], dtype=np.float64)


SAME_FIELD = 0.01
"""Relative difference of covered area within which two images show the same field of
view: then the one with fewer pixels is the frame (either order gives one answer)."""


def compare_aligned(a: np.ndarray, b: np.ndarray, matrix: np.ndarray) -> Comparison:
    """Compare greyscale ``a`` and ``b`` given ``matrix`` (B -> A).

    The comparison runs in the frame of the smaller image (the larger one is warped
    down onto it), so a small copy is judged at its own level of detail; for the same
    field of view, that of the one with fewer pixels.
    """
    area_b_in_a = abs(float(np.linalg.det(matrix[:, :2]))) * b.shape[0] * b.shape[1]
    area_a = a.shape[0] * a.shape[1]
    if area_b_in_a < area_a * (1 - SAME_FIELD) or (
            area_b_in_a <= area_a * (1 + SAME_FIELD) and b.size < a.size):
        a, b = b, a
        matrix = cv2.invertAffineTransform(matrix)
    ha, wa = a.shape
    hb, wb = b.shape
    warped = cv2.warpAffine(b, matrix, (wa, ha), flags=cv2.INTER_AREA)
    mask = cv2.warpAffine(np.full((hb, wb), 255, np.uint8), matrix, (wa, ha),
                          flags=cv2.INTER_NEAREST)
    mask = np.asarray(cv2.erode(mask, np.ones((5, 5), np.uint8)) > 0)
    overlap = float(mask.sum()) / float(ha * wa)
    if mask.sum() < 64:
        return Comparison(similarity=-1.0, clean_similarity=-1.0, bad_cell_fraction=1.0,
                          overlap=overlap)
    coarse = _coarse_similarity(a, warped, mask)
    if coarse < COARSE_REJECT:
        return Comparison(similarity=coarse, clean_similarity=coarse, bad_cell_fraction=1.0,
                          overlap=min(1.0, overlap))
    fa = cv2.GaussianBlur(a.astype(np.float32), (0, 0), BLUR_SIGMA)
    fb = cv2.GaussianBlur(warped.astype(np.float32), (0, 0), BLUR_SIGMA)
    za = _standardise(fa, mask)
    zb = _standardise(fb, mask)
    product = np.where(mask, za * zb, 0.0)
    diff = np.where(mask, np.abs(za - zb), 0.0)
    similarity = float(product.sum()) / float(mask.sum())
    ys = np.linspace(0, ha, GRID + 1).astype(int)
    xs = np.linspace(0, wa, GRID + 1).astype(int)
    n = _cell_sums(mask, ys, xs)
    size = np.outer(np.diff(ys), np.diff(xs))
    counted = (n > 0) & (n >= 0.5 * size)  # cells mostly inside the overlap
    bad_cells = counted & (_cell_sums(diff, ys, xs) > CELL_MAX_DIFFERENCE * n)
    bad, total = int(bad_cells.sum()), int(counted.sum())
    clean = np.logical_and(mask, ~np.repeat(np.repeat(bad_cells, np.diff(ys), axis=0),
                                            np.diff(xs), axis=1))
    clean_similarity = -1.0
    if clean.sum() >= 64:
        ca = _standardise(fa, clean)
        cb = _standardise(fb, clean)
        clean_similarity = float((ca[clean] * cb[clean]).mean())
    return Comparison(similarity=similarity, clean_similarity=clean_similarity,
                      bad_cell_fraction=bad / max(1, total), overlap=min(1.0, overlap))


MOTION_GRID = 12
"""Cells per side in which local motion is measured (``moved_cells``)."""
MOTION_MIN_STD = 6.0
"""Grey-level spread a cell needs in both images for its shift to be measured."""
MOTION_MIN_RESPONSE = 0.2
"""Phase-correlation peak a cell's shift needs to count."""
MOTION_RESIDUAL = 0.8
"""Pixels a cell's shift must differ from the affine fit of all cells' shifts."""
MOTION_GAIN = 0.7
"""... and shifting the cell by it must bring its difference below this share."""
MIN_MOVED_CELLS = 4
"""Moved cells that make two aligned images different moments (``moved_cells``)."""
MOTION_CHECK_BELOW = 0.999
"""Clean similarity from which two aligned images are too alike for any motion
between them to matter: not checked (most copies: re-encodes, resizes, crops)."""


def moved_cells(a: np.ndarray, b: np.ndarray, matrix: np.ndarray) -> int:
    """How many cells of ``a`` show content that moved in ``b`` (``matrix``: B -> A):
    cells whose own shift (phase correlation, all cells in one batch of FFTs) departs
    by more than ``MOTION_RESIDUAL`` pixels from the affine fit of every cell's shift,
    and whose difference that shift removes (content that moved, not a caption or a
    watermark).  A copy has none (its whole frame moves as one: an affine fit); two
    frames of a video, a burst or a stereo pair have some (a subject moved, or depth
    shifts the view).  Measured in the frame of the image with fewer pixels, as
    ``compare_aligned`` compares."""
    enlarged = abs(float(np.linalg.det(matrix[:, :2]))) * (1 - SAME_FIELD) > 1  # B upsampled
    if enlarged and b.size < a.size:
        a, b, matrix = b, a, cv2.invertAffineTransform(matrix)
    ha, wa = a.shape
    ch, cw = ha // MOTION_GRID, wa // MOTION_GRID
    if ch < MOTION_CELL_MIN or cw < MOTION_CELL_MIN:
        return 0
    warped = cv2.warpAffine(b, matrix, (wa, ha), flags=cv2.INTER_AREA)
    mask = cv2.warpAffine(np.full(b.shape[:2], 255, np.uint8), matrix, (wa, ha),
                          flags=cv2.INTER_NEAREST)

    def cells(img: np.ndarray) -> np.ndarray:
        crop = img[:ch * MOTION_GRID, :cw * MOTION_GRID].astype(np.float32)
        return crop.reshape(MOTION_GRID, ch, MOTION_GRID, cw).swapaxes(1, 2).reshape(-1, ch, cw)

    ca, cb, cm = cells(a), cells(warped), cells(mask)
    sa, sb = ca.std(axis=(1, 2)), cb.std(axis=(1, 2))
    use = (cm.min(axis=(1, 2)) > 0) & (sa >= MOTION_MIN_STD) & (sb >= MOTION_MIN_STD)
    if int(use.sum()) < 6:
        return 0
    za = (ca[use] - ca[use].mean(axis=(1, 2), keepdims=True)) / sa[use][:, None, None]
    zb = (cb[use] - cb[use].mean(axis=(1, 2), keepdims=True)) / sb[use][:, None, None]
    index = np.nonzero(use)[0]
    moved = _moved(za, zb, index, ch, cw)
    if moved < MIN_MOVED_CELLS:
        return moved
    # Motion shows whichever image is shifted onto the other; a copy with less detail
    # (blurred) can look moved one way only: its shifted cells come no closer.
    return min(moved, _moved(zb, za, index, ch, cw))


def _moved(za: np.ndarray, zb: np.ndarray, index: np.ndarray, ch: int, cw: int) -> int:
    """``moved_cells`` on the standardised cells ``za``, ``zb`` (at grid positions
    ``index``): B's cells shifted onto A's."""
    window = np.outer(np.hanning(ch), np.hanning(cw)).astype(np.float32)
    fa, fb = np.fft.rfft2(za * window), np.fft.rfft2(zb * window)
    cross = fb * np.conj(fa)
    surface = np.fft.irfft2(cross / np.maximum(np.abs(cross), 1e-9), s=(ch, cw))
    flat = surface.reshape(len(surface), -1)
    peak = flat.argmax(axis=1)
    py, px = np.divmod(peak, cw)
    rows = np.arange(len(surface))
    offsets = np.arange(-1, 2)
    around = surface[rows[:, None, None], (py[:, None, None] + offsets[None, :, None]) % ch,
                     (px[:, None, None] + offsets[None, None, :]) % cw]
    weight = np.maximum(around, 0)
    total = np.maximum(weight.sum(axis=(1, 2)), 1e-9)
    dy = py + (weight.sum(axis=2) * offsets).sum(axis=1) / total
    dx = px + (weight.sum(axis=1) * offsets).sum(axis=1) / total
    dy = np.where(dy > ch / 2, dy - ch, dy)
    dx = np.where(dx > cw / 2, dx - cw, dx)
    response = weight.sum(axis=(1, 2))
    good = response >= MOTION_MIN_RESPONSE
    if int(good.sum()) < 6:
        return 0
    index = index[good]
    centres = np.c_[(index % MOTION_GRID + 0.5) * cw, (index // MOTION_GRID + 0.5) * ch]
    design = np.c_[centres, np.ones(len(centres))]
    moves = np.c_[dx[good], dy[good]]
    fit, *_ = np.linalg.lstsq(design, moves, rcond=None)
    residual = np.linalg.norm(moves - design @ fit, axis=1)
    moved = 0
    for k in np.nonzero(residual > MOTION_RESIDUAL)[0]:  # few: the content test per cell
        cell_a, cell_b = za[good][k], zb[good][k]
        shifted = np.roll(cell_b, (-int(round(moves[k, 1])), -int(round(moves[k, 0]))),
                          axis=(0, 1))
        inner = (slice(3, -3), slice(3, -3))
        before = float(np.abs(cell_a - cell_b)[inner].mean())
        after = float(np.abs(cell_a - shifted)[inner].mean())
        moved += after < MOTION_GAIN * before
    return int(moved)


def _cell_sums(values: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The sum of ``values`` in each cell of the grid with row bounds ``ys`` and column
    bounds ``xs`` (an empty cell sums to 0), from one integral image."""
    src = values.view(np.uint8) if values.dtype == np.bool_ else values
    corners = cv2.integral(src, sdepth=cv2.CV_64F)[np.ix_(ys, xs)]
    return np.diff(np.diff(corners, axis=0), axis=1)


def _coarse_similarity(a: np.ndarray, warped: np.ndarray, mask: np.ndarray) -> float:
    """Masked correlation of the two images area-averaged by COARSE_FACTOR."""
    h, w = a.shape
    size = (max(1, w // COARSE_FACTOR), max(1, h // COARSE_FACTOR))
    ca = cv2.resize(a, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    cb = cv2.resize(warped, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    cm = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    if int(cm.sum()) < 16:
        return 1.0  # too little overlap to judge coarsely: leave it to the full comparison
    return float((_standardise(ca, cm)[cm] * _standardise(cb, cm)[cm]).mean())


def _standardise(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``img`` less its mean over ``mask``, over its standard deviation there (one pass,
    in double precision)."""
    mean, std = (float(v[0, 0]) for v in cv2.meanStdDev(img, mask=mask.view(np.uint8)))
    return (img - mean) / (std if std > 1e-3 else 1.0)


def describe(alignment: Alignment, a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> str:
    """A short human description of the transform, for the report."""
    return f"scale {alignment.scale:.2f}, rotation {alignment.rotation_degrees:+.1f} deg"
