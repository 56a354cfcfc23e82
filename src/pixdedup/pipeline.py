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
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .actions import STAGING, LocalOutput, RemoteOutput
from .candidates import Signatures, embedding_candidates, near_candidates
from .config import ScanConfig
from .decisions import Decisions
from .engines.local import CRASHED, WorkerPool, map_threads, map_unordered
from .errors import ConfigError, OutputError
from .extract import FEATURES_VERSION, ExtractOptions, error_record, extract_bytes, extract_file
from .features.embeddings import EmbeddingRunner, load_model
from .features.quality import SCORE_VERSION, quality_score
from .grouping import Verdict, component_groups, grow_groups
from .models import (
    Edge,
    Evidence,
    Group,
    ImageRecord,
    ImageRef,
    ImageResult,
    ImageStatus,
    Problems,
    RecordStatus,
    ScanResult,
    ScanSummary,
    describe_exception,
)
from .reports import ReportWriter, result_row
from .reports.html import MAX_ERRORS_LISTED, write_html
from .selection import choose_best, rank_key
from .sources.cloud import (
    CloudOptions,
    ObjectStore,
    describe,
    is_remote,
    parse_url,
    require_same_store,
)
from .sources.local import ListingProblem, check_root, list_local
from .store import STORE_NAME, FeatureStore, ReportRow, content_key
from .verify import (
    PAIRS_PER_TASK,
    VERIFY_VERSION,
    Decided,
    Verifier,
    VerifyOptions,
    crashed_task,
    make_tasks,
    run_task,
    verify_pairs,
)

log = logging.getLogger(__name__)

#: progress(stage, done, total or None)
Progress = Callable[[str, int, int | None], None]

STORE_BATCH = 64
STORE_INTERVAL = 0.5
"""A transaction every STORE_BATCH records or STORE_INTERVAL seconds, whichever comes
first: the most work a kill can lose."""
LOOKUP_BATCH = 256
RETRY_EXTRACTOR = "retry"
"""The extractor key of a file whose worker process died: never current, so the next
run reads it again (the crash may have been the out-of-memory killer)."""
EXACT_EVIDENCE = Evidence(stage="exact", hash_distance=0, color_correlation=1.0, similarity=1.0)
ACCEPTED_EVIDENCE = Evidence(stage="accepted")
"""A pair the user accepted as duplicates in the review."""


def default_output(input_dir: str) -> str:
    if is_remote(input_dir):
        url = parse_url(input_dir)
        base = url.prefix.rstrip("/") or "pixdedup"
        return f"{url.protocol}://{url.bucket}/{base}_deduplicated/"
    root = os.path.abspath(input_dir).rstrip(os.sep)
    return root + "_deduplicated"


