"""Near mode (the default): exact and near duplicates, found by perceptual hashes
(the full frame, crop windows, mirrored and turned) and confirmed by pixels."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..candidates import (
    UNCONFIRMED,
    CandidatePairs,
    Radii,
    colour_gate,
    near_candidates,
    pair_distance,
    range_join,
    unique_pairs,
)
from ..config import ScanConfig
from ..features.hashes import ORIENTED_HASH_KIND, WINDOW_HASH_KIND
from ..models import Evidence, RecordLookup, Signatures
from ..view import CollectionView
from . import MODES, CopiesMode, Found, Pair


def search(sig: Signatures, config: ScanConfig) -> CandidatePairs:
    """``candidates.near_candidates`` with the scan's settings (the scan's own search,
    which the benchmarks time and count too)."""
    return near_candidates(sig, config.max_hamming_distance, config.max_window_distance,
                           max_orientation_distance=config.max_orientation_distance
                           if config.orientations else None,
                           max_candidates_per_image=config.max_candidates_per_image,
                           max_check_distance=check_radius(config),
                           min_color_correlation=config.min_color_correlation,
                           max_sure_distance=config.max_sure_distance
                           if config.max_sure_distance >= 0 else None)


def hash_candidates(view: CollectionView, config: ScanConfig, reach: bool = False) -> Found:
    """The hash searches of the collection against itself (``candidates.near_candidates``),
    with the pairs that may only extend a group (``reach``: and ``Found.within_reach``)."""
    found = search(view.signatures(config.search_hash_kinds, windows=True), config)
    pairs = [(int(a), int(b)) for a, b in found.pairs.tolist()]
    return Found(pairs, extend_only={p: lead for p, start, lead in zip(
        pairs, found.starts.tolist(), found.leads.tolist(), strict=True) if not start},
        distance=dict(zip(pairs, found.distance.tolist(), strict=True)),
        within_reach=Reach.of(view, config) if reach else None)


class Reach:
    """Whether two images are near enough on their stored signatures to be verified
    although no candidate pair joins them (``ScanConfig.max_unpaired_margin``): the
    smallest ``pair_distance`` over every way of pairing them, with each radius that
    margin wider (the check radius twice as much), is confirmed.  The hashes come from
    the records (``records``: a view, whose cache the verification then uses), so
    nothing of the search's arrays is held.  An image without hashes (too small or
    narrow) is always within reach.  ``prepare`` answers a batch of pairs in one
    vectorised pass; a call answers from it (or for its pair alone)."""

    def __init__(self, records: RecordLookup, hash_kinds: Sequence[str], radii: Radii) -> None:
        self.records, self.hash_kinds, self.radii = records, tuple(hash_kinds), radii
        self._answers: dict[tuple[int, int], bool] = {}

    @classmethod
    def of(cls, records: RecordLookup, config: ScanConfig) -> Reach | None:
        margin = config.max_unpaired_margin
        if margin < 0:
            return None
        check = check_radius(config)
        return cls(records, config.search_hash_kinds, Radii(
            config.max_hamming_distance + margin,
            config.max_window_distance + margin if config.max_window_distance >= 0 else None,
            config.max_orientation_distance + margin if config.orientations else None,
            None if check is None else check + 2 * margin))

    def prepare(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Answer ``pairs`` (first < second) for the calls that follow, in one pass
        where every image of the batch has every signature part (a part that one image
        lacks is left out for all: then each pair is answered alone, as a call does)."""
        todo = sorted({p for p in pairs if p not in self._answers})
        if len(todo) < 2:
            return
        images = sorted({x for p in todo for x in p})
        sig = Signatures.from_records([self.records[i] for i in images], self.hash_kinds)
        rows = len(sig.ids)
        if rows < len(images) or len(sig.oriented) != rows or len(sig.check) != rows \
                or len(sig.window_checks) != rows:
            return
        row = {x: r for r, x in enumerate(images)}  # every image has hashes: row r is images[r]
        first = np.array([row[a] for a, _ in todo])
        second = np.array([row[b] for _, b in todo])
        near = pair_distance(sig, first, sig, second, self.radii) < UNCONFIRMED
        self._answers.update(zip(todo, near.tolist(), strict=True))

    def __call__(self, a: int, b: int) -> bool:
        known = self._answers.pop((a, b), None)
        if known is not None:
            return known
        sig = Signatures.from_records([self.records[a], self.records[b]], self.hash_kinds)
        if len(sig.ids) < 2:
            return True
        first, second = np.array([0]), np.array([1])
        return bool(pair_distance(sig, first, sig, second, self.radii)[0] < UNCONFIRMED)


