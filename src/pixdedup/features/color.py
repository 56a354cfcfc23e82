"""Colour signature: a hue x saturation histogram, the grey fraction, colourfulness
and the dominant colours.  Pairs are compared on the hue distribution
(``color_correlation``), which ignores brightness and saturation, so tone edits keep
a high correlation while recoloured variants (the same product in another colour)
do not."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from ..models import ColorSignature

HUE_BINS = 18
SAT_BINS = 4
MIN_SATURATION = 40
"""0..255: below this a pixel counts as grey."""
MIN_VALUE = 30
"""0..255: darker pixels have no reliable hue."""
MIN_CHROMATIC_FRACTION = 0.03
"""Below this fraction of chromatic pixels an image is treated as greyscale."""
SIGNATURE_SIZE = 64


def color_signature(rgb: np.ndarray) -> ColorSignature:
    """``rgb``: uint8 HxWx3 (any size; it is reduced to 64x64 first, ``reduced``)."""
    small = reduced(rgb, SIGNATURE_SIZE)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    hue = hsv[:, :, 0].ravel().astype(np.int32)  # 0..179
    sat = hsv[:, :, 1].ravel().astype(np.int32)
    val = hsv[:, :, 2].ravel().astype(np.int32)
    chromatic = (sat >= MIN_SATURATION) & (val >= MIN_VALUE)
    hist = np.zeros(HUE_BINS * SAT_BINS, dtype=np.float32)
    if chromatic.any():
        hb = np.minimum(hue[chromatic] * HUE_BINS // 180, HUE_BINS - 1)
        span = 256 - MIN_SATURATION
        sb = np.minimum((sat[chromatic] - MIN_SATURATION) * SAT_BINS // span, SAT_BINS - 1)
        hist = np.bincount(hb * SAT_BINS + sb, minlength=HUE_BINS * SAT_BINS).astype(np.float32)
        hist /= hist.sum()
    grey_fraction = float(1.0 - chromatic.mean())
    return ColorSignature(
        histogram=hist,
        grey_fraction=grey_fraction,
        colorfulness=colorfulness(small),
        dominant_colors=dominant_colors(small),
    )


def reduced(rgb: np.ndarray, size: int) -> np.ndarray:
    """``rgb`` (uint8 H x W x 3) at ``size`` x ``size`` for colour statistics: a bilinear
    step to twice that size, then an exact 2x2 area average (a direct area resize of a
    480 px image costs six times as much; the hue and colourfulness of the result are
    the same to a few hundredths)."""
    h, w = rgb.shape[:2]
    if h >= 4 * size and w >= 4 * size:
        rgb = cv2.resize(rgb, (2 * size, 2 * size), interpolation=cv2.INTER_LINEAR)
    out: np.ndarray = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    return out


def colorfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) colourfulness; 0 for a grey image."""
    f = rgb.astype(np.float32)
    rg = f[:, :, 0] - f[:, :, 1]
    yb = 0.5 * (f[:, :, 0] + f[:, :, 1]) - f[:, :, 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def dominant_colors(rgb: np.ndarray, count: int = 3) -> tuple[str, ...]:
    """Up to ``count`` dominant colours as '#rrggbb', most frequent first."""
    if min(rgb.shape[:2]) >= 32:  # 32x32 is plenty to count colours (and 4x quicker)
        rgb = cv2.resize(rgb, (32, 32), interpolation=cv2.INTER_AREA)
    im = Image.fromarray(rgb).quantize(colors=count, method=Image.Quantize.FASTOCTREE)
    palette = im.getpalette() or []
    counts = sorted(im.getcolors() or [], reverse=True)
    out = []
    for _n, idx in counts[:count]:
        k = int(idx)  # type: ignore[call-overload]
        r, g, b = (int(v) for v in palette[3 * k : 3 * k + 3])
        out.append(f"#{r:02x}{g:02x}{b:02x}")
    return tuple(out)


def is_greyscale(sig: ColorSignature) -> bool:
    return sig.grey_fraction > 1.0 - MIN_CHROMATIC_FRACTION


def hue_distribution(sig: ColorSignature) -> np.ndarray:
    """The hue histogram of the chromatic pixels (the saturation bins summed)."""
    return sig.histogram.astype(np.float64).reshape(HUE_BINS, SAT_BINS).sum(axis=1)


def hue_row(sig: ColorSignature) -> np.ndarray:
    """The hue distribution as the candidate search keeps it (``Signatures.hue``):
    HUE_BINS float16, all zero for a (nearly) greyscale image."""
    if is_greyscale(sig):
        return np.zeros(HUE_BINS, np.float16)
    return hue_distribution(sig).astype(np.float16)


def hue_correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``color_correlation`` of the rows of two M x HUE_BINS arrays of ``hue_row``s;
    NaN where either is greyscale (all zero) or flat."""
    da = a.astype(np.float32) - a.astype(np.float32).mean(axis=1, keepdims=True)
    db = b.astype(np.float32) - b.astype(np.float32).mean(axis=1, keepdims=True)
    denom = np.sqrt((da * da).sum(axis=1) * (db * db).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (da * db).sum(axis=1) / denom, np.nan)


def color_correlation(a: ColorSignature, b: ColorSignature) -> float | None:
    """Pearson correlation of the hue distributions (``hue_distribution``), -1..1;
    ``None`` when either image is (nearly) greyscale, where hue says nothing.

    Hue alone, not hue x saturation: a contrast, saturation or brightness edit moves
    pixels between saturation bins (contrast 0.8 took a grey-blue photo's 2-D
    correlation down to 0.29, its hue correlation stays 0.81), a recolouring moves
    them between hues."""
    if is_greyscale(a) or is_greyscale(b):
        return None
    ha = hue_distribution(a)
    hb = hue_distribution(b)
    da = ha - ha.mean()
    db = hb - hb.mean()
    denom = float(np.sqrt((da * da).sum() * (db * db).sum()))
    if denom == 0.0:
        return None
    return float((da * db).sum() / denom)
