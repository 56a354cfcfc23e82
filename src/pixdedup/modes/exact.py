"""Exact mode: byte-identical files only (the same BLAKE3 content hash).  The byte
copies are found by every mode from the store's content-hash buckets; this mode adds
no other candidate and no pixel check."""

from __future__ import annotations

import numpy as np

from ..config import ScanConfig
from ..models import Evidence, Signatures
from ..view import CollectionView
from . import MODES, CopiesMode, Found, Pair


class ExactMode(CopiesMode):
    name = "exact"
    window_hashes = False
    embeds = False

    def candidates(self, view: CollectionView, config: ScanConfig, model: str | None) -> Found:
        return Found()

    def query_pairs(self, collection: Signatures, queries: Signatures, config: ScanConfig
                    ) -> np.ndarray:
        return np.zeros((0, 2), np.int64)

    def settled(self, pair: Pair, found: Found, config: ScanConfig
                ) -> tuple[bool, Evidence] | None:
        return False, Evidence(stage="exact")  # not the same bytes: not a duplicate here


MODES.add("exact", ExactMode())
