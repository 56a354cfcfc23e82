"""The group stage: candidate pairs -> duplicate groups, verifying O(k) pairs per group.

Candidate pairs are not verified one by one.  Each connected component of the
candidate graph is taken apart by growing groups from a representative:

1. the *seed* is the component's first unassigned image in the keeper's order
   (``rank``: the image the keeper would most likely choose) that has a pair that may
   start a group (``candidates.pair_roles``: close, or each other's distinct nearest;
   the pairs of one crowd of look-alikes do not);
2. the seed is verified against those neighbours; once one passes, a group stands,
   and the neighbours that its members' pairs lead into (every pair that may start a
   group, and the others into an image whose nearest they are) are verified against
   the seed in turn (against the seed, never against the neighbour: no chaining);
3. when nothing is left to try, the keeper chooses the group's best; where that is
   not the seed, the group is grown again from the keeper's choice, as in 2, starting
   from every member of the group it was chosen from (at most ``MAX_REGROWS`` times;
   after that the last seed, which every member passed, stays the best); where step
   6 follows (``leave_refused``), the images an earlier best refused are not tried
   against the new one (they failed against a copy of it; step 6 tries them against
   the final best);
4. the members leave the component, the images that failed stay in it, and the
   next seed is grown from what is left;
5. groups that candidate pairs join are merged where their bests match
   (``merge_groups``: copies of one photo edited alike, cropped or turned a little,
   are each other's nearest and grow a group of their own first);
6. once the keeper has settled every group's best (the re-save test can still change
   it after the growth), each image left in no group but among copies (at least half
   of its neighbours are in groups) is verified against the final best of the groups
   it is nearest to, then the next nearest, and joins the one it matches best
   (``adopt_leftovers``): it may have failed only against an earlier best.

So every member of a group is verified against its group's best directly (the
anti-chaining guarantee), a group of k copies costs about k verifications plus one
per candidate pair that leads out of it, however many candidate pairs its copies
share, and an unrelated image costs a verification only where its pairs may start a
group or lead into it from a group: crowds of look-alike images (pieces of one
texture, skies, gradients), whose pairs grow with the square of their number, are
not verified pair by pair.

All the components are grown at once, level by level: each level's pairs are
verified in one batch (``verify``: the caller's, which may run them in parallel and
answer from remembered verdicts).
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence

from .candidates import LEADS_BOTH_WAYS, LEADS_INTO_FIRST, LEADS_INTO_SECOND
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
                 starters: dict[int, set[int]], rank: Callable[[int], tuple[object, ...]],
                 leave_refused: bool = False) -> None:
        self.adjacency = adjacency
        """The images a group holding each image may reach through its pairs."""
        self.starters = starters
        """The neighbours through pairs that may start a group (within adjacency)."""
        self.order = sorted(nodes, key=rank)
        self.position = {x: k for k, x in enumerate(self.order)}
        self.next = 0
        self.returned: list[int] = []
        """Positions (in ``order``) before ``next`` of images put back in the pool."""
        self.pool = set(nodes)
        self.best = -1
        self.members: dict[int, Evidence] = {}
        self.tried: set[int] = set()
        self.refused: set[int] = set()
        """The images the growing group's bests have refused."""
        self.leave_refused = leave_refused
        """A group grown again from another best does not try the refused images (the
        caller tries the images left out against the final bests: ``adopt_leftovers``)."""
        self.frontier: set[int] = set()
        self.regrown = 0
        self.done: list[Group] = []

    def _neighbours(self, x: int, starting: bool = False) -> set[int]:
        """``x``'s untried neighbours in the pool (``starting``: only through pairs that
        may start a group)."""
        return ((self.starters if starting else self.adjacency)[x] & self.pool) - self.tried

    def start(self) -> bool:
        """The next seed that has an unassigned neighbour through a pair that may start
        a group; False when the component is used up.  A seed that has none stays in
        the pool: a group grown from another seed may still take it."""
        while self.next < len(self.order) or self.returned:
            if self.returned and self.returned[0] < self.next:
                seed = self.order[heapq.heappop(self.returned)]
            else:
                seed = self.order[self.next]
                self.next += 1
            if seed not in self.pool:
                continue
            self.tried, self.refused = {seed}, set()
            frontier = self._neighbours(seed, starting=True)
            if frontier or not self.adjacency[seed] & self.pool:
                self.pool.discard(seed)  # a seed is settled: in its group or alone
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
                if not self.members:  # a group now: all the seed's pairs may extend it
                    self.frontier |= self._neighbours(self.best)
                self.members[y] = ev
                self.frontier |= self._neighbours(y)
            else:
                self.refused.add(y)
        if self.frontier:
            return True
        if self.members and self.regrown < MAX_REGROWS:
            chosen = choose_best([self.best, *sorted(self.members)])
            if chosen != self.best:  # grown again from the keeper's choice
                self.regrown += 1
                group = {self.best, *self.members} - {chosen}
                self._put_back(group)
                self.pool.discard(chosen)
                self.best, self.members = chosen, {}
                self.tried = {chosen} | (self.refused if self.leave_refused else set())
                # every member of the group it was chosen from, whatever its pairs reach
                self.frontier = self._neighbours(chosen) | group
                return True
        if self.members:
            self.pool.difference_update(self.members)
            self.done.append(Group(id=0, best=self.best, members=[self.best, *self.members],
                                   evidence=dict(self.members)))
        self.members = {}
        return self.start()


