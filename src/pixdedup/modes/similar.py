"""Similar mode: near mode plus learned embeddings, for strong edits the hashes
miss (heavy crops, colour filters).  Pairs come from both the hash searches and the
embedding search; a pair the near cascade rejects is confirmed by the embedding
check (``verify.decide``).  ``--cluster dbscan`` keeps the embedding pairs within
``eps`` as edges, unverified (the tools it replaces did so)."""

from __future__ import annotations

import numpy as np

from ..candidates import embedding_candidates
from ..config import ScanConfig
from ..models import Evidence, Signatures
from ..view import CollectionView, EmbeddingLookup
from . import MODES, CopiesMode, Found, Pair
from .near import hash_candidates, hash_query_pairs


def similar_candidates(vectors: EmbeddingLookup, config: ScanConfig
                       ) -> dict[tuple[int, int], float]:
    """Pairs of view positions (i < j) whose embeddings are at least ``min_cosine_similarity``
    (or, for --cluster dbscan, within ``eps``) apart, each image keeping its
    ``max_neighbors`` most similar; value: the cosine similarity."""
    if len(vectors.positions) < 2:
        return {}
    threshold = 1.0 - config.eps if config.eps is not None else config.min_cosine_similarity
    found = embedding_candidates(vectors.matrix, threshold)
    positions = vectors.positions
    if config.cluster != "dbscan":  # bound the verification work per image
        order = np.argsort(-found[:, 2], kind="stable")
        found = found[order]
        count: dict[int, int] = {}
        keep = []
        for k, (a, b, _) in enumerate(found):
            ia, ib = int(a), int(b)
            if count.get(ia, 0) < config.max_neighbors or count.get(ib, 0) < config.max_neighbors:
                count[ia] = count.get(ia, 0) + 1
                count[ib] = count.get(ib, 0) + 1
                keep.append(k)
        found = found[keep]
    out: dict[tuple[int, int], float] = {}
    for a, b, c in found:
        pa, pb = int(positions[int(a)]), int(positions[int(b)])
        out[(min(pa, pb), max(pa, pb))] = float(c)
    return out


class SimilarMode(CopiesMode):
    name = "similar"
    window_hashes = True
    embeds = True

    def candidates(self, view: CollectionView, config: ScanConfig, model: str | None) -> Found:
        found = hash_candidates(view, config)
        if model is None:
            return found
        vectors = EmbeddingLookup.load(view, model)
        cosines = similar_candidates(vectors, config)
        known = set(found.pairs)
        found.pairs.extend(p for p in cosines if p not in known)
        for p in cosines:  # the embedding found them too: they may start a group
            found.extend_only.pop(p, None)
        found.cosines, found.vectors = cosines, vectors
        return found

    def query_pairs(self, collection: Signatures, queries: Signatures, config: ScanConfig
                    ) -> np.ndarray:
        return hash_query_pairs(collection, queries, config)

    def settled(self, pair: Pair, found: Found, config: ScanConfig
                ) -> tuple[bool, Evidence] | None:
        if config.cluster == "dbscan" and pair in found.cosines:
            return True, Evidence(stage="embedding",
                                  embedding_similarity=round(found.cosines[pair], 4))
        return None


MODES.add("similar", SimilarMode())
