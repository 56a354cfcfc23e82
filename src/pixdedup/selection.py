"""The select stage: the best member of a group, by a named keeper rule.

``quality`` (default): the highest Quality Score among the members with the fewest
signs of having been made from another (``derivation``: a conversion, blur, added
noise, less colour, added borders, clipping, fewer pixels, another orientation than
most; ``picture_changes``: a caption, a watermark, a brightness or tone curve that
moves the whole picture off the group's typical one), so that a copy whose edit raised
its score (a blur or a crop saved losslessly scores above its lossy original) does
not set the bar; members
within ``quality_tolerance`` points of it count as equally good, and among those the
one with the fewest signs (counted again among them) wins, then the oldest file (the
likely original), then the one nearest the middle of them (``derivation``'s
deviation), then the larger file, then the shorter path.

A JPEG whose coefficients show it was saved before at a lower quality
(``QualityMetrics.jpeg_primary_quality``) is scored with that quality when the group
holds a member of the same size saved at about that quality: the re-save adds bytes,
not detail, so it must not beat its source.  Without such a member the file keeps its
own quality (a crop or resize of it erases the evidence, and must not win for that).

``refine_keeper`` then asks the pixels (``features.provenance``, run by ``keeper``
after grouping): a keeper that is another same-size member's pixels saved again (a
JPEG or WebP q85 made from a WebP q80 or HEIC original claims more quality than it
carries) is scored just below that member, marked 're-saved', and the keeper is
chosen again; so is one turned a little against most members (``turned_against``,
on the thumbnails), marked 'turned', and the other tests' findings.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Collection, Generator, Mapping
from statistics import median

import cv2
import numpy as np

from .features.hashes import ORIENTED_HASH_KIND
from .features.keypoints import LocalFeatures, align, local_features
from .features.quality import compression_credit, quality_score
from .models import ImageRecord, QualityMetrics, RecordLookup
from .registry import Registry

DEFAULT_QUALITY_TOLERANCE = 3.0
"""Quality Score points within which members count as equally good."""

KeeperRule = Callable[[RecordLookup, list[int], float], int]
KEEPER_RULES: Registry[KeeperRule] = Registry("keeper rule")


SOURCE_SLACK = 5
"""A member saved at most this many quality points above a re-save's earlier quality
can be its source."""


def scores(records: RecordLookup, members: list[int],
           resaved: Mapping[int, int] | None = None,
           inherited: Mapping[int, int] | None = None) -> dict[int, float]:
    """Each member's Quality Score, re-saved JPEGs credited with their source's quality
    where the source is in the group (see the module docstring).  ``resaved``: members
    found to be another member's pixels saved again (``refine_keeper``) -> that
    member: scored just below it.  ``inherited``: members whose pixels carry another
    member's JPEG blocks -> that member: credited with no more compression than it."""
    out = {m: records[m].quality_score or 0.0 for m in members}
    saved: dict[tuple[int, int], list[int]] = {}
    for m in members:  # JPEG files only: a converted copy shows its history, not a source
        q = records[m].quality
        if q is not None and q.jpeg_quality is not None and records[m].format == "JPEG":
            saved.setdefault((q.width, q.height), []).append(q.jpeg_quality)
    for m in members:
        q = records[m].quality
        if q is None or q.jpeg_primary_quality is None:
            continue
        primary = q.jpeg_primary_quality
        same_size = saved.get((q.width, q.height), [])
        if any(other <= primary + SOURCE_SLACK for other in same_size):
            out[m] = quality_score(q, primary)
    metrics = {m: q for m in members if (q := records[m].quality) is not None}
    lossy: dict[tuple[int, int], list[int]] = {}  # a conversion keeps its source's size
    for o, measures in metrics.items():
        if not measures.lossless_file:
            lossy.setdefault((measures.width, measures.height), []).append(o)
    for m, q in metrics.items():  # a lossless conversion scores as the lossy file it was made from
        if not q.lossless_file:
            continue
        same = [out[o] for o in lossy.get((q.width, q.height), ())
                if not _resave_of(o, m, resaved, metrics) and _converted(q, metrics[o])]
        if same:
            out[m] = min(out[m], *same)
    for m, source in (inherited or {}).items():
        q, x = records[m].quality, records[source].quality
        if m in out and q is not None and x is not None:
            out[m] = min(out[m], quality_score(q, compression_cap=compression_credit(x)))
    for m, source in (resaved or {}).items():
        if m in out and source in out:
            out[m] = min(out[m], out[source] - RESAVED_MARGIN)
    return out


RESAVED_MARGIN = 0.01
"""A re-save scores this much below its source (and carries the 're-saved' mark)."""


