"""The group stage: candidate pairs -> duplicate groups, verifying O(k) pairs per group.

Candidate pairs are not verified one by one.  Each connected component of the
candidate graph is taken apart by growing groups from a representative:

1. the *seed* is the component's first unassigned image in the keeper's order
   (``rank``: the image the keeper would most likely choose);
2. the seed is verified against its candidate neighbours; each neighbour that
   passes joins, and its own candidate neighbours are verified against the seed in
   turn (against the seed, never against the neighbour: no chaining);
3. when nothing is left to try, the keeper chooses the group's best; where that is
   not the seed, the group is grown again from the keeper's choice, as in 2 (at most
   ``MAX_REGROWS`` times; after that the last seed, which every member passed, stays
   the best);
4. the members leave the component, the images that failed stay in it, and the
   next seed is grown from what is left;
5. once the keeper has settled every group's best (the re-save test can still change
   it after the growth), each image left in no group is verified against the final
   best of every group it has a candidate pair into, and joins the one it matches
   best (``adopt_leftovers``): it may have failed only against an earlier best.

So every member of a group is verified against its group's best directly (the
anti-chaining guarantee), a group of k copies costs about k verifications plus one
per candidate pair that leads out of it, however many candidate pairs its copies
share, and an unrelated image costs one verification per candidate pair it has.

All the components are grown at once, level by level: each level's pairs are
verified in one batch (``verify``: the caller's, which may run them in parallel and
answer from remembered verdicts).
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

from .models import Edge, Evidence, Group

MAX_REGROWS = 3
"""Times a group may be grown again from the keeper's choice (when the keeper prefers
another member than the seed)."""

Verdict = tuple[int, int, bool, Evidence]
VerifyBatch = Callable[[Sequence[tuple[int, int]]], Iterable[Verdict]]


class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def components(n: int, edges: Iterable[tuple[int, int]]) -> list[list[int]]:
    uf = UnionFind(n)
    for a, b in edges:
        uf.union(a, b)
    comps: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        comps[uf.find(i)].append(i)
    return [c for c in comps.values() if len(c) > 1]


def node_components(pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Connected components (two or more nodes) of a graph given by its edges over
    arbitrary integer nodes, each sorted."""
    pairs = list(pairs)
    order = sorted({x for p in pairs for x in p})
    local = {g: k for k, g in enumerate(order)}
    return [sorted(order[k] for k in comp)
            for comp in components(len(order), ((local[a], local[b]) for a, b in pairs))]


def component_groups(edges: Sequence[Edge], choose_best: Callable[[list[int]], int]
                     ) -> list[Group]:
    """Whole connected components of accepted edges as groups (DBSCAN's clusters: no
    member-vs-best check); a member's evidence is that of one of its edges."""
    evidence: dict[int, Evidence] = {}
    for e in edges:
        evidence.setdefault(e.b, e.evidence)
        evidence.setdefault(e.a, e.evidence)
    groups = []
    for comp in node_components((e.a, e.b) for e in edges):
        best = choose_best(comp)
        groups.append(Group(id=0, best=best, members=[best, *(m for m in comp if m != best)],
                            evidence={m: evidence[m] for m in comp if m != best}))
    return _numbered(groups)


class _Growth:
    """One candidate component being taken apart into groups (see the module
    docstring)."""

    def __init__(self, nodes: list[int], adjacency: dict[int, set[int]],
                 rank: Callable[[int], tuple[object, ...]]) -> None:
        self.adjacency = adjacency
        self.order = sorted(nodes, key=rank)
        self.position = {x: k for k, x in enumerate(self.order)}
        self.next = 0
        self.returned: list[int] = []
        """Positions (in ``order``) before ``next`` of images put back in the pool."""
        self.pool = set(nodes)
        self.best = -1
        self.members: dict[int, Evidence] = {}
        self.tried: set[int] = set()
        self.frontier: set[int] = set()
        self.regrown = 0
        self.done: list[Group] = []

    def _neighbours(self, x: int) -> set[int]:
        return (self.adjacency[x] & self.pool) - self.tried

    def start(self) -> bool:
        """The next seed that has an unassigned candidate neighbour; False when the
        component is used up."""
        while self.next < len(self.order) or self.returned:
            if self.returned and self.returned[0] < self.next:
                seed = self.order[heapq.heappop(self.returned)]
            else:
                seed = self.order[self.next]
                self.next += 1
            if seed not in self.pool:
                continue
            self.pool.discard(seed)  # a seed is settled: in its group or alone
            self.tried = {seed}
            frontier = self._neighbours(seed)
            if frontier:
                self.best, self.members, self.frontier = seed, {}, frontier
                self.regrown = 0
                return True
        return False

    def requests(self) -> list[tuple[int, int]]:
        self.tried |= self.frontier
        pairs = [(self.best, y) for y in sorted(self.frontier)]
        self.frontier = set()
        return pairs

    def _put_back(self, nodes: Iterable[int]) -> None:
        for x in nodes:
            self.pool.add(x)
            if self.position[x] < self.next:  # each may seed a group of its own later
                heapq.heappush(self.returned, self.position[x])

    def answer(self, verdicts: list[Verdict],
               choose_best: Callable[[list[int]], int]) -> bool:
        """Take the verdicts on this component's requests; False when it is used up."""
        for _, y, ok, ev in verdicts:
            if ok:
                self.members[y] = ev
                self.frontier |= self._neighbours(y)
        if self.frontier:
            return True
        if self.members and self.regrown < MAX_REGROWS:
            chosen = choose_best([self.best, *sorted(self.members)])
            if chosen != self.best:  # grown again from the keeper's choice
                self.regrown += 1
                self._put_back([self.best, *self.members])
                self.pool.discard(chosen)
                self.best, self.members, self.tried = chosen, {}, {chosen}
                self.frontier = self._neighbours(chosen)
                if self.frontier:
                    return True
        if self.members:
            self.pool.difference_update(self.members)
            self.done.append(Group(id=0, best=self.best, members=[self.best, *self.members],
                                   evidence=dict(self.members)))
        self.members = {}
        return self.start()


