"""The keeper's last look at pixels: a group's best that is another member saved again
loses to that member (``selection.refine_keeper``, ``features.provenance``).

The scores and marks of ``selection`` come from each image alone; a copy that keeps
its source's size and claims a higher quality (a JPEG q85 or WebP q85 saved from a
WebP q80 or HEIC original) looks better by every one of them.  After the groups are
grown, the best of each group is tested against its members of the same size on
their pixels (the files are read again: only those of groups whose best has such
members); the answers are remembered in the feature store, so a rerun reads files
only for pairs with a new image.  A test that fails (a file gone, unreadable) counts
as "not a re-save" and is named under ``problems`` as 'keeper'.

The same goes for a best whose pixels carry the JPEG blocks of a same-size member
credited with less compression (``features.provenance.carries_blocks``: a tone edit of
a photo made from a JPEG, saved at a high quality): it is credited with no more than
that member, and the keeper is chosen again.

The members were verified against the old best, which is a re-save of the new one:
their evidence stays as it was (the new best's evidence goes to the old best).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence

from .config import ScanConfig
from .features.provenance import (
    BLOCKS_VERSION,
    COPY_FORMATS,
    PROVENANCE_VERSION,
    carries_blocks,
    resaved_from,
)
from .models import Group, ImageRef, Problems, describe_exception
from .selection import refine_keeper
from .store import content_key
from .view import CollectionView

log = logging.getLogger(__name__)

RESAVE_TEST = PROVENANCE_VERSION
BLOCKS_TEST = 1000 + BLOCKS_VERSION
"""The store keeps each test's answers under its own version numbers (``FeatureStore.
provenance``: the thousands are the test, the rest its version)."""


PixelTest = Callable[[bytes, bytes], bool]


class RecentFiles:
    """``read`` that keeps the last few files' bytes: the best of a group is tested
    against several members in turn, by both tests, and is read (from a bucket:
    downloaded) once."""

    KEEP = 3

    def __init__(self, read: Callable[[ImageRef], bytes]) -> None:
        self.read = read
        self._files: OrderedDict[str, bytes] = OrderedDict()

    def __call__(self, ref: ImageRef) -> bytes:
        data = self._files.pop(ref.uri, None)
        if data is None:
            data = self.read(ref)
        self._files[ref.uri] = data
        while len(self._files) > self.KEEP:
            self._files.popitem(last=False)
        return data


class PixelTests:
    """A test on the pixels of two files (``resaved_from``, ``carries_blocks``) on view
    positions, remembered in memory and in the store under ``version``
    (``FeatureStore.provenance``)."""

    def __init__(self, view: CollectionView, read: Callable[[ImageRef], bytes],
                 problems: Problems, test: PixelTest, version: int,
                 copy_formats: tuple[str, ...] | None = None) -> None:
        """``copy_formats``: the only formats tested as copies, and never a lossless
        file (None: any file)."""
        self.view, self.read, self.problems = view, read, problems
        self.test, self.version, self.copy_formats = test, version, copy_formats
        self.known: dict[tuple[int, int], bool] = {}
        self.fresh: list[tuple[int, int, bool]] = []
        self.tested = 0

    def __call__(self, copy: int, source: int) -> bool:
        rec = self.view.fetch([copy, source])
        a, b = rec[copy].content_hash, rec[source].content_hash
        q = rec[copy].quality
        if not a or not b or q is None or self.copy_formats is not None and (
                q.lossless_file or rec[copy].format not in self.copy_formats):
            return False  # a lossless copy is a conversion (``selection``), not a re-save
        key = (content_key(a), content_key(b))
        if key not in self.known:
            stored = self.view.store.provenance(self.version, *key)
            if stored is not None:
                self.known[key] = stored
        if key not in self.known:
            try:
                answer = self.test(self.read(rec[copy].ref), self.read(rec[source].ref))
            except Exception as exc:  # noqa: BLE001 - the keeper stays as scored
                log.warning("pixel test failed for %s", rec[copy].ref.rel_path, exc_info=True)
                self.problems.add("keeper", describe_exception(exc))
                return False
            self.tested += 1
            self.known[key] = answer
            self.fresh.append((*key, answer))
        return self.known[key]

    def flush(self) -> None:
        if self.fresh:
            self.view.store.put_provenance(self.version, self.fresh)
            self.fresh = []


def refine_groups(groups: Sequence[Group], view: CollectionView, config: ScanConfig,
                  read: Callable[[ImageRef], bytes], problems: Problems,
                  kept: frozenset[int] = frozenset()) -> list[Group]:
    """``groups`` with each best that is a re-save of another member replaced by that
    member (quality rule only; groups with a member the user chose to keep are left
    as they are)."""
    if config.keep != "quality":
        return list(groups)
    files = RecentFiles(read)  # both tests ask about the same best against its members
    tests = PixelTests(view, files, problems, resaved_from, RESAVE_TEST, COPY_FORMATS)
    blocks = PixelTests(view, files, problems, carries_blocks, BLOCKS_TEST)
    out: list[Group] = []
    try:
        for g in groups:
            if kept.intersection(g.members):
                out.append(g)
                continue
            records = view.fetch(g.members)
            best, _ = refine_keeper(records, g.members, g.best, tests, config.quality_tolerance,
                                    blocks)
            if best == g.best:
                out.append(g)
                continue
            evidence = dict(g.evidence)
            evidence[g.best] = evidence.pop(best)
            members = [best, *(m for m in g.members if m != best)]
            out.append(Group(id=g.id, best=best, members=members, evidence=evidence))
    finally:
        tests.flush()
        blocks.flush()
    log.info("keeper: %d re-save tests and %d block tests on pixels", tests.tested,
             blocks.tested)
    return out
