"""Query: is this image already in my collection?

The query images are extracted with the collection's own extractor settings (read from
the store), searched against the stored signature arrays (hashes both ways, the crop
windows and, unless turned off, the query mirrored and turned) and every candidate is
verified with the scan's cascade, using the stored records and thumbnails: the
collection itself is never read again.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import ScanConfig
from .engines import engine_for
from .engines.local import default_workers
from .extract import error_record, extract_file
from .features.faces import check_available
from .ingest import extract_options
from .models import Evidence, ImageRecord, ImageRef, Signatures
from .modes import mode_of
from .modes.faces import face_options, query_faces
from .sources.local import list_local
from .store import FeatureStore, StoreError, open_existing
from .verify import Verifier, VerifyOptions, failure


@dataclass(frozen=True, slots=True)
class Match:
    rel_path: str
    uri: str
    evidence: Evidence


@dataclass(slots=True)
class Answer:
    path: str
    matches: list[Match] = field(default_factory=list)
    error: str | None = None
    note: str | None = None
    """Faces mode: 'NO_FACE_DETECTED' for a query without a face."""

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "error": self.error, "note": self.note,
                "matches": [{"path": m.rel_path, "uri": m.uri, **dataclasses.asdict(m.evidence)}
                            for m in self.matches]}


class _Lookup:
    """Query records under negative keys, collection records (row ids) from the store."""

    def __init__(self, store: FeatureStore, queries: dict[int, ImageRecord]) -> None:
        self.store = store
        self.queries = queries
        self.cache: dict[int, ImageRecord] = {}

    def __getitem__(self, key: int) -> ImageRecord:
        if key < 0:
            return self.queries[key]
        if key not in self.cache:
            self.cache.update(self.store.records([key]))
        return self.cache[key]


def _refs(paths: Sequence[str]) -> list[ImageRef | Answer]:
    out: list[ImageRef | Answer] = []
    for p in paths:
        if os.path.isdir(p):
            for item in list_local(p):
                if isinstance(item, ImageRef):
                    out.append(dataclasses.replace(item, rel_path=item.uri))
                elif not item.skipped:
                    out.append(Answer(item.uri, error=item.reason))
        elif os.path.isfile(p):
            st = os.stat(p)
            out.append(ImageRef(uri=os.path.abspath(p), rel_path=p, size=st.st_size, mtime=st.st_mtime))
        else:
            out.append(Answer(p, error="no such file or folder"))
    return out


def query(paths: Sequence[str], db: str, workers: int | None = None) -> list[Answer]:
    with open_existing(db) as store:
        raw = store.get_meta("config")
        if raw is None:
            raise StoreError(f"feature store {db} has no finished scan to query; run 'pixdedup scan'")
        known = {f.name for f in dataclasses.fields(ScanConfig)}
        settings: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v)
                               for k, v in json.loads(raw).items() if k in known}
        config = ScanConfig(**settings)
        options = extract_options(config)
        if mode_of(config).faces:
            face = face_options(config)
            check_available(face)
            options = dataclasses.replace(options, faces=face)
        items = _refs(paths)
        refs = [x for x in items if isinstance(x, ImageRef)]
        fn = functools.partial(extract_file, options=options)
        # a few files on this machine, whatever engine the scan ran on
        engine = engine_for("local", min(workers or default_workers(), max(1, len(refs) // 8)))
        try:
            recs = {r.ref.uri: r for r in engine.map_cpu(fn, refs, on_crash=error_record)}
        finally:
            engine.close()
        answers: list[Answer] = []
        queries: dict[int, ImageRecord] = {}
        for item in items:
            if isinstance(item, Answer):
                answers.append(item)
                continue
            rec = recs[item.uri]
            if not rec.ok:
                answers.append(Answer(item.rel_path, error=rec.error))
                continue
            queries[-1 - len(queries)] = rec
            answers.append(Answer(item.rel_path))
        _search(store, config, queries, answers)
        return answers


def _search(store: FeatureStore, config: ScanConfig, queries: dict[int, ImageRecord],
            answers: list[Answer]) -> None:
    if not queries:
        return
    keys = sorted(queries, reverse=True)  # -1, -2, ...
    qrecs = [queries[k] for k in keys]
    answer_of = {k: a for k, a in zip(keys, [a for a in answers if a.error is None], strict=True)}
    cand: set[tuple[int, int]] = set()
    for k, rec in zip(keys, qrecs, strict=True):  # byte-identical copies, by content hash
        for rid in store.ids_with_content(rec.content_hash or ""):
            cand.add((k, rid))
    mode = mode_of(config)
    if mode.window_hashes:  # a hash search (near and similar modes)
        sig = store.signatures(config.search_hash_kinds, windows=True)  # memory-mapped cache
        qsig = Signatures.from_records(qrecs, config.hash_kinds)
        # row r of qsig is query keys[qsig.ids[r]] (an image without hashes has no row)
        for row, rid in mode.query_pairs(sig, qsig, config).tolist():
            cand.add((keys[int(qsig.ids[row])], int(rid)))
    faced: dict[tuple[int, int], float] = {}
    if mode.faces:  # the same person: the query's faces against the stored ones
        for k, rec in zip(keys, qrecs, strict=True):
            if rec.faces is not None and not rec.faces:
                answer_of[k].note = "NO_FACE_DETECTED"
        for k, rid, d in query_faces(store, config, dict(zip(keys, qrecs, strict=True))):
            faced[(k, rid)] = d
            cand.add((k, rid))
    lookup = _Lookup(store, queries)
    lookup.cache.update(store.records({rid for _, rid in cand}))
    cand = {c for c in cand if c[1] in lookup.cache}  # rows a concurrent scan removed
    verifier = Verifier(lookup, VerifyOptions.of(config))
    paths = store.rel_paths(rid for _, rid in cand)
    uris = store.uris(rid for _, rid in cand)
    for k, rid in sorted(cand, key=lambda c: (-c[0], paths.get(c[1], ""))):
        try:
            ok, ev = verifier.verify(k, rid)
        except Exception as exc:  # noqa: BLE001 - this candidate is not a match
            ok, ev = failure(exc)
        if not ok and (k, rid) in faced:  # not a copy of that photo, but the same person
            ok, ev = True, Evidence(stage="face", face_distance=round(faced[(k, rid)], 4))
        if ok:
            answer_of[k].matches.append(Match(paths[rid], uris[rid], ev))
