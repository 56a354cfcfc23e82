"""The verify stage: a cascade over candidate pairs, cheapest evidence first.

1. exact: identical content hash;
2. colour: hue histogram correlation below ``min_color_correlation``
   rejects (a recoloured variant), greyscale images skip this step;
3. hash: same aspect ratio -> the thumbnails are compared pixel by pixel directly;
4. local: ORB keypoints + RANSAC similarity transform, then the aligned comparison;
   where the keypoints find no alignment that passes, an affine fitted to the pixels
   (ECC from the stretch, ``keypoints.align_intensity``) and the same comparison; one
   that passes but looks moved is refined on the pixels (ECC from it) first.
   A pair that passes 3 or 4 but shows content that moved between the two (video
   or burst frames, a stereo pair) is rejected: stage 'moment';
5. orientations: 3 and 4 also run with the second image mirrored or turned, in the
   orientations whose oriented DCT hash is within ``orientation_radius`` and nearer
   than the pair's own (``matching_orientations``), nearest first;
   the evidence's ``transform`` names the orientation.

Only the pairs still undecided reach the expensive local stage.  The pixel test is
the same for 3 and 4 (see ``features.keypoints.compare_aligned``).
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .features import keypoints as kp
from .features.color import color_correlation
from .features.hashes import (
    ORIENTATION_LABELS,
    ORIENTATIONS,
    ORIENTED_HASH_KIND,
    hamming,
    orient,
)
from .models import Evidence, ImageRecord, RecordLookup, describe_exception

if TYPE_CHECKING:
    from .config import ScanConfig


VERIFY_VERSION = 6
"""Bump when a verdict can change for the same thumbnails and settings: the verdicts
remembered in the feature store are then voided.  2: the same field of view is
compared in the frame of the image with fewer pixels, whichever comes first; 3:
different moments (``keypoints.moved_cells``) are rejected; 4: the colour gate
compares hue distributions (``features.color.color_correlation``); 5: what keypoints
cannot align, or align only to look moved, is aligned on the pixels
(``keypoints.align_intensity``); 6: cells count as moved only when they do both ways
(a blurred copy looked moved one way)."""


@dataclass(frozen=True, slots=True)
class VerifyOptions:
    min_color_correlation: float = 0.6
    min_pixel_similarity: float = 0.975
    """Normalised correlation of the aligned pixels, outside disagreeing cells."""
    min_overall_similarity: float = 0.85
    max_changed_fraction: float = 0.12
    """Largest fraction of grid cells allowed to differ (captions, watermarks)."""
    min_overlap: float = 0.5
    min_inliers: int = 12
    same_aspect_tolerance: float = 0.03
    similar_min_inliers: int = 20
    """Similar mode, embedding candidates: keypoint inliers needed (mirrored copies too)."""
    similar_min_pixel_similarity: float = 0.94
    """Similar mode: clean aligned similarity needed (colour filters lower it a little)."""
    similar_min_overall: float = 0.9
    orientation_radius: int | None = None
    """Wavelet-hash radius within which a mirrored or turned ``j`` is tried when the
    pair fails as it is (None: orientations are not tried)."""

    @classmethod
    def of(cls, config: ScanConfig) -> VerifyOptions:
        return cls(min_color_correlation=config.min_color_correlation,
                   min_pixel_similarity=config.min_pixel_similarity,
                   max_changed_fraction=config.max_changed_fraction,
                   orientation_radius=config.max_orientation_distance if config.orientations
                   else None)


_Local = tuple[kp.Alignment | None, kp.Comparison | None]

INVERSE = {"rotated 90": "rotated 270", "rotated 270": "rotated 90"}
"""The orientation that undoes each one (the others undo themselves)."""


def matching_orientations(a: ImageRecord, b: ImageRecord, radius: int) -> list[tuple[int, str]]:
    """(distance, orientation) for each orientation of B whose DCT hash, B turned that
    way, is within ``radius`` of A's (or A turned back of B's, whichever is nearer),
    nearest first; the identity is not one of them."""
    kind = ORIENTED_HASH_KIND
    ha, hb = a.hashes.get(kind), b.hashes.get(kind)
    if ha is None or hb is None:
        return []
    names = list(ORIENTATIONS)
    found = []
    for k, name in enumerate(names):
        d = [hamming(ha, b.oriented_hashes[k])] if len(b.oriented_hashes) == 7 else []
        if len(a.oriented_hashes) == 7:
            d.append(hamming(hb, a.oriented_hashes[names.index(INVERSE.get(name, name))]))
        if d and min(d) <= radius:
            found.append((min(d), name))
    return sorted(found)

MAX_ORIENTATIONS_TRIED = 2
"""Orientations tried per pair: those whose oriented DCT hash is nearer than the
pair's own, nearest first, so always before the pair as it is."""


