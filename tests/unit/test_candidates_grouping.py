import numpy as np
import pytest

from pixdedup import candidates
from pixdedup.candidates import (
    LEADS_INTO_SECOND,
    Signatures,
    hash_pairs,
    multi_index_tables,
    near_candidates,
    oriented_pairs,
    window_pairs,
)
from pixdedup.features.hashes import ORIENTATIONS, WINDOW_COUNT, orient_whash
from pixdedup.grouping import adopt_leftovers, grow_groups
from pixdedup.models import Evidence, Group


def _brute(codes, radius):
    out = set()
    for i in range(len(codes)):
        d = np.unpackbits((codes[i] ^ codes[i + 1:]).view(np.uint8).reshape(-1, 8), axis=1).sum(1)
        out.update((i, i + 1 + int(k)) for k in np.nonzero(d <= radius)[0])
    return out


@pytest.mark.parametrize(("tables", "radius"), [(0, 7), (8, 7), (4, 3), (3, 2)])
def test_hash_pairs_match_brute_force(tables, radius):
    """Exhaustive search finds every pair; multi-index with m tables every pair within
    m - 1 (pigeonhole), checked against brute force."""
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 2**63, 3000, dtype=np.uint64)
    for k in range(0, 3000, 30):  # planted near pairs at distance 1..7
        flips = rng.choice(64, size=1 + k % 7, replace=False)
        mask = np.uint64(sum(1 << int(f) for f in flips))
        codes[k + 1] = codes[k] ^ mask
    got = {tuple(p) for p in hash_pairs(codes, radius, tables=tables).tolist()}
    assert got == _brute(codes, radius)
    assert len(got) >= 100 * radius / 7 - 5


@pytest.mark.parametrize("tables", [0, 2])
def test_window_pairs_find_owner_and_skip_self(tables):
    full = np.array([0b1111, 0xFFFF0000], dtype=np.uint64)
    windows = np.array([0b1111, 0xFFFF0001, 0b0111], dtype=np.uint64)
    owners = np.array([0, 1, 1])
    pairs = {tuple(p) for p in window_pairs(full, windows, owners, 1, tables=tables).tolist()}
    assert pairs == {(0, 1)}


def test_multi_index_scales_tables_with_n_and_survives_degenerate_buckets(monkeypatch):
    monkeypatch.setattr(candidates, "MAX_BUCKET", 300)
    assert multi_index_tables(30_000, 30_000) >= 5
    assert multi_index_tables(1_000_000, 1_000_000) == 4
    assert multi_index_tables(3_000_000, 3_000_000) == 3
    assert multi_index_tables(3_000_000, 54_000_000) == 2
    codes = np.zeros(2000, dtype=np.uint64)  # blank images: one giant bucket per table
    codes[::2] = np.uint64(1)
    pairs = hash_pairs(codes, 1, tables=4)
    # each code meets its 300 nearest neighbours per table, not all 1999 others
    assert 2000 * 150 <= len(pairs) <= 2000 * 300 * 4 / 2 < 2000 * 1999 / 2
    assert (pairs[:, 0] < pairs[:, 1]).all()
    assert set(np.unique(pairs)) == set(range(2000))  # nobody left out