BLUR_MARGIN = 0.6
"""Log sharpness below the members' median: 'blurred'."""
NOISE_RATIO, NOISE_OFFSET = 1.2, 0.3
"""Noise above this ratio (plus offset, grey levels) of the median of the members that
are not blurred: 'noisier'."""
COLOUR_RATIO, COLOUR_OFFSET = 0.7, 1.0
"""Colourfulness below this share (minus offset) of the members' median."""
BORDER_MARGIN = 0.02
"""Share of the frame taken by uniform borders beyond the members' median."""
CLIP_MARGIN = 0.02
"""Share of clipped pixels above the members' median."""
SMALLER_RATIO = 0.97
"""Content pixels below this share of the member with most (a photo straightened by
one degree keeps 0.955 of its frame)."""
FLATTER_RATIO = 0.88
"""Spread of a member's thumbnail cells below this share of the members' median: less
contrast ('flatter': a contrast or tone change)."""
TILT_VERSION = 1
"""Bump when a verdict of ``turned_against`` can change for the same two thumbnails."""
TILT_DEGREES = 0.5
"""Rotation of the keeper's picture against another member's (keypoints on the two
thumbnails) from which it counts as turned a little: a photo straightened or tilted in
an edit.  Copies made without a turn measured at most 0.33 degrees against their
originals on the developer benchmark's formats draw 1, turned ones (1, 3, 5 degrees)
0.82 or more."""
TURN_MARGIN = 6
"""Bits by which a member's DCT hash turned or mirrored (``verify.matching_orientations``)
must be nearer another member's than its own hash is, for the two to be in different
orientations ('turned')."""


def _converted(a: QualityMetrics, b: QualityMetrics) -> bool:
    """``a`` is a lossless file of lossy ``b``'s pixels: the same measures, or (``b`` a
    JPEG, decoded at a smaller size than ``a``, so its measures differ) ``a``'s pixels
    sit on the lattice of a JPEG of ``b``'s size and quality (exactly: a lossless
    original made from a JPEG q90 is not a conversion of its copies saved at q92)."""
    if not a.lossless_file or b.lossless_file:
        return False
    if _same_pixels(a, b):
        return True
    return a.jpeg_quality is not None and b.jpeg_quality is not None \
        and (a.width, a.height) == (b.width, b.height) \
        and a.jpeg_quality == b.jpeg_quality


def _resave_of(o: int, m: int, resaved: Mapping[int, int] | None,
               metrics: Mapping[int, QualityMetrics]) -> bool:
    """Whether member ``o`` was found to be member ``m``'s pixels saved again (``m``
    itself or a member with its pixels the source: a byte copy of it)."""
    source = (resaved or {}).get(o)
    return source is not None and (source == m or (
        source in metrics and m in metrics and _same_pixels(metrics[source], metrics[m])))


def _same_pixels(a: QualityMetrics, b: QualityMetrics) -> bool:
    """The same decoded pixels: every measure of the working image equal."""
    return (a.width, a.height, a.effective_pixels) == (b.width, b.height, b.effective_pixels) \
        and all(abs(x - y) <= 1e-6 for x, y in (
            (a.sharpness, b.sharpness), (a.noise, b.noise), (a.colorfulness, b.colorfulness),
            (a.clipped_fraction, b.clipped_fraction)))