class Verifier:
    def __init__(self, records: RecordLookup,
                 options: VerifyOptions,
                 cache_size: int = 4096) -> None:
        self.records = records
        self.options = options
        self._grey: OrderedDict[tuple[int, str | None], np.ndarray] = OrderedDict()
        self._features: OrderedDict[tuple[int, str | None], kp.LocalFeatures] = OrderedDict()
        self._last_local: tuple[tuple[int, int, str | None], _Local] | None = None
        self.cache_size = cache_size

    def grey(self, i: int, orientation: str | None = None) -> np.ndarray:
        """Record ``i``'s thumbnail as greyscale, mirrored or turned on request
        (``features.hashes.ORIENTATIONS``)."""
        key = (i, orientation)
        g = self._grey.get(key)
        if g is None:
            if orientation:
                g = orient(self.grey(i), orientation)
            else:
                thumb = self.records[i].thumbnail or b""
                decoded = cv2.imdecode(np.frombuffer(thumb, np.uint8), cv2.IMREAD_GRAYSCALE)
                g = np.asarray(decoded) if decoded is not None else np.zeros((0, 0), np.uint8)
            self._grey[key] = g
            if len(self._grey) > self.cache_size:
                self._grey.popitem(last=False)
        else:
            self._grey.move_to_end(key)
        return g

    def features(self, i: int, orientation: str | None = None) -> kp.LocalFeatures:
        key = (i, orientation)
        f = self._features.get(key)
        if f is None:
            f = kp.local_features(self.grey(i, orientation))
            self._features[key] = f
            if len(self._features) > self.cache_size:
                self._features.popitem(last=False)
        else:
            self._features.move_to_end(key)
        return f

    def _local(self, i: int, j: int, orientation: str | None = None) -> _Local:
        """ORB + RANSAC of ``j`` (in ``orientation``) onto ``i``, and the aligned
        comparison.  The last pair's answer is kept: the similar-mode check follows
        the near cascade on the same pair."""
        key = (i, j, orientation)
        if self._last_local is not None and self._last_local[0] == key:
            return self._last_local[1]
        alignment = kp.align(self.features(i), self.features(j, orientation),
                             self.options.min_inliers)
        cmp = None if alignment is None else \
            kp.compare_aligned(self.grey(i), self.grey(j, orientation), alignment.matrix)
        self._last_local = (key, (alignment, cmp))
        return alignment, cmp

    def verify(self, i: int, j: int) -> tuple[bool, Evidence]:
        """Decide whether records ``i`` and ``j`` are duplicates, with the evidence.
        With ``orientation_radius`` set, ``j`` mirrored or turned is tried as well, in
        the orientations whose oriented DCT hash is nearer to ``i``'s than ``j``'s
        own is, nearest first."""
        a, b = self.records[i], self.records[j]
        if a.content_hash and a.content_hash == b.content_hash:
            return True, Evidence(stage="exact", hash_distance=0, color_correlation=1.0,
                                  similarity=1.0)
        opts = self.options
        distance = min((hamming(a.hashes[k], b.hashes[k]) for k in a.hashes if k in b.hashes),
                       default=None)
        cc = color_correlation(a.color, b.color) if a.color and b.color else None
        ccr = None if cc is None else round(cc, 4)
        if cc is not None and cc < opts.min_color_correlation:  # histograms: any orientation
            return False, Evidence(stage="color", hash_distance=distance, color_correlation=ccr)
        if self.grey(i).size == 0 or self.grey(j).size == 0:
            return False, Evidence(stage="hash", hash_distance=distance, color_correlation=ccr)
        tries: list[tuple[int, str | None]] = [(0, None)]
        kind = ORIENTED_HASH_KIND
        if opts.orientation_radius is not None and kind in a.hashes and kind in b.hashes:
            # a turn or mirror is tried only where it fits better than the pair as it is
            # (a symmetric image fits both, and then the pair as it is decides)
            straight = hamming(a.hashes[kind], b.hashes[kind])
            turned = [(d, o) for d, o in matching_orientations(a, b, opts.orientation_radius)
                      if d < straight]
            tries = sorted([(straight, None), *turned[:MAX_ORIENTATIONS_TRIED]],
                           key=lambda t: t[0])
        evidence: Evidence | None = None
        for d, orientation in tries:
            ok, found = self._pixels(i, j, orientation, d if orientation else distance, ccr)
            if ok:
                return True, found
            if orientation is None:
                evidence = found
        assert evidence is not None
        return False, evidence

    def _pixels(self, i: int, j: int, orientation: str | None, distance: int | None,
                ccr: float | None) -> tuple[bool, Evidence]:
        """The pixel stages for ``j`` in ``orientation``: the thumbnails compared as
        they are when the aspect ratios agree (stage 'hash'), else or then aligned by
        keypoints + RANSAC (stage 'local')."""
        ga, gb = self.grey(i), self.grey(j, orientation)
        best: kp.Comparison | None = None
        moment: tuple[bool, Evidence] | None = None
        a, b = self.records[i], self.records[j]
        wb, hb = (b.height, b.width) if orientation and ORIENTATIONS[orientation][1] % 2 \
            else (b.width, b.height)
        aspect_a = a.width / max(1, a.height)
        aspect_b = wb / max(1, hb)
        if abs(math.log(aspect_a / aspect_b)) <= self.options.same_aspect_tolerance:
            identity = kp.identity_alignment(ga.shape, gb.shape)
            cmp = kp.compare_aligned(ga, gb, identity)
            if self._passes(cmp):
                moment = self._moment(ga, gb, identity, cmp, distance, ccr, orientation)
                if moment is None:
                    return True, self._evidence("hash", distance, ccr, cmp, None, orientation)
                # a small turn or crop also looks like motion when the frames are laid
                # on each other as they are: the keypoint alignment decides
            best = cmp
        alignment, aligned = self._local(i, j, orientation)
        start = None
        if alignment is not None and aligned is not None:
            if self._passes(aligned):
                moment = self._moment(ga, gb, alignment.matrix, aligned, distance, ccr,
                                      orientation)
                if moment is None:
                    return True, self._evidence("local", distance, ccr, aligned, alignment,
                                                orientation)
                # keypoints align to about a pixel, and a fine texture laid on itself a
                # pixel off looks moved: the pixels refine the alignment before it counts
                start = alignment.matrix
            elif best is None or aligned.clean_similarity > best.clean_similarity:
                best = aligned
        # the pixels themselves (ECC): refining the keypoints' alignment, or aligning what
        # keypoints cannot (a repetitive pattern) from B stretched onto A
        matrix = kp.align_intensity(ga, gb, start)
        if matrix is not None:
            found = kp.compare_aligned(ga, gb, matrix)
            if self._passes(found):
                refused = self._moment(ga, gb, matrix, found, distance, ccr, orientation)
                if refused is None:
                    ev = self._evidence("local", distance, ccr, found, None, orientation)
                    turn = ("then " if orientation else "") + kp.describe_matrix(matrix)
                    inliers = alignment.inliers if start is not None and alignment else None
                    how = " (refined on the pixels)" if start is not None \
                        else " (aligned on the pixels)"
                    return True, dataclasses.replace(
                        ev, inliers=inliers,
                        transform="; ".join(filter(None, [ev.transform, turn])) + how)
                moment = moment or refused
            elif best is None or found.clean_similarity > best.clean_similarity:
                best = found
        if moment is not None:
            return moment
        return False, self._evidence("local", distance, ccr, best, alignment, orientation)

    def _moment(self, ga: np.ndarray, gb: np.ndarray, matrix: np.ndarray,
                cmp: kp.Comparison, distance: int | None, ccr: float | None,
                orientation: str | None) -> tuple[bool, Evidence] | None:
        """The rejection of two aligned images that passed the pixel test but show
        different moments (a subject moved between video or burst frames, or depth
        shifted a stereo view: ``keypoints.moved_cells``); None for a copy."""
        if cmp.clean_similarity >= kp.MOTION_CHECK_BELOW:
            return None
        moved = kp.moved_cells(ga, gb, matrix)
        if moved < kp.MIN_MOVED_CELLS:
            return None
        ev = self._evidence("moment", distance, ccr, cmp, None, orientation)
        return False, dataclasses.replace(
            ev, transform=f"{moved} regions moved: a different moment, not a copy")

    def verify_similar(self, i: int, j: int, cosine: float,
                       near: tuple[bool, Evidence] | None = None) -> tuple[bool, Evidence]:
        """Similar mode: the near cascade first (``near``: its answer, if known); an
        embedding candidate it rejects is confirmed by keypoints + RANSAC alone (no
        colour gate: a colour filter is a copy), B mirrored as well, with a slightly
        looser pixel test."""
        ok, ev = near if near is not None else self.verify(i, j)
        cos = round(float(cosine), 4)
        if ok:
            return True, dataclasses.replace(ev, embedding_similarity=cos)
        o = self.options
        for orientation in (None, "mirrored"):  # keypoints handle turns, not mirrors
            alignment, cmp = self._local(i, j, orientation)
            if alignment is None or cmp is None or alignment.inliers < o.similar_min_inliers:
                continue
            if (cmp.overlap >= o.min_overlap and cmp.bad_cell_fraction <= o.max_changed_fraction
                    and cmp.clean_similarity >= o.similar_min_pixel_similarity
                    and cmp.similarity >= o.similar_min_overall):
                found = self._evidence("embedding", ev.hash_distance, ev.color_correlation, cmp,
                                       alignment, orientation)
                return True, dataclasses.replace(found, embedding_similarity=cos)
        return False, dataclasses.replace(ev, embedding_similarity=cos)

    def _passes(self, cmp: kp.Comparison) -> bool:
        o = self.options
        return (cmp.overlap >= o.min_overlap and cmp.bad_cell_fraction <= o.max_changed_fraction
                and cmp.clean_similarity >= o.min_pixel_similarity
                and cmp.similarity >= o.min_overall_similarity)

    @staticmethod
    def _evidence(stage: str, distance: int | None, cc: float | None,
                  cmp: kp.Comparison | None, alignment: kp.Alignment | None,
                  orientation: str | None = None) -> Evidence:
        parts = [ORIENTATION_LABELS[orientation]] if orientation else []
        if alignment is not None:  # after the orientation: what the keypoints found
            parts.append(f"{'then ' if orientation else ''}scale {alignment.scale:.2f}, "
                         f"rotation {alignment.rotation_degrees:+.1f} deg")
        return Evidence(
            stage=stage,
            hash_distance=distance,
            color_correlation=cc,
            similarity=None if cmp is None else round(max(0.0, cmp.clean_similarity), 4),
            inliers=None if alignment is None else alignment.inliers,
            transform="; ".join(parts) or None,
        )


