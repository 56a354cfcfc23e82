"""Faces mode: the same person across different photos (registration photos, people
in an archive).  Groups are people; byte copies and near-duplicates of one photo are
still found by the near-mode searches first (their stage is named in the report).

* **Candidates:** each face's nearest faces (FAISS, ``max_neighbors`` per face) within
  the model's threshold; faces of one image are never compared with each other.
* **No chaining:** a face pair settles the verdict only between a member and its
  group's best (``grouping.grow_groups`` checks every member against the best), so
  a group's members are all within the threshold of its best face, not linked
  through a chain of look-alikes.
* **Not merged automatically:** faces under ``min_face_size`` px, and pairs in the
  band just above the threshold (up to ``POSSIBLE_BAND`` times it): these are
  reported as "possible same person" for review.
* **Policy** (``--faces``): ``largest`` (default, registration photos) matches each
  image by its largest face; ``all`` matches two images when any face of one is
  within the threshold of any face of the other.  Either way an image belongs to one
  group (the layout stays one folder per image): with ``all`` a group photo joins the
  group of the person it is first matched with, and the Person ID column names it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..candidates import knn
from ..config import ScanConfig
from ..features.faces import Face, FaceOptions, face_distance, face_key, face_model_spec
from ..grouping import grow_groups
from ..models import Evidence, Group, ImageRecord, Signatures
from ..store import FeatureStore
from ..view import CollectionView
from . import MODES, Found, Pair
from .near import hash_candidates, hash_query_pairs

POSSIBLE_BAND = 1.12
"""Pairs from the threshold up to this multiple of it are "possible same person"
(dlib: 0.45 to 0.504, which covers the 0.5 that the benchmark measured at a pairwise
precision of 0.978 against 0.999 at 0.45)."""
DIFFERENT_PERSON = 1.2
"""A hash candidate whose faces (both large enough) are this multiple of the threshold
apart or more shows two different people: rejected without a pixel check (formal
portraits look alike to the hashes; the copies of one photo in the benchmark, edits
included, are at most 0.15 apart with dlib's model, different people 0.43 and more)."""
FACE_QUALITY_TOLERANCE = 0.05
"""The best of a group is chosen among the photos whose face quality (the best of its
copies') is within this of the group's highest; the keeper's image quality decides
among their copies."""


def face_options(config: ScanConfig) -> FaceOptions:
    return FaceOptions(detector=config.face_detector, model=config.face_model,
                       small_faces=config.faces == "all")


def threshold_of(config: ScanConfig) -> float:
    if config.max_face_distance is not None:
        return config.max_face_distance
    return face_model_spec(config.face_model).threshold


@dataclass(slots=True)
class FaceLookup:
    """The faces of a view's images, as one matrix, for a face model and policy."""

    metric: str
    threshold: float
    positions: np.ndarray
    """View position of each face row."""
    items: np.ndarray
    """The face's number in its image (0: the largest)."""
    meta: list[dict[str, Any]]
    matrix: np.ndarray
    """float32, one row per face."""
    used: np.ndarray
    """Rows the policy matches with (largest: item 0 only)."""
    eligible: np.ndarray
    """Rows large enough to be merged automatically."""
    scanned: set[int]
    """Positions the face model looked at (with or without a face)."""
    rows_of: dict[int, list[int]] = field(default_factory=dict)
    photo_of: dict[int, int] = field(default_factory=dict)
    """Position -> the best of its group of copies of one photo (set by
    ``person_groups``; an image without copies is its own photo)."""

    @classmethod
    def load(cls, view: CollectionView, config: ScanConfig) -> FaceLookup:
        key = face_key(face_options(config))
        ids, items, meta, matrix = view.store.vectors(key)
        positions = view.positions(ids) if len(ids) else np.zeros(0, np.int64)
        scanned_ids = view.store.vector_images(key)
        scanned = set(view.positions(scanned_ids).tolist()) if len(scanned_ids) else set()
        sizes = np.array([_size(m) for m in meta], dtype=np.float32)
        used = items == 0 if config.faces == "largest" else np.ones(len(items), dtype=bool)
        lookup = cls(face_model_spec(config.face_model).metric, threshold_of(config),
                     np.asarray(positions, np.int64), items, meta,
                     np.asarray(matrix, dtype=np.float32).reshape(len(ids), -1), used,
                     sizes >= config.min_face_size, scanned)
        for row, p in enumerate(lookup.positions.tolist()):
            lookup.rows_of.setdefault(p, []).append(row)
        return lookup

    def count(self, position: int) -> int:
        return len(self.rows_of.get(position, ()))

    def distance(self, a: int, b: int, eligible_only: bool = True) -> tuple[float, int, int] | None:
        """The closest pair of used faces of images ``a`` and ``b``: (distance, row of
        a's face, row of b's face); None when either has no such face."""
        ra = [r for r in self.rows_of.get(a, ()) if self.used[r] and (self.eligible[r] or not eligible_only)]
        rb = [r for r in self.rows_of.get(b, ()) if self.used[r] and (self.eligible[r] or not eligible_only)]
        if not ra or not rb:
            return None
        d = face_distance(self.matrix[ra], self.matrix[rb], self.metric)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        return float(d[i, j]), ra[int(i)], rb[int(j)]

    def quality(self, position: int) -> float:
        """The face quality of an image's best used face (0 without one)."""
        best = 0.0
        for r in self.rows_of.get(position, ()):
            if self.used[r]:
                best = max(best, Face.from_meta(self.meta[r], self.matrix[r]).quality)
        return best

    def search(self, k: int) -> tuple[dict[Pair, float], dict[Pair, float]]:
        """(pairs within the threshold between eligible faces, pairs in the possible
        band or with a face too small to merge), each image pair with its distance."""
        rows = np.nonzero(self.used)[0]
        if len(rows) < 2:
            return {}, {}
        dist, found = knn(self.matrix[rows], k + 1, self.metric)
        limit = self.threshold * POSSIBLE_BAND
        q, j = np.nonzero((dist <= limit) & (found >= 0))
        ra, rb = rows[q], rows[found[q, j]]
        pa, pb = self.positions[ra], self.positions[rb]
        keep = pa != pb  # two faces of one image are never one person
        same: dict[Pair, float] = {}
        possible: dict[Pair, float] = {}
        for a, b, x, y, d in zip(pa[keep].tolist(), pb[keep].tolist(), ra[keep].tolist(),
                                 rb[keep].tolist(), dist[q, j][keep].tolist(), strict=True):
            pair = (min(a, b), max(a, b))
            target = same if d <= self.threshold and self.eligible[x] and self.eligible[y] else possible
            if d < target.get(pair, np.inf):
                target[pair] = float(d)
        for pair in same:
            possible.pop(pair, None)
        return same, possible


@dataclass(slots=True)
class FaceFound(Found):
    faces: FaceLookup | None = None
    possible: dict[Pair, float] = field(default_factory=dict)
    """Pairs reported as "possible same person" (not merged): their face distance."""
    face_pairs: set[Pair] = field(default_factory=set)
    """The pairs only the face search found (not copies of one photo: grouped as people)."""


class FacesMode:
    name = "faces"
    window_hashes = True
    embeds = False
    faces = True

    def candidates(self, view: CollectionView, config: ScanConfig, model: str | None) -> Found:
        lookup = FaceLookup.load(view, config)
        same, possible = lookup.search(config.max_neighbors)
        hashed = hash_candidates(view, config)
        pairs = hashed.pairs
        known = set(pairs)
        face_pairs = {p for p in same if p not in known}
        pairs.extend(sorted(face_pairs))
        return FaceFound(pairs, hashed.extend_only, hashed.distance, faces=lookup, possible=possible,
                         face_pairs=face_pairs)

    def query_pairs(self, collection: Signatures, queries: Signatures, config: ScanConfig
                    ) -> np.ndarray:
        return hash_query_pairs(collection, queries, config)

    def settled(self, pair: Pair, found: Found, config: ScanConfig
                ) -> tuple[bool, Evidence] | None:
        """Copies of one photo (the hash pairs) are verified by pixels, with their stage
        named; a pair whose faces show two different people needs no pixels."""
        if isinstance(found, FaceFound) and found.faces is not None:
            d = found.faces.distance(*pair)
            if d is not None and d[0] >= DIFFERENT_PERSON * found.faces.threshold:
                return False, Evidence(stage="face", face_distance=round(d[0], 4))
        return None

    def copy_pairs(self, pairs: list[Pair], found: Found) -> list[Pair]:
        face_only = found.face_pairs if isinstance(found, FaceFound) else set()
        return [p for p in pairs if p not in face_only]

    def regroup(self, groups: list[Group], pairs: Sequence[Pair], found: Found, config: ScanConfig,
               rank: Callable[[int], tuple[object, ...]], best_of: Callable[[list[int]], int],
               distinct: Callable[[int, int], bool]) -> list[Group]:
        lookup = found.faces if isinstance(found, FaceFound) else None
        if lookup is None:
            return groups
        return person_groups(groups, pairs, lookup, rank, best_of, distinct)

    def best_pairs(self, view: CollectionView, bests: Sequence[int],
                   config: ScanConfig) -> list[Pair]:
        return []  # people have their own linkage (``person_groups``)

    def prefer(self, members: list[int], found: Found) -> list[int]:
        lookup = found.faces if isinstance(found, FaceFound) else None
        if lookup is None:
            return members
        # face quality chooses the photo; the keeper then chooses among its copies (a
        # lossless crop or a mirrored re-save of the original must not win on the
        # jitter of its face box or sharpness)
        photo: dict[int, float] = {}
        for m in members:
            p = lookup.photo_of.get(m, m)
            photo[p] = max(photo.get(p, 0.0), lookup.quality(m))
        top = max(photo.values())
        return [m for m in members
                if photo[lookup.photo_of.get(m, m)] >= top - FACE_QUALITY_TOLERANCE]


MODES.add("faces", FacesMode())


def person_groups(copies: list[Group], pairs: Sequence[Pair], lookup: FaceLookup,
                  rank: Callable[[int], tuple[object, ...]], best_of: Callable[[list[int]], int],
                  distinct: Callable[[int, int], bool]) -> list[Group]:
    """People from photos: each group of copies of one photo (``copies``, verified by
    pixels) and each other image is one photo, represented by its best; the photos
    are grown into people from a seed like copies are (``grouping.grow_groups``),
    every photo against the person's best face, so look-alikes do not chain and the
    copies of a photo count once (five re-encodes of a face are not five chances to
    cross the threshold).  A photo with a user's "not the same person" against a
    photo of a group does not join it."""
    photo_of: dict[int, Group] = {}
    for g in copies:
        for m in g.members:
            photo_of[m] = g

    def photo(p: int) -> int:
        g = photo_of.get(p)
        return g.best if g is not None else p

    lookup.photo_of = {m: g.best for m, g in photo_of.items()}

    def members(p: int) -> list[int]:
        g = photo_of.get(p)
        return g.members if g is not None else [p]

    photo_pairs = {(min(a, b), max(a, b)) for a, b in ((photo(x), photo(y)) for x, y in pairs)
                   if a != b}

    def verify(batch: Sequence[Pair]) -> list[tuple[int, int, bool, Evidence]]:
        out = []
        for a, b in batch:
            if any(distinct(x, y) for x in members(a) for y in members(b)):
                out.append((a, b, False, Evidence(stage="not-duplicate")))
                continue
            d = lookup.distance(a, b)
            ok = d is not None and d[0] <= lookup.threshold
            out.append((a, b, ok, Evidence(stage="face", face_distance=None if d is None
                                           else round(d[0], 4))))
        return out

    people = grow_groups(sorted(photo_pairs), rank, best_of, verify)
    joined = {p for g in people for p in g.members}
    out = [g for g in copies if g.best not in joined]
    for person in people:
        merged = Group(0, person.best, [], {})
        for p in person.members:
            own = photo_of.get(p)
            merged.members.extend(own.members if own is not None else [p])
            if own is not None:
                merged.evidence.update((m, ev) for m, ev in own.evidence.items())
            if p != person.best:
                merged.evidence[p] = person.evidence[p]
        merged.members.sort(key=lambda m: (m != merged.best, m))
        out.append(merged)
    out.sort(key=lambda g: min(g.members))
    for gid, g in enumerate(out, start=1):
        g.id = gid
    return out


@dataclass(slots=True)
class FaceReport:
    """What the report says about faces: per image, its columns and whether it has none."""

    lookup: FaceLookup
    group_of: dict[int, Group]
    person: dict[int, int]
    """Position -> person id (groups keep their id; other images with a face get new ones)."""
    possible: list[dict[str, Any]]
    sizes: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Position -> (width, height) of the group members (for the crops' fractions)."""

    @classmethod
    def of(cls, view: CollectionView, config: ScanConfig, groups: Sequence[Group],
           found: Found | None) -> FaceReport:
        lookup = found.faces if isinstance(found, FaceFound) and found.faces else None
        lookup = lookup or FaceLookup.load(view, config)
        group_of = {p: g for g in groups for p in g.members}
        person: dict[int, int] = {}
        for g in groups:
            for p in g.members:
                if lookup.count(p):
                    person[p] = g.id
        next_id = max((g.id for g in groups), default=0) + 1
        for p in sorted(lookup.rows_of):
            if p not in person:
                person[p], next_id = next_id, next_id + 1
        possible = []
        pairs = found.possible if isinstance(found, FaceFound) else {}
        names = view.paths({p for pair in pairs for p in pair})
        for (a, b), d in sorted(pairs.items(), key=lambda kv: kv[1]):
            if group_of.get(a) is not None and group_of.get(a) is group_of.get(b):
                continue  # already one person (joined through their copies)
            possible.append({"a": names[a], "b": names[b], "face_distance": round(d, 4)})
        members = [p for g in groups for p in g.members]
        sizes = {p: (rec.width, rec.height) for p, rec in view.light(members)}
        return cls(lookup, group_of, person, possible, sizes)

    def no_face(self, position: int) -> bool:
        return position in self.lookup.scanned and not self.lookup.count(position)

    def columns(self, position: int) -> dict[str, Any]:
        lookup = self.lookup
        rows = lookup.rows_of.get(position, [])
        out: dict[str, Any] = {"Face Count": len(rows) if position in lookup.scanned else None}
        if not rows:
            return out
        out["Face Box"] = " ".join(",".join(str(round(v)) for v in lookup.meta[r]["box"])
                                   for r in rows)
        out["Person ID"] = self.person.get(position)
        g = self.group_of.get(position)
        if g is not None and g.best != position:
            d = lookup.distance(position, g.best, eligible_only=False)
            out["Face Distance"] = round(d[0], 4) if d else None
        return out

    def face_of(self, group: Group, position: int) -> dict[str, Any] | None:
        """A member's face for the HTML page: the face matched against the best's (or
        its largest), its box as fractions of the frame, and the distance."""
        lookup = self.lookup
        rows = lookup.rows_of.get(position)
        if not rows:
            return None
        row, distance = rows[0], None
        if position != group.best:
            d = lookup.distance(position, group.best, eligible_only=False)
            if d is not None:
                row, distance = d[1], round(d[0], 4)
        elif len(rows) > 1 and len(group.members) > 1:  # the best's face its group matched
            d = lookup.distance(group.members[1], position, eligible_only=False)
            row = d[2] if d is not None else row
        x0, y0, x1, y1 = lookup.meta[row]["box"]
        w, h = self.sizes.get(position, (0, 0))
        if not w or not h:
            return None
        return {"box": [round(x0 / w, 4), round(y0 / h, 4), round(x1 / w, 4), round(y1 / h, 4)],
                "distance": distance}

    def summary(self, config: ScanConfig, n_images: int) -> dict[str, Any]:
        """report.json's "faces": counts, the threshold, what its false-match rate means
        at this collection's size, and the possible-same-person pairs."""
        faces = int((self.lookup.used & self.lookup.eligible).sum())
        spec = face_model_spec(config.face_model)
        fmr = spec.false_match_rate if self.lookup.threshold == spec.threshold else None
        expected = None if fmr is None else float(f"{fmr * faces * (faces - 1) / 2:.3g}")
        return {"faces": len(self.lookup.positions), "matched_faces": faces,
                "metric": self.lookup.metric, "max_face_distance": self.lookup.threshold,
                "policy": config.faces, "min_face_size": config.min_face_size,
                "false_match_rate": fmr,
                "expected_false_pairs": expected,
                "false_match_note": (
                    "false pairs expected among this many faces of different people at the "
                    "threshold, before the linkage (each member must be within the threshold "
                    "of its group's best face, so look-alikes do not chain)"
                    if fmr is not None else "no measured false-match rate for this model and threshold"),
                "possible_same_person": self.possible, "images_looked_at": n_images}


def query_faces(store: FeatureStore, config: ScanConfig, queries: dict[int, ImageRecord]
                ) -> list[tuple[int, int, float]]:
    """(query key, collection row id, distance) for each query face within the
    threshold of a stored face (the same policy and minimum size as the scan)."""
    key = face_key(face_options(config))
    ids, items, meta, matrix = store.vectors(key)
    if not len(ids):
        return []
    spec = face_model_spec(config.face_model)
    threshold = threshold_of(config)
    keep = np.array([(it == 0 or config.faces == "all") and _size(m) >= config.min_face_size
                     for it, m in zip(items.tolist(), meta, strict=True)], dtype=bool)
    ids, x = ids[keep], np.asarray(matrix, dtype=np.float32).reshape(len(keep), -1)[keep]
    out: list[tuple[int, int, float]] = []
    for k, rec in queries.items():
        faces = list(rec.faces or ())
        faces = [f for f in (faces[:1] if config.faces == "largest" else faces)
                 if f.size >= config.min_face_size]
        best: dict[int, float] = {}
        for f in faces:
            d = face_distance(f.vector[None, :], x, spec.metric)[0]
            for i in np.nonzero(d <= threshold)[0].tolist():
                rid = int(ids[i])
                best[rid] = min(best.get(rid, np.inf), float(d[i]))
        out.extend((k, rid, d) for rid, d in best.items())
    return out


def _size(meta: dict[str, Any]) -> float:
    box = meta["box"]
    return float(min(box[2] - box[0], box[3] - box[1]))