def default_store_dir(out: str) -> str:
    """Where the feature store of a cloud output lives: a local cache folder."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    url = parse_url(out)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{url.protocol}-{url.bucket}-{url.prefix}").strip("-")
    return os.path.join(cache, "pixdedup", name)


def extract_options(config: ScanConfig) -> ExtractOptions:
    return ExtractOptions(working_size=config.working_size, thumbnail_size=config.thumbnail_size,
                          max_pixels=int(config.max_megapixels * 1e6), hash_kinds=config.hash_kinds,
                          window_hashes=config.mode in ("near", "similar"))


def extractor_key(options: ExtractOptions) -> str:
    """Names the extractor and every parameter that changes its output (the store key)."""
    return (f"pixdedup-features/{FEATURES_VERSION} size={options.working_size} "
            f"thumb={options.thumbnail_size}q{options.thumbnail_quality} "
            f"hashes={','.join(options.hash_kinds)} windows={int(options.window_hashes)} "
            f"max_pixels={options.max_pixels}")


def store_path(config: ScanConfig, out: str) -> str:
    if config.db:
        return os.path.abspath(config.db)
    if is_remote(out):
        folder = default_store_dir(out)
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, STORE_NAME)
    return os.path.join(out, STORE_NAME)


@dataclass
class _Plan:
    """Where the images come from and where the results go."""

    listing: Iterable[ImageRef | ListingProblem]
    root: str
    output: LocalOutput | RemoteOutput
    source: ObjectStore | None
    out: str
    staging: str | None = None
    """Local output of a cloud input: downloaded bytes wait here for their folder."""


def _plan(input_dir: str, config: ScanConfig, tmp: str) -> _Plan:
    out = config.out or default_output(input_dir)
    remote_in, remote_out = is_remote(input_dir), is_remote(out)
    if config.link != "copy" and (remote_in or remote_out):
        raise ConfigError("--link hard|sym needs a local input and a local output")
    if not remote_in:
        root = check_root(input_dir)
        if remote_out:
            url = parse_url(out)
            store = ObjectStore(dataclasses.replace(url, prefix=""), cloud_options(config))
            return _Plan(list_local(root), root, RemoteOutput(store, url.prefix, tmp), None, str(url))
        out = os.path.abspath(out)
        return _Plan(list_local(root, exclude=(out,)), root, LocalOutput(out, root), None, out)
    source = ObjectStore(parse_url(input_dir), cloud_options(config))
    if remote_out:
        url = parse_url(out)
        require_same_store(source.url, url)
        if source.url.prefix.startswith(url.prefix):
            raise OutputError(f"the input {source.url} is inside the output {url}")
        return _Plan(source.list_images(exclude_prefix=url.prefix), str(source.url),
                     RemoteOutput(source, url.prefix, tmp), source, str(url))
    out = os.path.abspath(out)
    staging = None if config.dry_run else os.path.join(out, STAGING)
    output = LocalOutput(out, None, functools.partial(_fetch, source, staging))
    return _Plan(source.list_images(), str(source.url), output, source, out, staging)


def cloud_options(config: ScanConfig) -> CloudOptions:
    return CloudOptions(endpoint_url=config.endpoint_url, max_connections=config.max_connections,
                        request_timeout=config.request_timeout,
                        max_requests_per_second=config.max_requests_per_second,
                        retries=config.retries)


def _fetch(source: ObjectStore, staging: str | None, uri: str, size: int, dest: str) -> None:
    """Put a cloud image at ``dest``: the bytes staged by this run's extraction if there
    are any (a rename), else one download (an image an earlier run extracted)."""
    key = source.key_of(uri)
    staged = os.path.join(staging, *key.split("/")) if staging else None
    if staged and os.path.exists(staged):
        os.replace(staged, dest)
        return
    data = source.read(ImageRef(uri=uri, rel_path=key, size=size, mtime=0.0))
    with open(dest, "wb") as fh:
        fh.write(data)


def scan(input_dir: str, config: ScanConfig | None = None, progress: Progress | None = None,
         collect: bool = True) -> ScanResult:
    """Scan a local folder or a cloud prefix (``az://``, ``s3://``), group duplicates,
    choose the best of each group, write the reports and (unless ``dry_run``) the
    output folder or prefix.  ``collect=False`` keeps the per-image results out of
    memory (they are in the reports)."""
    config = (config or ScanConfig()).validate()
    timings: dict[str, float] = {}
    problems = Problems()
    with tempfile.TemporaryDirectory(prefix="pixdedup-") as tmp:
        plan = _plan(input_dir, config, tmp)
        plan.output.check()
        t0 = time.perf_counter()
        with FeatureStore(store_path(config, plan.out), reset=config.reset) as store:
            plan.output.clear()  # only once this run holds the store: a refused run removes nothing
            run = store.start_run(plan.root, config.mode)
            store.rescore(SCORE_VERSION, quality_score)  # once, after a scoring change
            summary = ScanSummary()
            options = extract_options(config)
            runner = None
            if config.mode == "similar":
                embedder = load_model(config.model, config.device)
                batch = config.embed_batch_size or (256 if embedder.backend.endswith("cuda") else 32)
                runner = EmbeddingRunner(embedder, batch)
                options = dataclasses.replace(options, model_input_size=embedder.input_size)
            ingest(store, plan.listing, options, config.workers, run, summary, progress,
                   source=plan.source, staging=plan.staging,
                   download_concurrency=config.download_concurrency, batch=config.batch_size,
                   runner=runner)
            if runner is not None:
                timings["embed"] = round(runner.seconds, 4)
                summary.embedded = runner.embedded
                for reason in runner.failures.values():
                    problems.add("embedding", reason)
            summary.removed = store.forget_unseen(run)
            timings["extract"] = time.perf_counter() - t0
            view = CollectionView(store)
            groups = find_groups(view, config, timings, progress,
                                 model=runner.embedder.key if runner else None, problems=problems,
                                 summary=summary)
            results, report_paths = write_outputs(store, view, groups, plan, config, summary,
                                                  timings, collect, t0, problems)
            store.set_meta("groups", str(summary.groups))
            store.set_meta("duplicates", str(summary.duplicates))
            store.set_meta("extractor", extractor_key(options))
            store.set_meta("config", _config_json(config))
            store.finish_run(run)
        if plan.staging:
            shutil.rmtree(plan.staging, ignore_errors=True)
    return ScanResult(results=results, groups=groups, summary=summary,
                      timings=timings, output_dir=plan.out, report_paths=report_paths,
                      problems=problems)


def _config_json(config: ScanConfig) -> str:
    return json.dumps(dataclasses.asdict(config), default=str)


def ingest(store: FeatureStore, listing: Iterable[ImageRef | ListingProblem],
           options: ExtractOptions, workers: int, run: int, summary: ScanSummary,
           progress: Progress | None = None, *, source: ObjectStore | None = None,
           staging: str | None = None, download_concurrency: int = 16,
           batch: int = STORE_BATCH, runner: EmbeddingRunner | None = None) -> None:
    """Stream the listing into the store: rows that are current are kept (no read, no
    decode); the others are read (cloud: downloaded on a thread pool, once), extracted
    on the process pool and committed in batches.  A cloud object whose content MD5
    and size match an image already extracted is not downloaded at all: it gets that
    image's record (byte-identical content).  With ``runner`` (similar mode) every
    extracted image's model input goes to the embedder, and a row counts as current
    only once it has that model's vector."""
    extractor = extractor_key(options)
    model = runner.embedder.key if runner else None
    pending: list[ImageRecord] = []
    listed = 0
    waiting: dict[tuple[str, int], list[ImageRef]] = {}
    """Cloud copies whose twin (same MD5 and size) is being extracted right now."""
    last_commit = time.monotonic()

    def commit(force: bool = False) -> None:
        nonlocal last_commit
        if pending and (force or len(pending) >= batch
                        or time.monotonic() - last_commit >= STORE_INTERVAL):
            crashed = [r for r in pending if r.error == CRASHED]
            if crashed:  # stored as not current: the next run tries these files again
                store.put(crashed, RETRY_EXTRACTOR, run)
                pending[:] = [r for r in pending if r.error != CRASHED]
            store.put(pending, extractor, run)
            pending.clear()
            last_commit = time.monotonic()
            if runner is not None and model is not None:  # rows first: put() voids old vectors
                store.put_embeddings(model, runner.take())

    def twin_of(ref: ImageRef) -> ImageRecord | None:
        if ref.md5 is None:
            return None
        rec = store.record_with_md5(ref.md5, ref.size, extractor)
        return None if rec is None else dataclasses.replace(rec, ref=ref)

    def todo() -> Iterator[ImageRef]:
        nonlocal listed
        refs: list[ImageRef] = []

        def flush() -> Iterator[ImageRef]:
            fresh = store.fresh(refs, extractor, run, model)
            summary.reused += len(fresh)
            for r in refs:
                if r.uri in fresh:
                    continue
                if r.md5 is not None:
                    key = (r.md5, r.size)
                    if key in waiting:
                        waiting[key].append(r)
                        continue
                    twin = twin_of(r)
                    if twin is not None:
                        pending.append(twin)
                        summary.reused += 1
                        continue
                    waiting[key] = []
                yield r
            refs.clear()

        for item in listing:
            listed += 1
            if progress and listed % LOOKUP_BATCH == 0:
                progress("list", listed, None)
            if isinstance(item, ListingProblem):
                ref = ImageRef(uri=item.uri, rel_path=item.rel_path, size=item.size, mtime=0.0)
                pending.append(ImageRecord(
                    ref=ref, status=RecordStatus.SKIPPED if item.skipped else RecordStatus.ERROR,
                    error=item.reason))
                continue
            refs.append(item)
            if len(refs) >= LOOKUP_BATCH:
                yield from flush()
        if refs:
            yield from flush()
        if progress:
            progress("list", listed, listed)

    if source is None:
        records = map_unordered(functools.partial(extract_file, options=options), todo(), workers,
                                on_crash=error_record)
    else:
        fetched = download(source, todo(), download_concurrency, staging, progress)
        records = map_unordered(functools.partial(extract_payload, options=options), fetched, workers,
                                on_crash=lambda item, reason: error_record(item[0], reason))
    done = 0
    def embed(rec: ImageRecord, copies: Iterable[ImageRef] = ()) -> ImageRecord:
        pixels = rec.model_input
        if pixels is None:
            return rec
        if runner is not None:
            for ref in (rec.ref, *copies):
                runner.add(ref.uri, pixels)
        return dataclasses.replace(rec, model_input=None)

    for rec in records:
        twins = waiting.pop((rec.ref.md5, rec.ref.size), []) if rec.ref.md5 else []
        rec = embed(rec, twins if rec.ok else ())
        pending.append(rec)
        done += 1
        summary.extracted += 1
        if twins and rec.ok:  # byte copies of this image: its record, no download
            pending.extend(dataclasses.replace(rec, ref=t) for t in twins)
            summary.reused += len(twins)
        elif twins and source is not None:  # the twin failed: read the copies themselves
            for t in twins:
                pending.append(embed(extract_payload(fetch_bytes(source, t, staging), options)))
                summary.extracted += 1
        commit()
        if progress:
            progress("extract", done + summary.reused, None)
    commit(force=True)
    if runner is not None and model is not None:
        store.put_embeddings(model, runner.close())
    if progress:
        progress("extract", listed, listed)


def extract_payload(item: Payload, options: ExtractOptions) -> ImageRecord:
    ref, data, error = item
    if data is None:
        return error_record(ref, error or "download failed")
    return extract_bytes(ref, data, options)


Payload = tuple[ImageRef, bytes | None, str | None]
"""An object's bytes, or the reason they could not be read."""


def fetch_bytes(source: ObjectStore, ref: ImageRef, staging: str | None = None) -> Payload:
    """One object's bytes (paced, retried); with ``staging``, also written there for
    the output folder.  A failure is data: the reason, for the image's report row."""
    try:
        data = source.read(ref)
    except Exception as exc:  # noqa: BLE001 - a per-image status, not a crash
        return ref, None, f"download failed: {describe(exc)}"
    if staging:
        path = os.path.join(staging, *source.key_of(ref.uri).split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
    return ref, data, None


def download(source: ObjectStore, refs: Iterable[ImageRef], concurrency: int, staging: str | None,
             progress: Progress | None = None) -> Iterator[Payload]:
    """Each object's bytes, read once on a bounded thread pool, as they come.
    Progress: stage 'download' counts objects, 'download MB' the megabytes."""
    count = 0
    mb = 0.0
    for item in map_threads(functools.partial(fetch_bytes, source, staging=staging), refs,
                            concurrency):
        count += 1
        mb += len(item[1] or b"") / 1e6
        if progress:
            progress("download", count, None)
            progress("download MB", int(mb), None)
        yield item
    if progress:
        progress("download", count, count)
        progress("download MB", int(mb), int(mb))


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

    def position_of(self, row_ids: Iterable[int]) -> dict[int, int]:
        """Row id -> position, for the ids that are in the view (readable images)."""
        ids = np.asarray(list(row_ids), dtype=np.int64)
        if not len(ids) or not len(self.row_ids):
            return {}
        sorted_ids = self.row_ids[self._sorter]
        at = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
        hit = sorted_ids[at] == ids
        return {int(i): int(p) for i, p, h in zip(ids, self._sorter[at], hit, strict=True) if h}

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

    def light(self, positions: Sequence[int], batch: int = 4096) -> Iterator[tuple[int, ImageRecord]]:
        """(position, record without its thumbnail), read in batches, not cached."""
        for k in range(0, len(positions), batch):
            part = positions[k:k + batch]
            got = self.store.records([int(self.row_ids[p]) for p in part], thumbnails=False)
            for p in part:
                yield p, got[int(self.row_ids[p])]


def find_groups(view: CollectionView, config: ScanConfig, timings: dict[str, float],
                progress: Progress | None = None, model: str | None = None,
                problems: Problems | None = None, summary: ScanSummary | None = None
                ) -> list[Group]:
    """Groups over positions in ``view``; ``model``: the embedding key (similar mode).
    Candidate pairs are not all verified: groups are grown from representatives
    (``grouping``).  A pair whose verification fails, or a group whose keeper rule
    fails, is counted in ``problems`` and the run goes on (the pair is not joined;
    the group keeps its first member)."""
    problems = problems if problems is not None else Problems()
    t = time.perf_counter()
    options = VerifyOptions.of(config)
    rules = ReviewRules.of(view, Decisions.load(view.store))
    pairs: list[tuple[int, int]] = list(rules.same)
    exact_of: dict[int, int] = {}
    for bucket in view.exact_buckets():
        pairs.extend((bucket[0], other) for other in bucket[1:])
        exact_of.update((m, bucket[0]) for m in bucket)
    cosines: dict[tuple[int, int], float] = {}
    vectors: EmbeddingLookup | None = None
    if config.mode == "similar" and model is not None:
        vectors = EmbeddingLookup.load(view, model)
        cosines = similar_candidates(vectors, config)
    if config.mode in ("near", "similar"):
        sig = view.signatures(config.search_hash_kinds, windows=True)
        found = near_candidates(sig, config.max_hamming_distance, config.max_window_distance,
                                max_orientation_distance=config.max_orientation_distance
                                if config.orientations else None,
                                max_candidates_per_image=config.max_candidates_per_image)
        del sig
        seen = set(pairs)
        for i, j in [*found.tolist(), *cosines]:
            # byte-identical pairs are already joined by their exact bucket
            if (i not in exact_of or exact_of[i] != exact_of.get(j)) and (i, j) not in seen:
                seen.add((i, j))
                pairs.append((i, j))
        del seen
    if rules.distinct:  # the user said no: never verified, never joined
        pairs = [p for p in pairs if p not in rules.distinct]
    timings["candidates"] = time.perf_counter() - t
    t = time.perf_counter()
    nodes = sorted({x for p in pairs for x in p})
    if vectors is not None:  # grouping needs the vectors of candidate images only
        vectors = vectors.subset(nodes)
    accepted = set(rules.same)
    memory = VerdictMemory(view, verifier_key(config, options))
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
        if config.mode == "exact":
            return False, Evidence(stage="exact")
        if config.cluster == "dbscan" and (min(a, b), max(a, b)) in cosines:
            return True, Evidence(stage="embedding",
                                  embedding_similarity=round(cosines[(min(a, b), max(a, b))], 4))
        return None

    def verify_batch(batch: Sequence[tuple[int, int]]) -> list[Verdict]:
        out: list[Verdict] = []
        todo: list[tuple[int, int]] = []
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
        if len(todo) > PAIRS_PER_TASK and config.workers > 1:
            decided: Iterable[list[Decided]] = pool.map(
                run_task, make_tasks(todo, view.fetch, options, cos, config.min_similarity, near),
                chunk=1, on_crash=crashed_task)
        else:
            decided = [verify_pairs(verifier, todo, cos, config.min_similarity, near)]
        for chunk in decided:
            for a, b, ok, ev, _ in chunk:
                if ev.error is not None:
                    problems.add("verify", ev.error)
                out.append((a, b, ok, ev))
            memory.remember((a, b, *fresh) for a, b, _, _, fresh in chunk if fresh is not None)
        return out

    failed_keeper: set[frozenset[int]] = set()

    def best_of(members: list[int]) -> int:
        kept = [m for m in members if m in rules.keep] or members
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
    rank = {p: (p not in rules.keep, *key(rec)) for p, rec in view.light(nodes)}
    with WorkerPool(config.workers) as pool:
        if config.cluster == "dbscan":  # DBSCAN keeps whole components: no chain breaking
            edges = [Edge(a, b, ev) for a, b, ok, ev in verify_batch(pairs) if ok]
            groups = component_groups(edges, best_of)
        else:
            groups = grow_groups(pairs, rank.__getitem__, best_of, verify_batch, report)
    memory.flush()
    if summary is not None:
        summary.pairs_verified, summary.pairs_reused = counts["verified"], counts["reused"]
    timings["verify"] = time.perf_counter() - t
    return groups


def verifier_key(config: ScanConfig, options: VerifyOptions) -> str:
    """Everything a pair's verdict depends on: the verifier's version and settings and
    the extractor (the thumbnails and hashes it compares)."""
    return f"verify/{VERIFY_VERSION} {options!r} {extractor_key(extract_options(config))}"


class VerdictMemory:
    """Near-mode verdicts of earlier scans, by content (``FeatureStore.verdicts``): a
    pair whose two images are unchanged is not verified again.  (Similar mode's
    embedding check, which depends on the model, runs again on a remembered
    rejection: ``verify.decide``.)"""

    FLUSH = 2000

    def __init__(self, view: CollectionView, key: str) -> None:
        self.view = view
        self.store = view.store
        self.key = key
        self._verifier: int | None = None
        self._keys: dict[int, int] = {}
        self._new: list[tuple[int, int, bool, str | None]] = []

    @property
    def verifier(self) -> int:
        """Resolved on first use: a scan with no pair to verify (exact mode) leaves
        the stored verdicts of other settings alone."""
        if self._verifier is None:
            self._verifier = self.store.verifier_id(self.key)
        return self._verifier

    def _content(self, positions: Iterable[int]) -> None:
        missing = sorted({p for p in positions if p not in self._keys})
        if missing:
            by_row = self.store.content_hashes(int(self.view.row_ids[p]) for p in missing)
            for p in missing:
                h = by_row.get(int(self.view.row_ids[p]))
                if h:
                    self._keys[p] = content_key(h)

    def split(self, pairs: Sequence[tuple[int, int]]
              ) -> tuple[list[tuple[int, int, bool, Evidence]], list[tuple[int, int]]]:
        """(pairs with a stored verdict and that verdict, pairs still to verify)."""
        if not pairs:
            return [], []
        self._content(x for p in pairs for x in p)
        keyed = [(p, (self._keys[p[0]], self._keys[p[1]])) for p in pairs
                 if p[0] in self._keys and p[1] in self._keys]
        stored = self.store.verdicts(self.verifier, [k for _, k in keyed])
        known = []
        for p, k in keyed:
            if k in stored:
                ok, ev = stored[k]
                known.append((p[0], p[1], ok, _evidence(ev)))
        done = {(i, j) for i, j, _, _ in known}
        return known, [p for p in pairs if p not in done]

    def remember(self, verdicts: Iterable[tuple[int, int, bool, Evidence]]) -> None:
        rows = [(i, j, ok, ev) for i, j, ok, ev in verdicts if ev.error is None]
        self._content(x for i, j, _, _ in rows for x in (i, j))
        for i, j, ok, ev in rows:
            if i in self._keys and j in self._keys:
                self._new.append((self._keys[i], self._keys[j], ok,
                                  json.dumps(dataclasses.asdict(ev))))
        if len(self._new) >= self.FLUSH:
            self.flush()

    def flush(self) -> None:
        if self._new:
            self.store.put_verdicts(self.verifier, self._new)
            self._new = []


def _evidence(text: str | None) -> Evidence:
    return Evidence(**json.loads(text)) if text else Evidence(stage="rejected")


@dataclass(frozen=True, slots=True)
class EmbeddingLookup:
    """A model's vectors for the positions of a view (similar mode)."""

    positions: np.ndarray
    """Position of each matrix row in the view."""
    matrix: np.ndarray
    """float16, L2-normalised rows."""
    row_of: np.ndarray
    """View position -> matrix row, -1 where the image has no vector."""

    @classmethod
    def load(cls, view: CollectionView, model: str) -> EmbeddingLookup:
        ids, matrix = view.store.embeddings(model)
        positions = view.positions(ids) if len(ids) else np.zeros(0, np.int64)
        row_of = np.full(len(view), -1, dtype=np.int32)
        row_of[positions] = np.arange(len(positions))
        return cls(positions, matrix, row_of)

    def subset(self, keep: Iterable[int]) -> EmbeddingLookup:
        """Only the vectors of the positions in ``keep`` (the rest of the matrix freed)."""
        wanted = np.zeros(len(self.row_of), dtype=bool)
        wanted[np.fromiter(keep, dtype=np.int64)] = True
        rows = np.nonzero(wanted[self.positions])[0]
        positions = self.positions[rows]
        row_of = np.full(len(self.row_of), -1, dtype=np.int32)
        row_of[positions] = np.arange(len(positions))
        return EmbeddingLookup(positions, np.ascontiguousarray(self.matrix[rows]), row_of)

    def cosine(self, a: int, b: int) -> float | None:
        ra, rb = int(self.row_of[a]), int(self.row_of[b])
        if ra < 0 or rb < 0:
            return None
        return float(self.matrix[ra].astype(np.float32) @ self.matrix[rb].astype(np.float32))


def similar_candidates(vectors: EmbeddingLookup, config: ScanConfig
                       ) -> dict[tuple[int, int], float]:
    """Pairs of view positions (i < j) whose embeddings are at least ``min_similarity``
    (or, for --cluster dbscan, within ``eps``) apart, each image keeping its
    ``max_neighbors`` most similar; value: the cosine similarity."""
    if len(vectors.positions) < 2:
        return {}
    threshold = 1.0 - config.eps if config.eps is not None else config.min_similarity
    found = embedding_candidates(vectors.matrix, threshold)
    positions = vectors.positions
    if config.cluster != "dbscan":  # bound the verification work per image
        order = np.argsort(-found[:, 2], kind="stable")
        found = found[order]
        count: dict[int, int] = {}
        keep = []
        for k, (a, b, _) in enumerate(found):
            ia, ib = int(a), int(b)
            if count.get(ia, 0) < config.max_neighbors or count.get(ib, 0) < config.max_neighbors:
                count[ia] = count.get(ia, 0) + 1
                count[ib] = count.get(ib, 0) + 1
                keep.append(k)
        found = found[keep]
    out: dict[tuple[int, int], float] = {}
    for a, b, c in found:
        pa, pb = int(positions[int(a)]), int(positions[int(b)])
        out[(min(pa, pb), max(pa, pb))] = float(c)
    return out


@dataclass(frozen=True, slots=True)
class ReviewRules:
    """The user's decisions in view positions: pairs never grouped, pairs always grouped,
    and files to keep as best."""

    distinct: frozenset[tuple[int, int]] = frozenset()
    same: tuple[tuple[int, int], ...] = ()
    keep: frozenset[int] = frozenset()

    @classmethod
    def of(cls, view: CollectionView, decisions: Decisions) -> ReviewRules:
        if not decisions:
            return cls()
        hashes = {h for p in decisions.distinct | decisions.same for h in p}
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
        return cls(frozenset(pairs(decisions.distinct)), tuple(sorted(pairs(decisions.same))),
                   frozenset(view.position_of(keep_rows).values()))

    def is_distinct(self, a: int, b: int) -> bool:
        return (min(a, b), max(a, b)) in self.distinct


@dataclass(frozen=True, slots=True)
class _Membership:
    group: Group
    best_path: str
    avg_color: float | None


def write_outputs(store: FeatureStore, view: CollectionView, groups: Sequence[Group],
                  plan: _Plan, config: ScanConfig, summary: ScanSummary,
                  timings: dict[str, float], collect: bool, t_start: float,
                  problems: Problems | None = None) -> tuple[list[ImageResult], dict[str, str]]:
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
    store.set_groups((int(view.row_ids[p]), g.id, p == g.best) for g in groups for p in g.members)
    output = plan.output
    writer = ReportWriter(output.report_dir)
    results: list[ImageResult] = []
    errors: list[tuple[str, str]] = []
    for row in store.report_rows():
        res = _result(row, *member_of.get(row.id, (None, None)))
        if not config.dry_run and res.status in _FOLDER:
            placed = output.place(row.uri, row.size, _FOLDER[res.status], res.path, config.link)
            res = dataclasses.replace(res, output_path=placed)
        _count(summary, res)
        if res.status is ImageStatus.ERROR and len(errors) < MAX_ERRORS_LISTED:
            errors.append((res.path, res.error or "unreadable"))
        writer.add(result_row(res))
        if collect:
            results.append(res)
    timings["output"] = time.perf_counter() - t_output
    t_html = time.perf_counter()
    html = write_html(output.report_dir, store, groups, lambda p: int(view.row_ids[p]), summary,
                      {"mode": config.mode, "input": plan.root, "output": plan.out}, errors,
                      workers=config.workers, problems=problems)
    timings["html"] = time.perf_counter() - t_html
    timings["total"] = time.perf_counter() - t_start
    extra: dict[str, Any] = {"problems": problems.as_dict() if problems else {}}
    if plan.source is not None or isinstance(output, RemoteOutput):
        cloud = (plan.source or output.store).pacer.stats  # type: ignore[union-attr]
        extra["requests"] = cloud.as_dict()
        summary.retries = extra["requests"]["retries"]
        summary.bytes_downloaded = extra["requests"]["bytes_downloaded"]
    report_paths = writer.close(summary, {**dataclasses.asdict(config), "input": plan.root,
                                          "output": plan.out}, timings, group_docs, extra)
    return results, output.finish({**report_paths, **html})


_FOLDER = {ImageStatus.BEST: "best", ImageStatus.UNIQUE: "best", ImageStatus.DUPLICATE: "duplicates"}


def _result(row: ReportRow, member: _Membership | None, position: int | None) -> ImageResult:
    common: dict[str, Any] = dict(
        uri=row.uri, size=row.size, width=row.width, height=row.height, format=row.format,
        content_hash=row.content_hash, dominant_colors=row.dominant_colors, error=row.error,
        note=row.note)
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