PAIRS_PER_TASK = 48
"""The most pairs in one verification task; fewer pairs are split evenly over the
workers (a pair costs 1 to 15 ms, a task a fraction of that)."""


Verdict = tuple[bool, Evidence]
Decided = tuple[int, int, bool, Evidence, "Verdict | None"]
"""(a, b, ok, evidence of b against a, the near-mode verdict computed on the way, if
one was: the part worth remembering, ``verdicts.VerdictMemory``)."""


@dataclass(frozen=True, slots=True)
class VerifyTask:
    """A batch of pairs with the records they need (sent to a worker process)."""

    pairs: list[tuple[int, int]]
    records: dict[int, ImageRecord]
    options: VerifyOptions
    cosines: dict[tuple[int, int], float] | None = None
    """Similar mode: the pairs' embedding similarity, where both have an embedding."""
    min_cosine: float = 1.0
    """Similar mode: the similarity from which a pair the near cascade rejects gets
    the embedding check (``decide``)."""
    near: dict[tuple[int, int], Verdict] | None = None
    """Near-mode verdicts already known (remembered from an earlier scan)."""


def failure(exc: BaseException) -> tuple[bool, Evidence]:
    """The verdict on a pair whose verification raised: not joined, the reason kept
    (stage 'error'), so one odd pair never stops a run."""
    return False, Evidence(stage="error", error=describe_exception(exc))