@pytest.mark.parametrize("tables", [0, 4])
def test_a_crowd_of_one_hash_yields_each_querys_nearest_not_every_pair(tables):
    # 3,000 copies of one image (one hash, a bit flipped in some) among random codes:
    # with a bound each query keeps its 20 nearest, so the crowd gives about 3,000 x 20
    # pairs, not 4.5 million; a pair stays where either side keeps it, so a copy's
    # distinct original (2 bits from the crowd, nearer than nothing else) is kept
    rng = np.random.default_rng(3)
    crowd = np.full(3000, 0x0F0F_F0F0_1234_5678, dtype=np.uint64)
    crowd[::3] ^= np.uint64(1) << rng.integers(0, 64, 1000).astype(np.uint64)
    others = rng.integers(0, 2**63, 1000, dtype=np.uint64)
    codes = np.concatenate([crowd, others, np.array([0x0F0F_F0F0_1234_5678 ^ 0b11000],
                                                    dtype=np.uint64)])
    rows = [(a.tolist(), b.tolist()) for a, b in candidates.range_blocks(
        codes, codes, 2, self_join=True, tables=tables, nearest=20)]
    pairs = {(a, b) for qs, ds in rows for a, b in zip(qs, ds, strict=True)}
    assert all(a < b for a, b in pairs)
    assert 3000 * 10 <= len(pairs) <= 3000 * 21 * (4 if tables else 1)
    assert len(pairs) < 3000 * 2999 // 40
    assert {x for p in pairs for x in p} == set(range(3000)) | {4000}  # nobody left out
    degree = np.bincount(np.array(list(pairs)).ravel(), minlength=len(codes))
    assert degree[4000] >= 1
    # without the bound every pair within the radius
    whole = candidates.range_join(codes, codes, 2, self_join=True, tables=tables)
    assert len(whole[0]) > 3000 * 2999 // 4


def test_near_candidates_join_a_crowd_of_copies_into_one_likely_group():
    # 2,000 images with one signature: the search's hits are bounded (each image's
    # nearest), and the pairs that may start a group still connect all of them
    n = 2000
    h = np.full(n, 0x0123_4567_89AB_CDEF, dtype=np.uint64)
    sig = Signatures(np.arange(n) + 7, {"phash": h}, np.zeros(0, np.uint64),
                     np.zeros(0, np.int64))
    found = near_candidates(sig, 4, -1, max_candidates_per_image=8, max_sure_distance=2)
    assert len(found) <= 2 * 8 * n
    hits = sum(len(q) for q, _ in candidates._search_blocks(
        sig, 4, -1, None, None, candidates.SEARCH_NEAREST))  # what the stage filters
    assert hits <= n * (candidates.SEARCH_NEAREST + 1) < n * (n - 1) // 2
    labels = candidates.component_labels(n + 7, found.pairs[found.starts])
    assert len(set(labels[7:].tolist())) == 1


def test_near_candidates_maps_ids_and_unions_kinds():
    ids = np.array([10, 20, 30, 40])
    h1 = np.array([0, 1, 0xFFFF, 0xFF00FF00FF], dtype=np.uint64)
    h2 = np.array([0, 0xFFFFFFFF, 1, 0xFF00FF00FF], dtype=np.uint64)
    sig = Signatures(ids, {"whash": h1, "phash": h2}, np.zeros(0, np.uint64), np.zeros(0, np.int64))
    pairs = {tuple(p) for p in near_candidates(sig, 1, -1).pairs.tolist()}
    assert pairs == {(10, 20), (10, 30)}  # 10~20 by whash, 10~30 by phash


@pytest.mark.parametrize("tables", [0, 4])
def test_oriented_pairs_find_turned_and_mirrored_copies(tables):
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 2**63, 2000, dtype=np.uint64)
    planted = set()
    for k, name in zip(range(0, 1400, 200), ORIENTATIONS, strict=True):
        codes[k + 1] = orient_whash(codes[k], name)[0] ^ np.uint64(0b101)  # + 2 bits
        planted.add((k, k + 1))
    # a symmetric image (a mirror of itself) does not pair with itself
    codes[1500] = np.uint64(int("".join(f"{b:04b}{int(f'{b:04b}'[::-1], 2):04b}"
                                           for b in range(8)), 2))
    assert orient_whash(codes[1500], "mirrored")[0] == codes[1500]
    # the candidate search takes each image's hashes in the seven orientations as given
    # (at extraction, the DCT hash of the turned image); the wavelet hash's bit
    # permutation makes exact synthetic ones here
    oriented = np.stack([orient_whash(codes, name) for name in ORIENTATIONS], axis=1)
    got = {tuple(p) for p in oriented_pairs(oriented, codes, 3, tables=tables).tolist()}
    assert got == planted
    assert not {tuple(p) for p in oriented_pairs(oriented, codes, 1, tables=tables).tolist()} \
        & planted
    sig = Signatures(np.arange(2000) * 10, {"phash": codes}, np.zeros(0, np.uint64),
                     np.zeros(0, np.int64), oriented)
    assert {tuple(p) for p in near_candidates(sig, 3, -1, tables).pairs.tolist()} == set()
    with_turns = near_candidates(sig, 3, -1, tables, max_orientation_distance=3).pairs.tolist()
    assert {tuple(p) for p in with_turns} == {(10 * a, 10 * b) for a, b in planted}


