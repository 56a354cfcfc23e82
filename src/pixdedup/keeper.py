"""The keeper's last look at pixels: a group's best that is another member saved again
loses to that member (``selection.refine_keeper``, ``features.provenance``).

The scores and marks of ``selection`` come from each image alone; a copy that keeps
its source's size and claims a higher quality (a JPEG q85 or WebP q85 saved from a
WebP q80 or HEIC original) looks better by every one of them.  After the groups are
grown, the best of each group is tested against its members of the same size on
their pixels (the files are read again: only those of groups whose best has such
members); the answers are remembered in the feature store, so a rerun reads files
only for pairs with a new image.  A test that fails (a file gone, unreadable, a
decoder that kills its worker) counts as "not a re-save" and is named under
``problems`` as 'keeper'.  Each group's tests come one at a time (which comes next
depends on the answer: ``selection.refine_steps``), so the tests of many groups run
side by side on the scan's worker processes, one round at a time.

The same goes for a best whose pixels carry the JPEG blocks of a same-size member
credited with less compression (``features.provenance.carries_blocks``: a tone edit of
a photo made from a JPEG, saved at a high quality): it is credited with no more than
that member, and the keeper is chosen again; a lossless best that holds a lossy
member's pixels but for a local edit (``converted_from``), a best with noise added
at full resolution (``noisier``, against most of the best-scored members of its size)
and a best blurred at full resolution (``blurrier``, the same way) are marked and the
keeper is chosen again.  Before any of these, a best turned a little against most of
the best-scored members (``selection.turned_against``) is marked 'turned': that test
compares the thumbnails, so the driver answers it itself (``_tilt``) and reads no file.

The members were verified against the old best, which is a re-save of the new one:
their evidence stays as it was (the new best's evidence goes to the old best).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator, Sequence
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
    noisier,
    resaved_from,
)
from .models import Group, ImageRef, Problems, describe_exception
from .selection import (
    BLOCKS,
    BLUR,
    CONVERSION,
    NOISE,
    RESAVE,
    TILT,
    TILT_VERSION,
    PixelRequest,
    refine_steps,
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


class RecentFiles:
    """``read`` that keeps the last few files' bytes: the best of a group is tested
    against several members in turn, by several tests, and is read (from a bucket:
    downloaded) once while its group's tests run."""

    KEEP = 3

    def __init__(self, read: Callable[[ImageRef], bytes], keep: int = KEEP) -> None:
        self.read = read
        self.keep = keep
        self._files: OrderedDict[str, bytes] = OrderedDict()

    def __call__(self, ref: ImageRef) -> bytes:
        data = self._files.pop(ref.uri, None)
        if data is None:
            data = self.read(ref)
        self._files[ref.uri] = data
        while len(self._files) > self.keep:
            self._files.popitem(last=False)
        return data


class PixelTests:
    """The answers of one test on the pixels of two files (``resaved_from``,
    ``converted_from``, ``carries_blocks``, ``noisier``, ``blurrier``; or of
    ``selection.turned_against`` on their thumbnails) on view positions, remembered
    in memory and in the store under ``version`` (``FeatureStore.provenance``)."""

    def __init__(self, view: CollectionView, version: int,
                 copy_formats: tuple[str, ...] | None = None) -> None:
        """``copy_formats``: the only formats tested as copies, and never a lossless
        file (None: any file)."""
        self.view, self.version, self.copy_formats = view, version, copy_formats
        self.known: dict[tuple[int, int], bool] = {}
        self.fresh: list[tuple[int, int, bool]] = []
        self.tested = 0

    def key(self, copy: int, source: int) -> tuple[int, int] | None:
        """The pair's content keys, or None where the answer is no without a test."""
        rec = self.view.fetch([copy, source])
        a, b = rec[copy].content_hash, rec[source].content_hash
        q = rec[copy].quality
        if not a or not b or q is None or self.copy_formats is not None and (
                q.lossless_file or rec[copy].format not in self.copy_formats):
            return None  # a lossless copy is a conversion (``selection``), not a re-save
        return content_key(a), content_key(b)

    def answer(self, copy: int, source: int) -> bool | None:
        """The answer known without reading the files (None: the files must be tested)."""
        key = self.key(copy, source)
        if key is None:
            return False
        if key not in self.known:
            stored = self.view.store.provenance(self.version, *key)
            if stored is not None:
                self.known[key] = stored
        return self.known.get(key)

    def failed(self, copy: int, source: int) -> None:
        """A test that could not run counts as no for the rest of this scan (not kept
        in the store: the next scan tries again)."""
        key = self.key(copy, source)
        if key is not None:
            self.known[key] = False

    def remember(self, copy: int, source: int, answer: bool) -> None:
        key = self.key(copy, source)
        if key is not None:
            self.tested += 1
            self.known[key] = answer
            self.fresh.append((*key, answer))

    def flush(self) -> None:
        if self.fresh:
            self.view.store.put_provenance(self.version, self.fresh)
            self.fresh = []


def run_test(item: tuple[int, str, bytes, bytes]) -> tuple[int, bool | None, str | None]:
    """One test on two files' bytes, in a worker: (item number, answer or None, the
    error where it failed)."""
    number, test, copy, source = item
    try:
        run: PixelTest = {RESAVE: resaved_from, BLOCKS: carries_blocks, NOISE: noisier,
                          CONVERSION: converted_from, BLUR: blurrier}[test]
        return number, run(copy, source), None
    except Exception as exc:  # noqa: BLE001 - the keeper stays as scored
        return number, None, describe_exception(exc)


