import numpy as np
import pytest

from pixdedup.candidates import hash_pairs, window_pairs
from pixdedup.grouping import build_groups
from pixdedup.models import Edge, Evidence


def _brute(codes, radius):
    out = set()
    for i in range(len(codes)):
        d = np.unpackbits((codes[i] ^ codes[i + 1:]).view(np.uint8).reshape(-1, 8), axis=1).sum(1)
        out.update((i, i + 1 + int(k)) for k in np.nonzero(d <= radius)[0])
    return out


@pytest.mark.parametrize("exact", [True, False])
def test_hash_pairs_match_brute_force(exact):
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 2**63, 3000, dtype=np.uint64)
    for k in range(0, 3000, 30):  # planted near pairs at distance 1..7
        flips = rng.choice(64, size=1 + k % 7, replace=False)
        mask = np.uint64(sum(1 << int(f) for f in flips))
        codes[k + 1] = codes[k] ^ mask
    got = {tuple(p) for p in hash_pairs(codes, 7, exact=exact).tolist()}
    assert got == _brute(codes, 7)
    assert len(got) >= 100


def test_window_pairs_find_owner_and_skip_self():
    full = np.array([0b1111, 0xFFFF0000], dtype=np.uint64)
    windows = np.array([0b1111, 0xFFFF0001, 0b0111], dtype=np.uint64)
    owners = np.array([0, 1, 1])
    pairs = {tuple(p) for p in window_pairs(full, windows, owners, 1).tolist()}
    assert pairs == {(0, 1)}


def test_anti_chaining_guard_splits_a_chain():
    ev = Evidence(stage="hash")
    edges = [Edge(0, 1, ev), Edge(1, 2, ev)]  # 0~1, 1~2, but 0 !~ 2
    related = {(0, 1), (1, 2)}

    def verify(a, b):
        return (min(a, b), max(a, b)) in related, ev

    groups = build_groups(edges, lambda members: min(members), verify)
    assert [g.members for g in groups] == [[0, 1]]
    groups = build_groups(edges, lambda members: 1 if 1 in members else min(members), verify)
    assert [sorted(g.members) for g in groups] == [[0, 1, 2]]