def grow_groups(pairs: Iterable[tuple[int, int]], rank: Callable[[int], tuple[object, ...]],
                choose_best: Callable[[list[int]], int], verify: VerifyBatch,
                progress: Callable[[int, int], None] | None = None,
                extend_only: Mapping[tuple[int, int], int] | None = None,
                leave_refused: bool = False) -> list[Group]:
    """Groups of two or more images from candidate ``pairs`` (see the module
    docstring).  ``rank``: sort key, keeper's likely choice first; ``verify``:
    verdicts (a, b, ok, evidence) on a batch of pairs, evidence of b against a.
    ``extend_only``: the pairs (first < second) that may not start a group, each with
    the images it may lead into (``candidates.LEADS_INTO_FIRST``, ``..._SECOND``): a
    seed is verified first against its other pairs' neighbours only, and once a group
    stands its members' pairs are followed into the images they lead into.
    ``leave_refused``: a group grown again from another best does not try the images
    an earlier best refused (for a caller that then tries the images left out against
    the final bests, ``adopt_leftovers``)."""
    adjacency, starters = _reach(pairs, extend_only or {})
    growths = [_Growth(comp, adjacency, starters, rank, leave_refused)
               for comp in node_components((a, b) for a, nbrs in adjacency.items() for b in nbrs)]
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


def _reach(pairs: Iterable[tuple[int, int]], extend_only: Mapping[tuple[int, int], int]
           ) -> tuple[dict[int, set[int]], dict[int, set[int]]]:
    """(the images a group holding each image may reach, its neighbours through pairs
    that may start a group) from the pairs and ``grow_groups``' ``extend_only``."""
    adjacency: dict[int, set[int]] = defaultdict(set)
    starters: dict[int, set[int]] = defaultdict(set)
    for a, b in pairs:
        if a == b:
            continue
        lo, hi = min(a, b), max(a, b)
        leads = extend_only.get((lo, hi))
        if leads is None:
            starters[a].add(b)
            starters[b].add(a)
            leads = LEADS_BOTH_WAYS
        if leads & LEADS_INTO_FIRST:
            adjacency[hi].add(lo)
        if leads & LEADS_INTO_SECOND:
            adjacency[lo].add(hi)
    return adjacency, starters


def _numbered(groups: list[Group]) -> list[Group]:
    groups.sort(key=lambda g: min(g.members))
    for gid, g in enumerate(groups, start=1):
        g.id = gid
    return groups