Steps = Generator[PixelRequest, bool, tuple[int, dict[int, int]]]
Waiting = tuple[Steps, PixelRequest]
"""A group's steps and the test they wait for."""

GROUPS_PER_WORKER, MAX_GROUPS = 8, 32
"""Groups whose tests run side by side: per worker process, and at most (each round's
files are kept in memory for the next, whose tests mostly ask about the same bests: a
cluster of many workers does not hold hundreds of photos)."""


def refine_groups(groups: Sequence[Group], view: CollectionView, config: ScanConfig,
                  read: Callable[[ImageRef], bytes], problems: Problems,
                  kept: frozenset[int] = frozenset(),
                  pool: CpuPool | None = None) -> list[Group]:
    """``groups`` with each best that is a re-save of another member replaced by that
    member (quality rule only; groups with a member the user chose to keep are left
    as they are).  The tests of many groups run at once on ``pool``'s workers (each
    group's in turn: which test comes next depends on the last answer; a decoder
    crash fails that test only); the files are read here."""
    if config.keep != "quality":
        return list(groups)
    tests = {RESAVE: PixelTests(view, RESAVE_TEST, COPY_FORMATS),
             BLOCKS: PixelTests(view, BLOCKS_TEST), NOISE: PixelTests(view, NOISE_TEST),
             CONVERSION: PixelTests(view, CONVERSION_TEST), BLUR: PixelTests(view, BLUR_TEST),
             TILT: PixelTests(view, TILT_TEST)}
    workers = pool.workers if pool is not None else 1
    window = min(MAX_GROUPS, GROUPS_PER_WORKER * max(1, workers))
    files = RecentFiles(read, keep=2 * window + 1)  # a round's files: the bests come again
    best_of: dict[int, int] = {}
    todo = [k for k, g in enumerate(groups) if not kept.intersection(g.members)]

    def step(k: int, steps: Steps, answer: bool | None, waiting: dict[int, Waiting]) -> None:
        """Run group ``k``'s steps on the answers known without files, up to the next
        test (put in ``waiting``) or the keeper."""
        try:
            request = next(steps) if answer is None else steps.send(answer)
            while True:
                test, copy, source = request
                known = tests[test].answer(copy, source)
                if known is None and test == TILT:
                    known = _tilt(view, tests[TILT], problems, copy, source)
                if known is None:
                    break
                request = steps.send(known)
            waiting[k] = (steps, request)
        except StopIteration as done:
            best_of[k] = done.value[0]

    try:
        waiting: dict[int, Waiting] = {}
        queue = iter(todo)
        while True:
            while len(waiting) < window:  # as groups finish, others start: full rounds
                k = next(queue, None)
                if k is None:
                    break
                g = groups[k]
                step(k, refine_steps(view.fetch(g.members), g.members, g.best,
                                     config.quality_tolerance), None, waiting)
            if not waiting:
                break
            batch = list(waiting.items())
            waiting = {}
            answers = {n: (a, e) for n, a, e in _run(batch, view, files, pool)}
            for n, (k, (steps, (test, copy, source))) in enumerate(batch):
                answer, error = answers[n]
                if answer is None:
                    log.warning("pixel test %s failed for %s against %s: %s", test,
                                view[copy].ref.rel_path, view[source].ref.rel_path, error)
                    problems.add("keeper", error or "failed")
                    tests[test].failed(copy, source)
                    answer = False
                else:
                    tests[test].remember(copy, source, answer)
                step(k, steps, answer, waiting)
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


def _tilt(view: CollectionView, tests: PixelTests, problems: Problems, copy: int,
          source: int) -> bool:
    """``selection.turned_against`` on the two thumbnails, here (no file is read),
    remembered where both have one; a failure counts as no, under ``problems``."""
    try:
        pair = view.fetch([copy, source])
        answer = turned_against(pair, copy, source)
    except Exception as exc:  # noqa: BLE001 - the keeper stays as scored
        log.warning("tilt test failed for %s against %s", view[copy].ref.rel_path,
                    view[source].ref.rel_path, exc_info=True)
        problems.add("keeper", describe_exception(exc))
        tests.failed(copy, source)
        return False
    if pair[copy].thumbnail and pair[source].thumbnail:
        tests.remember(copy, source, answer)
    return answer


def _run(batch: list[tuple[int, Waiting]], view: CollectionView,
         files: RecentFiles, pool: CpuPool | None
         ) -> Iterator[tuple[int, bool | None, str | None]]:
    """The tests of ``batch`` (one per group), on ``pool`` where there is one; a file
    that cannot be read fails its test."""
    failed: list[tuple[int, bool | None, str | None]] = []

    def payloads() -> Iterator[tuple[int, str, bytes, bytes]]:
        for n, (_, (_, (test, copy, source))) in enumerate(batch):
            rec = view.fetch([copy, source])
            try:
                yield n, test, files(rec[copy].ref), files(rec[source].ref)
            except Exception as exc:  # noqa: BLE001 - the keeper stays as scored
                failed.append((n, None, describe_exception(exc)))

    if pool is None:
        yield from (run_test(item) for item in payloads())
    else:
        yield from pool.map(run_test, payloads(), chunk=1,
                            on_crash=lambda item, reason: (item[0], None, reason))
    yield from failed
