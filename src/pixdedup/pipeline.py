"""Wires the stages; the one place that knows their order.

    list -> extract -> candidates -> verify -> group -> select -> report / act
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable, Sequence

from .actions import materialize, prepare_output
from .candidates import Signatures, exact_buckets, near_candidates
from .config import ScanConfig
from .engines.local import map_unordered
from .extract import ExtractOptions, extract_file
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
from .reports import result_row, write_csv, write_json
from .selection import choose_best
from .sources.local import ListingProblem, check_root, list_local
from .verify import PAIRS_PER_TASK, Verifier, VerifyOptions, make_tasks, run_task

log = logging.getLogger(__name__)

#: progress(stage, done, total or None)
Progress = Callable[[str, int, int | None], None]


def default_output(input_dir: str) -> str:
    root = os.path.abspath(input_dir).rstrip(os.sep)
    return root + "_deduplicated"


def scan(input_dir: str, config: ScanConfig | None = None,
         progress: Progress | None = None) -> ScanResult:
    """Scan a local folder, group duplicates, choose the best of each group, write the
    reports and (unless ``dry_run``) the output folder."""
    config = (config or ScanConfig()).validate()
    timings: dict[str, float] = {}
    root = check_root(input_dir)
    out_dir = os.path.abspath(config.out) if config.out else default_output(root)
    prepare_output(out_dir, root)
    t0 = time.perf_counter()

    listed = list(list_local(root, exclude=(out_dir,)))
    refs = [x for x in listed if isinstance(x, ImageRef)]
    problems = [x for x in listed if isinstance(x, ListingProblem)]
    timings["list"] = time.perf_counter() - t0

    t = time.perf_counter()
    records = extract_all(refs, config, progress)
    for p in problems:
        ref = ImageRef(uri=p.uri, rel_path=p.rel_path, size=p.size, mtime=0.0)
        records.append(ImageRecord(ref=ref, status=RecordStatus.SKIPPED if p.skipped
                                   else RecordStatus.ERROR, error=p.reason))
    records.sort(key=lambda r: r.ref.rel_path)
    timings["extract"] = time.perf_counter() - t

    groups = find_groups(records, config, timings, progress)
    results = build_results(records, groups)

    t = time.perf_counter()
    if not config.dry_run:
        results = materialize(results, out_dir, config.link)
    timings["output"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    summary = summarize(results, groups)
    report_paths = write_reports(out_dir, results, groups, summary, config, timings)
    return ScanResult(results=results, groups=groups, records=records, summary=summary,
                      timings=timings, output_dir=out_dir, report_paths=report_paths)


def extract_all(refs: Sequence[ImageRef], config: ScanConfig,
                progress: Progress | None = None) -> list[ImageRecord]:
    options = ExtractOptions(working_size=config.working_size,
                             thumbnail_size=config.thumbnail_size,
                             max_pixels=int(config.max_megapixels * 1e6),
                             hash_kinds=config.hash_kinds,
                             window_hashes=config.mode == "near")
    fn = functools.partial(extract_file, options=options)
    records: list[ImageRecord] = []
    for rec in map_unordered(fn, refs, config.workers):
        records.append(rec)
        if progress:
            progress("extract", len(records), len(refs))
    return records


def find_groups(records: list[ImageRecord], config: ScanConfig, timings: dict[str, float],
                progress: Progress | None = None) -> list[Group]:
    t = time.perf_counter()
    verifier = Verifier(records, VerifyOptions(
        min_color_correlation=config.min_color_correlation, min_similarity=config.min_similarity,
        max_changed_fraction=config.max_changed_fraction))
    edges: list[Edge] = []
    exact_ev = Evidence(stage="exact", hash_distance=0, color_correlation=1.0, similarity=1.0)
    for bucket in exact_buckets(records):
        edges.extend(Edge(bucket[0], other, exact_ev) for other in bucket[1:])
    pairs: list[tuple[int, int]] = []
    if config.mode == "near":
        found = near_candidates(Signatures.from_records(records, config.hash_kinds),
                                config.max_hamming_distance, config.max_window_distance)
        # byte-identical pairs are already joined by their exact bucket
        pairs = [(i, j) for i, j in found.tolist()
                 if records[i].content_hash != records[j].content_hash]
    timings["candidates"] = time.perf_counter() - t
    t = time.perf_counter()
    done = 0
    for chunk in map_unordered(run_task, make_tasks(pairs, records, verifier.options),
                               config.workers if len(pairs) > PAIRS_PER_TASK else 1, chunk=1):
        for i, j, ok, ev in chunk:
            if ok:
                edges.append(Edge(i, j, ev))
        done += len(chunk)
        if progress:
            progress("verify", done, len(pairs))
    edges.sort(key=lambda e: (e.a, e.b))  # workers finish in any order
    timings["verify"] = time.perf_counter() - t
    t = time.perf_counter()

    def best_of(members: list[int]) -> int:
        return choose_best(records, members, config.keep, config.quality_tolerance)

    def check(a: int, b: int) -> tuple[bool, Evidence]:
        if records[a].content_hash == records[b].content_hash:
            return True, exact_ev
        if config.mode == "exact":
            return False, Evidence(stage="exact")
        return verifier.verify(a, b)

    groups = build_groups(edges, best_of, check)
    timings["group"] = time.perf_counter() - t
    log.info("verify stats: %s", verifier.stats)
    return groups


def build_results(records: Sequence[ImageRecord], groups: Sequence[Group]) -> list[ImageResult]:
    member_of = {m: grp for grp in groups for m in grp.members}
    results: list[ImageResult] = []
    for i, rec in enumerate(records):
        path = rec.ref.rel_path
        if rec.status is RecordStatus.ERROR:
            results.append(ImageResult(path, ImageStatus.ERROR, None, 0, None, None, None, rec))
            continue
        if rec.status is RecordStatus.SKIPPED:
            results.append(ImageResult(path, ImageStatus.SKIPPED, None, 0, None, None, None, rec))
            continue
        g = member_of.get(i)
        if g is None:
            results.append(ImageResult(path, ImageStatus.UNIQUE, None, 1, rec.quality_score,
                                       None, None, rec))
            continue
        best_path = records[g.best].ref.rel_path
        if i == g.best:
            results.append(ImageResult(path, ImageStatus.BEST, g.id, g.size, rec.quality_score,
                                       best_path, None, rec))
        else:
            results.append(ImageResult(path, ImageStatus.DUPLICATE, g.id, g.size,
                                       rec.quality_score, best_path, g.evidence.get(i), rec))
    return results


def summarize(results: Sequence[ImageResult], groups: Sequence[Group]) -> ScanSummary:
    s = ScanSummary(images=len(results), groups=len(groups))
    for r in results:
        if r.status is ImageStatus.ERROR:
            s.errors += 1
        elif r.status is ImageStatus.SKIPPED:
            s.skipped += 1
        else:
            s.ok += 1
            if r.status is ImageStatus.DUPLICATE:
                s.duplicates += 1
                s.bytes_freeable += r.record.ref.size
            elif r.status is ImageStatus.UNIQUE:
                s.unique += 1
    return s


def write_reports(out_dir: str, results: Sequence[ImageResult], groups: Sequence[Group],
                  summary: ScanSummary, config: ScanConfig,
                  timings: dict[str, float]) -> dict[str, str]:
    avg: dict[str, float | None] = {}
    group_docs = []
    for g in groups:
        ccs = [ev.color_correlation for ev in g.evidence.values() if ev.color_correlation is not None]
        paths = [results[m].path for m in g.members]  # results follow record order
        best_path = paths[0]
        avg[best_path] = sum(ccs) / len(ccs) if ccs else None
        for m, p in zip(g.members[1:], paths[1:], strict=True):
            ev = g.evidence.get(m)
            avg[p] = ev.color_correlation if ev else None
        group_docs.append({"id": g.id, "best": best_path, "members": paths,
                           "evidence": {paths[k]: dataclasses.asdict(g.evidence[m])
                                        for k, m in enumerate(g.members) if m in g.evidence}})
    rows = [result_row(r, avg.get(r.path)) for r in results]
    csv_path = os.path.join(out_dir, "image_report.csv")
    json_path = os.path.join(out_dir, "report.json")
    write_csv(csv_path, rows)
    cfg = dataclasses.asdict(config)
    write_json(json_path, rows, summary, cfg, timings, group_docs)
    return {"csv": csv_path, "json": json_path}