def merge_groups(groups: Sequence[Group], pairs: Iterable[tuple[int, int]],
                 rank: Callable[[int], tuple[object, ...]], verify: VerifyBatch,
                 distinct: Callable[[int, int], bool]) -> list[Group]:
    """``groups`` with the groups that candidate pairs join merged where they show one
    photo (step 5 of the module docstring): the groups joined by any candidate pair
    are grown like images are, from the group whose best comes first in the keeper's
    order: a neighbouring group's best is verified against the growing group's best,
    and where it passes, each of its other members too; the members that pass join
    (with their own evidence against that best), the others are left out (an image
    left out is tried again by ``adopt_leftovers``).  Copies of one photo edited alike
    (cropped or turned a little) are each other's nearest and grow into a group of
    their own; the pairs between two groups, whatever their roles, let them meet."""
    group_of = {m: k for k, g in enumerate(groups) for m in g.members}
    links: dict[int, set[int]] = defaultdict(set)
    for a, b in pairs:
        ga, gb = group_of.get(a), group_of.get(b)
        if ga is not None and gb is not None and ga != gb:
            links[ga].add(gb)
            links[gb].add(ga)
    if not links:
        return list(groups)
    state = [_Merge(comp, groups, links, rank) for comp in node_components(
        (a, b) for a, nbrs in links.items() for b in nbrs if a < b)]
    active = [m for m in state if m.start()]
    while active:
        owner: dict[tuple[int, int], _Merge] = {}
        batch: list[tuple[int, int]] = []
        for m in active:
            for p in m.requests(distinct):
                owner[p] = m
                batch.append(p)
        answers: dict[int, list[Verdict]] = defaultdict(list)
        for verdict in verify(batch):
            answers[id(owner[(verdict[0], verdict[1])])].append(verdict)
        active = [m for m in active if m.answer(answers[id(m)])]
    merged = {k for m in state for k in m.taken}
    out = [Group(id=g.id, best=g.best, members=list(g.members), evidence=dict(g.evidence))
           for k, g in enumerate(groups) if k not in merged]
    out.extend(g for m in state for g in m.done)
    return _numbered(out)


class _Merge:
    """One component of groups joined by candidate pairs, being merged (``merge_groups``)."""

    def __init__(self, comp: list[int], groups: Sequence[Group], links: dict[int, set[int]],
                 rank: Callable[[int], tuple[object, ...]]) -> None:
        self.groups, self.links = groups, links
        self.order = sorted(comp, key=lambda k: rank(groups[k].best))
        self.next = 0
        self.left = set(comp)
        self.taken: set[int] = set()
        """The groups of this component that were merged into another (or took one)."""
        self.done: list[Group] = []
        self.seed = -1
        self.members: dict[int, Evidence] = {}
        self.tried: set[int] = set()
        self.frontier: set[int] = set()
        self.checking: set[int] = set()
        """The groups whose best is verified against the seed's best in this round."""
        self.joining: list[int] = []
        """Groups whose best passed: their other members are verified next round."""

    def start(self) -> bool:
        while self.next < len(self.order):
            k = self.order[self.next]
            self.next += 1
            if k not in self.left:
                continue
            self.left.discard(k)
            frontier = self.links[k] & self.left
            if frontier:
                g = self.groups[k]
                self.seed, self.members = k, dict(g.evidence)
                self.tried, self.frontier = {k}, frontier
                return True
        return False

    def requests(self, distinct: Callable[[int, int], bool]) -> list[tuple[int, int]]:
        best = self.groups[self.seed].best
        out: list[tuple[int, int]] = []
        for k in self.joining:
            out.extend((best, m) for m in self.groups[k].members
                       if m != self.groups[k].best and not distinct(best, m))
        for k in sorted(self.frontier - self.tried):
            self.tried.add(k)
            if not distinct(best, self.groups[k].best):
                self.checking.add(k)
                out.append((best, self.groups[k].best))
        self.frontier = set()
        return out

    def answer(self, verdicts: list[Verdict]) -> bool:
        passed = {y: ev for _, y, ok, ev in verdicts if ok}
        for k in self.joining:  # the rest of each group whose best passed
            self.members.update((m, passed[m]) for m in self.groups[k].members if m in passed)
        self.joining = []
        for k in sorted(self.checking):
            b = self.groups[k].best
            if b in passed:
                self.members[b] = passed[b]
                self.left.discard(k)
                self.taken.add(k)
                self.joining.append(k)
                self.frontier |= self.links[k] & self.left
        self.checking = set()
        if self.joining or self.frontier - self.tried:
            return True
        if self.taken & (self.tried - {self.seed}):  # the seed took another group
            g = self.groups[self.seed]
            self.taken.add(self.seed)
            self.done.append(Group(id=0, best=g.best, members=[g.best, *self.members],
                                   evidence=dict(self.members)))
        return self.start()


