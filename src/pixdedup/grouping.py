"""The group stage: verified edges -> duplicate groups, with an anti-chaining guard.

Union-find joins verified pairs into components.  Chains (A~B, B~C while A and C are
unrelated) are then broken: the best member of a component is chosen, every other
member must be verified against that best directly; members that fail leave the group
and are grouped again among themselves.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

from .models import Edge, Evidence, Group


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


def build_groups(
    edges: Sequence[Edge],
    choose_best: Callable[[list[int]], int],
    verify: Callable[[int, int], tuple[bool, Evidence]],
) -> list[Group]:
    """Groups of two or more records; every member verified against its group's best."""
    evidence: dict[tuple[int, int], Evidence] = {}
    nodes: set[int] = set()
    for e in edges:
        key = (min(e.a, e.b), max(e.a, e.b))
        evidence[key] = e.evidence
        nodes.update(key)
    order = sorted(nodes)
    local = {g: k for k, g in enumerate(order)}
    pending = [[order[k] for k in comp]
               for comp in components(len(order), ((local[a], local[b]) for a, b in evidence))]
    groups: list[Group] = []
    while pending:
        comp = pending.pop()
        best = choose_best(comp)
        members = [best]
        member_evidence: dict[int, Evidence] = {}
        rejected: list[int] = []
        for m in sorted(comp):
            if m == best:
                continue
            key = (min(m, best), max(m, best))
            ev = evidence.get(key)
            if ev is None:
                ok, ev = verify(best, m)
                if not ok:
                    rejected.append(m)
                    continue
            members.append(m)
            member_evidence[m] = ev
        if len(members) > 1:
            groups.append(Group(id=0, best=best, members=members, evidence=member_evidence))
        if len(rejected) > 1:
            rset = set(rejected)
            sub_edges = [(a, b) for (a, b) in evidence if a in rset and b in rset]
            sub_order = sorted(rset)
            sub_local = {g: k for k, g in enumerate(sub_order)}
            for sub in components(len(sub_order), ((sub_local[a], sub_local[b]) for a, b in sub_edges)):
                pending.append([sub_order[k] for k in sub])
    groups.sort(key=lambda g: min(g.members))
    for gid, g in enumerate(groups, start=1):
        g.id = gid
    return groups
