"""The candidates stage: which pairs are worth verifying.  Never all pairs.

* exact buckets: records with the same content hash;
* Hamming range search on each 64-bit perceptual hash (FAISS binary indexes: exact
  brute force for small collections, multi-index hashing for large ones, so the
  search grows sub-quadratically);
* crop search: every image's full-frame wavelet hash against the window hashes of all
  images (a crop of B is close to one of B's windows; B padded is the reverse).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import faiss
import numpy as np

from .models import ImageRecord

EXACT_SEARCH_LIMIT = 20_000
"""Up to this many indexed codes, a brute-force (exact) binary index is used."""
MULTI_HASH_TABLES = 4
MULTI_HASH_BITS = 16
MULTI_HASH_FLIPS = 1
"""With 4 tables of 16 bits and 1 flip, every pair within distance 7 is found (and most
farther pairs); the search stays near-linear at millions of codes."""


def to_codes(values: Sequence[int] | np.ndarray) -> np.ndarray:
    """uint64 hash values -> (N, 8) uint8 codes for FAISS."""
    arr = np.asarray(values, dtype=np.uint64).astype(">u8")
    return arr.view(np.uint8).reshape(-1, 8)


def popcount64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64)
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


class HammingIndex:
    """Range search over 64-bit codes; ids are positions in ``codes``."""

    def __init__(self, codes: np.ndarray, exact: bool | None = None) -> None:
        n = len(codes)
        if exact is None:
            exact = n <= EXACT_SEARCH_LIMIT
        index: faiss.IndexBinary
        if exact:
            index = faiss.IndexBinaryFlat(64)
        else:
            mh = faiss.IndexBinaryMultiHash(64, MULTI_HASH_TABLES, MULTI_HASH_BITS)
            mh.nflip = MULTI_HASH_FLIPS
            index = mh
        if n:
            index.add(to_codes(codes))
        self.index = index
        self.size = n

    def range_search(self, queries: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All (query, id, distance) with distance <= radius."""
        if self.size == 0 or len(queries) == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        lims, dist, ids = self.index.range_search(to_codes(queries), radius + 1)
        counts = np.diff(lims).astype(np.int64)
        qidx = np.repeat(np.arange(len(queries), dtype=np.int64), counts)
        return qidx, ids.astype(np.int64), dist.astype(np.int64)


def exact_buckets(records: Sequence[ImageRecord]) -> list[list[int]]:
    """Indices of records sharing a content hash (only buckets of two or more)."""
    buckets: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        if rec.ok and rec.content_hash:
            buckets[rec.content_hash].append(i)
    return [b for b in buckets.values() if len(b) > 1]


def hash_pairs(codes: np.ndarray, radius: int, exact: bool | None = None) -> np.ndarray:
    """Pairs (i < j) of codes within ``radius``, as an (M, 2) int64 array."""
    index = HammingIndex(codes, exact)
    q, ids, _ = index.range_search(codes, radius)
    keep = q < ids
    return np.stack([q[keep], ids[keep]], axis=1)


def window_pairs(full: np.ndarray, windows: np.ndarray, owners: np.ndarray, radius: int,
                 exact: bool | None = None) -> np.ndarray:
    """Pairs (i, j), i != j, where image i's full hash is within ``radius`` of one of
    image j's window hashes (``owners[k]`` is the image of window ``k``)."""
    index = HammingIndex(windows, exact)
    q, ids, _ = index.range_search(full, radius)
    j = owners[ids]
    keep = q != j
    a, b = q[keep], j[keep]
    return np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1)


def near_candidates(
    records: Sequence[ImageRecord], hash_kinds: Sequence[str], max_hamming_distance: int,
    max_window_distance: int,
) -> set[tuple[int, int]]:
    """Candidate pairs among the OK records (indices into ``records``)."""
    ok = [i for i, r in enumerate(records) if r.ok and r.hashes]
    if len(ok) < 2:
        return set()
    ok_arr = np.asarray(ok, dtype=np.int64)
    found: list[np.ndarray] = []
    for kind in hash_kinds:
        codes = np.array([records[i].hashes[kind] for i in ok], dtype=np.uint64)
        found.append(hash_pairs(codes, max_hamming_distance))
    with_windows = [k for k, i in enumerate(ok) if records[i].window_hashes]
    if with_windows and max_window_distance >= 0:
        full = np.array([records[ok[k]].hashes.get("whash", 0) for k in with_windows], dtype=np.uint64)
        win_list: list[int] = []
        owner_list: list[int] = []
        for pos, k in enumerate(with_windows):
            wh = records[ok[k]].window_hashes
            win_list.extend(wh)
            owner_list.extend([pos] * len(wh))
        pairs = window_pairs(full, np.array(win_list, dtype=np.uint64),
                             np.array(owner_list, dtype=np.int64), max_window_distance)
        wmap = np.asarray(with_windows, dtype=np.int64)
        found.append(np.stack([wmap[pairs[:, 0]], wmap[pairs[:, 1]]], axis=1) if len(pairs)
                     else np.zeros((0, 2), dtype=np.int64))
    allpairs = np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64)
    if len(allpairs) == 0:
        return set()
    allpairs = np.unique(np.sort(allpairs, axis=1), axis=0)
    mapped = ok_arr[allpairs]
    return {(int(a), int(b)) for a, b in mapped if a != b}
