"""The select stage: the best member of a group, by a named keeper rule.

``quality`` (default): the highest Quality Score; members within
``quality_tolerance`` points of it count as equally good, and among those the oldest
file (the likely original) wins, then the larger file, then the shorter path.

A JPEG whose coefficients show it was saved before at a lower quality
(``QualityMetrics.jpeg_primary_quality``) is scored with that quality when the group
holds a member of the same size saved at about that quality: the re-save adds bytes,
not detail, so it must not beat its source.  Without such a member the file keeps its
own quality (a crop or resize of it erases the evidence, and must not win for that).
"""

from __future__ import annotations

from collections.abc import Callable

from .features.quality import quality_score
from .models import ImageRecord, RecordLookup
from .registry import Registry

DEFAULT_QUALITY_TOLERANCE = 3.0
"""Quality Score points within which members count as equally good."""

KeeperRule = Callable[[RecordLookup, list[int], float], int]
KEEPER_RULES: Registry[KeeperRule] = Registry("keeper rule")


SOURCE_SLACK = 5
"""A member saved at most this many quality points above a re-save's earlier quality
can be its source."""


def scores(records: RecordLookup, members: list[int]) -> dict[int, float]:
    """Each member's Quality Score, re-saved JPEGs credited with their source's quality
    where the source is in the group (see the module docstring)."""
    out = {m: records[m].quality_score or 0.0 for m in members}
    saved: dict[tuple[int, int], list[int]] = {}
    for m in members:  # JPEG files only: a converted copy shows its history, not a source
        q = records[m].quality
        if q is not None and q.jpeg_quality is not None and records[m].format == "JPEG":
            saved.setdefault((q.width, q.height), []).append(q.jpeg_quality)
    for m in members:
        q = records[m].quality
        primary = getattr(q, "jpeg_primary_quality", None)  # absent from older records
        if q is None or primary is None:
            continue
        same_size = saved.get((q.width, q.height), [])
        if any(other <= primary + SOURCE_SLACK for other in same_size):
            out[m] = quality_score(q, primary)
    return out


def _tiebreak(r: ImageRecord) -> tuple[float, int, int, str]:
    return (r.ref.mtime, -r.ref.size, len(r.ref.rel_path), r.ref.rel_path)


@KEEPER_RULES.register("quality")
def keep_quality(records: RecordLookup, members: list[int], tolerance: float) -> int:
    score = scores(records, members)
    top = max(score.values())
    close = [m for m in members if score[m] >= top - tolerance]
    return min(close, key=lambda m: _tiebreak(records[m]))


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
