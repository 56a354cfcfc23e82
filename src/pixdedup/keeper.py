"""The keeper's last look at pixels: a group's best that is another member saved again
loses to that member (``selection.refine_keeper``, ``features.provenance``).

The scores and marks of ``selection`` come from each image alone; a copy that keeps
its source's size and claims a higher quality (a JPEG q85 or WebP q85 saved from a
WebP q80 or HEIC original) looks better by every one of them.  After the groups are
grown, the best of each group is tested against its members of the same size on
their pixels (the files are read again: only those of groups whose best has such
members); the answers are remembered in the feature store, so a rerun reads files
only for pairs with a new image.  A test that fails (a file gone, unreadable) counts
as "not a re-save" and is named under ``problems`` as 'keeper'.  Each group's tests
come one at a time (which comes next depends on the answer:
``selection.refine_steps``) and ask about its best and the members of its size again
and again, so a group's tests run to the end in one task on one worker process
(``run_group``), which decodes each file it carries once (``features.provenance``:
decoding a 12 MP photo takes about as long as the tests on it); many groups' tasks
run side by side on the scan's workers.  The files are read here: a task asks for
those its next test needs and the other members of its best's size
(``FILES_PER_TASK``), and goes on in the next round with them.  A task whose worker
dies (a decoder that kills it) leaves its group's best as scored, named under
``problems``.

The same goes for a best whose pixels carry the JPEG blocks of a same-size member
credited with less compression (``features.provenance.carries_blocks``: a tone edit of
a photo made from a JPEG, saved at a high quality): it is credited with no more than
that member, and the keeper is chosen again; a lossless best that holds a lossy
member's pixels but for a local edit (``converted_from``), a best with noise added
at full resolution (``noisier``, against most of the best-scored members of its size)
and a best blurred at full resolution (``blurrier``, the same way) are marked and the
keeper is chosen again.  Before any of these, a best turned a little against most of
the best-scored members (``selection.turned_against``) is marked 'turned': that test
compares the thumbnails, which the task carries: no file is read for it.

The tests start from the scan's keeper rule (the quality rule) applied to the group's
final members (``refine_groups``' ``start``), not the best the grouping left (chosen
before merges and adoptions added members, and on another path in a rescan): the
keeper depends on the members and the answers only, so a rescan keeps what the scan
kept.  Each test that
looks for one member asks about at most ``selection.TEST_CANDIDATES`` of them: a group
of hundreds of copies costs a bounded number of tests per choice.

The members were verified against the old best, and so was the new one (a member):
their evidence stays as it was (the new best's evidence goes to the old best).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import ScanConfig
from .features.provenance import (
    BLOCKS_VERSION,
    BLUR_VERSION,
    CONVERSION_VERSION,
    COPY_FORMATS,
    NOISE_VERSION,
    PROVENANCE_VERSION,
    blurrier,
    carries_blocks,
    converted_from,
    forget_decoded,
    noisier,
    resaved_from,
)
from .models import Group, ImageRecord, ImageRef, Problems, RecordLookup, describe_exception
from .selection import (
    BLOCKS,
    BLUR,
    CONVERSION,
    NOISE,
    RESAVE,
    TILT,
    TILT_VERSION,
    keep_quality,
    refine_steps,
    scores,
    turned_against,
)
from .store import content_key
from .view import CollectionView

if TYPE_CHECKING:
    from .engines import CpuPool

log = logging.getLogger(__name__)

RESAVE_TEST = PROVENANCE_VERSION
BLOCKS_TEST = 1000 + BLOCKS_VERSION
NOISE_TEST = 2000 + NOISE_VERSION
CONVERSION_TEST = 3000 + CONVERSION_VERSION
BLUR_TEST = 4000 + BLUR_VERSION
TILT_TEST = 5000 + TILT_VERSION
"""The store keeps each test's answers under its own version numbers (``FeatureStore.
provenance``: the thousands are the test, the rest its version)."""


PixelTest = Callable[[bytes, bytes], bool]

Request = tuple[str, int, int]
"""A test asked by ``selection.refine_steps``: (test, copy, source)."""


def testable(records: RecordLookup, test: str, copy: int, source: int) -> bool:
    """Whether a test's answer needs the pixels (else it is no): both images have a
    content hash and measures, and a re-save's copy is a file of ``COPY_FORMATS`` (a
    lossless copy is a conversion, ``selection``, not a re-save)."""
    a, b = records[copy], records[source]
    q = a.quality
    if not a.content_hash or not b.content_hash or q is None:
        return False
    return test != RESAVE or (not q.lossless_file and a.format in COPY_FORMATS)


class PixelTests:
    """The answers of one test on the pixels of two files (``resaved_from``,
    ``converted_from``, ``carries_blocks``, ``noisier``, ``blurrier``; or of
    ``selection.turned_against`` on their thumbnails), remembered in the store under
    ``version`` (``FeatureStore.provenance``) by the two files' content keys."""

    def __init__(self, view: CollectionView, name: str, version: int) -> None:
        self.view, self.name, self.version = view, name, version
        self.fresh: list[tuple[int, int, bool]] = []
        self.tested = 0

    def remembered(self, records: Mapping[int, ImageRecord]) -> dict[Request, bool]:
        """The answers the store holds between any two of ``records`` (view positions)."""
        positions: dict[int, list[int]] = defaultdict(list)
        for p, rec in records.items():
            if rec.content_hash:
                positions[content_key(rec.content_hash)].append(p)
        found = self.view.store.provenance_among(self.version, list(positions))
        return {(self.name, c, s): answer for (ck, sk), answer in found.items()
                for c in positions[ck] for s in positions[sk] if c != s}

    def remember(self, records: RecordLookup, copy: int, source: int, answer: bool) -> None:
        a, b = records[copy].content_hash, records[source].content_hash
        if a and b:
            self.tested += 1
            self.fresh.append((content_key(a), content_key(b), answer))

    def flush(self) -> None:
        if self.fresh:
            self.view.store.put_provenance(self.version, self.fresh)
            self.fresh = []


