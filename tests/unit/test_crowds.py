"""Crowds of look-alike images: which candidate pairs start a group, which only lead a
group into an image, how groups meet and how left-out images are tried
(``candidates.pair_roles``, ``grouping``)."""

import numpy as np

from pixdedup.candidates import (
    LEADS_BOTH_WAYS,
    LEADS_INTO_SECOND,
    component_labels,
    pair_roles,
)
from pixdedup.grouping import adopt_leftovers, grow_groups, merge_groups
from pixdedup.models import Evidence, Group


def _verifier(related, log=None):
    def verify(batch):
        if log is not None:
            log.extend(batch)
        return [(a, b, (min(a, b), max(a, b)) in related, Evidence(stage="hash")) for a, b in batch]

    return verify


def test_components_label_each_node_with_its_smallest_member():
    edges = np.array([[5, 6], [1, 5], [7, 8], [2, 2]])
    labels = component_labels(10, edges)
    assert labels.tolist() == [0, 1, 2, 3, 4, 1, 1, 7, 7, 9]
    assert component_labels(3, np.zeros((0, 2), np.int64)).tolist() == [0, 1, 2]
    # a long chain given backwards still ends in one component
    chain = np.array([[k, k + 1] for k in range(200)][::-1])
    assert set(component_labels(201, chain).tolist()) == {0}


def test_copies_start_groups_and_a_crowd_of_look_alikes_does_not():
    # 0 and 1: a photo and its close re-encode; 2: an edited copy of them (6 bits from
    # 1, nearer than anything else, and 1's nearest); 3..7: a crowd, about equally near
    # each other (10 or 11 bits, every member with two or more at its least distance);
    # 8: a lone image whose nearest is crowd member 3 (12 bits; 4 is 13)
    pairs = [(0, 1, 2), (1, 2, 6), (0, 2, 7)]
    crowd = range(3, 8)
    pairs += [(a, b, 11 if (a, b) == (3, 4) else 10) for a in crowd for b in crowd if a < b]
    pairs += [(3, 8, 12), (4, 8, 13)]
    rows = np.array([(a, b) for a, b, _ in pairs])
    distance = np.array([d for _, _, d in pairs])
    starts, leads = pair_roles(rows, distance, 9, max_sure_distance=2)
    role = {(a, b): (bool(s), int(lead))
            for (a, b), s, lead in zip(rows.tolist(), starts, leads, strict=True)}
    assert role[(0, 1)] == (True, LEADS_BOTH_WAYS)  # close: one cluster
    assert role[(1, 2)] == (True, LEADS_BOTH_WAYS)  # the cluster's and 2's distinct nearest
    assert role[(0, 2)] == (True, LEADS_BOTH_WAYS)  # between the same two clusters
    assert not any(role[(a, b)][0] for a in crowd for b in crowd if a < b)
    # 8 is reached from 3 (its nearest) and not from 4; 3's nearest is not 8
    assert role[(3, 8)] == (False, LEADS_INTO_SECOND)
    assert role[(4, 8)] == (False, 0)


def test_a_pair_leads_into_an_image_whose_nearest_it_holds():
    # 0-1 close, 0-5 distinct nearest: a likely group {0, 1, 5}; 2 has it nearest (7
    # bits) and 3 next (8); 3 has 2 and 4 equally near; 4 has only 3
    rows = np.array([[0, 1], [0, 5], [1, 2], [2, 3], [3, 4]])
    distance = np.array([1, 4, 7, 8, 8])
    starts, leads = pair_roles(rows, distance, 6, max_sure_distance=2)
    assert starts.tolist() == [True, True, False, False, False]  # {0, 1}'s nearest is 5
    assert leads[2] == LEADS_BOTH_WAYS  # into 2, and into 1: the group has only 2 near
    assert leads[3] == LEADS_INTO_SECOND  # into 3 (tied nearest), not into 2
    assert leads[4] == LEADS_BOTH_WAYS  # into 3 (tied) and into 4 (its only pair)


