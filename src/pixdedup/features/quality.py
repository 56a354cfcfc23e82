"""Quality metrics measured on the single decode, and the Quality Score.

The score (0..100) ranks members of one duplicate group; its parts, in points:

* resolution, 60: 5 per doubling of the effective pixel count (uniform borders do
  not count), from 16 kpx (0) to 64 Mpx (60);
* compression, 15: the saved quality of a JPEG (its quantisation tables) or of a lossy
  WebP or HEIC (its bitstream header, ``features.codecs``), saturating at 80
  (``selection`` credits a re-saved copy with its source's quality); a lossless file
  decoded from a JPEG counts as that JPEG (``features.jpeg.converted_quality``); 1.0
  for a lossless file; for other lossy formats (AVIF), and for a lossless or HEIC file
  (or a WebP too large for the keeper's re-save test) with JPEG block artefacts (made
  from a JPEG), 0.6 x bits per pixel (at most 0.6);
* sharpness, 10: log of the median cell variance of the Laplacian at the working
  size (a caption or noise does not make a copy look sharper);
* noise, -5: Immerkaer's noise estimate (from 2 to 10 grey levels); it also reads fine
  texture as noise, so it weighs half the sharpness (a mildly blurred copy of a
  detailed photo must not win by losing "noise");
* exposure, 5: fraction of clipped pixels; colour, 5: colourfulness (a grey copy of a
  colour photo loses); metadata, 5: EXIF/XMP/ICC present.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..models import DecodedImage, QualityMetrics
from . import provenance

SCORE_VERSION = "2"
"""Bump when ``quality_score`` changes but the metrics it reads do not: stored scores
are then recomputed from the stored metrics (``FeatureStore.rescore``), no image is
read again.  2: noise weighs 5 points, not 10."""

BORDER_TOLERANCE = 10
"""Grey levels: rows/columns within this of the edge colour count as border."""


def _resave_tested(decoded: DecodedImage) -> bool:
    """A lossy WebP the keeper's re-save test covers (``provenance.MAX_WHOLE_PIXELS``):
    it keeps its own quality even with JPEG block artefacts, because the test tells a
    WebP saved from a JPEG of the group from the WebP original the JPEGs came from."""
    return decoded.format == "WEBP" and \
        decoded.width * decoded.height <= provenance.MAX_WHOLE_PIXELS


def measure_quality(
    decoded: DecodedImage, grey: np.ndarray, file_bytes: int, colorfulness: float,
    full_res_grey: np.ndarray | None = None,
) -> QualityMetrics:
    """``grey``: uint8 working image; ``full_res_grey``: a full-resolution crop for
    block-artefact detection of lossless files (None for JPEG, which is DCT-scaled)."""
    trim_x, trim_y = border_fractions(grey)
    effective = max(1, int(decoded.width * decoded.height * (1 - trim_x) * (1 - trim_y)))
    sharpness = measure_sharpness(grey)
    lossless = decoded.lossless
    jpeg_quality = decoded.jpeg_quality
    primary = decoded.jpeg_primary_quality
    if lossless and primary is not None:  # a decoded JPEG saved losslessly: that JPEG
        lossless, jpeg_quality, primary = False, primary, None
    elif lossless and full_res_grey is not None and has_jpeg_blocks(full_res_grey):
        jpeg_quality = None
        lossless = False
    codec = decoded.codec_quality
    if codec is not None and full_res_grey is not None and not _resave_tested(decoded) \
            and has_jpeg_blocks(full_res_grey):
        codec = None  # a HEIC (or a large WebP) made from a JPEG: its quality says nothing
    return QualityMetrics(
        width=decoded.width,
        height=decoded.height,
        effective_pixels=effective,
        bytes=file_bytes,
        bits_per_pixel=file_bytes * 8.0 / max(1, decoded.width * decoded.height),
        jpeg_quality=jpeg_quality,
        lossless=lossless,
        bit_depth=decoded.bit_depth,
        sharpness=sharpness,
        noise=estimate_noise(grey),
        clipped_fraction=clipped_fraction(grey),
        colorfulness=colorfulness,
        has_metadata=decoded.has_metadata,
        jpeg_primary_quality=primary,
        codec_quality=codec,
        lossless_file=decoded.lossless,
    )


def measure_sharpness(grey: np.ndarray, grid: int = 8) -> float:
    """Log of the median, over a grid of cells, of the Laplacian variance of the lightly
    smoothed image: robust to a caption (few cells) and to pixel noise (smoothing).
    The last ``< grid`` rows and columns are left out so the cells are equal."""
    smooth = cv2.GaussianBlur(grey, (0, 0), 0.8)
    lap = cv2.Laplacian(smooth, cv2.CV_32F)
    h, w = lap.shape
    h, w = h - h % grid, w - w % grid
    if h == 0 or w == 0:
        return 0.0
    lap = np.ascontiguousarray(lap[:h, :w])
    mean = cv2.resize(lap, (grid, grid), interpolation=cv2.INTER_AREA).astype(np.float64)
    square = cv2.resize(cv2.multiply(lap, lap), (grid, grid), interpolation=cv2.INTER_AREA)
    var = np.maximum(square.astype(np.float64) - mean * mean, 0.0)
    return math.log1p(float(np.median(var)))


def border_fractions(grey: np.ndarray) -> tuple[float, float]:
    """Fractions of width and height taken by uniform borders (padding), nested ones
    included: a pad added around a letterboxed photo is found, then the letterbox
    bars inside it (another colour), so the copy's content measures what its
    original's does."""
    h, w = grey.shape
    g = grey.astype(np.int16)
    edges = [0, 0, 0, 0]  # top, bottom, left, right
    for level in range(NESTED_BORDERS):
        # inside a border, past the line that resampling mixed from both colours
        skip = 1 if level else 0
        top, bottom, left, right = (e + skip for e in edges)
        found = _uniform_edges(g[top:h - bottom, left:w - right])
        if found is None and not level:
            return 0.0, 0.0  # a uniform image has no border, it is all content
        if found is None or not any(found):
            break
        edges = [e + skip + n if n else e for e, n in zip(edges, found, strict=True)]
    top, bottom, left, right = edges
    return min(0.9, (left + right) / w), min(0.9, (top + bottom) / h)


