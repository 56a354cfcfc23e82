"""The group stage: candidate pairs -> verified groups, each with its best.

The pairs are every mode's byte copies (the store's content-hash buckets), the
user's accepted pairs and the mode's candidates; the user's "not a duplicate" pairs
are dropped.  Groups are grown from representatives (``grouping.grow_groups``), so a
group of k costs O(k) verifications; remembered verdicts (of earlier scans and of this
one: ``verdicts.VerdictMemory``) are used first, the rest are verified on the engine's
CPU workers.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .config import ScanConfig
from .decisions import Decisions
from .engines import Engine
from .grouping import Verdict, adopt_leftovers, component_groups, grow_groups, merge_groups
from .keeper import refine_groups
from .models import Edge, Evidence, Group, ImageRef, Problems, ScanSummary, describe_exception
from .modes import Found, mode_of
from .selection import choose_best, rank_key
from .verdicts import VerdictMemory, verifier_key
from .verify import (
    PAIRS_PER_TASK,
    Decided,
    Verifier,
    VerifyOptions,
    crashed_task,
    make_tasks,
    run_task,
    verify_pairs,
)
from .view import CollectionView

log = logging.getLogger(__name__)

#: progress(stage, done, total or None)
Progress = Callable[[str, int, int | None], None]

EXACT_EVIDENCE = Evidence(stage="exact", hash_distance=0, color_correlation=1.0, similarity=1.0)
ACCEPTED_EVIDENCE = Evidence(stage="accepted")
"""A pair the user accepted as duplicates in the review."""


def find_groups(view: CollectionView, config: ScanConfig, engine: Engine,
                timings: dict[str, float],
                progress: Progress | None = None, model: str | None = None,
                problems: Problems | None = None, summary: ScanSummary | None = None,
                read: Callable[[ImageRef], bytes] | None = None,
                ) -> tuple[list[Group], Found]:
    """Groups over positions in ``view``; ``model``: the embedding key (similar mode).
    Candidate pairs are not all verified: groups are grown from representatives
    (``grouping``).  A pair whose verification fails, or a group whose keeper rule
    fails, is counted in ``problems`` and the run goes on (the pair is not joined;
    the group keeps its first member).  ``read``: the bytes of an image, for the
    keeper's re-save test (``keeper``; None: no test).  Also returns the mode's
    ``Found`` (without its pairs), which the reports of some modes read (faces)."""
    problems = problems if problems is not None else Problems()
    t = time.perf_counter()
    options = VerifyOptions.of(config)
    rules = ReviewRules.of(view, Decisions.load(view.store))
    pairs: list[tuple[int, int]] = list(rules.accepted)
    exact_of: dict[int, int] = {}
    for bucket in view.exact_buckets():
        pairs.extend((bucket[0], other) for other in bucket[1:])
        exact_of.update((m, bucket[0]) for m in bucket)
    mode = mode_of(config)
    found = mode.candidates(view, config, model)
    seen = set(pairs)
    for i, j in found.pairs:
        # byte-identical pairs are already joined by their exact bucket
        if (i not in exact_of or exact_of[i] != exact_of.get(j)) and (i, j) not in seen:
            seen.add((i, j))
            pairs.append((i, j))
    del seen
    vectors, found.vectors, found.pairs = found.vectors, None, []  # no second copy kept
    if rules.distinct:  # the user said no: never verified, never joined
        pairs = [p for p in pairs if p not in rules.distinct]
    timings["candidates"] = time.perf_counter() - t
    t = time.perf_counter()
    nodes = sorted({x for p in pairs for x in p})
    if vectors is not None:  # grouping needs the vectors of candidate images only
        vectors = vectors.subset(nodes)
    accepted = set(rules.accepted)
    memory = VerdictMemory(view, verifier_key(config, options))
    roles = {p: lead for p, lead in found.extend_only.items() if p not in accepted}
    extend_only = remembered_starters(roles, memory)
    late = late_seeds(pairs, roles, extend_only)
    verifier = Verifier(view, options)
    counts = {"verified": 0, "reused": 0}

    def settled(a: int, b: int) -> tuple[bool, Evidence] | None:
        """The verdicts that need no pixels."""
        if rules.is_distinct(a, b):
            return False, Evidence(stage="not-duplicate")
        if a in exact_of and exact_of[a] == exact_of.get(b):
            return True, EXACT_EVIDENCE
        if (min(a, b), max(a, b)) in accepted:
            return True, ACCEPTED_EVIDENCE
        return mode.settled((min(a, b), max(a, b)), found, config)

    def verify_batch(batch: Sequence[tuple[int, int]]) -> list[Verdict]:
        out: list[Verdict] = []
        todo: list[tuple[int, int]] = []
        if found.within_reach is not None:  # the unpaired pairs' check, in one pass
            found.within_reach.prepare(p for a, b in batch
                                       if (p := (min(a, b), max(a, b))) not in found.distance)
        for a, b in batch:
            quick = settled(a, b)
            if quick is None:
                todo.append((a, b))
            else:
                out.append((a, b, *quick))
        known, todo = memory.split(todo)
        near: dict[tuple[int, int], tuple[bool, Evidence]] = {}
        cos: dict[tuple[int, int], float] = {}
        for a, b, ok, ev in known:
            c = vectors.cosine(a, b) if vectors is not None else None
            if c is None:
                out.append((a, b, ok, ev))
            elif ok:
                out.append((a, b, ok, dataclasses.replace(ev, embedding_similarity=round(c, 4))))
            else:  # similar mode: the embedding check runs on a remembered rejection
                near[(a, b)], cos[(a, b)] = (ok, ev), c
                todo.append((a, b))
        counts["reused"] += len(known)
        counts["verified"] += len(todo) - len(near)
        if vectors is not None:
            for a, b in todo:
                c = vectors.cosine(a, b)
                if c is not None:
                    cos[(a, b)] = c
        if len(todo) > 1 and pool.workers > 1:
            size = min(PAIRS_PER_TASK, -(-len(todo) // pool.workers))
            decided: Iterable[list[Decided]] = pool.map(
                run_task, make_tasks(todo, view.fetch, options, cos, config.min_cosine_similarity, near,
                                     size),
                chunk=1, on_crash=crashed_task)
        else:
            decided = [verify_pairs(verifier, todo, cos, config.min_cosine_similarity, near)]
        for chunk in decided:
            for a, b, ok, ev, _ in chunk:
                if ev.error is not None:
                    problems.add("verify", ev.error)
                out.append((a, b, ok, ev))
            memory.remember((a, b, *fresh) for a, b, _, _, fresh in chunk if fresh is not None)
        return out

    failed_keeper: set[frozenset[int]] = set()

    def best_of(members: list[int]) -> int:
        kept = [m for m in members if m in rules.keep] or mode.prefer(members, found)
        try:
            return choose_best(view.fetch(kept), kept, config.keep, config.quality_tolerance)
        except Exception as exc:  # noqa: BLE001 - the group keeps its first member
            if frozenset(kept) not in failed_keeper:  # asked again when the best changes
                failed_keeper.add(frozenset(kept))
                log.warning("keeper rule failed for a group; keeping its first member",
                            exc_info=True)
                problems.add("keeper", describe_exception(exc))
            return min(kept)

    def report(done: int, total: int) -> None:
        if progress:
            progress("verify", done, total)

    key = rank_key(config.keep)
    rank = {p: (p not in rules.keep, p in late, *key(rec)) for p, rec in view.light(nodes)}
    copy_pairs = mode.copy_pairs(pairs, found)
    with engine.cpu_pool() as pool:
        if config.cluster == "dbscan":  # DBSCAN keeps whole components: no chain breaking
            edges = [Edge(a, b, ev) for a, b, ok, ev in verify_batch(pairs) if ok]
            groups = component_groups(edges, best_of)
        else:
            copies = grow_groups(copy_pairs, rank.__getitem__, best_of, verify_batch, report,
                                 extend_only=extend_only, leave_refused=not mode.faces)
            if not mode.faces:  # people have their own linkage
                joining = mode.best_pairs(view, sorted(g.best for g in copies), config)
                copies = merge_groups(copies, [*copy_pairs, *joining], rank.__getitem__,
                                      verify_batch, rules.is_distinct)
            groups = mode.regroup(copies, pairs, found, config, rank.__getitem__, best_of,
                                  rules.is_distinct)
        keeper = 0.0
        if read is not None:
            k = time.perf_counter()
            groups = refine_groups(groups, view, config, read, problems, rules.keep, pool,
                                   start=best_of)
            keeper = time.perf_counter() - k
        if config.cluster != "dbscan" and not mode.faces:  # people have their own linkage
            groups = adopt_leftovers(groups, copy_pairs, verify_batch, rules.is_distinct,
                                     found.distance)
    memory.flush()
    if summary is not None:
        summary.pairs_verified, summary.pairs_reused = counts["verified"], counts["reused"]
    timings["verify"] = time.perf_counter() - t - keeper
    if read is not None:
        timings["keeper"] = keeper
    return groups, found


def remembered_starters(extend_only: dict[tuple[int, int], int], memory: VerdictMemory
                        ) -> dict[tuple[int, int], int]:
    """``extend_only`` without the pairs an earlier scan verified as duplicates: those
    start a group again (no verification: the verdict is remembered), so an image
    added since, which made one of the two look less distinctly nearest, does not take
    a group apart."""
    if not extend_only:
        return extend_only
    known, _ = memory.split(list(extend_only))
    out = dict(extend_only)
    for a, b, ok, _ in known:
        if ok:
            out.pop((a, b), None)
    return out


def late_seeds(pairs: Iterable[tuple[int, int]], roles: Mapping[tuple[int, int], int],
               extend_only: Mapping[tuple[int, int], int]) -> set[int]:
    """The images that may start a group only through a pair an earlier scan verified
    as duplicates (in ``roles``, the pairs that may not start, but not in
    ``extend_only``: ``remembered_starters``).  They seed after the others, so that a
    rescan grows each group from the seed the last scan grew it from, whose verdicts
    are remembered: a copy whose remembered pair let it seed first would verify its
    whole group against itself again."""
    remembered = {x for p in roles if p not in extend_only for x in p}
    return remembered - {x for p in pairs if p not in roles for x in p}


@dataclass(frozen=True, slots=True)
class ReviewRules:
    """The user's decisions in view positions: pairs never grouped, pairs always grouped,
    and files to keep as best."""

    distinct: frozenset[tuple[int, int]] = frozenset()
    accepted: tuple[tuple[int, int], ...] = ()
    keep: frozenset[int] = frozenset()

    @classmethod
    def of(cls, view: CollectionView, decisions: Decisions) -> ReviewRules:
        if not decisions:
            return cls()
        hashes = {h for p in decisions.distinct | decisions.accepted for h in p}
        by_hash = view.store.ok_ids_with_content(hashes)
        where = view.position_of(i for ids in by_hash.values() for i in ids)
        positions = {h: sorted(where[i] for i in ids if i in where) for h, ids in by_hash.items()}

        def pairs(hash_pairs: Iterable[tuple[str, str]]) -> set[tuple[int, int]]:
            out: set[tuple[int, int]] = set()
            for a, b in hash_pairs:
                for i in positions.get(a, ()):
                    out.update((min(i, j), max(i, j)) for j in positions.get(b, ()) if i != j)
            return out

        keep_rows = view.store.ids_with_uri(decisions.keep).values()
        return cls(frozenset(pairs(decisions.distinct)), tuple(sorted(pairs(decisions.accepted))),
                   frozenset(view.position_of(keep_rows).values()))

    def is_distinct(self, a: int, b: int) -> bool:
        return (min(a, b), max(a, b)) in self.distinct
