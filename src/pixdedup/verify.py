"""The verify stage: a cascade over candidate pairs, cheapest evidence first.

1. exact: identical content hash;
2. colour: hue/saturation histogram correlation below ``min_color_correlation``
   rejects (a recoloured variant), greyscale images skip this step;
3. hash: same aspect ratio -> the thumbnails are compared pixel by pixel directly;
4. local: ORB keypoints + RANSAC similarity transform, then the aligned comparison.

Only the pairs still undecided reach the expensive local stage.  The pixel test is
the same for 3 and 4 (see ``features.keypoints.compare_aligned``).
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .features import keypoints as kp
from .features.color import color_correlation
from .features.hashes import hamming
from .models import Evidence, ImageRecord, RecordLookup


@dataclass(frozen=True, slots=True)
class VerifyOptions:
    min_color_correlation: float = 0.6
    min_similarity: float = 0.975
    """Normalised correlation of the aligned pixels, outside disagreeing cells."""
    min_overall_similarity: float = 0.85
    max_changed_fraction: float = 0.12
    """Largest fraction of grid cells allowed to differ (captions, watermarks)."""
    min_overlap: float = 0.5
    min_inliers: int = 12
    same_aspect_tolerance: float = 0.03
    similar_min_inliers: int = 20
    """Similar mode, embedding candidates: keypoint inliers needed (mirrored copies too)."""
    similar_min_similarity: float = 0.94
    """Similar mode: clean aligned similarity needed (colour filters lower it a little)."""
    similar_min_overall: float = 0.9


_Local = tuple[kp.Alignment | None, kp.Comparison | None]


class Verifier:
    def __init__(self, records: RecordLookup,
                 options: VerifyOptions,
                 cache_size: int = 4096) -> None:
        self.records = records
        self.options = options
        self._grey: OrderedDict[tuple[int, bool], np.ndarray] = OrderedDict()
        self._features: OrderedDict[tuple[int, bool], kp.LocalFeatures] = OrderedDict()
        self._last_local: tuple[tuple[int, int, bool], _Local] | None = None
        self.cache_size = cache_size
        self.stats = {"pairs": 0, "exact": 0, "color_rejected": 0, "hash": 0, "local": 0,
                      "embedding": 0, "rejected": 0}

    def grey(self, i: int, mirrored: bool = False) -> np.ndarray:
        """Record ``i``'s thumbnail as greyscale (mirrored left-right on request)."""
        key = (i, mirrored)
        g = self._grey.get(key)
        if g is None:
            if mirrored:
                g = np.ascontiguousarray(self.grey(i)[:, ::-1])
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

    def features(self, i: int, mirrored: bool = False) -> kp.LocalFeatures:
        key = (i, mirrored)
        f = self._features.get(key)
        if f is None:
            f = kp.local_features(self.grey(i, mirrored))
            self._features[key] = f
            if len(self._features) > self.cache_size:
                self._features.popitem(last=False)
        else:
            self._features.move_to_end(key)
        return f

    def _local(self, i: int, j: int, mirrored: bool = False) -> _Local:
        """ORB + RANSAC of ``j`` (or its mirror image) onto ``i``, and the aligned
        comparison.  The last pair's answer is kept: the similar-mode check follows
        the near cascade on the same pair."""
        key = (i, j, mirrored)
        if self._last_local is not None and self._last_local[0] == key:
            return self._last_local[1]
        alignment = kp.align(self.features(i), self.features(j, mirrored), self.options.min_inliers)
        cmp = None if alignment is None else \
            kp.compare_aligned(self.grey(i), self.grey(j, mirrored), alignment.matrix)
        self._last_local = (key, (alignment, cmp))
        return alignment, cmp

    def verify(self, i: int, j: int) -> tuple[bool, Evidence]:
        """Decide whether records ``i`` and ``j`` are duplicates, with the evidence."""
        self.stats["pairs"] += 1
        a, b = self.records[i], self.records[j]
        if a.content_hash and a.content_hash == b.content_hash:
            self.stats["exact"] += 1
            return True, Evidence(stage="exact", hash_distance=0, color_correlation=1.0,
                                  similarity=1.0)
        opts = self.options
        distance = min((hamming(a.hashes[k], b.hashes[k]) for k in a.hashes if k in b.hashes),
                       default=None)
        cc = color_correlation(a.color, b.color) if a.color and b.color else None
        ccr = None if cc is None else round(cc, 4)
        if cc is not None and cc < opts.min_color_correlation:
            self.stats["color_rejected"] += 1
            self.stats["rejected"] += 1
            return False, Evidence(stage="color", hash_distance=distance, color_correlation=ccr)
        ga, gb = self.grey(i), self.grey(j)
        if ga.size == 0 or gb.size == 0:
            self.stats["rejected"] += 1
            return False, Evidence(stage="hash", hash_distance=distance, color_correlation=ccr)
        best: kp.Comparison | None = None
        aspect_a = a.width / max(1, a.height)
        aspect_b = b.width / max(1, b.height)
        if abs(math.log(aspect_a / aspect_b)) <= opts.same_aspect_tolerance:
            cmp = kp.compare_aligned(ga, gb, kp.identity_alignment(ga.shape, gb.shape))
            if self._passes(cmp):
                self.stats["hash"] += 1
                return True, self._evidence("hash", distance, ccr, cmp, None)
            best = cmp
        alignment, aligned = self._local(i, j)
        if alignment is not None and aligned is not None:
            if self._passes(aligned):
                self.stats["local"] += 1
                return True, self._evidence("local", distance, ccr, aligned, alignment)
            if best is None or aligned.clean_similarity > best.clean_similarity:
                best = aligned
        self.stats["rejected"] += 1
        return False, self._evidence("local", distance, ccr, best, alignment)

    def verify_similar(self, i: int, j: int, cosine: float) -> tuple[bool, Evidence]:
        """Similar mode: the near cascade first; an embedding candidate it rejects is
        confirmed by keypoints + RANSAC alone (no colour gate: a colour filter is a
        copy), B mirrored as well, with a slightly looser pixel test."""
        ok, ev = self.verify(i, j)
        cos = round(float(cosine), 4)
        if ok:
            return True, dataclasses.replace(ev, embedding_similarity=cos)
        o = self.options
        for mirrored in (False, True):
            alignment, cmp = self._local(i, j, mirrored)
            if alignment is None or cmp is None or alignment.inliers < o.similar_min_inliers:
                continue
            if (cmp.overlap >= o.min_overlap and cmp.bad_cell_fraction <= o.max_changed_fraction
                    and cmp.clean_similarity >= o.similar_min_similarity
                    and cmp.similarity >= o.similar_min_overall):
                self.stats["embedding"] += 1
                found = self._evidence("embedding", ev.hash_distance, ev.color_correlation, cmp,
                                       alignment)
                transform = (found.transform or "") + (", mirrored" if mirrored else "")
                return True, dataclasses.replace(found, transform=transform,
                                                 embedding_similarity=cos)
        return False, dataclasses.replace(ev, embedding_similarity=cos)

    def _passes(self, cmp: kp.Comparison) -> bool:
        o = self.options
        return (cmp.overlap >= o.min_overlap and cmp.bad_cell_fraction <= o.max_changed_fraction
                and cmp.clean_similarity >= o.min_similarity
                and cmp.similarity >= o.min_overall_similarity)

    @staticmethod
    def _evidence(stage: str, distance: int | None, cc: float | None,
                  cmp: kp.Comparison | None, alignment: kp.Alignment | None) -> Evidence:
        return Evidence(
            stage=stage,
            hash_distance=distance,
            color_correlation=cc,
            similarity=None if cmp is None else round(max(0.0, cmp.clean_similarity), 4),
            inliers=None if alignment is None else alignment.inliers,
            transform=None if alignment is None else
            f"scale {alignment.scale:.2f}, rotation {alignment.rotation_degrees:+.1f} deg",
        )