NESTED_BORDERS = 3
"""Borders within borders that ``border_fractions`` looks for (a frame, a mat, the
letterbox bars of the photo inside)."""


def _uniform_edges(g: np.ndarray) -> tuple[int, int, int, int] | None:
    """Rows at the top and bottom, columns at the left and right, within
    ``BORDER_TOLERANCE`` of the corners' colour; None where every row is (a uniform
    area)."""
    h, w = g.shape
    if h < 3 or w < 3:
        return 0, 0, 0, 0

    def run(lines: np.ndarray, ref: float) -> int:
        n = 0
        for line in lines:
            if np.abs(line - ref).max() > BORDER_TOLERANCE:
                break
            n += 1
        return n

    corner = float(np.median([g[0, 0], g[0, -1], g[-1, 0], g[-1, -1]]))
    top = run(g, corner)
    if top >= h:
        return None
    return top, run(g[::-1], corner), run(g.T, corner), run(g.T[::-1], corner)


def clipped_fraction(grey: np.ndarray) -> float:
    """Fraction of pixels at 0..2 or 253..255 (uint8 grey levels)."""
    if grey.size == 0:
        return 0.0
    hist = cv2.calcHist([np.ascontiguousarray(grey)], [0], None, [256], [0, 256]).ravel()
    return int(hist[:3].sum() + hist[253:].sum()) / grey.size


_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)


def estimate_noise(grey: np.ndarray) -> float:
    """Immerkaer (1996) fast noise variance estimation; sigma in grey levels."""
    h, w = grey.shape
    if h < 3 or w < 3:
        return 0.0
    # integer kernel on uint8: |response| <= 16 * 255, exact in int16
    conv = cv2.filter2D(np.ascontiguousarray(grey), cv2.CV_16S, _NOISE_KERNEL)[1:-1, 1:-1]
    return float(cv2.norm(conv, cv2.NORM_L1) * math.sqrt(math.pi / 2) / (6.0 * (w - 2) * (h - 2)))