FILES_PER_TASK = 8
"""Most files a group's task carries: the files of the test it stopped at and the
other members of that best's size, best scored first (the tests that follow ask
about them).  A group whose tests go on to other files asks again (and carries those
instead)."""


@dataclass(frozen=True, slots=True)
class GroupTask:
    """One group's keeper tests, run to the end in one worker (``run_group``), so that
    each file it carries is decoded there once (``features.provenance``), however many
    tests ask about it."""

    number: int
    members: list[int]
    best: int
    records: dict[int, ImageRecord]
    known: dict[Request, bool]
    """Answers known already (the store's, and those of this group's earlier tasks)."""
    files: dict[int, bytes]
    tolerance: float
    unreadable: frozenset[int] = frozenset()
    """Members whose file could not be read: their tests answer no."""


@dataclass(frozen=True, slots=True)
class GroupOutcome:
    number: int
    best: int | None
    """The keeper, or None: the task stopped for a file (``wanted``) or died (``error``)."""
    tested: list[tuple[str, int, int, bool, str | None]]
    """The tests run: (test, copy, source, answer, the error where it failed: no)."""
    wanted: list[int]
    """The files to carry on: the next test's two, then others of its copy's size."""
    missing: list[int]
    """Those of the next test's two files that the task lacks."""
    error: str | None = None


def run_group(task: GroupTask, testing: bool = True) -> GroupOutcome:
    """``selection.refine_steps`` of one group, each test answered from ``known``, as
    no where it needs no pixels (``testable``) or a file is unreadable, on the
    thumbnails (``TILT``) or on the files' pixels; stops where a file is missing.
    ``testing`` False: stops at the first test to run (nothing to ask of a worker
    where every answer is known: a rescan)."""
    tests: dict[str, PixelTest] = {RESAVE: resaved_from, BLOCKS: carries_blocks,
                                   NOISE: noisier, CONVERSION: converted_from, BLUR: blurrier}
    known = dict(task.known)
    tested: list[tuple[str, int, int, bool, str | None]] = []
    steps = refine_steps(task.records, task.members, task.best, task.tolerance)
    try:
        request = next(steps)
        while True:
            test, copy, source = request
            answer = known.get(request)
            if not testable(task.records, test, copy, source) or \
                    task.unreadable.intersection((copy, source)):
                answer = False
            elif answer is None:
                if not testing:
                    return GroupOutcome(task.number, None, tested, [], [])
                missing = [x for x in (copy, source) if x not in task.files]
                if test != TILT and missing:
                    return GroupOutcome(task.number, None, tested,
                                        _wanted(task, copy, source), missing)
                try:
                    answer = turned_against(task.records, copy, source) if test == TILT \
                        else tests[test](task.files[copy], task.files[source])
                    tested.append((test, copy, source, answer, None))
                except Exception as exc:  # noqa: BLE001 - the keeper stays as scored
                    answer = False
                    tested.append((test, copy, source, False, describe_exception(exc)))
                known[request] = answer
            request = steps.send(answer)
    except StopIteration as done:
        return GroupOutcome(task.number, done.value[0], tested, [], [])
    finally:
        forget_decoded()


def _wanted(task: GroupTask, copy: int, source: int) -> list[int]:
    """The files ``task`` is to carry on with: the test's two, then the other members
    of ``copy``'s size, best scored first, ``FILES_PER_TASK`` in all."""
    need = list(dict.fromkeys((copy, source)))
    q = task.records[copy].quality
    assert q is not None  # a test with pixels to run has measures (``testable``)
    score = scores(task.records, task.members)
    same = sorted((m for m in task.members if m not in need and m not in task.unreadable
                   and (x := task.records[m].quality) is not None
                   and (x.width, x.height) == (q.width, q.height)),
                  key=lambda m: (-score[m], m))
    return need + same[:max(0, FILES_PER_TASK - len(need))]


GROUPS_PER_WORKER, MAX_GROUPS = 4, 32
"""Groups whose tasks are in flight at once: per worker process, and at most (each
carries up to ``FILES_PER_TASK`` files: a cluster of many workers does not hold
hundreds of photos)."""