def grow_groups(pairs: Iterable[tuple[int, int]], rank: Callable[[int], tuple[object, ...]],
                choose_best: Callable[[list[int]], int], verify: VerifyBatch,
                progress: Callable[[int, int], None] | None = None) -> list[Group]:
    """Groups of two or more images from candidate ``pairs`` (see the module
    docstring).  ``rank``: sort key, keeper's likely choice first; ``verify``:
    verdicts (a, b, ok, evidence) on a batch of pairs, evidence of b against a."""
    adjacency: dict[int, set[int]] = defaultdict(set)
    for a, b in pairs:
        if a != b:
            adjacency[a].add(b)
            adjacency[b].add(a)
    growths = [_Growth(comp, adjacency, rank) for comp in node_components(
        (a, b) for a, nbrs in adjacency.items() for b in nbrs if a < b)]
    total = sum(len(g.order) for g in growths)
    active = [g for g in growths if g.start()]
    finished = total - sum(len(g.order) for g in active)  # images of used-up components
    while active:
        owner: dict[tuple[int, int], _Growth] = {}
        batch: list[tuple[int, int]] = []
        for g in active:
            for p in g.requests():
                owner[p] = g
                batch.append(p)
        answers: dict[int, list[Verdict]] = defaultdict(list)
        for verdict in verify(batch):
            answers[id(owner[(verdict[0], verdict[1])])].append(verdict)
        still = [g for g in active if g.answer(answers[id(g)], choose_best)]
        finished += sum(len(g.order) for g in active) - sum(len(g.order) for g in still)
        active = still
        if progress is not None:
            progress(finished + sum(len(g.order) - len(g.pool) for g in active), total)
    return _numbered([grp for g in growths for grp in g.done])


def _numbered(groups: list[Group]) -> list[Group]:
    groups.sort(key=lambda g: min(g.members))
    for gid, g in enumerate(groups, start=1):
        g.id = gid
    return groups


def adopt_leftovers(groups: Sequence[Group], pairs: Iterable[tuple[int, int]],
                    verify: VerifyBatch, distinct: Callable[[int, int], bool]
                    ) -> list[Group]:
    """``groups`` with each image that is in none of them and has a candidate pair into
    one verified against that group's best; it joins the group whose best it matches
    with the highest similarity (step 5 of the module docstring).  Every member is
    still verified against its best; the bests stay as they are."""
    group_of = {m: k for k, g in enumerate(groups) for m in g.members}
    asked: set[tuple[int, int]] = set()
    for a, b in pairs:
        for x, y in ((a, b), (b, a)):
            if x not in group_of and y in group_of:
                best = groups[group_of[y]].best
                if not distinct(best, x):
                    asked.add((best, x))
    if not asked:
        return list(groups)
    index = {g.best: k for k, g in enumerate(groups)}
    chosen: dict[int, tuple[float, int, Evidence]] = {}
    for best, x, ok, ev in verify(sorted(asked)):
        if ok:
            score = ev.similarity if ev.similarity is not None else 1.0
            k = index[best]
            if x not in chosen or (score, -k) > (chosen[x][0], -chosen[x][1]):
                chosen[x] = (score, k, ev)
    out = [Group(id=g.id, best=g.best, members=list(g.members), evidence=dict(g.evidence))
           for g in groups]
    for x, (_, k, ev) in sorted(chosen.items()):
        out[k].members.append(x)
        out[k].evidence[x] = ev
    return out