BLOCKY = 1.25
"""Differences across the 8-pixel grid over those off it, above which a lossless file
counts as made from a JPEG (``has_jpeg_blocks``)."""


def _line_differences(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The mean absolute difference between each column and the next, and each row and
    the next (None for an image under 64 px a side)."""
    if grey.shape[0] < 64 or grey.shape[1] < 64:
        return None
    g = grey.astype(np.float32)
    return np.abs(np.diff(g, axis=1)).mean(axis=0), np.abs(np.diff(g, axis=0)).mean(axis=1)


def jpeg_block_signal(grey: np.ndarray) -> float | None:
    """How much JPEG's own block structure shows: the mean column/row difference on the
    8-pixel grid lines that are not on the 16-pixel grid, over that in the middle of
    the 8-pixel blocks (1.0: none; pixels decoded from a JPEG q50: 1.3 or more).  Other
    codecs leave other grids: a WebP's 4x4 transforms and 16x16 macroblocks raise both
    lines or only the 16-pixel ones (1.0 to 1.15).  None for an image under 64 px a side
    or without detail.  ``grey``'s origin must be the grid's."""
    lines = _line_differences(grey)
    if lines is None:
        return None
    dx, dy = lines
    edges = float(np.concatenate([dx[7::16], dy[7::16]]).mean())
    middle = float(np.concatenate([dx[3::8], dy[3::8]]).mean())
    return edges / middle if middle > 0.05 else None


def has_jpeg_blocks(grey: np.ndarray) -> bool:
    """True when column/row differences on the 8-pixel grid clearly exceed those off
    it: the signature of JPEG compression in a lossless file."""
    lines = _line_differences(grey)
    if lines is None:
        return False
    dx, dy = lines
    on = np.concatenate([dx[7::8], dy[7::8]]).mean()
    off = np.concatenate([np.delete(dx, np.s_[7::8]), np.delete(dy, np.s_[7::8])]).mean()
    return bool(off > 0.05 and on > BLOCKY * off)


def _clamp(x: float, lo: float = 0.0, hi: float = 1.0) -> float:
    return max(lo, min(hi, x))


def compression_credit(q: QualityMetrics, credited_quality: int | None = None) -> float:
    """The compression part of the score, 0..1 (see the module docstring)."""
    if q.lossless:
        return 1.0
    if q.jpeg_quality is not None or q.codec_quality is not None:
        saved = q.jpeg_quality if q.jpeg_quality is not None else q.codec_quality
        quality = min(saved or 0, credited_quality or 100)
        return _clamp((quality - 30) / 50.0)
    # other lossy formats, or a lossless file with JPEG block artefacts
    return 0.6 * min(1.0, q.bits_per_pixel)


def quality_score(q: QualityMetrics, credited_quality: int | None = None,
                  compression_cap: float | None = None) -> float:
    """The Quality Score, 0..100 (see the module docstring); ``credited_quality``: a
    lower JPEG quality to credit instead of the file's own; ``compression_cap``: the
    most compression credit to give (the pixels carry another member's JPEG blocks;
    both from ``selection``)."""
    resolution = 60.0 * _clamp((math.log2(q.effective_pixels) - 14.0) / 12.0)
    compression = compression_credit(q, credited_quality)
    if compression_cap is not None:
        compression = min(compression, compression_cap)
    sharp = _clamp((q.sharpness - 2.0) / 6.0)
    noise = _clamp((q.noise - 2.0) / 8.0)
    exposure = 1.0 - _clamp(q.clipped_fraction * 5.0)
    colour = _clamp(q.colorfulness / 30.0)
    score = (
        resolution + 15.0 * compression + 10.0 * sharp - 5.0 * noise + 5.0 * exposure
        + 5.0 * colour + (5.0 if q.has_metadata else 0.0)
    )
    return round(max(0.0, min(100.0, score)), 2)