def test_a_distinct_nearest_is_nearer_than_the_next_by_a_margin():
    # 0's nearest is 1 and 1's is 0; the next is DISTINCT_MARGIN bits farther (2 and
    # 3), or one bit less (4 and 5): two look-alikes of a dense collection
    from pixdedup.candidates import DISTINCT_MARGIN

    d = 9
    rows = np.array([[0, 1], [0, 2], [3, 4], [3, 5]])
    distance = np.array([d, d + DISTINCT_MARGIN, d, d + DISTINCT_MARGIN - 1])
    starts, _ = pair_roles(rows, distance, 6, max_sure_distance=2)
    assert starts.tolist() == [True, False, False, False]


def test_a_seed_with_only_extending_pairs_starts_no_group():
    # 0-1 may start; 1-2 leads into 2; 3-4 and 4-5 (a crowd) may not start
    pairs = [(0, 1), (1, 2), (3, 4), (4, 5), (2, 3)]
    extend_only = {(1, 2): LEADS_INTO_SECOND, (3, 4): 0, (4, 5): 0, (2, 3): 0}
    log: list[tuple[int, int]] = []
    related = {(0, 1), (0, 2), (3, 4), (4, 5), (3, 5)}
    groups = grow_groups(pairs, lambda m: (m,), min, _verifier(related, log),
                         extend_only=extend_only)
    assert [g.members for g in groups] == [[0, 1, 2]]
    # the crowd's pairs were never verified, though they would have passed
    assert sorted(log) == [(0, 1), (0, 2)]
    # without the roles, every pair may start a group
    log.clear()
    groups = grow_groups(pairs, lambda m: (m,), min, _verifier(related, log))
    assert sorted(sorted(g.members) for g in groups) == [[0, 1, 2], [3, 4, 5]]


def test_a_group_follows_its_members_pairs_only_into_images_they_lead_into():
    # a group 0-1 (start); 1-2 leads into 2; 1-3 leads nowhere: 3 is not verified
    pairs = [(0, 1), (1, 2), (1, 3)]
    log: list[tuple[int, int]] = []
    groups = grow_groups(pairs, lambda m: (m,), min, _verifier({(0, 1), (0, 2), (0, 3)}, log),
                         extend_only={(1, 2): LEADS_INTO_SECOND, (1, 3): 0})
    assert [g.members for g in groups] == [[0, 1, 2]]
    assert (0, 3) not in log


def test_groups_joined_by_a_pair_merge_where_their_bests_match():
    # two groups of one photo (the copies turned a little grew their own) joined by
    # the pair 1-2; and a third group, 6-7, joined by 3-6 but of another photo
    groups = [Group(id=1, best=0, members=[0, 1], evidence={1: Evidence(stage="hash")}),
              Group(id=2, best=2, members=[2, 3, 4], evidence={3: Evidence(stage="local"),
                                                                 4: Evidence(stage="local")}),
              Group(id=3, best=6, members=[6, 7], evidence={7: Evidence(stage="hash")})]
    log: list[tuple[int, int]] = []
    related = {(0, 2), (0, 3)}  # 4 does not pass against 0: it is left out
    out = merge_groups(groups, [(1, 2), (3, 6)], lambda m: (m,), _verifier(related, log),
                       lambda a, b: False)
    assert [(g.best, sorted(g.members)) for g in out] == [(0, [0, 1, 2, 3]), (6, [6, 7])]
    assert sorted(log) == [(0, 2), (0, 3), (0, 4), (0, 6)]
    assert out[0].evidence[1].stage == "hash" and set(out[0].evidence) == {1, 2, 3}
    # no merge: the groups stay as they were
    out = merge_groups(groups, [(1, 2)], lambda m: (m,), _verifier(set()), lambda a, b: False)
    assert [g.members for g in out] == [[0, 1], [2, 3, 4], [6, 7]]


