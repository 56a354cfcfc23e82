"""The candidates stage: which pairs are worth verifying.  Never all pairs.

Input is compact signature arrays (``Signatures``: a 64-bit value per image per hash
kind, plus the window hashes of each image), not records, so that millions of images
fit in memory and the arrays can come straight from the feature store.

* Hamming range search on each 64-bit perceptual hash.  Up to ``EXHAUSTIVE_WORK``
  comparisons (about 44,000 images; 10,000 for the crop search) the search is
  exhaustive (FAISS binary brute force): every pair within the radius is found.  Above it, multi-index
  hashing (Norouzi et al.): the code is cut into ``m`` disjoint substrings, one sorted
  table per substring; two codes that agree exactly on at least one substring become
  candidates and are then checked on the full 64 bits.  Any pair within distance
  ``m - 1`` shares a substring (pigeonhole), so that radius is guaranteed and farther
  pairs are found with high probability.  ``m`` is chosen from the number of codes so
  that the table hits stay within a fixed budget: time grows about linearly with N.
* crop search: every image's full-frame DCT hash against the window hashes of all
  images (a crop of B is close to one of B's windows; B padded is the reverse;
  ``features.hashes.WINDOW_HASH_KIND``).
* orientation search: every image's DCT hash of itself mirrored and turned (seven
  hashes computed at extraction, ``features.hashes.oriented_hashes``) against all DCT
  hashes, one search per orientation sized like the first one (six searches: turning
  one image 270 degrees is turning the other 90).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import faiss
import numpy as np

from .features.color import hue_correlations
from .features.hashes import (
    ORIENTATIONS,
    ORIENTED_HASH_KIND,
    WINDOW_COUNT,
    WINDOW_HASH_KIND,
    orient_whash,
)
from .models import Signatures

log = logging.getLogger(__name__)

EXHAUSTIVE_WORK = 2e9
"""Up to this many code comparisons (queries x indexed codes), the search is exhaustive
(FAISS brute force, about a second): every pair within the radius is found."""
MULTI_INDEX_WORK = 1e8
"""Multi-index budget: expected table hits (random codes) over all queries; sets ``m``."""
MAX_BUCKET = 2_000
"""A table bucket larger than this (degenerate hashes: blank or flat images) is
searched only among the ``MAX_BUCKET`` codes nearest in sort order to each query."""
HITS_CHUNK = 2_000_000
"""Table hits checked per vectorised step (bounds the temporary arrays)."""
DB_CHUNK = 8_000_000
QUERY_CHUNK = 8_192
"""Queries per FAISS brute-force call (bounds the hits held at once: at most this many
times the indexed codes, in a crowd of identical hashes)."""
NEAREST_CHUNK_WORK = 20_000_000
"""With a per-query bound (``range_blocks``' ``nearest``), queries per brute-force call
are fewer, so that a call's hits stay under this many even where every query hits every
indexed code (a crowd of one image's copies): about 240 MB held at once."""


def to_codes(values: Sequence[int] | np.ndarray) -> np.ndarray:
    """uint64 hash values -> (N, 8) uint8 codes for FAISS."""
    arr = np.asarray(values, dtype=np.uint64).astype(">u8")
    return arr.view(np.uint8).reshape(-1, 8)


def multi_index_tables(n_queries: int, n_db: int) -> int:
    """Number of substrings ``m``: the largest (best recall) whose expected table hits
    stay within the budget, so the work per query is bounded and the total linear."""
    for m in range(8, 2, -1):
        if n_queries * m * n_db / float(2 ** (64 // m)) <= MULTI_INDEX_WORK:
            return m
    return 2


def choose_tables(n_queries: int, n_db: int) -> int:
    """0 (exhaustive) for small searches, else the multi-index table count."""
    return 0 if n_queries * n_db <= EXHAUSTIVE_WORK else multi_index_tables(n_queries, n_db)


def _substrings(m: int) -> list[tuple[int, int]]:
    """(shift, width) of ``m`` disjoint substrings covering 64 bits as evenly as possible."""
    out: list[tuple[int, int]] = []
    start = 0
    for t in range(m):
        width = 64 // m + (1 if t < 64 % m else 0)
        out.append((start, width))
        start += width
    return out


def _rotl(codes: np.ndarray, r: int) -> np.ndarray:
    if r % 64 == 0:
        return codes.copy()
    return (codes << np.uint64(r)) | (codes >> np.uint64(64 - r))


def _exhaustive(queries: np.ndarray, db: np.ndarray, radius: int, self_join: bool = False,
                nearest: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """FAISS brute force, ``QUERY_CHUNK`` queries at a time: (query, db) position blocks.
    ``nearest`` (0: no bound): a query with more hits than that keeps its ``nearest``
    nearest (FAISS k-nearest search, ties by position; in a self-join one more, as a
    query finds itself)."""
    index = faiss.IndexBinaryFlat(64)
    index.add(to_codes(db))
    chunk = QUERY_CHUNK if not nearest else \
        max(64, min(QUERY_CHUNK, int(NEAREST_CHUNK_WORK // max(1, len(db)))))
    for c0 in range(0, len(queries), chunk):
        codes = to_codes(queries[c0:c0 + chunk])
        lims, dist, ids = index.range_search(codes, radius + 1)
        counts = np.diff(lims).astype(np.int64)
        q = np.repeat(np.arange(c0, c0 + len(counts), dtype=np.int64), counts)
        d = ids.astype(np.int64)
        if nearest:
            crowded = np.nonzero(counts > nearest + self_join)[0]
            if len(crowded):  # a crowd: each of its queries keeps its nearest
                is_crowded = np.zeros(len(counts), dtype=bool)
                is_crowded[crowded] = True
                keep = ~is_crowded[q - c0]
                k_dist, k_ids = index.search(codes[crowded], min(len(db), nearest + self_join))
                found = (k_ids >= 0) & (k_dist <= radius)
                q = np.concatenate([q[keep], np.repeat(crowded + c0, found.sum(axis=1))])
                d = np.concatenate([d[keep], k_ids[found].astype(np.int64)])
        if self_join:
            if nearest:  # found from one side only, maybe: each pair as (low, high)
                q, d = np.minimum(q, d), np.maximum(q, d)
            keep = q < d
            q, d = q[keep], d[keep]
        yield q, d


def _table_join(qorder: np.ndarray, qsorted: np.ndarray, db: np.ndarray, db_offset: int,
                radius: int, shift: int, width: int, self_join: bool,
                capped: np.ndarray, nearest: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One table of multi-index hashing: codes are rotated so that the substring is
    on top, then one sort gives the buckets (by substring) ordered by the whole code.
    ``qsorted`` are the queries rotated the same way and sorted (``qorder``).  Yields
    (query, db) position blocks of at most ``HITS_CHUNK`` table hits; marks in
    ``capped`` the queries whose bucket was cut to ``MAX_BUCKET``; ``nearest`` (0: no
    bound): each query keeps at most that many of its nearest hits in this table."""
    r = 64 - shift - width
    low = np.uint64(64 - width)
    rot_db = _rotl(db, r)
    order = np.argsort(rot_db)
    srot = rot_db[order]
    del rot_db
    skey = srot >> low
    qkey = qsorted >> low
    lo = np.searchsorted(skey, qkey, side="left")
    hi = np.searchsorted(skey, qkey, side="right")
    del skey, qkey
    big = np.nonzero(hi - lo > MAX_BUCKET)[0]
    if len(big):  # degenerate hashes: only the nearest codes in sort order
        log.info("multi-index: %d queries hit buckets larger than %d", len(big), MAX_BUCKET)
        capped[qorder[big]] = True
        # a bucket's codes are sorted and share the query's substring: the query's
        # place among all the sorted codes lies within its bucket
        centre = np.searchsorted(srot, qsorted[big])
        start = np.maximum(lo[big], centre - MAX_BUCKET // 2)
        hi[big] = np.minimum(hi[big], start + MAX_BUCKET)
        lo[big] = start
    hits = np.cumsum(hi - lo)
    bounds = sorted_unique(np.concatenate([[0], np.searchsorted(
        hits, np.arange(HITS_CHUNK, int(hits[-1]) if len(hits) else 0, HITS_CHUNK)), [len(hits)]]))
    for c0, c1 in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        counts = hi[c0:c1] - lo[c0:c1]
        total = int(counts.sum())
        if total == 0:
            continue
        qpos = np.repeat(np.arange(c0, c1, dtype=np.int64), counts)
        pos = np.repeat(lo[c0:c1] - (np.cumsum(counts) - counts), counts)
        pos += np.arange(total, dtype=np.int64)
        dist = np.bitwise_count(qsorted[qpos] ^ srot[pos])  # rotation keeps distance
        keep = np.nonzero(dist <= radius)[0]
        if nearest and len(keep) > nearest:  # a query's hits are all in this block
            qk = qpos[keep]
            by = np.lexsort((dist[keep], qk))
            rank = _rank_in_runs(qk[by])
            keep = np.sort(keep[by[rank < nearest + self_join]])
        q = qorder[qpos[keep]]
        d = order[pos[keep]] + db_offset
        if self_join:  # a pair may be found from either side (capped buckets, db chunks)
            q, d = np.minimum(q, d), np.maximum(q, d)
            keep = q != d
            q, d = q[keep], d[keep]
        yield q, d


def _multi_index(queries: np.ndarray, db: np.ndarray, radius: int, m: int,
                 self_join: bool, nearest: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Multi-index hashing's hits in blocks.  A pair whose codes agree on the substring
    of an earlier table was found there (unless that table cut the query's bucket), so
    it is left out of the later ones: each pair comes once, or a few times where
    buckets were cut or (``self_join``) from both sides."""
    done: list[tuple[int, int, np.ndarray]] = []
    for shift, width in _substrings(m):
        rot_q = _rotl(queries, 64 - shift - width)
        qorder = np.argsort(rot_q)
        qsorted = rot_q[qorder]
        del rot_q
        capped = np.zeros(len(queries), dtype=bool)
        for c0 in range(0, len(db), DB_CHUNK):  # bounded memory for very large tables
            for q, d in _table_join(qorder, qsorted, db[c0:c0 + DB_CHUNK], c0, radius, shift,
                                    width, self_join, capped, nearest):
                if done and len(q):
                    diff = queries[q] ^ db[d]
                    seen = np.zeros(len(q), dtype=bool)
                    for s0, w0, cut in done:
                        shared = ((diff >> np.uint64(s0)) & np.uint64((1 << w0) - 1)) == 0
                        shared &= ~cut[q]
                        if self_join:  # found there from either side
                            shared &= ~cut[d]
                        seen |= shared
                    q, d = q[~seen], d[~seen]
                yield q, d
        done.append((shift, width, capped))


def range_join(queries: np.ndarray, db: np.ndarray, radius: int, *, self_join: bool = False,
               tables: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All (query position, db position) with Hamming distance <= ``radius``, each once.
    ``tables``: force multi-index hashing with that many substrings (None: automatic;
    0: exhaustive)."""
    qs: list[np.ndarray] = []
    ds: list[np.ndarray] = []
    for q, d in range_blocks(queries, db, radius, self_join=self_join, tables=tables):
        qs.append(q)
        ds.append(d)
    if not qs:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    n = np.int64(len(db))
    flat = sorted_unique(np.concatenate(qs) * n + np.concatenate(ds))
    return flat // n, flat % n


def range_blocks(queries: np.ndarray, db: np.ndarray, radius: int, *, self_join: bool = False,
                 tables: int | None = None, nearest: int = 0
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``range_join``'s pairs in blocks, as they are found (the hits of at most
    ``QUERY_CHUNK`` queries of the brute-force search, of at most ``HITS_CHUNK`` table
    hits of the multi-index one): every pair at least once (a few may come twice), so
    that a caller can filter them block by block and never hold all of them (on real
    photos the hits within the radius grow with the square of N: look-alike skies,
    walls, textures).  ``nearest`` (0: every pair within the radius): a query keeps at
    most its ``nearest`` nearest hits (brute force; multi-index hashing: in each table),
    so a crowd of C copies of one image yields about C x ``nearest`` pairs, not C^2/2;
    a pair is kept where either side keeps it."""
    queries = np.ascontiguousarray(queries, dtype=np.uint64)
    db = np.ascontiguousarray(db, dtype=np.uint64)
    if len(queries) == 0 or len(db) == 0:
        return
    if tables is None:
        tables = choose_tables(len(queries), len(db))
    if tables == 0:
        yield from _exhaustive(queries, db, radius, self_join, nearest)
    else:
        yield from _multi_index(queries, db, radius, tables, self_join, nearest)


def hash_pairs(codes: np.ndarray, radius: int, tables: int | None = None) -> np.ndarray:
    """Pairs (i < j) of codes within ``radius``, as an (M, 2) int64 array."""
    q, d = range_join(codes, codes, radius, self_join=True, tables=tables)
    return np.stack([q, d], axis=1)


def window_pairs(full: np.ndarray, windows: np.ndarray, owners: np.ndarray, radius: int,
                 tables: int | None = None) -> np.ndarray:
    """Pairs (i < j, unique) where image i's full hash is within ``radius`` of one of
    image j's window hashes or the reverse (``owners[k]`` is the image of window ``k``)."""
    return _pairs(window_blocks(full, windows, owners, radius, tables))


def window_blocks(full: np.ndarray, windows: np.ndarray, owners: np.ndarray, radius: int,
                  tables: int | None = None, nearest: int = 0
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``window_pairs``' hits as (image, image) blocks (``range_blocks``; ``nearest``
    counts windows)."""
    owners = np.asarray(owners)
    for q, w in range_blocks(full, windows, radius, tables=tables, nearest=nearest):
        yield q, owners[w]


SELF_JOIN_ORIENTATIONS = tuple(name for name in ORIENTATIONS if name != "rotated 270")
"""A pair that matches once one image is turned 270 degrees matches once the other is
turned 90: the collection against itself needs the other six."""


def oriented_pairs(oriented: np.ndarray, codes: np.ndarray, radius: int,
                   tables: int | None = None) -> np.ndarray:
    """Pairs (i < j, unique) where image i mirrored or turned has a hash within
    ``radius`` of image j's.  ``oriented``: N x 7, each image's hash in the
    ``ORIENTATIONS`` (in order); ``codes``: the hashes as they are.  One N x N search
    per orientation, each sized (and so as exact) as the search of the hashes as they
    are.  An image symmetric under a turn or mirror finds itself: left out."""
    return _pairs(oriented_blocks(oriented, codes, radius, tables))


def oriented_blocks(oriented: np.ndarray, codes: np.ndarray, radius: int,
                    tables: int | None = None, nearest: int = 0
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``oriented_pairs``' hits as (image, image) blocks (``range_blocks``)."""
    for name in SELF_JOIN_ORIENTATIONS:
        k = list(ORIENTATIONS).index(name)
        yield from range_blocks(np.ascontiguousarray(oriented[:, k]), codes, radius,
                                tables=tables, nearest=nearest)


def _pairs(blocks: Iterable[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Sorted unique pairs (i < j) of the hits in ``blocks``, an image's own left out."""
    blocks = list(blocks)
    if not blocks:
        return np.zeros((0, 2), dtype=np.int64)
    a = np.concatenate([q for q, _ in blocks])
    b = np.concatenate([d for _, d in blocks])
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keep = lo != hi
    return unique_pairs(lo[keep], hi[keep])


WINDOWS_PER_IMAGE = WINDOW_COUNT

DISTANCE_CHUNK = 200_000
"""Pairs per step of ``pair_distance`` (bounds its M x ``WINDOW_COUNT`` temporary arrays)."""

UNCONFIRMED = 1 << 20
"""``pair_distance`` of a pair that no way of the search confirms."""


@dataclass(frozen=True, slots=True)
class Radii:
    """How far apart the searched hashes may be on each way of pairing two images
    (None: that way is not searched), and ``check``: how far apart the check hashes of
    the same frames may be (``features.hashes.CHECK_HASH_KIND``; None: hits are not
    confirmed)."""

    full: int
    window: int | None = None
    orientation: int | None = None
    check: int | None = None


def pair_distance(sa: Signatures, a: np.ndarray, sb: Signatures, b: np.ndarray,
                  radii: Radii) -> np.ndarray:
    """For rows ``a`` of ``sa`` paired with rows ``b`` of ``sb``: the smallest distance
    over every way the search could have paired them (each searched hash; a full frame
    against the other's windows, either way; one image mirrored or turned) within that
    way's radius.  Where both sides have check hashes (``Signatures.checked``) a way
    counts only when the check hashes of the same two frames (the full frame, that
    window, that orientation: ``features.hashes.orient_whash`` turns a wavelet hash
    exactly) are within ``radii.check`` too, and the distance is the sum of the two;
    ``UNCONFIRMED`` where no way counts."""
    if len(a) > DISTANCE_CHUNK:
        return np.concatenate([pair_distance(sa, a[k:k + DISTANCE_CHUNK], sb,
                                             b[k:k + DISTANCE_CHUNK], radii)
                               for k in range(0, len(a), DISTANCE_CHUNK)])
    checked = radii.check is not None and sa.checked and sb.checked
    best = np.full(len(a), UNCONFIRMED, np.int64)
    ca = sa.check[a] if checked else None
    cb = sb.check[b] if checked else None

    def way(d: np.ndarray, radius: int, c: np.ndarray | None) -> None:
        """Fold one way (``d``: M or M x k searched distances; ``c``: the check
        distances of the same frames) into ``best``."""
        ok = d <= radius
        total = d.astype(np.int64)
        if c is not None:
            ok &= c <= radii.check
            total = total + c
        total = np.where(ok, total, UNCONFIRMED)
        np.minimum(best, total if total.ndim == 1 else total.min(axis=1), out=best)

    for kind, codes in sa.hashes.items():
        other = sb.hashes.get(kind)
        if other is not None:
            way(np.bitwise_count(codes[a] ^ other[b]), radii.full,
                None if ca is None else np.bitwise_count(ca ^ cb))
    full = WINDOW_HASH_KIND
    if radii.window is not None and full in sa.hashes and full in sb.hashes:
        for x, sx, y, sy, cx in ((a, sa, b, sb, ca), (b, sb, a, sa, cb)):
            if len(sy.windows) != WINDOWS_PER_IMAGE * len(sy.ids) or not len(sy.ids):
                continue
            win = np.asarray(sy.windows).reshape(len(sy.ids), WINDOWS_PER_IMAGE)[y]
            d = np.bitwise_count(sx.hashes[full][x][:, None] ^ win)
            c = None
            if cx is not None:
                c = np.bitwise_count(cx[:, None] ^ np.asarray(sy.window_checks)[y])
            way(d, radii.window, c)
    plain = ORIENTED_HASH_KIND
    if radii.orientation is not None and plain in sa.hashes and plain in sb.hashes:
        for x, sx, y, sy, cx, cy in ((a, sa, b, sb, ca, cb), (b, sb, a, sa, cb, ca)):
            if len(sx.oriented) != len(sx.ids) or not len(sx.ids):
                continue
            turned = np.asarray(sx.oriented)[x]
            d = np.bitwise_count(turned ^ sy.hashes[plain][y][:, None])
            c = None
            if cx is not None and cy is not None:
                c = np.stack([np.bitwise_count(orient_whash(cx, name) ^ cy)
                              for name in ORIENTATIONS], axis=1)
            way(d, radii.orientation, c)
    return best


HUE_MARGIN = 0.01
"""The colour gate before verification passes pairs within this of
``min_color_correlation`` (the stored hue distributions are float16); verification's
own gate, on the exact histograms, decides those."""


def colour_gate(sa: Signatures, a: np.ndarray, sb: Signatures, b: np.ndarray,
                min_color_correlation: float | None) -> np.ndarray:
    """Which pairs (rows ``a`` of ``sa`` with rows ``b`` of ``sb``) can pass
    verification's colour gate (``features.color.color_correlation``), from the stored
    hue distributions: all where either side has none (``Signatures.hue``), a
    greyscale image, or ``min_color_correlation`` None."""
    keep = np.ones(len(a), dtype=bool)
    if min_color_correlation is None or len(sa.hue) != len(sa.ids) or \
            len(sb.hue) != len(sb.ids) or not len(a):
        return keep
    for k in range(0, len(a), DISTANCE_CHUNK):
        cc = hue_correlations(np.asarray(sa.hue)[a[k:k + DISTANCE_CHUNK]],
                              np.asarray(sb.hue)[b[k:k + DISTANCE_CHUNK]])
        keep[k:k + DISTANCE_CHUNK] = ~(cc < min_color_correlation - HUE_MARGIN)  # NaN passes
    return keep


def cap_per_image(rows: np.ndarray, distance: np.ndarray, k: int) -> np.ndarray:
    """The pairs among ``rows`` that are among the ``k`` nearest (by ``distance``, ties
    by row: in a scan, path order, ``FeatureStore.signatures``) of at least one of their
    two images: at most k N pairs for N images."""
    return rows[nearest_per_image(rows, distance, k)]


def nearest_per_image(rows: np.ndarray, distance: np.ndarray, k: int) -> np.ndarray:
    """Mask of ``cap_per_image``'s pairs."""
    m = len(rows)
    if m == 0:
        return np.zeros(0, dtype=bool)
    owner = np.concatenate([rows[:, 0], rows[:, 1]])  # each pair seen from both images
    other = np.concatenate([rows[:, 1], rows[:, 0]])
    order = np.lexsort((other, np.concatenate([distance, distance]), owner))
    sorted_owner = owner[order]
    rank = _rank_in_runs(sorted_owner)
    keep = np.zeros(m, dtype=bool)
    keep[order[rank < k] % m] = True
    return keep


def component_labels(n: int, edges: np.ndarray) -> np.ndarray:
    """Connected-component label (the smallest member) of each of ``n`` nodes, from an
    (M, 2) edge array: label propagation with pointer jumping, vectorised."""
    labels = np.arange(n, dtype=np.int64)
    if not len(edges):
        return labels
    a, b = edges[:, 0], edges[:, 1]
    while True:
        low = np.minimum(labels[a], labels[b])
        before = labels.copy()
        np.minimum.at(labels, a, low)
        np.minimum.at(labels, b, low)
        while True:  # pointer jumping: each label to its label's label
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
        if np.array_equal(labels, before):
            return labels


DISTINCT_MARGIN = 3
"""Bits (``pair_distance``) by which an image's nearest must be nearer than its second
nearest to be its *distinct* nearest (``pair_roles``).  A copy lies clearly nearer its
original than anything else; look-alikes in a dense collection have a next one a bit
or two farther.  Measured on 20,000 real photo tiles: 1 bit (strictly nearer) let
0.071 unrelated pairs per image be verified, 3 bits 0.053 (and 315 -> 217 unrelated
pairs grouped), at the same recall on planted copies (0.843; 0.893 -> 0.887 at 5,000:
one copy of 155); 5 bits lost 3 more of 618.  The accuracy draws do not move."""

LEADS_INTO_FIRST = 1
LEADS_INTO_SECOND = 2
LEADS_BOTH_WAYS = LEADS_INTO_FIRST | LEADS_INTO_SECOND


def pair_roles(rows: np.ndarray, distance: np.ndarray, n: int, max_sure_distance: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Which candidate pairs may start a group, and into which of its two images a pair
    may lead a group that one of them is in: (``starts``, ``leads``: a bit mask of
    ``LEADS_INTO_FIRST`` and ``LEADS_INTO_SECOND``) per pair.

    The images within ``max_sure_distance`` of each other (a photo and its re-encodes,
    resizes, format copies) count as one cluster.  A pair starts a group when its two
    images are in one cluster, or when their clusters are each other's nearest, each
    nearer than its second nearest by ``DISTINCT_MARGIN`` or more.  The pairs that start join the images into
    likely groups; a pair leads into an image when the image's likely group has the
    other image's as its nearest (ties included); one that starts leads both ways.
    Unrelated real images that look alike (pieces of one texture, skies, smooth
    gradients) lie in crowds whose members are about equally near each other: none of
    their pairs starts a group, and a group reaches into a crowd only through the
    images whose nearest it holds.  A copy is almost always its original's distinct
    nearest, and the copies of one photo edited alike (turned by a few degrees, cropped
    by a few percent) have either each other or another copy of the photo nearest.
    ``rows``: (M, 2) positions below ``n``; ``distance``: the pairs' ``pair_distance``."""
    if not len(rows):
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int8)
    close = distance <= max_sure_distance
    label = component_labels(n, rows[close])
    ca, cb = label[rows[:, 0]], label[rows[:, 1]]
    starts = close | (ca == cb)
    leads = np.where(starts, LEADS_BOTH_WAYS, 0).astype(np.int8)
    across = np.nonzero(~starts)[0]
    if not len(across):
        return starts, leads
    src, dst, dist = _cluster_distances(ca[across], cb[across], distance[across])
    head = np.nonzero(np.concatenate([[True], src[1:] != src[:-1]]))[0]
    runner = np.minimum(head + 1, len(src) - 1)  # the second nearest, where there is one
    nearest = np.full(n, -1, dtype=np.int64)
    distinct = np.zeros(n, dtype=bool)
    nearest[src[head]] = dst[head]
    distinct[src[head]] = (runner == head) | (src[runner] != src[head]) | \
        (dist[runner] >= dist[head] + DISTINCT_MARGIN)
    mutual = (nearest[ca[across]] == cb[across]) & (nearest[cb[across]] == ca[across]) & \
        distinct[ca[across]] & distinct[cb[across]]
    starts[across] = mutual
    leads[across[mutual]] = LEADS_BOTH_WAYS
    # the likely groups: the clusters joined by the pairs that start; a pair leads into
    # a likely group from its nearest other one (ties included)
    label = component_labels(n, rows[starts])
    ga, gb = label[rows[:, 0]], label[rows[:, 1]]
    across = np.nonzero(ga != gb)[0]
    if not len(across):
        return starts, leads
    src, dst, dist = _cluster_distances(ga[across], gb[across], distance[across])
    head = np.nonzero(np.concatenate([[True], src[1:] != src[:-1]]))[0]
    lowest = np.full(n, UNCONFIRMED, dtype=np.int64)
    lowest[src[head]] = dist[head]
    near = dist == lowest[src]  # (src, dst): dst is among src's nearest
    key = src[near] * np.int64(n) + dst[near]
    into_first = np.isin(ga[across] * np.int64(n) + gb[across], key)
    into_second = np.isin(gb[across] * np.int64(n) + ga[across], key)
    leads[across] |= np.where(into_first, LEADS_INTO_FIRST, 0).astype(np.int8) | \
        np.where(into_second, LEADS_INTO_SECOND, 0).astype(np.int8)
    return starts, leads


def _cluster_distances(ca: np.ndarray, cb: np.ndarray, distance: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From pairs between clusters (the clusters of each pair's images and its
    distance): (cluster, other cluster, nearest distance between them), one row per
    ordered pair of clusters that a pair joins, sorted by cluster, then distance."""
    src = np.concatenate([ca, cb])
    dst = np.concatenate([cb, ca])
    dist = np.concatenate([distance, distance])
    order = np.lexsort((dist, dst, src))
    src, dst, dist = src[order], dst[order], dist[order]
    first = np.ones(len(src), dtype=bool)
    first[1:] = (src[1:] != src[:-1]) | (dst[1:] != dst[:-1])
    src, dst, dist = src[first], dst[first], dist[first]
    order = np.lexsort((dist, src))
    return src[order], dst[order], dist[order]


@dataclass(frozen=True, slots=True)
class CandidatePairs:
    """Candidate pairs (caller ids, first < second, sorted) with their roles
    (``pair_roles``): ``starts`` may start a group; ``leads`` says into which of its
    images each pair may lead a group the other one is in (one that leads nowhere can
    still let two groups meet, ``grouping.merge_groups``)."""

    pairs: np.ndarray
    starts: np.ndarray
    leads: np.ndarray
    distance: np.ndarray
    """``pair_distance`` of each pair (0 where it was not measured)."""

    def __len__(self) -> int:
        return len(self.pairs)

    @classmethod
    def none(cls) -> CandidatePairs:
        return cls(np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=bool),
                   np.zeros(0, dtype=np.int8), np.zeros(0, dtype=np.int64))


def near_candidates(sig: Signatures, max_hamming_distance: int, max_window_distance: int,
                    tables: int | None = None,
                    max_orientation_distance: int | None = None,
                    max_candidates_per_image: int = 0,
                    max_check_distance: int | None = None,
                    min_color_correlation: float | None = None,
                    max_sure_distance: int | None = None) -> CandidatePairs:
    """Candidate pairs (caller ids, first < second, sorted and unique) and which of them
    may start a group.  ``max_orientation_distance``: also pairs within it once one
    image is mirrored or turned (None: not searched).  ``max_check_distance`` (None:
    off): a hit counts only where the check hashes of the same two frames agree within
    it too (``pair_distance``).  ``min_color_correlation`` (None: off): pairs whose hue
    distributions would fail verification's colour gate are left out (``colour_gate``).
    ``max_sure_distance`` (None: every pair may start a group and lead both ways): the
    roles of the pairs (``pair_roles``), given before the cap.
    ``max_candidates_per_image`` (0: no limit): each image keeps
    only its nearest candidates by that distance (a pair stays when it is among the
    nearest of either image), so the pairs grow linearly with N even where real
    photographs match many others (textures, one scene's tiles)."""
    radii = None
    if max_check_distance is not None or max_candidates_per_image > 0 \
            or max_sure_distance is not None:
        radii = Radii(max_hamming_distance, max_window_distance if max_window_distance >= 0
                      else None, max_orientation_distance, max_check_distance)
    rows, distance = _confirmed_pairs(sig, _search_blocks(
        sig, max_hamming_distance, max_window_distance, max_orientation_distance, tables,
        SEARCH_NEAREST if max_candidates_per_image > 0 else 0),
        radii, min_color_correlation,
        max(KEPT_NEAREST, 2 * max_candidates_per_image) if max_candidates_per_image > 0 else 0)
    if len(rows) == 0:
        return CandidatePairs.none()
    starts = np.ones(len(rows), dtype=bool)
    leads = np.full(len(rows), LEADS_BOTH_WAYS, dtype=np.int8)
    if radii is not None:
        if max_sure_distance is not None:
            starts, leads = pair_roles(rows, distance, len(sig.ids), max_sure_distance)
        if max_candidates_per_image > 0:
            kept = nearest_per_image(rows, distance, max_candidates_per_image)
            rows, distance, starts, leads = rows[kept], distance[kept], starts[kept], leads[kept]
    mapped = sig.ids[rows]
    swapped = mapped[:, 0] > mapped[:, 1]  # the leads follow the images
    leads = np.where(swapped, ((leads & 1) << 1) | (leads >> 1), leads).astype(np.int8)
    a, b = np.minimum(mapped[:, 0], mapped[:, 1]), np.maximum(mapped[:, 0], mapped[:, 1])
    order = np.lexsort((b, a))
    return CandidatePairs(np.stack([a[order], b[order]], axis=1).astype(np.int64),
                          starts[order], leads[order], distance[order])


def _search_blocks(sig: Signatures, max_hamming_distance: int, max_window_distance: int,
                   max_orientation_distance: int | None, tables: int | None, nearest: int = 0
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The hits of every search of ``near_candidates`` (each hash kind, the crop search,
    the orientation search) as blocks of (image, image) positions, as they are found
    (``nearest``: each query's bound in each search, ``range_blocks``)."""
    if len(sig.ids) < 2:
        return
    for codes in sig.hashes.values():
        yield from range_blocks(codes, codes, max_hamming_distance, self_join=True,
                                tables=tables, nearest=nearest)
    if len(sig.windows) and max_window_distance >= 0 and WINDOW_HASH_KIND in sig.hashes:
        yield from window_blocks(sig.hashes[WINDOW_HASH_KIND], sig.windows, sig.window_owner,
                                 max_window_distance, tables, nearest)
    if max_orientation_distance is not None and len(sig.oriented) \
            and ORIENTED_HASH_KIND in sig.hashes:
        yield from oriented_blocks(sig.oriented, sig.hashes[ORIENTED_HASH_KIND],
                                   max_orientation_distance, tables, nearest)


SEARCH_NEAREST = 64
"""With a per-image cap of candidate pairs (``near_candidates``), each image keeps at
most this many nearest hits in each search (``range_blocks``' ``nearest``), the pairs
of both sides kept: a crowd of C near-identical images (one photo's many copies, blank
frames) yields about C x 64 hits per search instead of C^2/2, which made the
candidate stage grow with the square of the crowd (5,000 copies of one tile among
20,000 real tiles: 90 s).  Far more than the cap keeps (``KEPT_NEAREST``).  Among
20,000 real photo tiles the full-frame and turned searches hit at most 40 per image;
the crop search (a full frame against every window) hit more for 814 tiles of skies,
walls and gradients, and bounding it lost no planted copy there and changed no
accuracy draw (``benchmarks/real_scale.py``, ``accuracy.py``)."""
FILTER_BLOCK = 1_000_000
"""Search hits gathered before they are filtered together (``_confirmed_pairs``)."""
HELD_PER_IMAGE = 32
"""Confirmed pairs per image held before they are pruned to each image's
``KEPT_NEAREST`` nearest (``_confirmed_pairs``)."""
KEPT_NEAREST = 16
"""Pairs per image a prune keeps at least (and twice the per-image cap)."""


def _confirmed_pairs(sig: Signatures, blocks: Iterator[tuple[np.ndarray, np.ndarray]],
                     radii: Radii | None, min_color_correlation: float | None,
                     nearest: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The unique pairs (first < second) among the search hits that pass the colour
    gate and (``radii``) are confirmed by ``pair_distance``, with that distance (0
    without ``radii``).  The hits are filtered about ``FILTER_BLOCK`` at a time, so
    memory follows the pairs kept, not the hits: on real photos the hits within the
    search radii grow with the square of N (15 per image among 20,000 photo tiles, 5
    of them distinct pairs), the confirmed ones far slower (1 per image there).  Where
    more than ``HELD_PER_IMAGE`` per image are held (a collection of millions of
    look-alikes) and ``nearest`` is given (0: never), they are pruned to the pairs
    among the ``nearest`` nearest of either image (by distance, then position): memory
    stays linear in N, and a per-image cap of up to ``nearest`` keeps the same pairs.
    The roles (``pair_roles``) are then given on the pruned pairs: where more than
    ``nearest`` lie at about an image's nearest distance, a tie the pruning cut (two
    crowds equally near) can make a pair start a group that the whole set would only
    let lead, or the reverse.  The benchmarks here never reach the prune (under 1 pair
    held per image among 20,000 real photo tiles)."""
    kept_rows: list[np.ndarray] = []
    kept_distance: list[np.ndarray] = []
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    size = 0
    held = 0
    limit = HELD_PER_IMAGE * max(1, len(sig.ids))

    def prune() -> int:
        rows, distance = _unique_rows(np.concatenate(kept_rows), np.concatenate(kept_distance))
        keep = nearest_per_image(rows, distance, nearest)
        kept_rows[:] = [rows[keep]]
        kept_distance[:] = [distance[keep]]
        return int(keep.sum())

    def flush() -> None:
        rows = _pairs(pending)
        pending.clear()
        if len(rows) and min_color_correlation is not None:
            rows = rows[colour_gate(sig, rows[:, 0], sig, rows[:, 1], min_color_correlation)]
        if radii is None:
            distance = np.zeros(len(rows), dtype=np.int64)
        else:
            distance = pair_distance(sig, rows[:, 0], sig, rows[:, 1], radii)
            ok = distance < UNCONFIRMED
            rows, distance = rows[ok], distance[ok]
        kept_rows.append(rows)
        kept_distance.append(distance)

    for q, d in blocks:
        if len(q):
            pending.append((q, d))
            size += len(q)
        if size >= FILTER_BLOCK:
            flush()
            size = 0
            held += len(kept_rows[-1])
            if nearest and held > limit:
                held = prune()
                log.info("candidates: pruned to %d pairs, each image's %d nearest", held,
                         nearest)
    if pending:
        flush()
    if not kept_rows:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)
    return _unique_rows(np.concatenate(kept_rows), np.concatenate(kept_distance))


def _unique_rows(rows: np.ndarray, distance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique ``rows`` with their ``distance`` (equal for equal rows)."""
    if len(rows) == 0:
        return rows, distance
    n = np.int64(rows.max() + 1)
    key = rows[:, 0] * n + rows[:, 1]
    order = np.argsort(key, kind="stable")
    first = order[_run_starts(key[order])]
    return rows[first], distance[first]


def unique_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sorted unique rows of (a, b) for non-negative int64 ids (1-D unique, fast)."""
    if len(a) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    n = np.int64(max(int(a.max()), int(b.max())) + 1)
    flat = sorted_unique(a.astype(np.int64) * n + b.astype(np.int64))
    return np.stack([flat // n, flat % n], axis=1)


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` of a 1-D integer array, by one sort.  numpy 2.4's ``np.unique``
    takes a hash-based path that was 65 times slower on 2 million distinct int64 pair
    keys here (1.7 s against 0.026 s), and the candidate stage makes such keys in every
    block of hits."""
    values = np.sort(np.asarray(values))
    return values[_run_starts(values)]


def _rank_in_runs(ordered: np.ndarray) -> np.ndarray:
    """Each element's place (0, 1, ...) in its run of equal values of a sorted array,
    in linear time (a binary search per element was most of a crowd's search)."""
    place = np.arange(len(ordered), dtype=np.int64)
    return place - np.maximum.accumulate(np.where(_run_starts(ordered), place, 0))


def _run_starts(ordered: np.ndarray) -> np.ndarray:
    """Mask of the first element of each run of equal values in a sorted array."""
    starts = np.ones(len(ordered), dtype=bool)
    if len(ordered) > 1:
        np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    return starts


EXACT_EMBEDDING_LIMIT = 200_000
"""Up to this many vectors the cosine range search is exact (FAISS flat inner product);
above it an IVF index (about 4 sqrt(N) lists, ``IVF_PROBES`` of them searched)."""
IVF_PROBES = 24
EMBEDDING_QUERY_CHUNK = 8192


EXACT_KNN_LIMIT = 20_000
"""Up to this many vectors the nearest-neighbour search of ``knn`` is exact (FAISS flat,
quadratic: 0.3 s for 10,000 faces here); above it an IVF index."""


def knn(x: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest rows of ``x`` (itself included): (distances, indices),
    Euclidean (``metric='euclidean'``) or cosine distance (``'cosine'``, unit rows);
    index -1 where fewer were found."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, dim = x.shape
    cosine = metric == "cosine"
    flat = faiss.IndexFlatIP(dim) if cosine else faiss.IndexFlatL2(dim)
    index: faiss.Index = flat
    if n > EXACT_KNN_LIMIT:
        nlist = int(4 * np.sqrt(n))
        index = faiss.IndexIVFFlat(flat, dim, nlist,
                                   faiss.METRIC_INNER_PRODUCT if cosine else faiss.METRIC_L2)
        rng = np.random.default_rng(0)
        index.train(x[rng.choice(n, size=min(n, 64 * nlist), replace=False)])
        index.nprobe = IVF_PROBES
    index.add(x)
    dist = np.empty((n, min(k, n)), np.float32)
    found = np.empty((n, min(k, n)), np.int64)
    for start in range(0, n, EMBEDDING_QUERY_CHUNK):
        d, i = index.search(x[start:start + EMBEDDING_QUERY_CHUNK], min(k, n))
        dist[start:start + len(d)] = 1.0 - d if cosine else np.sqrt(np.maximum(d, 0.0))
        found[start:start + len(d)] = i
    return dist, found


def embedding_candidates(vectors: np.ndarray, min_cosine: float) -> np.ndarray:
    """Pairs (i < j) of rows of ``vectors`` (L2-normalised) with cosine similarity >=
    ``min_cosine``, as an (k, 3) float64 array: i, j, similarity."""
    n = len(vectors)
    if n < 2:
        return np.zeros((0, 3))
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = x.shape[1]
    index: faiss.Index
    if n <= EXACT_EMBEDDING_LIMIT:
        index = faiss.IndexFlatIP(dim)
    else:
        nlist = int(4 * np.sqrt(n))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = x[rng.choice(n, size=min(n, 64 * nlist), replace=False)]
        index.train(sample)
        index.nprobe = IVF_PROBES
    index.add(x)
    out = []
    for start in range(0, n, EMBEDDING_QUERY_CHUNK):
        q = x[start:start + EMBEDDING_QUERY_CHUNK]
        lims, dist, labels = index.range_search(q, float(min_cosine))
        rows = np.repeat(np.arange(len(q)) + start, np.diff(lims).astype(np.int64))
        keep = labels > rows
        out.append(np.stack([rows[keep], labels[keep], dist[keep]], axis=1).astype(np.float64))
    return np.concatenate(out) if out else np.zeros((0, 3))