def check_radius(config: ScanConfig) -> int | None:
    return config.max_check_distance if config.max_check_distance >= 0 else None


def hash_query_pairs(collection: Signatures, queries: Signatures, config: ScanConfig
                     ) -> np.ndarray:
    """The same searches for query images against a collection: each searched hash,
    a query's full frame against the collection's windows and the reverse (one is a
    crop of the other), and (with ``orientations``) the query mirrored and turned;
    confirmed by the check hashes and the colour gate as a scan's are
    (``candidates.pair_distance``, ``candidates.colour_gate``).
    Rows: (query row, collection id)."""
    found: list[np.ndarray] = []

    def add(q: np.ndarray, rows: np.ndarray) -> None:
        found.append(np.stack([q.astype(np.int64), rows.astype(np.int64)], axis=1))

    for kind in config.search_hash_kinds:
        q, d = range_join(queries.hashes[kind], collection.hashes[kind],
                          config.max_hamming_distance)
        add(q, d)
    if config.max_window_distance >= 0 and len(collection.windows):
        q, w = range_join(queries.hashes[WINDOW_HASH_KIND], collection.windows,
                          config.max_window_distance)
        add(q, collection.window_owner[w])
    if config.max_window_distance >= 0 and len(queries.windows):
        q, d = range_join(queries.windows, collection.hashes[WINDOW_HASH_KIND],
                          config.max_window_distance)
        add(queries.window_owner[q], d)
    if config.orientations and len(queries.oriented):
        turned = queries.oriented.T.ravel()  # orientation by orientation
        rows = np.tile(np.arange(len(queries.ids), dtype=np.int64), queries.oriented.shape[1])
        q, d = range_join(turned, collection.hashes[ORIENTED_HASH_KIND],
                          config.max_orientation_distance)
        add(rows[q], d)
    if not found:
        return np.zeros((0, 2), np.int64)
    pairs = np.concatenate(found)
    pairs = unique_pairs(pairs[:, 0], pairs[:, 1])
    radii = Radii(config.max_hamming_distance, config.max_window_distance
                  if config.max_window_distance >= 0 else None,
                  config.max_orientation_distance if config.orientations else None,
                  check_radius(config))
    # both ways of a turn: the query turned (searched) or the stored image turned
    confirmed = pair_distance(queries, pairs[:, 0], collection, pairs[:, 1], radii) < UNCONFIRMED
    confirmed &= colour_gate(queries, pairs[:, 0], collection, pairs[:, 1],
                             config.min_color_correlation)
    pairs = pairs[confirmed]
    return np.stack([pairs[:, 0], collection.ids[pairs[:, 1]]], axis=1)


class NearMode(CopiesMode):
    name = "near"
    window_hashes = True
    embeds = False

    def candidates(self, view: CollectionView, config: ScanConfig, model: str | None) -> Found:
        return hash_candidates(view, config, reach=True)

    def best_pairs(self, view: CollectionView, bests: Sequence[int],
                   config: ScanConfig) -> list[Pair]:
        """The hash searches of the bests alone (the same radii, checks and gates):
        two groups of one crowd of copies, which the per-image cap of candidate pairs
        left unjoined, meet through their bests."""
        if len(bests) < 2:
            return []
        records = [rec for _, rec in view.light(bests)]  # no thumbnails, not cached
        found = search(Signatures.from_records(records, config.search_hash_kinds), config)
        return [(bests[a], bests[b]) for a, b in found.pairs.tolist()]

    def query_pairs(self, collection: Signatures, queries: Signatures, config: ScanConfig
                    ) -> np.ndarray:
        return hash_query_pairs(collection, queries, config)

    def settled(self, pair: Pair, found: Found, config: ScanConfig
                ) -> tuple[bool, Evidence] | None:
        """A pair that no candidate pair joins is rejected without pixels where its
        stored signatures are not near (``Reach``)."""
        if found.within_reach is None or pair in found.distance \
                or found.within_reach(*pair):
            return None
        return False, Evidence(stage="signatures")


MODES.add("near", NearMode())
