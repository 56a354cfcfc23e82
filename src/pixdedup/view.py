"""The collection after extraction, as the later stages see it: the store's readable
images in (relative path, URI) order.  An image is addressed by its position in that
order, so groups and group ids do not depend on the order in which rows were stored."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .models import ImageRecord, Signatures
from .store import FeatureStore


class CollectionView:
    """The store's OK images in (relative path, URI) order: position -> row id, the
    compact signatures, and an LRU cache of full records fetched on demand."""

    def __init__(self, store: FeatureStore, cache_size: int = 2048) -> None:
        self.store = store
        self.row_ids = store.ok_row_ids()
        self._sorter = np.argsort(self.row_ids)
        self._cache: OrderedDict[int, ImageRecord] = OrderedDict()
        self.cache_size = cache_size

    def __len__(self) -> int:
        return len(self.row_ids)

    def paths(self, positions: Iterable[int]) -> dict[int, str]:
        by_row = self.store.rel_paths(int(self.row_ids[p]) for p in positions)
        return {int(p): by_row[int(self.row_ids[p])] for p in positions}

    def positions(self, row_ids: np.ndarray) -> np.ndarray:
        at = np.searchsorted(self.row_ids[self._sorter], row_ids)
        return self._sorter[at]

    def position_of(self, row_ids: Iterable[int]) -> dict[int, int]:
        """Row id -> position, for the ids that are in the view (readable images)."""
        ids = np.asarray(list(row_ids), dtype=np.int64)
        if not len(ids) or not len(self.row_ids):
            return {}
        sorted_ids = self.row_ids[self._sorter]
        at = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
        hit = sorted_ids[at] == ids
        return {int(i): int(p) for i, p, h in zip(ids, self._sorter[at], hit, strict=True) if h}

    def signatures(self, hash_kinds: Sequence[str], windows: bool) -> Signatures:
        sig = self.store.signatures(hash_kinds, windows)
        order = self.positions(sig.ids)
        return dataclasses.replace(sig, ids=order)

    def exact_buckets(self) -> list[list[int]]:
        return [sorted(self.positions(np.asarray(b)).tolist()) for b in self.store.exact_buckets()]

    def fetch(self, positions: Iterable[int]) -> dict[int, ImageRecord]:
        out: dict[int, ImageRecord] = {}
        missing: list[int] = []
        for p in positions:
            rec = self._cache.get(p)
            if rec is None:
                missing.append(p)
            else:
                self._cache.move_to_end(p)
                out[p] = rec
        if missing:
            got = self.store.records([int(self.row_ids[p]) for p in missing])
            for p in missing:
                rec = got[int(self.row_ids[p])]
                out[p] = rec
                self._cache[p] = rec
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return out

    def __getitem__(self, position: int) -> ImageRecord:
        return self.fetch([position])[position]

    def light(self, positions: Sequence[int], batch: int = 4096) -> Iterator[tuple[int, ImageRecord]]:
        """(position, record without its thumbnail), read in batches, not cached."""
        for k in range(0, len(positions), batch):
            part = positions[k:k + batch]
            got = self.store.records([int(self.row_ids[p]) for p in part], thumbnails=False)
            for p in part:
                yield p, got[int(self.row_ids[p])]


@dataclass(frozen=True, slots=True)
class EmbeddingLookup:
    """A model's vectors for the positions of a view (similar mode)."""

    positions: np.ndarray
    """Position of each matrix row in the view."""
    matrix: np.ndarray
    """float16, L2-normalised rows."""
    row_of: np.ndarray
    """View position -> matrix row, -1 where the image has no vector."""

    @classmethod
    def load(cls, view: CollectionView, model: str) -> EmbeddingLookup:
        ids, matrix = view.store.embeddings(model)
        positions = view.positions(ids) if len(ids) else np.zeros(0, np.int64)
        row_of = np.full(len(view), -1, dtype=np.int32)
        row_of[positions] = np.arange(len(positions))
        return cls(positions, matrix, row_of)

    def subset(self, keep: Iterable[int]) -> EmbeddingLookup:
        """Only the vectors of the positions in ``keep`` (the rest of the matrix freed)."""
        wanted = np.zeros(len(self.row_of), dtype=bool)
        wanted[np.fromiter(keep, dtype=np.int64)] = True
        rows = np.nonzero(wanted[self.positions])[0]
        positions = self.positions[rows]
        row_of = np.full(len(self.row_of), -1, dtype=np.int32)
        row_of[positions] = np.arange(len(positions))
        return EmbeddingLookup(positions, np.ascontiguousarray(self.matrix[rows]), row_of)

    def cosine(self, a: int, b: int) -> float | None:
        ra, rb = int(self.row_of[a]), int(self.row_of[b])
        if ra < 0 or rb < 0:
            return None
        return float(self.matrix[ra].astype(np.float32) @ self.matrix[rb].astype(np.float32))