def test_a_left_out_image_is_tried_against_the_nearest_groups_first():
    groups = [Group(id=1, best=0, members=[0, 1]), Group(id=2, best=5, members=[5, 6])]
    distance = {(1, 9): 4, (6, 9): 8, (9, 10): 3}
    log: list[tuple[int, int]] = []
    # 9 matches 5's group only: tried against 0 (nearest, refused), then 5
    out = adopt_leftovers(groups, [(1, 9), (6, 9), (9, 10)], _verifier({(5, 9), (5, 10)}, log),
                          lambda a, b: False, distance)
    assert [g.members for g in out] == [[0, 1], [5, 6, 9, 10]]  # 10 follows 9 in
    assert log == [(0, 9), (5, 9), (5, 10)]
    # where the nearest takes it, the farther group is never asked
    log.clear()
    out = adopt_leftovers(groups, [(1, 9), (6, 9)], _verifier({(0, 9), (5, 9)}, log),
                          lambda a, b: False, distance)
    assert [g.members for g in out] == [[0, 1, 9], [5, 6]] and log == [(0, 9)]


def test_an_image_of_a_crowd_is_not_adopted():
    # 9's neighbours are mostly in no group (a crowd: 11, 12, 13): it is not tried
    # against the group 0-1-2, even where its pair leads into it (the growth tried it
    # there); 8 sits among copies
    groups = [Group(id=1, best=0, members=[0, 1, 2])]
    pairs = [(1, 9), (9, 11), (9, 12), (9, 13), (1, 8), (2, 8)]
    log: list[tuple[int, int]] = []
    out = adopt_leftovers(groups, pairs, _verifier({(0, 8), (0, 9)}, log), lambda a, b: False)
    assert [g.members for g in out] == [[0, 1, 2, 8]] and log == [(0, 8)]
    # with half of its neighbours in groups it is one among copies, and is tried (then
    # its neighbours 11 and 12, now among copies: refused)
    log.clear()
    out = adopt_leftovers(groups, [*pairs[:3], (2, 9), (1, 8), (2, 8)],
                          _verifier({(0, 8), (0, 9)}, log), lambda a, b: False)
    assert [g.members for g in out] == [[0, 1, 2, 8, 9]]
    assert log == [(0, 8), (0, 9), (0, 11), (0, 12)]


def test_a_pair_verified_as_duplicates_before_starts_a_group_again():
    from pixdedup.matching import remembered_starters

    class Memory:  # an earlier scan verified (1, 2) as duplicates and (3, 4) as not
        def split(self, pairs):
            stored = {(1, 2): True, (3, 4): False}
            known = [(a, b, stored[(a, b)], Evidence(stage="hash")) for a, b in pairs
                     if (a, b) in stored]
            return known, [p for p in pairs if p not in stored]

    extend_only = {(1, 2): LEADS_INTO_SECOND, (3, 4): 0, (5, 6): 0}
    assert remembered_starters(extend_only, Memory()) == {(3, 4): 0, (5, 6): 0}  # type: ignore[arg-type]
    assert extend_only[(1, 2)] == LEADS_INTO_SECOND  # the input is not changed
    assert remembered_starters({}, Memory()) == {}  # type: ignore[arg-type]


def test_images_that_start_only_through_a_remembered_pair_seed_last():
    # 0-1 starts a group (a real starter); 1-2 and 2-3 may not, but 1-2 was verified
    # as duplicates by an earlier scan and starts again: 2 seeds after 0 and 1, so a
    # rescan grows the group from where the last scan did (and 1, a real starter too,
    # stays early)
    from pixdedup.matching import late_seeds

    pairs = [(0, 1), (1, 2), (2, 3)]
    roles = {(1, 2): LEADS_INTO_SECOND, (2, 3): 0}
    extend_only = {(2, 3): 0}  # (1, 2) remembered: no longer extend-only
    assert late_seeds(pairs, roles, extend_only) == {2}
    assert late_seeds(pairs, roles, roles) == set()  # a first scan: nothing remembered