def refine_groups(groups: Sequence[Group], view: CollectionView, config: ScanConfig,
                  read: Callable[[ImageRef], bytes], problems: Problems,
                  kept: frozenset[int] = frozenset(),
                  pool: CpuPool | None = None,
                  start: Callable[[list[int]], int] | None = None) -> list[Group]:
    """``groups`` with each best that is a re-save of another member replaced by that
    member (quality rule only; groups with a member the user chose to keep are left
    as they are).  Each group's tests run to the end in one task (``run_group``), many
    groups' tasks at once on ``pool``'s workers; the files are read here, those a
    task asks for, and it goes on in the next round.  A task whose worker dies leaves
    its group's best as scored, counted under ``problems``.  ``start``: the keeper
    rule's choice among a group's members, which the tests start from (the scan's own,
    which keeps the first member where the rule fails; default
    ``selection.keep_quality``)."""
    if config.keep != "quality":
        return list(groups)
    tests = {name: PixelTests(view, name, version) for name, version in (
        (RESAVE, RESAVE_TEST), (BLOCKS, BLOCKS_TEST), (NOISE, NOISE_TEST),
        (CONVERSION, CONVERSION_TEST), (BLUR, BLUR_TEST), (TILT, TILT_TEST))}
    workers = pool.workers if pool is not None else 1
    window = min(MAX_GROUPS, GROUPS_PER_WORKER * max(1, workers))
    best_of: dict[int, int] = {}
    todo = iter(k for k, g in enumerate(groups) if not kept.intersection(g.members))

    def task_of(k: int) -> GroupTask:
        g = groups[k]
        records = view.fetch(g.members)
        known = {r: a for t in tests.values() for r, a in t.remembered(records).items()}
        first = start(list(g.members)) if start is not None else \
            keep_quality(records, list(g.members), config.quality_tolerance)
        return GroupTask(k, list(g.members), first, records, known, {},
                         config.quality_tolerance)

    try:
        waiting: list[GroupTask] = []
        while True:
            while len(waiting) < window and (k := next(todo, None)) is not None:
                task = task_of(k)
                settled = run_group(task, testing=False).best  # all known: no task
                if settled is not None:
                    best_of[k] = settled
                else:
                    waiting.append(task)
            if not waiting:
                break
            batch = {t.number: t for t in waiting}
            waiting = []
            for outcome in _outcomes(list(batch.values()), pool):
                task = batch[outcome.number]
                known = dict(task.known)
                for test, copy, source, answer, error in outcome.tested:
                    known[(test, copy, source)] = answer
                    if error is not None:
                        log.warning("pixel test %s failed for %s against %s: %s", test,
                                    view[copy].ref.rel_path, view[source].ref.rel_path, error)
                        problems.add("keeper", error)
                    elif test != TILT or (task.records[copy].thumbnail
                                          and task.records[source].thumbnail):
                        tests[test].remember(task.records, copy, source, answer)
                if outcome.error is not None:
                    log.warning("keeper tests of the group of %s failed: %s",
                                view[task.best].ref.rel_path, outcome.error)
                    problems.add("keeper", outcome.error)
                elif outcome.best is not None:
                    best_of[task.number] = outcome.best
                else:
                    waiting.append(_with_files(task, known, outcome, read, problems))
    finally:
        for t in tests.values():
            t.flush()
    log.info("keeper: tests on pixels: %s",
             ", ".join(f"{t.tested} {name}" for name, t in tests.items()))
    out: list[Group] = []
    for k, g in enumerate(groups):
        best = best_of.get(k, g.best)
        if best == g.best:
            out.append(g)
            continue
        evidence = dict(g.evidence)
        evidence[g.best] = evidence.pop(best)
        members = [best, *(m for m in g.members if m != best)]
        out.append(Group(id=g.id, best=best, members=members, evidence=evidence))
    return out


def _with_files(task: GroupTask, known: dict[Request, bool], outcome: GroupOutcome,
                read: Callable[[ImageRef], bytes], problems: Problems) -> GroupTask:
    """``task`` again, with what it learnt and the files it wants (read here where it
    lacks them, the others dropped).  A file of the next test that cannot be read is
    counted under ``problems`` (its tests answer no); one read ahead is left out."""
    files: dict[int, bytes] = {}
    unreadable = set(task.unreadable)
    for m in outcome.wanted:
        if m in task.files:
            files[m] = task.files[m]
            continue
        try:
            files[m] = read(task.records[m].ref)
        except Exception as exc:  # noqa: BLE001 - the keeper stays as scored
            if m in outcome.missing:
                log.warning("cannot read %s for the keeper's tests: %s",
                            task.records[m].ref.rel_path, exc)
                problems.add("keeper", describe_exception(exc))
                unreadable.add(m)
    return dataclasses.replace(task, known=known, files=files, unreadable=frozenset(unreadable))


def _outcomes(batch: list[GroupTask], pool: CpuPool | None) -> Iterator[GroupOutcome]:
    """``run_group`` on each task, on ``pool`` where there is one."""
    if pool is None:
        yield from (run_group(task) for task in batch)
    else:
        yield from pool.map(run_group, batch, chunk=1, on_crash=lambda task, reason:
                            GroupOutcome(task.number, None, [], [], [], reason))