def _verifier(related, log=None):
    ev = Evidence(stage="hash")

    def verify(batch):
        if log is not None:
            log.extend(batch)
        return [(a, b, (min(a, b), max(a, b)) in related, ev) for a, b in batch]

    return verify


def test_anti_chaining_guard_splits_a_chain():
    pairs = [(0, 1), (1, 2)]  # 0~1, 1~2, but 0 !~ 2
    related = {(0, 1), (1, 2)}
    verify = _verifier(related)
    groups = grow_groups(pairs, lambda m: (m,), min, verify)
    assert [g.members for g in groups] == [[0, 1]]
    groups = grow_groups(pairs, lambda m: (m != 1, m), lambda ms: 1 if 1 in ms else min(ms), verify)
    assert [sorted(g.members) for g in groups] == [[0, 1, 2]]
    assert groups[0].best == 1


def test_a_group_costs_one_verification_per_member_not_per_pair():
    k = 30
    clique = [(i, j) for i in range(k) for j in range(i + 1, k)]  # every copy a candidate of every other
    log: list[tuple[int, int]] = []
    groups = grow_groups(clique, lambda m: (m,), min, _verifier(set(clique), log))
    assert [g.members for g in groups] == [list(range(k))]
    assert sorted(log) == [(0, j) for j in range(1, k)]  # each member against the best, once
    assert set(groups[0].evidence) == set(range(1, k))


def test_a_new_best_is_verified_against_every_member():
    # grown from 0, but the keeper prefers 3, which is unrelated to 2
    pairs = [(0, 1), (0, 2), (0, 3)]
    related = {(0, 1), (0, 2), (0, 3), (1, 3)}
    log: list[tuple[int, int]] = []
    groups = grow_groups(pairs, lambda m: (m,), lambda ms: 3 if 3 in ms else min(ms),
                         _verifier(related, log))
    assert [(g.best, sorted(g.members)) for g in groups] == [(3, [0, 1, 3])]
    assert {(3, 0), (3, 1), (3, 2)} <= set(log)


def test_merged_families_come_apart_and_the_rest_regroups():
    # family A = 0..3, family B = 4..7, one false candidate pair 3-4 links them
    fam_a = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    fam_b = [(i, j) for i in range(4, 8) for j in range(i + 1, 8)]
    pairs = [*fam_a, *fam_b, (3, 4)]
    groups = grow_groups(pairs, lambda m: (m,), min, _verifier(set(fam_a) | set(fam_b)))
    assert [sorted(g.members) for g in groups] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # a rejected image seeds its own group: 5 fails against seed 0's family
    pairs2 = [(0, 5), (5, 6), (0, 1)]
    groups2 = grow_groups(pairs2, lambda m: (m,), min, _verifier({(0, 1), (5, 6)}))
    assert [sorted(g.members) for g in groups2] == [[0, 1], [5, 6]]