def derivation(records: RecordLookup, members: list[int],
               resaved: Mapping[int, int] | None = None
               ) -> tuple[dict[int, list[str]], dict[int, float]]:
    """For each member, the signs that it was made from another member rather than
    the other way round, whatever the file formats: a lossless file with the pixels
    of a lossy member ('converted': the conversion adds bytes, not pixels; see
    ``_converted``); less
    detail ('blurred'); more noise than the members that are not blurred
    ('noisier'); much less colour ('less colour': grey, sepia); added uniform
    borders or canvas ('border'); more clipped shadows or highlights ('clipped': a
    tone change); less contrast ('flatter': the spread of the thumbnail's cells, a
    contrast or tone change), each against the members' median (each edit moves a copy
    away from the typical member in one direction; the original is typical in all);
    fewer pixels of content than the largest, added noise aside ('smaller': a crop, a
    turn, a resize); mirrored or turned against most of the others ('turned': the copies keep the original's
    orientation, a mirrored copy has the others' the other way round).  A member
    found to be a member's pixels saved again (``resaved``: re-save -> source,
    ``refine_keeper``) is no lossy source that member (or one with its pixels) was
    converted from: a PNG holding a JPEG q85's pixels and its own JPEG q85 re-save
    have the same measures (``_resave_of``).
    The keeper prefers the members with the fewest marks among those it counts as
    equally good, then the oldest, then the least *deviation*: the distance from the
    median in all these measures, each in units of its margin (the original is the
    one every copy was made from, so the one nearest the middle of them)."""
    metrics: dict[int, QualityMetrics] = {}
    for m in members:
        q = records[m].quality
        if q is not None:
            metrics[m] = q
    known = list(metrics)
    marks: dict[int, list[str]] = {m: [] for m in members}
    deviation = {m: 0.0 for m in members}
    if len(known) < 2:
        return marks, deviation
    border = {m: x.effective_pixels / max(1, x.width * x.height) for m, x in metrics.items()}
    typical_sharpness = median(x.sharpness for x in metrics.values())
    sharp = [m for m in known if metrics[m].sharpness >= typical_sharpness - BLUR_MARGIN]
    typical_noise = median(metrics[m].noise for m in sharp)
    noisier = {m for m in sharp if metrics[m].noise > NOISE_RATIO * typical_noise + NOISE_OFFSET}
    # added noise breaks up uniform edges that the others count as border
    most_pixels = max(x.effective_pixels for m, x in metrics.items() if m not in noisier)
    spread = {m: float(c.std()) for m in known if (c := _cells(records[m])) is not None}
    typical_spread = median(spread.values()) if spread else 0.0
    typical_colour = median(x.colorfulness for x in metrics.values())
    typical_clipped = median(x.clipped_fraction for x in metrics.values())
    typical_border = median(border.values())
    turned = _turned(records, known)
    for m, x in metrics.items():
        out = marks[m]
        if m in turned:
            out.append("turned")
        if any(_converted(x, metrics[o]) for o in known
               if o != m and not _resave_of(o, m, resaved, metrics)):
            out.append("converted")
        if m not in sharp:
            out.append("blurred")
        elif m in noisier:
            out.append("noisier")
        if x.colorfulness < COLOUR_RATIO * typical_colour - COLOUR_OFFSET:
            out.append("less colour")
        if border[m] < typical_border - BORDER_MARGIN:
            out.append("border")
        if x.clipped_fraction > typical_clipped + CLIP_MARGIN:
            out.append("clipped")
        if m in spread and spread[m] < FLATTER_RATIO * typical_spread:
            out.append("flatter")
        if x.effective_pixels < SMALLER_RATIO * most_pixels:
            out.append("smaller")
        deviation[m] = (
            abs(x.sharpness - typical_sharpness) / BLUR_MARGIN
            + abs(x.noise - typical_noise) / ((NOISE_RATIO - 1) * typical_noise + NOISE_OFFSET)
            + abs(x.colorfulness - typical_colour) / ((1 - COLOUR_RATIO) * typical_colour
                                                       + COLOUR_OFFSET)
            + abs(x.clipped_fraction - typical_clipped) / CLIP_MARGIN
            + abs(border[m] - typical_border) / BORDER_MARGIN
            + math.log(most_pixels / max(1, x.effective_pixels)) / (1 - SMALLER_RATIO))
    return marks, deviation


LOCAL_CELLS = 32
"""Cells across the thumbnail in which ``local_changes`` compares members."""
LOCAL_LEVEL = 20.0
"""Grey levels a cell must differ from the members' median, after the gain and offset
fit, to count as changed."""
LOCAL_SHARE = 0.25
"""At most this share of the cells changed: a local change, not another view."""


def _cells(rec: ImageRecord) -> np.ndarray | None:
    return _thumbnail_cells(rec.thumbnail) if rec.thumbnail else None


@functools.lru_cache(maxsize=4096)
def _thumbnail_cells(thumbnail: bytes) -> np.ndarray | None:
    """A thumbnail's grey cells, ``LOCAL_CELLS`` across (cached: the keeper asks again
    each time a group's members change)."""
    grey = cv2.imdecode(np.frombuffer(thumbnail, np.uint8), cv2.IMREAD_GRAYSCALE)
    if grey is None or min(grey.shape) < 2:
        return None
    rows = max(1, round(LOCAL_CELLS * grey.shape[0] / grey.shape[1]))
    out: np.ndarray = cv2.resize(grey, (LOCAL_CELLS, rows),
                                 interpolation=cv2.INTER_AREA).astype(np.float32)
    return out


@functools.lru_cache(maxsize=256)
def _thumbnail_features(thumbnail: bytes) -> LocalFeatures:
    """A thumbnail's ORB keypoints (cached: the keeper compares one best with several
    members, and a new best with the same ones)."""
    grey = cv2.imdecode(np.frombuffer(thumbnail, np.uint8), cv2.IMREAD_GRAYSCALE)
    return local_features(grey if grey is not None else np.zeros((0, 0), np.uint8))


def turned_against(records: RecordLookup, best: int, other: int) -> bool:
    """Whether ``best``'s picture is turned by a small angle (``TILT_DEGREES`` up to 45
    degrees) against ``other``'s: their thumbnails aligned by keypoints + RANSAC, as
    verification aligns (False where they do not align: a mirror image; a quarter
    turn is more than 45 degrees, and 'turned' by the hashes already).  The copies of
    a photo keep its frame upright: a straightened or tilted copy is the one turned
    against most (``refine_steps``)."""
    mine, theirs = records[best].thumbnail, records[other].thumbnail
    if not mine or not theirs:
        return False
    alignment = align(_thumbnail_features(theirs), _thumbnail_features(mine))
    return alignment is not None and TILT_DEGREES <= abs(alignment.rotation_degrees) < 45


