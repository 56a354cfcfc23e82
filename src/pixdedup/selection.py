"""The select stage: the best member of a group, by a named keeper rule.

``quality`` (default): the highest Quality Score; members within
``quality_tolerance`` points of it count as equally good, and among those the oldest
file (the likely original) wins, then the larger file, then the shorter path.
"""

from __future__ import annotations

from collections.abc import Callable

from .models import ImageRecord, RecordLookup
from .registry import Registry

DEFAULT_QUALITY_TOLERANCE = 3.0
"""Quality Score points within which members count as equally good."""

KeeperRule = Callable[[RecordLookup, list[int], float], int]
KEEPER_RULES: Registry[KeeperRule] = Registry("keeper rule")


def _tiebreak(r: ImageRecord) -> tuple[float, int, int, str]:
    return (r.ref.mtime, -r.ref.size, len(r.ref.rel_path), r.ref.rel_path)


@KEEPER_RULES.register("quality")
def keep_quality(records: RecordLookup, members: list[int], tolerance: float) -> int:
    top = max(records[m].quality_score or 0.0 for m in members)
    close = [m for m in members if (records[m].quality_score or 0.0) >= top - tolerance]
    return min(close, key=lambda m: _tiebreak(records[m]))


@KEEPER_RULES.register("resolution")
def keep_resolution(records: RecordLookup, members: list[int], tolerance: float) -> int:
    return min(members, key=lambda m: (-(records[m].width * records[m].height),
                                       -(records[m].quality_score or 0.0), _tiebreak(records[m])))


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


def choose_best(records: RecordLookup, members: list[int], rule: str = "quality",
                tolerance: float = DEFAULT_QUALITY_TOLERANCE) -> int:
    return KEEPER_RULES.get(rule)(records, members, tolerance)