def test_a_left_out_image_is_tried_against_the_final_best():
    # grown from 0, which 3 does not match; the keeper then made 1 the best (a re-save
    # test after the growth), and 3 does match 1
    groups = [Group(id=1, best=1, members=[1, 0, 2], evidence={0: Evidence(stage="hash"),
                                                            2: Evidence(stage="hash")})]
    log: list[tuple[int, int]] = []
    verify = _verifier({(0, 1), (1, 2), (1, 3)}, log)
    out = adopt_leftovers(groups, [(0, 1), (0, 2), (2, 3), (4, 5)], verify, lambda a, b: False)
    assert [(g.best, g.members) for g in out] == [(1, [1, 0, 2, 3])]
    assert log == [(1, 3)]  # only the left-out image with a pair into the group, once
    assert groups[0].members == [1, 0, 2]  # the input is not changed
    # the user's "not a duplicate" is never asked
    log.clear()
    out = adopt_leftovers(groups, [(2, 3)], verify, lambda a, b: {a, b} == {1, 3})
    assert [g.members for g in out] == [[1, 0, 2]] and log == []


def test_a_left_out_image_joins_the_group_it_matches_best():
    groups = [Group(id=1, best=0, members=[0, 1]), Group(id=2, best=5, members=[5, 6])]

    def verify(batch):
        sims = {(0, 9): 0.98, (5, 9): 0.995}
        return [(a, b, True, Evidence(stage="local", similarity=sims[(a, b)])) for a, b in batch]

    out = adopt_leftovers(groups, [(1, 9), (6, 9)], verify, lambda a, b: False)
    assert [g.members for g in out] == [[0, 1], [5, 6, 9]]
    assert out[1].evidence[9].similarity == 0.995