ADOPT_TRIES = 2
"""Distances at which an image left out of every group is tried (``adopt_leftovers``):
the groups nearest to it, then, where all of those refuse it, the next nearest."""


def adopt_leftovers(groups: Sequence[Group], pairs: Iterable[tuple[int, int]],
                    verify: VerifyBatch, distinct: Callable[[int, int], bool],
                    distance: Mapping[tuple[int, int], int] | None = None) -> list[Group]:
    """``groups`` with each image that is in none of them but has candidate pairs into
    some verified against the best of the group it is nearest to (by its pairs'
    ``distance``, first < second; a pair without one counts as 0), every group at that
    distance; where all of them refuse it, against the groups at the next distance, up
    to ``ADOPT_TRIES`` distances.  It joins the group whose best it matches with the
    highest similarity (step 6 of the module docstring), and then its own neighbours
    in no group are tried the same way.  Only an image among copies is tried: at
    least half of its neighbours are in groups.  One whose neighbours are mostly in
    no group is one of a crowd of look-alikes (see ``candidates.pair_roles``): the
    growth has tried it where a pair leads into it (``grow_groups``' ``extend_only``),
    against the best of that moment, and on real photos at scale trying it again
    found only look-alikes (``benchmarks/real_scale.py``).  Every member is still
    verified against its best; the bests stay as they are."""
    out = [Group(id=g.id, best=g.best, members=list(g.members), evidence=dict(g.evidence))
           for g in groups]
    group_of = {m: k for k, g in enumerate(out) for m in g.members}
    index = {g.best: k for k, g in enumerate(out)}
    neighbours: dict[int, list[tuple[int, int]]] = defaultdict(list)
    """Image -> (neighbour, distance)."""
    for a, b in pairs:
        d = distance.get((min(a, b), max(a, b)), 0) if distance else 0
        neighbours[a].append((b, d))
        neighbours[b].append((a, d))
    asked: set[tuple[int, int]] = set()
    levels: dict[int, int] = defaultdict(int)
    """Distances at which each image has been tried."""
    pending = {x for y in group_of for x, _ in neighbours[y] if x not in group_of}
    while pending:
        wanted: list[tuple[int, int]] = []
        for x in sorted(pending):
            if levels[x] >= ADOPT_TRIES:
                continue
            if 2 * sum(y in group_of for y, _ in neighbours[x]) < len(neighbours[x]):
                continue  # one of a crowd of look-alikes
            near: dict[int, int] = {}
            for y, d in neighbours[x]:
                k = group_of.get(y)
                if k is not None and (out[k].best, x) not in asked \
                        and not distinct(out[k].best, x):
                    near[k] = min(d, near.get(k, d))
            if near:
                lowest = min(near.values())
                levels[x] += 1
                wanted.extend((out[k].best, x) for k, d in near.items() if d == lowest)
        asked.update(wanted)
        chosen: dict[int, tuple[float, int, Evidence]] = {}
        for best, x, ok, ev in verify(sorted(wanted)):
            if ok:
                score = ev.similarity if ev.similarity is not None else 1.0
                k = index[best]
                if x not in chosen or (score, -k) > (chosen[x][0], -chosen[x][1]):
                    chosen[x] = (score, k, ev)
        for x, (_, k, ev) in sorted(chosen.items()):
            out[k].members.append(x)
            out[k].evidence[x] = ev
            group_of[x] = k
        # refused ones try the next distance; the neighbours of new members their first
        pending = {x for _, x in wanted if x not in group_of} | \
            {x for y in chosen for x, _ in neighbours[y] if x not in group_of}
    return out