def decide(verifier: Verifier, i: int, j: int, cosine: float | None = None,
           min_cosine: float = 1.0, near: Verdict | None = None
           ) -> tuple[Verdict, Verdict | None]:
    """(The verdict on ``j`` against ``i``, the near verdict if it was computed here).
    Near mode: the cascade.  Similar mode (``cosine`` given): a pair the cascade
    rejects gets the embedding check (keypoints + RANSAC, no colour gate) where its
    cosine is at least ``min_cosine`` or only the colour gate said no (a
    colour-filtered copy; a turned copy's embedding is far from it)."""
    fresh = None
    if near is None:
        near = fresh = verifier.verify(i, j)
    if cosine is None:
        return near, fresh
    if near[0]:
        return (True, dataclasses.replace(near[1], embedding_similarity=round(float(cosine), 4))), \
            fresh
    if cosine >= min_cosine or near[1].stage == "color":
        return verifier.verify_similar(i, j, cosine, near), fresh
    return near, fresh


def verify_pairs(verifier: Verifier, pairs: Sequence[tuple[int, int]],
                 cosines: Mapping[tuple[int, int], float] | None = None,
                 min_cosine: float = 1.0,
                 near: Mapping[tuple[int, int], Verdict] | None = None) -> list[Decided]:
    """``decide`` on each pair; a pair whose verification raises gets ``failure``."""
    cosines, near = cosines or {}, near or {}
    out: list[Decided] = []
    for i, j in pairs:
        try:
            (ok, ev), fresh = decide(verifier, i, j, cosines.get((i, j)), min_cosine,
                                     near.get((i, j)))
        except Exception as exc:  # noqa: BLE001 - a per-pair verdict, not a crash
            (ok, ev), fresh = failure(exc), None
        out.append((i, j, ok, ev, fresh))
    return out