def test_cap_per_image_keeps_the_nearest_of_either_image():
    from pixdedup.candidates import cap_per_image

    # image 0 matches 1..5 at distances 1..5; image 6 matches only 5 (far)
    rows = np.array([[0, 1], [0, 2], [0, 3], [0, 4], [0, 5], [5, 6]])
    d = np.array([1, 2, 3, 4, 5, 9])
    kept = {tuple(r) for r in cap_per_image(rows, d, 2).tolist()}
    # 0 keeps 1 and 2; 3, 4, 5 keep their only (nearest) pair; 6 keeps its one pair
    assert kept == {(0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (5, 6)}
    kept1 = {tuple(r) for r in cap_per_image(rows, d, 1).tolist()}
    assert kept1 == kept  # here every other image has one pair: its nearest
    many = np.array([[0, j] for j in range(1, 50)])
    assert len(cap_per_image(many, np.arange(49), 1)) == 49  # each leaf keeps its one pair
    clique = np.array([[i, j] for i in range(30) for j in range(i + 1, 30)])
    capped = cap_per_image(clique, np.zeros(len(clique), np.int64), 3)
    assert len(capped) <= 3 * 30


def test_pair_distance_is_the_nearest_way_a_pair_was_found(monkeypatch):
    import pixdedup.candidates as cand
    from pixdedup.features.hashes import ORIENTATIONS

    rng = np.random.default_rng(3)
    n = 40
    phash = rng.integers(0, 2**63, n, dtype=np.uint64)
    windows = rng.integers(0, 2**63, n * WINDOW_COUNT, dtype=np.uint64)
    oriented = rng.integers(0, 2**63, (n, len(ORIENTATIONS)), dtype=np.uint64)
    phash[1] = phash[0] ^ np.uint64(0b111)  # 3 bits apart as they are
    windows[2 * WINDOW_COUNT + 5] = phash[3] ^ np.uint64(1)  # 3 is 1 bit from a window of 2
    oriented[5, 2] = phash[4]  # 5 turned is 4
    sig = Signatures(np.arange(n), {"phash": phash}, windows,
                     np.repeat(np.arange(n), WINDOW_COUNT), oriented)
    rows = np.array([[0, 1], [2, 3], [4, 5], [6, 7]])
    radii = cand.Radii(full=10, window=10, orientation=10)  # no check hashes here
    d = cand.pair_distance(sig, rows[:, 0], sig, rows[:, 1], radii)
    assert d.tolist() == [3, 1, 0, cand.UNCONFIRMED]
    monkeypatch.setattr(cand, "DISTANCE_CHUNK", 1)  # chunked, the same answer
    assert cand.pair_distance(sig, rows[:, 0], sig, rows[:, 1], radii).tolist() == d.tolist()


def test_a_hit_counts_only_where_the_check_hashes_of_the_same_frames_agree():
    import pixdedup.candidates as cand
    from pixdedup.features.hashes import ORIENTATIONS, WINDOW_COUNT, orient_whash

    rng = np.random.default_rng(5)
    n = 12
    phash = rng.integers(0, 2**63, n, dtype=np.uint64)
    whash = rng.integers(0, 2**63, n, dtype=np.uint64)
    windows = rng.integers(0, 2**63, (n, WINDOW_COUNT), dtype=np.uint64)
    wchecks = rng.integers(0, 2**63, (n, WINDOW_COUNT), dtype=np.uint64)
    oriented = rng.integers(0, 2**63, (n, len(ORIENTATIONS)), dtype=np.uint64)
    # 0-1: the same frame, both hashes close; 2-3: the DCT hashes close, the wavelet
    # hashes of those frames unrelated (a texture, a kind of scene)
    phash[1], whash[1] = phash[0] ^ np.uint64(0b11), whash[0] ^ np.uint64(0b1)
    phash[3] = phash[2] ^ np.uint64(0b11)
    # 5 is a crop of 4's window 7: that window's wavelet hash agrees with 5's too;
    # 7 matches a window of 6 on the DCT hash only
    windows[4, 7], wchecks[4, 7] = phash[5], whash[5] ^ np.uint64(0b111)
    windows[6, 3] = phash[7]
    # 9 mirrored is 8: the mirrored wavelet hash is a permutation of 9's bits
    k = list(ORIENTATIONS).index("mirrored")
    oriented[9, k] = phash[8]
    whash[8] = orient_whash(whash[9], "mirrored")[0]
    oriented[11, k] = phash[10]  # 11 mirrored is 10 on the DCT hash only
    sig = Signatures(np.arange(n), {"phash": phash}, windows.ravel(),
                     np.repeat(np.arange(n), WINDOW_COUNT), oriented, whash, wchecks)
    assert sig.checked
    rows = np.array([[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11]])
    radii = cand.Radii(full=10, window=10, orientation=10, check=16)
    d = cand.pair_distance(sig, rows[:, 0], sig, rows[:, 1], radii)
    assert d.tolist() == [2 + 1, cand.UNCONFIRMED, 0 + 3, cand.UNCONFIRMED, 0,
                          cand.UNCONFIRMED]
    unchecked = cand.pair_distance(sig, rows[:, 0], sig, rows[:, 1],
                                   cand.Radii(full=10, window=10, orientation=10))
    assert unchecked.tolist() == [2, 2, 0, 0, 0, 0]
    # the search itself: the unconfirmed pairs are not candidates
    found = cand.near_candidates(sig, 10, 10, max_orientation_distance=10,
                                 max_check_distance=16).pairs
    assert {tuple(r) for r in found.tolist()} >= {(0, 1), (4, 5), (8, 9)}
    assert not {(2, 3), (6, 7), (10, 11)} & {tuple(r) for r in found.tolist()}
    plain = cand.near_candidates(sig, 10, 10, max_orientation_distance=10).pairs
    assert {(2, 3), (6, 7), (10, 11)} <= {tuple(r) for r in plain.tolist()}


def test_pairs_that_would_fail_the_colour_gate_are_not_candidates():
    import pixdedup.candidates as cand
    from pixdedup.features.color import color_correlation, color_signature, hue_row

    rng = np.random.default_rng(8)
    base = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    base[..., 0] = np.maximum(base[..., 0], 150)  # reddish, saturated
    base[..., 1:] //= 3
    toned = np.clip(base.astype(np.int16) * 11 // 10, 0, 255).astype(np.uint8)
    recoloured = base[..., ::-1].copy()  # red -> blue
    grey = np.repeat(base.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    sigs = [color_signature(x) for x in (base, toned, recoloured, grey)]
    hue = np.stack([hue_row(s) for s in sigs])
    same = np.full(4, 5, np.uint64)  # one DCT hash: every pair a hit
    sig = Signatures(np.arange(4), {"phash": same}, np.zeros(0, np.uint64),
                     np.zeros(0, np.int64), hue=hue)
    found = {tuple(r) for r in cand.near_candidates(
        sig, 10, -1, min_color_correlation=0.6).pairs.tolist()}
    exact = {(i, j) for i in range(4) for j in range(i + 1, 4)
             if (c := color_correlation(sigs[i], sigs[j])) is None or c >= 0.6}
    assert found == exact
    assert (0, 1) in found and (0, 2) not in found and (0, 3) in found  # grey: no hue
    assert len(cand.near_candidates(sig, 10, -1)) == 6  # the gate off


def test_the_search_is_filtered_block_by_block_and_pruned_to_each_images_nearest(monkeypatch):
    """The hits are filtered as they come (memory follows the pairs kept); where too
    many are held they are pruned to each image's nearest, and the per-image cap still
    keeps exactly the pairs it keeps from all of them."""
    import pixdedup.candidates as cand
    from pixdedup.features.hashes import ORIENTATIONS

    rng = np.random.default_rng(11)
    n = 300
    centre = rng.integers(0, 2**63, dtype=np.uint64)
    # a crowd: every image within 6 bits of one code, so nearly every pair is a hit
    flips = [sum(np.uint64(1) << np.uint64(b) for b in rng.choice(64, 3, replace=False))
             for _ in range(n)]
    phash = np.array([centre ^ f for f in flips], dtype=np.uint64)
    windows = rng.integers(0, 2**63, n * WINDOW_COUNT, dtype=np.uint64)
    windows[::WINDOW_COUNT] = phash ^ np.uint64(1 << 60)  # each first window: a crop hit
    oriented = rng.integers(0, 2**63, (n, len(ORIENTATIONS)), dtype=np.uint64)
    sig = Signatures(np.arange(n), {"phash": phash}, windows,
                     np.repeat(np.arange(n), WINDOW_COUNT), oriented)

    def search(**kw):
        return cand.near_candidates(sig, 10, 10, max_orientation_distance=10,
                                    max_sure_distance=2, **kw)

    whole = search()
    assert len(whole) == n * (n - 1) // 2  # every pair: the roles decide
    capped = search(max_candidates_per_image=4)
    monkeypatch.setattr(cand, "FILTER_BLOCK", 500)  # filtered in small blocks
    blocks = search()
    assert np.array_equal(blocks.pairs, whole.pairs)
    assert np.array_equal(blocks.distance, whole.distance)
    assert np.array_equal(blocks.starts, whole.starts)
    monkeypatch.setattr(cand, "HELD_PER_IMAGE", 2)  # and pruned again and again
    pruned = search(max_candidates_per_image=4)
    assert np.array_equal(pruned.pairs, capped.pairs)
    assert np.array_equal(pruned.distance, capped.distance)
    assert len(search()) == len(whole)  # no cap, no prune: every pair asked for
    # each table of the multi-index search leaves out what an earlier one found: within
    # 3 bits 4 tables find every pair (pigeonhole), each once from either side at most
    exact = set(zip(*(x.tolist() for x in cand.range_join(phash, phash, 3, self_join=True,
                                                          tables=0)), strict=True))
    blocks = [(a.tolist(), b.tolist()) for a, b in cand.range_blocks(
        phash, phash, 3, self_join=True, tables=4)]
    hits = [(a, b) for qs, ds in blocks for a, b in zip(qs, ds, strict=True)]
    assert set(hits) == exact and len(exact) > 100 and len(hits) <= 2 * len(exact)


def test_a_new_best_is_not_asked_about_the_images_the_group_refused():
    # grown from 0: 1 passes, 2 is refused; the keeper prefers 1.  Grown again from 1,
    # 1 is verified against 0 but not against 2, which 0 refused (a left-out image is
    # tried against the final best by adopt_leftovers)
    pairs = [(0, 1), (0, 2), (1, 2)]
    log: list[tuple[int, int]] = []
    groups = grow_groups(pairs, lambda m: (m,), lambda ms: 1 if 1 in ms else min(ms),
                         _verifier({(0, 1), (1, 2)}, log), leave_refused=True)
    assert [(g.best, sorted(g.members)) for g in groups] == [(1, [0, 1])]
    assert log == [(0, 1), (0, 2), (1, 0)]
    out = adopt_leftovers(groups, pairs, _verifier({(0, 1), (1, 2)}, log), lambda a, b: False)
    assert [(g.best, sorted(g.members)) for g in out] == [(1, [0, 1, 2])]
    assert log[3:] == [(1, 2)]


def test_a_pair_asked_twice_in_one_scan_is_verified_once():
    from pixdedup.verdicts import VerdictMemory

    class Store:  # no verdict of an earlier scan
        def __init__(self):
            self.asked: list[tuple[int, int]] = []
            self.rows: dict[tuple[int, int], tuple[bool, str | None]] = {}

        def content_hashes(self, rows):
            return {r: f"{r:016x}" * 4 for r in rows}

        def verifier_id(self, key):
            return 1

        def verdicts(self, verifier, pairs):
            self.asked.extend(pairs)
            return {p: self.rows[p] for p in pairs if p in self.rows}

        def put_verdicts(self, verifier, rows):
            self.rows.update(((a, b), (ok, ev)) for a, b, ok, ev in rows)

    class View:
        store = Store()
        row_ids = np.array([10, 11, 12])

    memory = VerdictMemory(View(), "near")  # type: ignore[arg-type]
    known, todo = memory.split([(0, 1), (0, 2)])
    assert known == [] and todo == [(0, 1), (0, 2)]
    memory.remember([(0, 1, True, Evidence(stage="hash", similarity=0.99)),
                     (0, 2, False, Evidence(stage="local"))])
    known, todo = memory.split([(0, 1), (0, 2), (1, 2)])  # before any flush
    assert [(a, b, ok, ev.stage) for a, b, ok, ev in known] == [(0, 1, True, "hash"),
                                                               (0, 2, False, "local")]
    assert known[0][3].similarity == 0.99 and todo == [(1, 2)]
    assert len(View.store.asked) == 3  # the store is not asked about unflushed verdicts
    memory.flush()  # then the store answers them
    assert len(View.store.rows) == 2
    known, todo = memory.split([(0, 1), (1, 0)])
    assert [(a, b, ok) for a, b, ok, _ in known] == [(0, 1, True)] and todo == [(1, 0)]


def test_a_regrowth_starts_from_every_member_and_keeps_refused_images_where_asked():
    # 0 grows {0, 2} and refuses 3; 1 is reached only through 0's pair into it
    # (extend_only) and passes; the keeper prefers 1, whose own pairs reach only 3,
    # refused: the regrowth still verifies the group's members against 1
    pairs = [(0, 2), (0, 1), (0, 3), (1, 3)]
    related = {(0, 2), (0, 1), (1, 2), (1, 3)}
    log: list[tuple[int, int]] = []
    groups = grow_groups(pairs, lambda m: (m,), lambda ms: 1 if 1 in ms else min(ms),
                         _verifier(related, log), extend_only={(0, 1): LEADS_INTO_SECOND},
                         leave_refused=True)
    assert [(g.best, sorted(g.members)) for g in groups] == [(1, [0, 1, 2])]
    assert sorted(log) == [(0, 1), (0, 2), (0, 3), (1, 0), (1, 2)]
    # without adopt_leftovers to follow (faces mode), a refused image is asked again
    pairs = [(0, 1), (0, 2), (1, 2)]
    log: list[tuple[int, int]] = []
    groups = grow_groups(pairs, lambda m: (m,), lambda ms: 1 if 1 in ms else min(ms),
                         _verifier({(0, 1), (1, 2)}, log))
    assert [(g.best, sorted(g.members)) for g in groups] == [(1, [0, 1, 2])]
    assert log == [(0, 1), (0, 2), (1, 0), (1, 2)]