def local_changes(records: RecordLookup, members: list[int]) -> set[int]:
    """The members whose picture differs from the group's typical one in a few places: a
    caption, a watermark, an object pasted in or taken out (``picture_changes``)."""
    return picture_changes(records, members)[0]


def picture_changes(records: RecordLookup, members: list[int]) -> tuple[set[int], set[int]]:
    """(local changes, tone changes) of the members against the group's typical
    picture. Among the members of the most common frame (aspect ratio within 1%; at
    least three), each thumbnail, cut into ``LOCAL_CELLS`` cells across, is fitted to
    the cells' median over the *reference* members by one gain and offset; the
    reference is the member that shows the same picture as most others (at most
    ``LOCAL_SHARE`` of the cells off, both ways) and those that do (at least three,
    else nothing is marked), so a mirrored or cropped copy of the same frame does not
    blur the median (a tone edit moves every cell alike, the fit takes it out).

    A member with at least one cell still ``LOCAL_LEVEL`` grey levels off, and at most
    ``LOCAL_SHARE`` of them, has a *local change*. A reference member whose cells need
    that fit to move them by more than ``TONE_SHIFT`` grey levels (the median cell),
    or to stretch their contrast more than ``TONE_GAIN`` times (the median absolute
    deviation), has a *tone change* (brighter,
    darker, a gamma curve, more contrast; less contrast is 'flatter'). Every copy was
    made from the original, so the median is the original's picture wherever most
    copies left it alone: on the developer benchmark's three draws no original and no
    re-encode was marked, 93% of the captions and watermarks were. A slightly turned or
    cropped copy is marked as well (its content is shifted; it is 'smaller' already)."""
    frames: dict[tuple[int, int], list[int]] = {}
    cells: dict[int, np.ndarray] = {}
    aspects = {m: records[m].width / max(1, records[m].height) for m in members
               if records[m].width and records[m].height}
    if len(aspects) < 3:
        return set(), set()
    typical = median(aspects.values())
    for m, aspect in aspects.items():
        if abs(math.log(aspect / typical)) > 0.01:
            continue
        c = _cells(records[m])
        if c is not None:
            cells[m] = c
            frames.setdefault(c.shape, []).append(m)
    if not frames:
        return set(), set()
    same = max(frames.values(), key=len)
    if len(same) < 3:
        return set(), set()
    stack = np.stack([cells[m].ravel() for m in same]).astype(np.float64)
    agree = _agreement(stack[:LOCAL_PAIRWISE])
    # the reference: the members that show the same picture as the one most of them
    # agree with (a mirrored or cropped copy of the same aspect would blur a median
    # taken over all: with two such among four, the original itself looked changed)
    centre = int(np.argmax(agree.sum(axis=1) + 1e-3 * np.arange(len(agree))[::-1]))
    reference = [i for i in range(len(agree)) if agree[centre, i]]
    if len(reference) < 3:
        return set(), set()
    typical_cells = np.median(stack[reference], axis=0)
    local: set[int] = set()
    tone: set[int] = set()
    spread = _spread(typical_cells)
    shown = set(reference)
    off = _changed(stack, typical_cells[None])[:, 0].tolist()
    # medians, so that a caption's or a watermark's few cells move neither
    shift = np.abs(np.median(stack - typical_cells, axis=1)).tolist()
    spreads = np.median(np.abs(stack - np.median(stack, axis=1, keepdims=True)), axis=1).tolist()
    for i, m in enumerate(same):
        if 1 <= off[i] <= LOCAL_SHARE * stack.shape[1]:
            local.add(m)
        if i in shown and spread > 1e-6 and (
                shift[i] > TONE_SHIFT or spreads[i] > TONE_GAIN * spread):
            tone.add(m)
    return local, tone


def _spread(cells: np.ndarray) -> float:
    """The median absolute deviation of the cells from their median."""
    return float(np.median(np.abs(cells - np.median(cells))))


TONE_SHIFT = 5.0
"""Grey levels by which a member's cells may differ from the typical picture's (the
median difference) before it is marked 'tone'.  On the developer benchmark's formats
draws 1 and 3 (122 groups): a brightness of 1.15 moved the cells by 8.8 to 24, a gamma
of 0.8 by 11 to 19; originals, re-encodes, conversions, resizes, added noise, blurs,
captions and watermarks by at most 1 (a turned or cropped copy, whose cells show
other content, up to 8: it is 'smaller' anyway)."""
TONE_GAIN = 1.2
"""Contrast (the cells' median absolute deviation) over the typical picture's above
which a member is marked 'tone' (a contrast boost).  On those draws: originals 0.98 to
1.03, every other edit at most 1.16 but turned and cropped copies (up to 2.1)."""


