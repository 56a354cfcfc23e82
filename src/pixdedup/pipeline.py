"""Wires the stages; the one place that knows their order.

    list -> extract -> store -> candidates -> verify -> group -> select -> report / act

Extraction streams into the feature store (bounded in-flight work, one transaction
per batch), so memory does not grow with the collection and a killed run resumes.
The later stages read compact arrays and, on demand, single records from the store.
Images are addressed by their position in (relative path, URI) order, so the groups
and their ids do not depend on the order in which a resumed run stored the rows.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .actions import check_output, clear_output, place, safe_join
from .candidates import Signatures, near_candidates
from .config import ScanConfig
from .engines.local import map_unordered
from .extract import FEATURES_VERSION, ExtractOptions, extract_file
from .grouping import build_groups
from .models import (
    Edge,
    Evidence,
    Group,
    ImageRecord,
    ImageRef,
    ImageResult,
    ImageStatus,
    RecordStatus,
    ScanResult,
    ScanSummary,
)
from .reports import ReportWriter, result_row
from .selection import choose_best
from .sources.local import ListingProblem, check_root, list_local
from .store import STORE_NAME, FeatureStore, ReportRow
from .verify import PAIRS_PER_TASK, Verifier, VerifyOptions, make_tasks, run_task

log = logging.getLogger(__name__)

#: progress(stage, done, total or None)
Progress = Callable[[str, int, int | None], None]

STORE_BATCH = 64
STORE_INTERVAL = 0.5
"""A transaction every STORE_BATCH records or STORE_INTERVAL seconds, whichever comes
first: the most work a kill can lose."""
LOOKUP_BATCH = 256
EXACT_EVIDENCE = Evidence(stage="exact", hash_distance=0, color_correlation=1.0, similarity=1.0)


def default_output(input_dir: str) -> str:
    root = os.path.abspath(input_dir).rstrip(os.sep)
    return root + "_deduplicated"


def extract_options(config: ScanConfig) -> ExtractOptions:
    return ExtractOptions(working_size=config.working_size, thumbnail_size=config.thumbnail_size,
                          max_pixels=int(config.max_megapixels * 1e6), hash_kinds=config.hash_kinds,
                          window_hashes=config.mode == "near")


def extractor_key(options: ExtractOptions) -> str:
    """Names the extractor and every parameter that changes its output (the store key)."""
    return (f"pixdedup-features/{FEATURES_VERSION} size={options.working_size} "
            f"thumb={options.thumbnail_size}q{options.thumbnail_quality} "
            f"hashes={','.join(options.hash_kinds)} windows={int(options.window_hashes)} "
            f"max_pixels={options.max_pixels}")


def store_path(config: ScanConfig, out_dir: str) -> str:
    return os.path.abspath(config.db) if config.db else os.path.join(out_dir, STORE_NAME)


def scan(input_dir: str, config: ScanConfig | None = None, progress: Progress | None = None,
         collect: bool = True) -> ScanResult:
    """Scan a local folder, group duplicates, choose the best of each group, write the
    reports and (unless ``dry_run``) the output folder.  ``collect=False`` keeps the
    per-image results out of memory (they are in the reports)."""
    config = (config or ScanConfig()).validate()
    timings: dict[str, float] = {}
    root = check_root(input_dir)
    out_dir = os.path.abspath(config.out) if config.out else default_output(root)
    check_output(out_dir, root)
    t0 = time.perf_counter()
    with FeatureStore(store_path(config, out_dir), reset=config.reset) as store:
        clear_output(out_dir)  # only once this run holds the store: a refused run removes nothing
        run = store.start_run(root, config.mode)
        summary = ScanSummary()
        options = extract_options(config)
        ingest(store, list_local(root, exclude=(out_dir,)), options, config.workers, run,
               summary, progress)
        summary.removed = store.forget_unseen(run)
        timings["extract"] = time.perf_counter() - t0
        view = CollectionView(store)
        groups = find_groups(view, config, timings, progress)
        results, report_paths = write_outputs(store, view, groups, out_dir, config, summary,
                                              timings, collect, t0)
        store.set_meta("groups", str(summary.groups))
        store.set_meta("duplicates", str(summary.duplicates))
        store.set_meta("extractor", extractor_key(options))
        store.set_meta("config", _config_json(config))
        store.finish_run(run)
    return ScanResult(results=results, groups=groups, summary=summary,
                      timings=timings, output_dir=out_dir, report_paths=report_paths)


def _config_json(config: ScanConfig) -> str:
    import json

    return json.dumps(dataclasses.asdict(config), default=str)


def ingest(store: FeatureStore, listing: Iterable[ImageRef | ListingProblem],
           options: ExtractOptions, workers: int, run: int, summary: ScanSummary,
           progress: Progress | None = None) -> None:
    """Stream the listing into the store: rows that are current are kept (no read, no
    decode); the others are extracted on the pool and committed in batches."""
    extractor = extractor_key(options)
    pending_problems: list[ImageRecord] = []
    listed = 0

    def todo() -> Iterator[ImageRef]:
        nonlocal listed
        batch: list[ImageRef] = []

        def flush() -> Iterator[ImageRef]:
            fresh = store.fresh(batch, extractor, run)
            summary.reused += len(fresh)
            yield from (r for r in batch if r.uri not in fresh)
            batch.clear()

        for item in listing:
            listed += 1
            if isinstance(item, ListingProblem):
                ref = ImageRef(uri=item.uri, rel_path=item.rel_path, size=item.size, mtime=0.0)
                pending_problems.append(ImageRecord(
                    ref=ref, status=RecordStatus.SKIPPED if item.skipped else RecordStatus.ERROR,
                    error=item.reason))
                continue
            batch.append(item)
            if len(batch) >= LOOKUP_BATCH:
                yield from flush()
        if batch:
            yield from flush()

    fn = functools.partial(extract_file, options=options)
    buf: list[ImageRecord] = []
    done = 0
    last_commit = time.monotonic()
    for rec in map_unordered(fn, todo(), workers):
        buf.append(rec)
        done += 1
        summary.extracted += 1
        if len(buf) >= STORE_BATCH or time.monotonic() - last_commit >= STORE_INTERVAL:
            store.put(buf + pending_problems, extractor, run)
            buf.clear()
            pending_problems.clear()
            last_commit = time.monotonic()
        if progress:
            progress("extract", done + summary.reused, None)
    store.put(buf + pending_problems, extractor, run)
    if progress:
        progress("extract", listed, listed)


class CollectionView:
    """The store's OK images in (relative path, URI) order: position -> row id, the
    compact signatures, and an LRU cache of full records fetched on demand."""

    def __init__(self, store: FeatureStore, cache_size: int = 2048) -> None:
        self.store = store
        self.row_ids = store.ok_row_ids()
        self._sorter = np.argsort(self.row_ids)
        self._cache: OrderedDict[int, ImageRecord] = OrderedDict()
        self.cache_size = cache_size

    def __len__(self) -> int:
        return len(self.row_ids)

    def paths(self, positions: Iterable[int]) -> dict[int, str]:
        by_row = self.store.rel_paths(int(self.row_ids[p]) for p in positions)
        return {int(p): by_row[int(self.row_ids[p])] for p in positions}

    def positions(self, row_ids: np.ndarray) -> np.ndarray:
        at = np.searchsorted(self.row_ids[self._sorter], row_ids)
        return self._sorter[at]

    def signatures(self, hash_kinds: Sequence[str], windows: bool) -> Signatures:
        sig = self.store.signatures(hash_kinds, windows)
        order = self.positions(sig.ids)
        return dataclasses.replace(sig, ids=order)

    def exact_buckets(self) -> list[list[int]]:
        return [sorted(self.positions(np.asarray(b)).tolist()) for b in self.store.exact_buckets()]

    def fetch(self, positions: Iterable[int]) -> dict[int, ImageRecord]:
        out: dict[int, ImageRecord] = {}
        missing: list[int] = []
        for p in positions:
            rec = self._cache.get(p)
            if rec is None:
                missing.append(p)
            else:
                self._cache.move_to_end(p)
                out[p] = rec
        if missing:
            got = self.store.records([int(self.row_ids[p]) for p in missing])
            for p in missing:
                rec = got[int(self.row_ids[p])]
                out[p] = rec
                self._cache[p] = rec
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return out

    def __getitem__(self, position: int) -> ImageRecord:
        return self.fetch([position])[position]


def find_groups(view: CollectionView, config: ScanConfig, timings: dict[str, float],
                progress: Progress | None = None) -> list[Group]:
    """Groups over positions in ``view``."""
    t = time.perf_counter()
    options = VerifyOptions(min_color_correlation=config.min_color_correlation,
                            min_similarity=config.min_similarity,
                            max_changed_fraction=config.max_changed_fraction)
    edges: list[Edge] = []
    exact_of: dict[int, int] = {}
    for bucket in view.exact_buckets():
        edges.extend(Edge(bucket[0], other, EXACT_EVIDENCE) for other in bucket[1:])
        exact_of.update((m, bucket[0]) for m in bucket)
    pairs: list[tuple[int, int]] = []
    if config.mode == "near":
        sig = view.signatures(config.hash_kinds, windows=True)
        found = near_candidates(sig, config.max_hamming_distance, config.max_window_distance)
        del sig
        # byte-identical pairs are already joined by their exact bucket
        pairs = [(i, j) for i, j in found.tolist()
                 if i not in exact_of or exact_of[i] != exact_of.get(j)]
    timings["candidates"] = time.perf_counter() - t
    t = time.perf_counter()
    done = 0
    workers = config.workers if len(pairs) > PAIRS_PER_TASK else 1
    for chunk in map_unordered(run_task, make_tasks(pairs, view.fetch, options), workers, chunk=1):
        for i, j, ok, ev in chunk:
            if ok:
                edges.append(Edge(i, j, ev))
        done += len(chunk)
        if progress:
            progress("verify", done, len(pairs))
    edges.sort(key=lambda e: (e.a, e.b))  # workers finish in any order
    timings["verify"] = time.perf_counter() - t
    t = time.perf_counter()
    verifier = Verifier(view, options)

    def best_of(members: list[int]) -> int:
        return choose_best(view.fetch(members), members, config.keep, config.quality_tolerance)

    def check(a: int, b: int) -> tuple[bool, Evidence]:
        if a in exact_of and exact_of[a] == exact_of.get(b):
            return True, EXACT_EVIDENCE
        if config.mode == "exact":
            return False, Evidence(stage="exact")
        return verifier.verify(a, b)

    groups = build_groups(edges, best_of, check)
    timings["group"] = time.perf_counter() - t
    return groups


@dataclass(frozen=True, slots=True)
class _Membership:
    group: Group
    best_path: str
    avg_color: float | None


def write_outputs(store: FeatureStore, view: CollectionView, groups: Sequence[Group],
                  out_dir: str, config: ScanConfig, summary: ScanSummary,
                  timings: dict[str, float], collect: bool, t_start: float
                  ) -> tuple[list[ImageResult], dict[str, str]]:
    """Stream every stored image, in path order, into the reports and the output folder."""
    t_output = time.perf_counter()
    member_of: dict[int, tuple[_Membership, int]] = {}  # row id -> (group, position)
    group_docs = []
    paths = view.paths([p for g in groups for p in g.members])
    for g in groups:
        ccs = [ev.color_correlation for ev in g.evidence.values() if ev.color_correlation is not None]
        best_path = paths[g.best]
        m = _Membership(g, best_path, sum(ccs) / len(ccs) if ccs else None)
        for p in g.members:
            member_of[int(view.row_ids[p])] = (m, p)
        group_docs.append({"id": g.id, "best": best_path,
                           "members": [paths[p] for p in g.members],
                           "evidence": {paths[p]: dataclasses.asdict(ev)
                                        for p, ev in g.evidence.items()}})
    summary.groups = len(groups)
    writer = ReportWriter(out_dir)
    results: list[ImageResult] = []
    for row in store.report_rows():
        res = _result(row, *member_of.get(row.id, (None, None)))
        if not config.dry_run and res.status in _FOLDER:
            dest = safe_join(os.path.join(out_dir, _FOLDER[res.status]), res.path)
            place(row.uri, dest, config.link)
            res = dataclasses.replace(res, output_path=os.path.relpath(dest, out_dir).replace(os.sep, "/"))
        _count(summary, res)
        writer.add(result_row(res))
        if collect:
            results.append(res)
    timings["output"] = time.perf_counter() - t_output
    timings["total"] = time.perf_counter() - t_start
    report_paths = writer.close(summary, dataclasses.asdict(config), timings, group_docs)
    return results, report_paths


_FOLDER = {ImageStatus.BEST: "best", ImageStatus.UNIQUE: "best", ImageStatus.DUPLICATE: "duplicates"}


def _result(row: ReportRow, member: _Membership | None, position: int | None) -> ImageResult:
    common: dict[str, Any] = dict(
        uri=row.uri, size=row.size, width=row.width, height=row.height, format=row.format,
        content_hash=row.content_hash, dominant_colors=row.dominant_colors, error=row.error)
    if row.status is RecordStatus.ERROR:
        return ImageResult(row.rel_path, ImageStatus.ERROR, None, 0, None, None, None, **common)
    if row.status is RecordStatus.SKIPPED:
        return ImageResult(row.rel_path, ImageStatus.SKIPPED, None, 0, None, None, None, **common)
    if member is None or position is None:
        return ImageResult(row.rel_path, ImageStatus.UNIQUE, None, 1, row.quality_score, None, None,
                           **common)
    g = member.group
    if position == g.best:
        return ImageResult(row.rel_path, ImageStatus.BEST, g.id, g.size, row.quality_score,
                           member.best_path, None, avg_color_correlation=member.avg_color, **common)
    ev = g.evidence.get(position)
    return ImageResult(row.rel_path, ImageStatus.DUPLICATE, g.id, g.size, row.quality_score,
                       member.best_path, ev,
                       avg_color_correlation=ev.color_correlation if ev else None, **common)


def _count(s: ScanSummary, r: ImageResult) -> None:
    s.images += 1
    if r.status is ImageStatus.ERROR:
        s.errors += 1
    elif r.status is ImageStatus.SKIPPED:
        s.skipped += 1
    else:
        s.ok += 1
        if r.status is ImageStatus.DUPLICATE:
            s.duplicates += 1
            s.bytes_freeable += r.size
        elif r.status is ImageStatus.UNIQUE:
            s.unique += 1