def run_task(task: VerifyTask) -> list[Decided]:
    return verify_pairs(Verifier(task.records, task.options), task.pairs, task.cosines,
                        task.min_cosine, task.near)


def crashed_task(task: VerifyTask, reason: str) -> list[Decided]:
    """The verdicts of a batch whose worker process died: none of its pairs joined."""
    return [(i, j, False, Evidence(stage="error", error=reason), None) for i, j in task.pairs]


def make_tasks(pairs: Sequence[tuple[int, int]],
               fetch: Callable[[set[int]], Mapping[int, ImageRecord]],
               options: VerifyOptions,
               cosines: Mapping[tuple[int, int], float] | None = None,
               min_cosine: float = 1.0,
               near: Mapping[tuple[int, int], Verdict] | None = None,
               size: int = PAIRS_PER_TASK) -> Iterator[VerifyTask]:
    """Batches of at most ``size`` pairs in sorted order (pairs sharing an image land
    together, so its keypoints are computed once per batch), each with only the
    records it needs."""
    ordered = sorted(pairs)
    for k in range(0, len(ordered), size):
        chunk = ordered[k:k + size]
        needed = {x for pair in chunk for x in pair}
        yield VerifyTask(chunk, dict(fetch(needed)), options,
                         None if cosines is None else {p: cosines[p] for p in chunk if p in cosines},
                         min_cosine,
                         None if near is None else {p: near[p] for p in chunk if p in near})
