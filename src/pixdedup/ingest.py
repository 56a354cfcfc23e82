"""The extract stage's driver: the listing streamed into the feature store.

Rows that are current are kept (no read, no decode); the others are read (cloud:
downloaded on the engine's I/O workers, once, or by its CPU workers themselves on an
engine with ``remote_reads``), extracted on its CPU workers and
committed in batches, so memory does not grow with the collection and a killed run
resumes.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from .config import ScanConfig
from .engines import Engine
from .engines.local import CRASHED
from .extract import FEATURES_VERSION, ExtractOptions, error_record, extract_bytes, extract_file
from .features.embeddings import EmbeddingRunner
from .models import ImageRecord, ImageRef, RecordStatus, ScanSummary
from .modes import mode_of
from .sources.cloud import Bucket, BucketAddress, describe
from .sources.local import ListingProblem
from .store import NO_FACE_ITEM, FeatureStore

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


def extract_options(config: ScanConfig) -> ExtractOptions:
    return ExtractOptions(working_size=config.working_size, thumbnail_size=config.thumbnail_size,
                          max_pixels=int(config.max_megapixels * 1e6), hash_kinds=config.hash_kinds,
                          window_hashes=mode_of(config).window_hashes)


def extractor_key(options: ExtractOptions) -> str:
    """Names the extractor and every parameter that changes its output (the store key)."""
    return (f"pixdedup-features/{FEATURES_VERSION} size={options.working_size} "
            f"thumb={options.thumbnail_size}q{options.thumbnail_quality} "
            f"hashes={','.join(options.hash_kinds)} windows={int(options.window_hashes)} "
            f"max_pixels={options.max_pixels}"
            + (f" decode={options.decode_size}" if options.decode_size != options.working_size
               else ""))


def ingest(store: FeatureStore, listing: Iterable[ImageRef | ListingProblem],
           options: ExtractOptions, engine: Engine, run: int, summary: ScanSummary,
           progress: Progress | None = None, *, source: Bucket | None = None,
           staging: str | None = None, download_concurrency: int = 16,
           batch: int = STORE_BATCH, runner: EmbeddingRunner | None = None,
           faces: str | None = None) -> None:
    """Stream the listing into the store: rows that are current are kept (no read, no
    decode); the others are read (cloud: downloaded on a thread pool, once), extracted
    on the process pool and committed in batches.  A cloud object whose content MD5
    and size match an image already extracted is not downloaded at all: it gets that
    image's record (byte-identical content).  With ``runner`` (similar mode) every
    extracted image's model input goes to the embedder, and a row counts as current
    only once it has that model's vector.  With ``faces`` (the face store key, faces
    mode) every extracted image's faces are stored, or a row that says it has none."""
    extractor = extractor_key(options)
    model = runner.embedder.key if runner else faces
    face_rows: list[FaceRow] = []
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
            if twin_vectors and model is not None:  # after the rows, as for every vector
                store.copy_vectors(model, twin_vectors)
                twin_vectors.clear()
            if faces is not None:  # after the rows: put() voids the vectors of changed files
                face_rows.extend(r for rec in pending for r in face_rows_of(rec))
                store.put_vectors(faces, face_rows)
                face_rows.clear()
                summary.face_seconds += sum(rec.face_seconds for rec in pending)
                summary.face_failures += sum(rec.face_error is not None for rec in pending)
            pending.clear()
            last_commit = time.monotonic()
            if runner is not None and model is not None:  # rows first: put() voids old vectors
                store.put_embeddings(model, runner.take())

    twin_vectors: list[tuple[str, str]] = []
    """(stored image URI, copy URI): the copy takes that image's vectors too."""

    def twin_of(ref: ImageRef) -> ImageRecord | None:
        if ref.md5 is None:
            return None
        rec = store.record_with_md5(ref.md5, ref.size, extractor, model)
        if rec is None:
            return None
        if model is not None:
            twin_vectors.append((rec.ref.uri, ref.uri))
        return dataclasses.replace(rec, ref=ref)

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
        records = engine.map_cpu(functools.partial(extract_file, options=options), todo(),
                                 on_crash=error_record)
    elif engine.remote_reads:  # the workers read their own bytes; the driver sends names
        address = source.address(engine.shared_limiter(source.options.max_requests_per_second))
        records = engine.map_cpu(functools.partial(read_and_extract, address, options=options),
                                 todo(), on_crash=error_record)
    else:
        fetched = download(engine, source, todo(), download_concurrency, staging, progress)
        records = engine.map_cpu(functools.partial(extract_payload, options=options), fetched,
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
        if rec.requests is not None:  # a worker's requests to the bucket, for the report
            if source is not None:
                source.pacer.stats.merge(rec.requests)
            rec = dataclasses.replace(rec, requests=None)
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


FaceRow = tuple[str, int, Any, np.ndarray]


def face_rows_of(rec: ImageRecord) -> list[FaceRow]:
    """The vectors-table rows of a record's faces: one per face (item 0, 1, ... largest
    first, the box column holding its description), or item -1 with no vector for an
    image without a face.  None when faces were not looked for or the stage failed:
    the image is then not current and the next run tries again."""
    if not rec.ok or rec.faces is None:
        return []
    if not rec.faces:
        return [(rec.ref.uri, NO_FACE_ITEM, None, np.zeros(0, np.float32))]
    return [(rec.ref.uri, k, f.meta(), f.vector) for k, f in enumerate(rec.faces)]


def extract_payload(item: Payload, options: ExtractOptions) -> ImageRecord:
    ref, data, error = item
    if data is None:
        return error_record(ref, error or "download failed")
    return extract_bytes(ref, data, options)


def read_and_extract(address: BucketAddress, ref: ImageRef, options: ExtractOptions) -> ImageRecord:
    """On a worker: one object read from the bucket and extracted, with the requests it
    took (``ImageRecord.requests``)."""
    bucket = address.open()
    rec = extract_payload(fetch_bytes(bucket, ref), options)
    return dataclasses.replace(rec, requests=bucket.pacer.stats.drain())


Payload = tuple[ImageRef, bytes | None, str | None]
"""An object's bytes, or the reason they could not be read."""


def fetch_bytes(source: Bucket, ref: ImageRef, staging: str | None = None) -> Payload:
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


def download(engine: Engine, source: Bucket, refs: Iterable[ImageRef], concurrency: int,
             staging: str | None, progress: Progress | None = None) -> Iterator[Payload]:
    """Each object's bytes, read once on the engine's I/O workers, as they come.
    Progress: stage 'download' counts objects, 'download MB' the megabytes."""
    count = 0
    mb = 0.0
    for item in engine.map_io(functools.partial(fetch_bytes, source, staging=staging), refs,
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