LOCAL_PAIRWISE = 48
"""The reference is looked for among at most this many members of a large group."""


def _changed(xs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """len(xs) x len(targets): the cells of each ``x`` still ``LOCAL_LEVEL`` off each
    target after fitting it by least squares with one gain and offset."""
    xc = xs - xs.mean(axis=1, keepdims=True)
    tc = targets - targets.mean(axis=1, keepdims=True)
    var = (xc * xc).sum(axis=1)
    gain = np.divide(xc @ tc.T, var[:, None], out=np.zeros((len(xs), len(targets))),
                     where=var[:, None] > 1e-9)
    residual = gain[:, :, None] * xc[:, None, :] - tc[None, :, :]
    counts: np.ndarray = (np.abs(residual) > LOCAL_LEVEL).sum(axis=2)
    return counts


def _agreement(stack: np.ndarray) -> np.ndarray:
    """n x n: members ``i`` and ``j`` show one picture (at most ``LOCAL_SHARE`` of the
    cells off after fitting each to the other, both ways)."""
    ok = _changed(stack, stack) <= LOCAL_SHARE * stack.shape[1]
    out: np.ndarray = ok & ok.T
    return out


def _tiebreak(r: ImageRecord) -> tuple[float, int, int, str]:
    return (r.ref.mtime, -r.ref.size, len(r.ref.rel_path), r.ref.rel_path)


@KEEPER_RULES.register("quality")
def _quality_rule(records: RecordLookup, members: list[int], tolerance: float) -> int:
    return keep_quality(records, members, tolerance)


def keep_quality(records: RecordLookup, members: list[int], tolerance: float,
                 resaved: Mapping[int, int] | None = None,
                 inherited: Mapping[int, int] | None = None,
                 noisy: Collection[int] = (), converted: Collection[int] = (),
                 blurry: Collection[int] = (), turned: Collection[int] = ()) -> int:
    """The quality rule (see the module docstring); ``resaved`` and ``inherited`` as
    for ``scores``; ``noisy`` and ``blurry``: members found noisier or blurred on their
    full-resolution pixels, ``converted``: lossless members found to hold a lossy
    member's pixels in most blocks, ``turned``: members found turned a little against
    most (``refine_keeper``), marked 'noisier', 'blurred', 'converted' and 'turned'.
    The signs are
    counted twice: among all members, to find the score the equally good are measured
    from, then among those, whose median is nearer the original's measures (the
    low-quality copies left out)."""
    score = scores(records, members, resaved, inherited)
    marks = _marks(records, members, resaved, noisy, converted, blurry, turned)
    fewest = min(len(x) for x in marks.values())
    top = max(score[m] for m in members if len(marks[m]) == fewest)
    close = [m for m in members if score[m] >= top - tolerance]
    marks = _marks(records, close, resaved, noisy, converted, blurry, turned)
    _, deviation = derivation(records, close, resaved)
    return min(close, key=lambda m: (len(marks[m]), records[m].ref.mtime, deviation[m],
                                     *_tiebreak(records[m])))


def _turned(records: RecordLookup, members: list[int]) -> set[int]:
    """The members in another orientation (mirrored, turned: their DCT hash turned is
    ``TURN_MARGIN`` bits nearer) than more than half of the other members
    (``verify.matching_orientations`` for every pair, on arrays)."""
    kind = ORIENTED_HASH_KIND
    hashed = [m for m in members if kind in records[m].hashes]
    if len(hashed) < 2:
        return set()
    own = np.array([records[m].hashes[kind] for m in hashed], dtype=np.uint64)
    known = np.array([len(records[m].oriented_hashes) == 7 for m in hashed])
    oriented = np.array([records[m].oriented_hashes if ok else [0] * 7
                         for m, ok in zip(hashed, known.tolist(), strict=True)], dtype=np.uint64)
    straight = np.bitwise_count(own[:, None] ^ own[None, :]).astype(np.int16)
    # [i, j]: i's own hash against j turned or mirrored, the nearest way; 99 where j has none
    nearest = np.bitwise_count(own[:, None, None] ^ oriented[None, :, :]).min(axis=2)
    nearest = np.where(known[None, :], nearest, 99).astype(np.int16)
    either = np.minimum(nearest, nearest.T)
    turned = (straight >= TURN_MARGIN) & (either <= straight - TURN_MARGIN)
    np.fill_diagonal(turned, False)
    against = turned.sum(axis=1)
    return {m for m, n in zip(hashed, against.tolist(), strict=True)
            if 2 * n > len(members) - 1}


def _marks(records: RecordLookup, members: list[int],
           resaved: Mapping[int, int] | None, noisy: Collection[int] = (),
           converted: Collection[int] = (), blurry: Collection[int] = (),
           turned: Collection[int] = ()) -> dict[int, list[str]]:
    marks, _ = derivation(records, members, resaved)
    changed, toned = picture_changes(records, members)
    for m in members:
        if m in changed:
            marks[m].append("local change")
        if m in toned:
            marks[m].append("tone")
        if resaved and m in resaved:
            marks[m].append("re-saved")
        if m in noisy and "noisier" not in marks[m]:
            marks[m].append("noisier")
        if m in converted and "converted" not in marks[m]:
            marks[m].append("converted")
        if m in blurry and "blurred" not in marks[m]:
            marks[m].append("blurred")
        if m in turned and "turned" not in marks[m]:
            marks[m].append("turned")
    return marks


@KEEPER_RULES.register("resolution")
def keep_resolution(records: RecordLookup, members: list[int], tolerance: float) -> int:
    score = scores(records, members)
    return min(members, key=lambda m: (-(records[m].width * records[m].height),
                                       -score[m], _tiebreak(records[m])))


@KEEPER_RULES.register("largest")
def keep_largest(records: RecordLookup, members: list[int], tolerance: float) -> int:
    return min(members, key=lambda m: (-records[m].ref.size, _tiebreak(records[m])))


@KEEPER_RULES.register("oldest")
def keep_oldest(records: RecordLookup, members: list[int], tolerance: float) -> int:
    return min(members, key=lambda m: _tiebreak(records[m]))


@KEEPER_RULES.register("newest")
def keep_newest(records: RecordLookup, members: list[int], tolerance: float) -> int:
    return min(members, key=lambda m: (-records[m].ref.mtime, -records[m].ref.size,
                                       records[m].ref.rel_path))


RANK_KEYS: dict[str, Callable[[ImageRecord], tuple[object, ...]]] = {
    "quality": lambda r: (-(r.quality_score or 0.0), *_tiebreak(r)),
    "resolution": lambda r: (-(r.width * r.height), -(r.quality_score or 0.0), *_tiebreak(r)),
    "largest": lambda r: (-r.ref.size, *_tiebreak(r)),
    "oldest": _tiebreak,
    "newest": lambda r: (-r.ref.mtime, -r.ref.size, r.ref.rel_path),
}
"""Each rule's order of single images, the likely keeper first: where the group
stage starts growing a group (``grouping``).  The rule itself has the last word."""


def rank_key(rule: str) -> Callable[[ImageRecord], tuple[object, ...]]:
    """Sort key for ``rule`` (``RANK_KEYS``; a rule registered without one: by path)."""
    KEEPER_RULES.get(rule)  # an unknown rule is an error here too
    return RANK_KEYS.get(rule, lambda r: (r.ref.rel_path,))


def choose_best(records: RecordLookup, members: list[int], rule: str = "quality",
                tolerance: float = DEFAULT_QUALITY_TOLERANCE) -> int:
    return KEEPER_RULES.get(rule)(records, members, tolerance)


RESAVE_SHARPNESS, RESAVE_NOISE, RESAVE_COLOUR, RESAVE_CLIPPED = 0.25, 0.25, 1.0, 0.01
"""A member is tested as the keeper's source only when its measures are this close to
the keeper's (noise and colour plus a fifth and a tenth of the keeper's own, clipping
plus a third of the larger share): a re-save changes none of them much, and each test
reads and saves pixels.  (A lossy save of a dark photo moves pixels on and off black:
a WebP q86 of a dusk photo clipped 0.051 of its pixels, its PNG source 0.064.)"""


def _could_be_resave(a: QualityMetrics, b: QualityMetrics) -> bool:
    return ((a.width, a.height) == (b.width, b.height) and not _same_pixels(a, b)
            and abs(a.sharpness - b.sharpness) <= RESAVE_SHARPNESS
            and abs(a.noise - b.noise) <= RESAVE_NOISE + 0.2 * a.noise
            and abs(a.colorfulness - b.colorfulness) <= RESAVE_COLOUR + 0.1 * a.colorfulness
            and abs(a.clipped_fraction - b.clipped_fraction)
            <= RESAVE_CLIPPED + max(a.clipped_fraction, b.clipped_fraction) / 3)


INHERITED_CREDIT_GAP = 0.05
"""Compression credit (0..1) by which a same-size member must fall short of the
keeper's for the keeper to be asked whether it carries that member's JPEG blocks."""


RESAVE, CONVERSION, BLOCKS, NOISE, BLUR = "resave", "conversion", "blocks", "noise", "blur"
"""The tests on pixels ``refine_steps`` asks for (on the two files)."""
TILT = "tilt"
"""The test on the two thumbnails ``refine_steps`` asks for (``turned_against``)."""
PixelRequest = tuple[str, int, int]
"""(test: ``RESAVE``, ``CONVERSION``, ``BLOCKS``, ``NOISE``, ``BLUR`` or ``TILT``, copy,
source)."""
VOTE_SAMPLE = 5
"""Same-size members, the best scored first, the keeper's full-resolution noise and
sharpness are compared with (``refine_steps``)."""


def refine_keeper(records: RecordLookup, members: list[int], best: int,
                  resaved_from: Callable[[int, int], bool],
                  tolerance: float = DEFAULT_QUALITY_TOLERANCE,
                  carries_blocks: Callable[[int, int], bool] | None = None,
                  noisier: Callable[[int, int], bool] | None = None,
                  converted_from: Callable[[int, int], bool] | None = None,
                  blurrier: Callable[[int, int], bool] | None = None,
                  turned: Callable[[int, int], bool] | None = None,
                  ) -> tuple[int, dict[int, int]]:
    """The quality rule's keeper, after the tests on pixels (``features.provenance``):
    while it is turned a little against most of the ``VOTE_SAMPLE`` best-scored other
    members (``turned(keeper, other)``; default ``turned_against`` on the records'
    thumbnails), it is marked 'turned' and the keeper is chosen again; while the
    keeper is another member of the same size saved again
    (``resaved_from(keeper, other)``), it is scored just below that member and the
    keeper is chosen again; while it is a lossless file that holds a lossy same-size
    member's pixels in most blocks (``converted_from(keeper, other)``: a PNG made from
    a JPEG with a caption added), it is marked 'converted' and the keeper is chosen
    again; while its pixels carry the JPEG blocks of a same-size
    member that is no JPEG (so the blocks come from an earlier JPEG) and is credited
    with less compression (``carries_blocks(keeper, other)``: a tone edit of a PNG or
    HEIC photo made from a JPEG, saved as a JPEG or WebP at a high quality), it is
    credited with no more than that member and the keeper is chosen again; while it
    is noisier at full resolution (``noisier(keeper, other)``) than most of the
    ``VOTE_SAMPLE`` best-scored members of its size within the tolerance (noise added
    in an edit, which the reduced working image does not show), it is marked
    'noisier' and the keeper is chosen again; the same for a keeper blurred at full
    resolution (``blurrier(keeper, other)``) against most of the ``VOTE_SAMPLE``
    best-scored members of its size that are not noisier (``_sharpness_sample``),
    marked 'blurred'.  Returns the keeper and the re-saves
    found (member -> its source).  ``refine_steps`` is the same, asking for each
    test's answer in turn."""
    tests = {RESAVE: resaved_from, BLOCKS: carries_blocks, NOISE: noisier,
             CONVERSION: converted_from, BLUR: blurrier,
             TILT: turned or functools.partial(turned_against, records)}
    steps = refine_steps(records, members, best, tolerance, carries_blocks is not None,
                         noisier is not None, converted_from is not None, blurrier is not None)
    try:
        test, copy, source = next(steps)
        while True:
            answer = tests[test](copy, source)  # type: ignore[misc]
            test, copy, source = steps.send(answer)
    except StopIteration as done:
        result: tuple[int, dict[int, int]] = done.value
        return result


def refine_steps(records: RecordLookup, members: list[int], best: int,
                 tolerance: float = DEFAULT_QUALITY_TOLERANCE, blocks: bool = True,
                 noise: bool = True, conversion: bool = True, blur: bool = True
                 ) -> Generator[PixelRequest, bool, tuple[int, dict[int, int]]]:
    """``refine_keeper`` as a generator: it yields each test it needs, (``TILT``,
    ``RESAVE``, ``CONVERSION``, ``BLOCKS``, ``NOISE`` or ``BLUR``, copy, source), is
    sent the answer, and returns (keeper, re-saves), so that a caller can run the tests
    of many groups at once (``keeper.refine_groups``).  ``blocks``, ``noise``,
    ``conversion``, ``blur``: whether those tests are asked.  The tilt test, always
    asked, on the thumbnails, comes first: a turned copy is passed over before any file is
    read."""
    resaved: dict[int, int] = {}
    inherited: dict[int, int] = {}
    noisy: set[int] = set()
    converted: set[int] = set()
    blurry: set[int] = set()
    turned: set[int] = set()
    for _ in range(2 * len(members)):
        q = records[best].quality
        if q is None or best in resaved:
            break
        score = scores(records, members, resaved, inherited)
        same_size = {m: x for m in members if m != best and (x := records[m].quality) is not None
                     and (x.width, x.height) == (q.width, q.height)}
        others = sorted((m for m, x in same_size.items() if _could_be_resave(q, x)),
                        key=lambda m: -score[m])
        sample = sorted((m for m, x in same_size.items()
                         if score[m] >= score[best] - tolerance and not _same_pixels(q, x)),
                        key=lambda m: (-score[m], m))[:VOTE_SAMPLE]
        if best not in turned and (yield from _most_say(TILT, best, sorted(
                (m for m in members if m != best and (x := records[m].quality) is not None
                 and not _same_pixels(q, x)), key=lambda m: (-score[m], m))[:VOTE_SAMPLE])):
            turned.add(best)
        elif (source := (yield from _first_yes(RESAVE, best, others))) is not None:
            resaved[best] = source
        elif conversion and q.lossless_file and best not in converted and (yield from _first_yes(
                CONVERSION, best, sorted((m for m, x in same_size.items() if not x.lossless_file),
                                         key=lambda m: -score[m]))) is not None:
            converted.add(best)
        elif blocks and best not in inherited and (source := (yield from _first_yes(
                BLOCKS, best, _block_sources(records, same_size, q)))) is not None:
            inherited[best] = source
        elif noise and best not in noisy and (yield from _most_say(NOISE, best, sample)):
            noisy.add(best)
        elif blur and best not in blurry and (yield from _most_say(
                BLUR, best, _sharpness_sample(same_size, score, q))):
            blurry.add(best)
        else:
            break
        best = keep_quality(records, members, tolerance, resaved, inherited, noisy, converted,
                            blurry, turned)
    return best, resaved


def _sharpness_sample(same_size: Mapping[int, QualityMetrics], score: Mapping[int, float],
                      q: QualityMetrics) -> list[int]:
    """The members the keeper's sharpness is compared with: the ``VOTE_SAMPLE`` best
    scored of its size, whatever their score (a blur saved losslessly can score far
    above every other member), but for those with its own pixels and those noisier
    than most of them (added noise raises the measure of sharpness; a blur lowers
    the keeper's own noise, so it is no yardstick)."""
    if not same_size:
        return []
    typical = median(x.noise for x in same_size.values())
    return sorted((m for m, x in same_size.items() if not _same_pixels(q, x)
                   and x.noise <= NOISE_RATIO * typical + NOISE_OFFSET),
                  key=lambda m: (-score[m], m))[:VOTE_SAMPLE]


TEST_CANDIDATES = 16
"""Most members a test that looks for one (``_first_yes``: is the keeper a re-save or a
conversion of one of them, does it carry one's JPEG blocks?) asks about, in the order
given (the best scored first; for the block test the least credited first): a group
of hundreds of copies of one photo costs at most this many tests per choice of the
keeper, not one per member.  On the developer benchmark's seven draws a list is at
most 14 long and the yes at most its 9th."""


def _first_yes(test: str, best: int, candidates: list[int]
               ) -> Generator[PixelRequest, bool, int | None]:
    """Asks ``test`` of ``best`` against each candidate in turn, the first
    ``TEST_CANDIDATES``: the first that it answers yes to, or None."""
    for m in candidates[:TEST_CANDIDATES]:
        if (yield test, best, m):
            return m
    return None


def _block_sources(records: RecordLookup, same_size: Mapping[int, QualityMetrics],
                   q: QualityMetrics) -> list[int]:
    """The same-size members whose JPEG blocks the best (measures ``q``) may carry,
    lowest compression credit first: no JPEG (its own save made no such blocks), no
    lossless file of the best's own pixels (it carries the best's blocks), no lossless
    file of blocks of unknown quality (``_unknown_blocks``), credited
    ``INHERITED_CREDIT_GAP`` below the best."""
    credits = {m: compression_credit(x) for m, x in same_size.items()
               if records[m].format != "JPEG" and not _same_pixels(q, x) and not _converted(x, q)
               and not _unknown_blocks(x)}
    return sorted((m for m, c in credits.items()
                   if c < compression_credit(q) - INHERITED_CREDIT_GAP), key=credits.__getitem__)


def _unknown_blocks(x: QualityMetrics) -> bool:
    """A lossless file whose pixels show JPEG blocks of no measurable quality (edited
    after the decode: a tone change moves the coefficients off the JPEG's lattice).
    Its credit is a guess from its bytes, and its blocks came from an earlier JPEG
    that the keeper may be: it is no source to cap the keeper's credit with (an
    original WebP made from a JPEG, and a lossless tone edit of it, carry the same
    blocks)."""
    return x.lossless_file and not x.lossless and x.jpeg_quality is None


def _most_say(test: str, best: int, sample: list[int]) -> Generator[PixelRequest, bool, bool]:
    """Whether ``test`` (``TILT``, ``NOISE``, ``BLUR``) says yes of ``best`` against more than half
    of ``sample`` (at least two members; asks no more than it takes to know)."""
    if len(sample) < 2:
        return False
    need = len(sample) // 2 + 1
    votes = 0
    for k, m in enumerate(sample):
        votes += bool((yield test, best, m))
        if votes >= need or votes + len(sample) - k - 1 < need:
            break
    return votes >= need