PAIRS_PER_TASK = 48


@dataclass(frozen=True, slots=True)
class VerifyTask:
    """A batch of pairs with the records they need (sent to a worker process)."""

    pairs: list[tuple[int, int]]
    records: dict[int, ImageRecord]
    options: VerifyOptions
    cosines: dict[tuple[int, int], float] | None = None
    """Similar mode: the embedding similarity of the pairs that came from the ANN search."""


def run_task(task: VerifyTask) -> list[tuple[int, int, bool, Evidence]]:
    verifier = Verifier(task.records, task.options)
    cosines = task.cosines or {}
    out = []
    for i, j in task.pairs:
        cos = cosines.get((i, j))
        ok, ev = verifier.verify(i, j) if cos is None else verifier.verify_similar(i, j, cos)
        out.append((i, j, ok, ev))
    return out


def make_tasks(pairs: Sequence[tuple[int, int]],
               fetch: Callable[[set[int]], Mapping[int, ImageRecord]],
               options: VerifyOptions,
               cosines: Mapping[tuple[int, int], float] | None = None) -> Iterator[VerifyTask]:
    """Batches of pairs in sorted order (pairs sharing an image land together, so its
    keypoints are computed once per batch), each with only the records it needs."""
    ordered = sorted(pairs)
    for k in range(0, len(ordered), PAIRS_PER_TASK):
        chunk = ordered[k:k + PAIRS_PER_TASK]
        needed = {x for pair in chunk for x in pair}
        part = None if cosines is None else {p: cosines[p] for p in chunk if p in cosines}
        yield VerifyTask(chunk, dict(fetch(needed)), options, part)
