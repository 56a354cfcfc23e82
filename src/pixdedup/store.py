"""The persistent feature store: one SQLite file (WAL) per collection.

Every listed image has one row, keyed by its URI, with its identity (size, mtime or
ETag, content hash), its signatures and its status.  ``extractor`` names the feature
extractor and its parameters: a row is reused only when size, mtime and extractor all
match, so changing a hash parameter or a model never serves stale features.

Crash safety comes from SQLite: rows are written in batches, one transaction each, so
a killed run leaves only whole rows behind, and a rerun skips every committed image.
``extractions`` counts how often a row was (re)computed; it stays 1 unless the file
changed.  One run at a time holds the store (an exclusive ``flock`` on ``PATH.lock``,
released by the OS when the process dies, even with ``kill -9``).

The signature arrays (what candidate search needs) are also kept beside the store as
plain ``.npy`` files in ``PATH.signatures/``, written by the run that holds the lock and
memory-mapped by readers, so that ``query`` answers in milliseconds instead of reading
millions of rows.  The cache is valid only while the ``signature_cache`` meta value
equals its manifest's token; every write to the images table deletes that value in the
same transaction, so a stale cache is never served.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import IO, Any

import numpy as np

from . import serial
from .errors import PixdedupError
from .features.color import HUE_BINS, hue_row
from .features.hashes import CHECK_HASH_KIND, WINDOW_COUNT
from .models import ImageRecord, ImageRef, QualityMetrics, RecordStatus, Signatures

SCHEMA_VERSION = 2
APPLICATION_ID = 0x50584444  # "PXDD"
STORE_NAME = "pixdedup.db"
BUILT_IN_HASH_COLUMNS = ("whash", "phash", "dhash", "ahash")
"""The hash kinds with a column from the first schema; any other registered kind gets a
column ``hash_<kind>`` the first time one of its values is stored (``hash_column``)."""
_KIND_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


def hash_column(kind: str) -> str:
    """The images table's column for a hash kind's 64-bit values."""
    if kind in BUILT_IN_HASH_COLUMNS:
        return kind
    if not _KIND_NAME.match(kind):
        raise StoreError(f"hash kind name {kind!r} cannot be stored: use lower-case letters, "
                         "digits and _")
    return "hash_" + kind
CACHE_SUFFIX = ".signatures"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, started REAL NOT NULL, finished REAL, root TEXT, mode TEXT);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    uri TEXT NOT NULL UNIQUE,
    rel_path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    etag TEXT,
    md5 TEXT,
    extractor TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    note TEXT,
    content_hash TEXT,
    format TEXT,
    width INTEGER,
    height INTEGER,
    quality_score REAL,
    dominant_colors TEXT,
    whash INTEGER, phash INTEGER, dhash INTEGER, ahash INTEGER,
    windows BLOB,
    oriented BLOB,
    window_checks BLOB,
    hue BLOB,
    record BLOB,
    thumbnail BLOB,
    run INTEGER NOT NULL,
    extractions INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS images_content ON images(content_hash);
CREATE INDEX IF NOT EXISTS images_md5 ON images(md5) WHERE md5 IS NOT NULL;
CREATE INDEX IF NOT EXISTS images_run ON images(run);
CREATE INDEX IF NOT EXISTS images_path ON images(rel_path, uri);
"""

_VECTORS = """
CREATE TABLE IF NOT EXISTS vectors (
    image INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    model TEXT NOT NULL,
    item INTEGER NOT NULL,
    box TEXT,
    vector BLOB NOT NULL,
    PRIMARY KEY (image, model, item)
) WITHOUT ROWID;
"""
"""L2-normalised float16 vectors by image, model (``name@version``) and item: item 0
with no box is the whole image (similar mode's embedding); a model that finds several
things in one image (faces) stores one row per thing, its box as JSON ``[x0, y0, x1,
y1]`` in the image's pixels (faces: a JSON object, ``features.faces.Face.meta``; an
image without a face has one row with item -1 and an empty vector).  Vectors are
unit length except a face model's with a Euclidean metric.  Created on open; the
older ``embeddings`` table (one vector per image) is moved into it there."""

_REVIEW = """
CREATE TABLE IF NOT EXISTS decisions (
    kind TEXT NOT NULL,
    a TEXT NOT NULL,
    b TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    PRIMARY KEY (kind, a, b)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scan_groups (
    image INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
    grp INTEGER NOT NULL,
    best INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS scan_groups_grp ON scan_groups(grp);
"""
"""The user's review decisions (see ``decisions.py``: 'keep' a=URI; 'distinct' and
'accepted' a<b content hashes) and the last scan's groups, which ``review`` and ``apply``
read; created on open like the vectors table."""

NO_FACE_ITEM = -1
"""The vectors row (item -1, no vector) of an image in which a face model found no face."""

RENAMED_DECISIONS = {"same": "accepted"}
"""Decision kinds stored under an earlier name: renamed on open (where the store is
writable) and read as the new name everywhere."""


_PAGE_THUMBS = """
CREATE TABLE IF NOT EXISTS page_thumbs (
    content INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
);
"""
"""The report page's small thumbnails (data URIs), by content key and the settings
that made them: a rerun re-encodes only the new members' thumbnails."""

_VERDICTS = """
CREATE TABLE IF NOT EXISTS verdicts (
    verifier INTEGER NOT NULL,
    a INTEGER NOT NULL,
    b INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    evidence TEXT,
    PRIMARY KEY (verifier, a, b)
) WITHOUT ROWID;
"""
"""Verified pairs: the verdict on (image with content a, image with content b), a and
b the first 64 bits of the two BLAKE3 content hashes in the order verified, under a
verifier key (``meta`` 'verifier:N' names its version, settings and extractor), so a
rerun verifies only pairs with a new or changed image and a settings change voids
exactly the verdicts it affects.  ``evidence``: the verdict's ``Evidence`` as JSON."""


_PROVENANCE = """
CREATE TABLE IF NOT EXISTS provenance (
    version INTEGER NOT NULL,
    copy INTEGER NOT NULL,
    source INTEGER NOT NULL,
    resaved INTEGER NOT NULL,
    PRIMARY KEY (version, copy, source)
) WITHOUT ROWID;
"""
"""The keeper's re-save tests (``features.provenance``): is the image with content
``copy`` the pixels of the one with content ``source`` saved again (content keys as
in ``verdicts``), under the test's version: a rerun tests only pairs with a new image."""


def content_key(content_hash: str) -> int:
    """The 64-bit key of a content hash in the verdicts table (as a signed int)."""
    return to_signed64(int(content_hash[:16], 16))


class StoreError(PixdedupError):
    """The store file is unusable (corrupt, foreign, newer) or locked by another run."""


def to_signed64(v: int) -> int:
    """uint64 -> the int64 SQLite stores (same bits)."""
    return v - (1 << 64) if v >= 1 << 63 else v


@dataclass(frozen=True, slots=True)
class ReportRow:
    """What the report needs of one image, read from columns (no unpickling)."""

    id: int
    uri: str
    rel_path: str
    status: RecordStatus
    error: str | None
    size: int
    format: str | None
    width: int | None
    height: int | None
    quality_score: float | None
    dominant_colors: str | None
    content_hash: str | None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class GroupMember:
    """One member of a group of the last scan, with what review and apply need."""

    group: int
    id: int
    best: bool
    uri: str
    rel_path: str
    content_hash: str
    size: int


class FeatureStore:
    def __init__(self, path: str, *, reset: bool = False, lock: bool = True) -> None:
        self.path = os.path.abspath(path)
        self._lock_fh: IO[str] | None = None
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            raise StoreError(f"feature store folder {parent} does not exist")
        if lock:
            self._acquire_lock()
        if reset:
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.remove(self.path + suffix)
            shutil.rmtree(self.path + CACHE_SUFFIX, ignore_errors=True)
        self.conn = self._open()

    # -- opening -------------------------------------------------------------------------------
    def _acquire_lock(self) -> None:
        fh = open(self.path + ".lock", "a+")  # noqa: SIM115 - held for the store's lifetime
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise StoreError(f"feature store {self.path} is in use by another pixdedup run "
                             f"({holder}); wait for it to finish") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self._lock_fh = fh

    def _open(self) -> sqlite3.Connection:
        fresh = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        hint = "choose another --db or rerun with --reset to rebuild it"
        try:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            app = conn.execute("PRAGMA application_id").fetchone()[0]
            if fresh:
                conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                conn.executescript(_SCHEMA)
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                             (str(SCHEMA_VERSION),))
            elif app != APPLICATION_ID:
                conn.close()
                raise StoreError(f"{self.path} is not a pixdedup feature store; {hint}")
            version = int(conn.execute(
                "SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
            conn.execute("SELECT count(*) FROM images").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"feature store {self.path} is unreadable ({exc}); {hint}") from None
        if version != SCHEMA_VERSION:
            conn.close()
            raise StoreError(f"feature store {self.path} has schema {version}, this pixdedup "
                             f"reads {SCHEMA_VERSION}; {hint}")
        conn.execute("PRAGMA foreign_keys=ON")
        try:
            columns = {r[1] for r in conn.execute("PRAGMA table_info(images)")}
            for name in ("note TEXT", "oriented BLOB", "window_checks BLOB", "hue BLOB"):  # 5, 6, 9
                if name.split()[0] not in columns:
                    conn.execute(f"ALTER TABLE images ADD COLUMN {name}")
        except sqlite3.OperationalError:  # a read-only store
            pass
        try:
            conn.executescript(_VECTORS + _REVIEW + _VERDICTS + _PAGE_THUMBS + _PROVENANCE)
            for old, new in RENAMED_DECISIONS.items():
                if conn.execute("SELECT 1 FROM decisions WHERE kind=? LIMIT 1", (old,)).fetchone():
                    conn.execute("UPDATE decisions SET kind=? WHERE kind=?", (new, old))
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name='embeddings'").fetchone():
                with conn:
                    conn.execute("BEGIN")
                    conn.execute("INSERT OR IGNORE INTO vectors(image, model, item, box, vector) "
                                 "SELECT image, model, 0, NULL, vector FROM embeddings")
                    conn.execute("DROP TABLE embeddings")
        except sqlite3.OperationalError:  # a read-only store: it has the tables or no rows
            pass
        columns = {r[1] for r in conn.execute("PRAGMA table_info(images)")}
        self._hash_kinds = [k for k in BUILT_IN_HASH_COLUMNS if k in columns] + sorted(
            c[len("hash_"):] for c in columns if c.startswith("hash_"))
        return conn

    def _add_hash_columns(self, kinds: Iterable[str]) -> None:
        """A column for each hash kind not stored before (a kind registered later)."""
        for kind in sorted(set(kinds) - set(self._hash_kinds)):
            self.conn.execute(f"ALTER TABLE images ADD COLUMN {hash_column(kind)} INTEGER")
            self._hash_kinds.append(kind)

    def close(self) -> None:
        self.conn.close()
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs ----------------------------------------------------------------------------------
    def start_run(self, root: str, mode: str) -> int:
        cur = self.conn.execute("INSERT INTO runs(started, root, mode) VALUES (?, ?, ?)",
                                (time.time(), root, mode))
        return int(cur.lastrowid or 0)

    def finish_run(self, run: int) -> None:
        self.conn.execute("UPDATE runs SET finished=? WHERE id=?", (time.time(), run))

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # -- writing -------------------------------------------------------------------------------
    def fresh(self, refs: Sequence[ImageRef], extractor: str, run: int,
              model: str | None = None) -> set[str]:
        """URIs among ``refs`` whose stored row is current (same size, mtime or ETag,
        extractor and, with ``model``, an embedding by that model for every readable
        image); those rows are marked as seen by ``run``."""
        if not refs:
            return set()
        by_uri = {r.uri: r for r in refs}
        found: set[str] = set()
        keys = list(by_uri)
        for k in range(0, len(keys), 500):
            part = keys[k:k + 500]
            marks = ",".join("?" * len(part))
            for uri, size, mtime, etag, ext, status, has_vector in self.conn.execute(
                    "SELECT uri, size, mtime, etag, extractor, status, EXISTS(SELECT 1 FROM "
                    "vectors v WHERE v.image = images.id AND v.model = ?) FROM images "
                    f"WHERE uri IN ({marks})", [model or "", *part]):
                ref = by_uri[uri]
                same = ref.etag == etag if ref.etag else mtime == ref.mtime
                embedded = model is None or has_vector or status != RecordStatus.OK.value
                if ext == extractor and size == ref.size and same and embedded:
                    found.add(uri)
        if found:
            with self.conn:
                self.conn.execute("BEGIN")
                self.conn.executemany("UPDATE images SET run=?, rel_path=? WHERE uri=?",
                                      [(run, by_uri[u].rel_path, u) for u in found])
        return found

    def _invalidate_cache(self) -> None:
        """Inside a write transaction: the signature cache no longer matches."""
        self.conn.execute("DELETE FROM meta WHERE key='signature_cache'")

    def put(self, records: Iterable[ImageRecord], extractor: str, run: int) -> None:
        """Insert or replace rows, all in one transaction."""
        records = list(records)
        self._add_hash_columns({k for rec in records for k in rec.hashes})
        kinds = self._hash_kinds
        rows = []
        for rec in records:
            h = [(to_signed64(rec.hashes[k]) if k in rec.hashes else None) for k in kinds]
            windows = np.asarray(rec.window_hashes, dtype=np.uint64).tobytes() \
                if rec.window_hashes else None
            oriented = np.asarray(rec.oriented_hashes, dtype=np.uint64).tobytes() \
                if len(rec.oriented_hashes) == 7 else None
            checks = np.asarray(rec.window_checks, dtype=np.uint64).tobytes() \
                if rec.window_checks else None
            hue = hue_row(rec.color).tobytes() if rec.color is not None else None
            body = serial.encode(rec) if rec.ok else None
            rows.append((rec.ref.uri, rec.ref.rel_path, rec.ref.size, rec.ref.mtime, rec.ref.etag,
                         rec.ref.md5, extractor, rec.status.value, rec.error, rec.note,
                         rec.content_hash, rec.format,
                         rec.width or None, rec.height or None, rec.quality_score,
                         " ".join(rec.color.dominant_colors) if rec.color else None,
                         *h, windows, oriented, checks, hue, body, rec.thumbnail, run))
        if not rows:
            return
        cols = ["uri", "rel_path", "size", "mtime", "etag", "md5", "extractor", "status", "error",
                "note", "content_hash", "format", "width", "height", "quality_score",
                "dominant_colors", *(hash_column(k) for k in kinds), "windows", "oriented",
                "window_checks", "hue", "record", "thumbnail", "run"]
        updates = ", ".join(f"{c}=excluded.{c}" for c in cols[1:])
        with self.conn:
            self.conn.execute("BEGIN")
            self._invalidate_cache()
            self.conn.executemany(
                f"INSERT INTO images({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                f"ON CONFLICT(uri) DO UPDATE SET {updates}, extractions=extractions + 1", rows)
            # vectors of the old content are void; this run's arrive with put_embeddings
            self.conn.executemany(
                "DELETE FROM vectors WHERE image = (SELECT id FROM images WHERE uri = ?)",
                [(r[0],) for r in rows])

    def rescore(self, version: str, score: Callable[[QualityMetrics], float],
                batch: int = 2000) -> int:
        """Recompute every stored Quality Score with ``score`` from the stored metrics,
        unless the store's scores are already at ``version``; returns the rows changed.
        A kill part-way leaves a mix that the next run finishes (the version is written
        last)."""
        if self.get_meta("quality_score_version") == version:
            return 0
        changed = 0
        last = 0
        while True:
            rows = self.conn.execute(
                "SELECT id, record FROM images WHERE id > ? AND record IS NOT NULL "
                "ORDER BY id LIMIT ?", (last, batch)).fetchall()
            if not rows:
                break
            updates = []
            for image, body in rows:
                last = image
                rec = serial.decode(body)
                if rec.quality is None:
                    continue
                new = score(rec.quality)
                if new != rec.quality_score:
                    updates.append((new, serial.encode(replace(rec, quality_score=new)), image))
            if updates:
                with self.conn:
                    self.conn.execute("BEGIN")
                    self.conn.executemany(
                        "UPDATE images SET quality_score=?, record=? WHERE id=?", updates)
                changed += len(updates)
        with self.conn:
            self.set_meta("quality_score_version", version)
        return changed

    def put_vectors(self, model: str,
                    rows: Sequence[tuple[str, int, Any, np.ndarray]]) -> int:
        """Store float16 vectors: (image URI, item, box or None, vector); the image rows
        must exist.  Returns how many were stored."""
        if not rows:
            return 0
        with self.conn:
            self.conn.execute("BEGIN")
            cur = self.conn.executemany(
                "INSERT OR REPLACE INTO vectors(image, model, item, box, vector) "
                "SELECT id, ?, ?, ?, ? FROM images WHERE uri = ?",
                [(model, item, _box_json(box),
                  np.asarray(v, dtype=np.float16).tobytes(), uri) for uri, item, box, v in rows])
        return max(0, cur.rowcount)

    def vectors(self, model: str) -> tuple[np.ndarray, np.ndarray, list[Any],
                                           np.ndarray]:
        """(row ids, items, boxes, float16 matrix) of every ``model`` vector of an OK
        image, by row id then item."""
        ids: list[int] = []
        items: list[int] = []
        boxes: list[Any] = []
        blobs: list[bytes] = []
        for image, item, box, blob in self.conn.execute(
                "SELECT v.image, v.item, v.box, v.vector FROM vectors v JOIN images i "
                "ON i.id = v.image WHERE v.model = ? AND i.status = ? AND v.item >= 0 "
                "ORDER BY v.image, v.item",
                (model, RecordStatus.OK.value)):
            ids.append(image)
            items.append(item)
            boxes.append(None if box is None else json.loads(box))
            blobs.append(blob)
        if not blobs:
            return (np.zeros(0, np.int64), np.zeros(0, np.int64), [],
                    np.zeros((0, 0), np.float16))
        matrix = np.frombuffer(b"".join(blobs), dtype=np.float16).reshape(len(blobs), -1)
        return np.asarray(ids, dtype=np.int64), np.asarray(items, dtype=np.int64), boxes, matrix

    def copy_vectors(self, model: str, pairs: Sequence[tuple[str, str]]) -> None:
        """Give each (source URI, copy URI) copy the source's ``model`` vectors (byte
        copies have the same ones); the copy's image row must exist."""
        if not pairs:
            return
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT OR REPLACE INTO vectors(image, model, item, box, vector) "
                "SELECT (SELECT id FROM images WHERE uri = ?), v.model, v.item, v.box, v.vector "
                "FROM vectors v JOIN images i ON i.id = v.image WHERE i.uri = ? AND v.model = ?",
                [(copy, source, model) for source, copy in pairs])

    def vector_images(self, model: str) -> np.ndarray:
        """Row ids of the OK images that ``model`` has looked at (with or without a find)."""
        rows = self.conn.execute(
            "SELECT DISTINCT v.image FROM vectors v JOIN images i ON i.id = v.image "
            "WHERE v.model = ? AND i.status = ? ORDER BY v.image", (model, RecordStatus.OK.value))
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def put_embeddings(self, model: str, vectors: Sequence[tuple[str, np.ndarray]]) -> int:
        """Whole-image vectors (item 0, no box) by image URI; returns how many."""
        return self.put_vectors(model, [(uri, 0, None, v) for uri, v in vectors])

    def embeddings(self, model: str) -> tuple[np.ndarray, np.ndarray]:
        """(row ids ascending, float16 matrix) of every OK image's whole-image vector."""
        ids, items, boxes, matrix = self.vectors(model)
        whole = np.array([it == 0 and box is None for it, box in zip(items, boxes, strict=True)],
                         dtype=bool)
        if not len(ids) or whole.all():
            return ids, matrix
        return ids[whole], np.ascontiguousarray(matrix[whole])

    def embedding_count(self, model: str | None = None) -> int:
        if model is None:
            return int(self.conn.execute("SELECT count(*) FROM vectors").fetchone()[0])
        return int(self.conn.execute("SELECT count(*) FROM vectors WHERE model = ?",
                                     (model,)).fetchone()[0])

    def forget_unseen(self, run: int) -> int:
        """Delete the rows not seen by ``run`` (files that disappeared); returns how many."""
        with self.conn:
            self.conn.execute("BEGIN")
            cur = self.conn.execute("DELETE FROM images WHERE run != ?", (run,))
            if cur.rowcount:
                self._invalidate_cache()
        return cur.rowcount

    # -- reading -------------------------------------------------------------------------------
    def count(self, where: str = "1", args: Sequence[object] = ()) -> int:
        return int(self.conn.execute(f"SELECT count(*) FROM images WHERE {where}", args).fetchone()[0])

    def signatures(self, hash_kinds: Sequence[str], windows: bool) -> Signatures:
        """Compact arrays of every OK image's hashes (ids are store row ids, the rows in
        (relative path, URI) order):
        from the signature cache when it is current, else read from the table (and the
        cache rewritten when this process holds the store's lock)."""
        kinds = [k for k in hash_kinds if k in self._hash_kinds]  # a kind never stored: none
        cached = self._load_cache(kinds, windows)
        if cached is not None:
            return cached
        sig = self._read_signatures(kinds, windows)
        if self._lock_fh is not None:
            self._save_cache(sig, windows)
        return sig

    def _cache_manifest(self) -> dict[str, Any] | None:
        token = self.get_meta("signature_cache")
        try:
            with open(os.path.join(self.path + CACHE_SUFFIX, "manifest.json")) as fh:
                manifest: dict[str, Any] = json.load(fh)
        except (OSError, ValueError):
            return None
        return manifest if token is not None and manifest.get("token") == token else None

    def _load_cache(self, kinds: Sequence[str], windows: bool) -> Signatures | None:
        manifest = self._cache_manifest()
        if manifest is None or not set(kinds) <= set(manifest["kinds"]) \
                or (windows and not manifest["windows"]):
            return None
        folder = self.path + CACHE_SUFFIX
        try:
            def load(name: str) -> np.ndarray:
                return np.load(os.path.join(folder, name + ".npy"), mmap_mode="r")
            sig = Signatures(load("ids"), {k: load("hash_" + k) for k in kinds},
                             load("windows") if windows else np.zeros(0, np.uint64),
                             load("window_owner") if windows else np.zeros(0, np.int32),
                             load("oriented") if windows else np.zeros((0, 7), np.uint64),
                             load("check") if windows else np.zeros(0, np.uint64),
                             load("window_checks") if windows
                             else np.zeros((0, WINDOW_COUNT), np.uint64),
                             load("hue") if windows else np.zeros((0, HUE_BINS), np.float16))
        except (OSError, ValueError):
            return None
        return sig if len(sig.ids) == manifest["rows"] else None

    def _save_cache(self, sig: Signatures, windows: bool) -> None:
        """Write the arrays to a fresh folder, swap it in, then publish its token."""
        folder = self.path + CACHE_SUFFIX
        tmp = f"{folder}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            os.mkdir(tmp)
            arrays = {"ids": sig.ids, **{"hash_" + k: v for k, v in sig.hashes.items()}}
            if windows:
                arrays.update(windows=sig.windows, window_owner=sig.window_owner,
                              oriented=sig.oriented, check=sig.check,
                              window_checks=sig.window_checks, hue=sig.hue)
            for name, arr in arrays.items():
                np.save(os.path.join(tmp, name + ".npy"), np.ascontiguousarray(arr))
            token = secrets.token_hex(8)
            with open(os.path.join(tmp, "manifest.json"), "w") as fh:
                json.dump({"token": token, "kinds": sorted(sig.hashes), "windows": windows,
                           "rows": len(sig.ids)}, fh)
            self._invalidate_cache()
            shutil.rmtree(folder, ignore_errors=True)
            os.rename(tmp, folder)
            self.set_meta("signature_cache", token)
        except OSError as exc:  # a cache only: the store stays correct without it
            shutil.rmtree(tmp, ignore_errors=True)
            logging.getLogger(__name__).warning("could not write the signature cache: %s", exc)

    def _read_signatures(self, kinds: Sequence[str], windows: bool) -> Signatures:
        """Read in chunks into preallocated arrays (no per-row Python objects kept), in
        one read transaction (a consistent snapshot beside a writer).  Images without
        perceptual hashes (``extract.near_search_note``) are left out.  The rows come in
        (relative path, URI) order, the order of ``ok_row_ids``: the search breaks ties
        between equally near images by row, so the same collection gets the same
        candidates however its rows were stored (workers finish in any order; a rescan
        appends its new images)."""
        own = not self.conn.in_transaction
        if own:
            self.conn.execute("BEGIN")
        try:
            return self._read_signatures_in_path_order(kinds, windows)
        finally:
            if own:
                self.conn.execute("COMMIT")

    def _read_signatures_in_path_order(self, kinds: Sequence[str], windows: bool) -> Signatures:
        where = "status='ok' AND phash IS NOT NULL"
        # each row's id and window count in id order (the order the rows are read in),
        # and its place in path order (the index on (rel_path, uri) holds every id)
        listed = np.array(self.conn.execute(
            f"SELECT id, coalesce(length(windows), 0) / 8 FROM images WHERE {where} "
            "ORDER BY id").fetchall(), dtype=np.int64).reshape(-1, 2)
        n = len(listed)
        by_path = np.fromiter((r[0] for r in self.conn.execute(
            "SELECT id FROM images ORDER BY rel_path, uri")), dtype=np.int64)
        rank = np.zeros(int(by_path.max()) + 1 if len(by_path) else 0, np.int64)
        rank[by_path] = np.arange(len(by_path))
        del by_path
        path_order = np.argsort(rank[listed[:, 0]], kind="stable")
        del rank
        dest = np.empty(n, np.int64)  # the row in path order of each row in id order
        dest[path_order] = np.arange(n)
        ids = listed[path_order, 0]
        counts = listed[:, 1] if windows else np.zeros(n, np.int64)
        ends = np.cumsum(counts[path_order])
        first_window = np.empty(n, np.int64)  # where each row's windows start, by id order
        first_window[path_order] = ends - counts[path_order]
        total_windows = int(ends[-1]) if n else 0
        del path_order, ends
        hashes = {k: np.zeros(n, np.int64) for k in kinds}
        win = np.zeros(total_windows, np.uint64)
        owner = np.zeros(len(win), np.int32)
        with_oriented = windows and int(self.conn.execute(
            f"SELECT count(*) FROM images WHERE {where} AND oriented IS NULL").fetchone()[0]) == 0
        oriented = np.zeros((n if with_oriented else 0, 7), np.uint64)
        # the check hashes: each row's full frame and its windows, where every row has them
        with_checks = windows and n > 0 and CHECK_HASH_KIND in self._hash_kinds and int(
            self.conn.execute(f"SELECT count(*) FROM images WHERE {where} AND "
                              f"({hash_column(CHECK_HASH_KIND)} IS NULL OR window_checks IS NULL "
                              f"OR length(window_checks) != {8 * WINDOW_COUNT} "
                              f"OR length(windows) != {8 * WINDOW_COUNT})").fetchone()[0]) == 0
        with_hue = windows and n > 0 and int(self.conn.execute(
            f"SELECT count(*) FROM images WHERE {where} AND "
            f"(hue IS NULL OR length(hue) != {2 * HUE_BINS})").fetchone()[0]) == 0
        hue = np.zeros((n if with_hue else 0, HUE_BINS), np.float16)
        check = np.zeros(n if with_checks else 0, np.int64)
        window_checks = np.zeros((n if with_checks else 0, WINDOW_COUNT), np.uint64)
        cols = ", ".join(["id", *map(hash_column, kinds), "oriented" if with_oriented else "NULL",
                          hash_column(CHECK_HASH_KIND) if with_checks else "NULL",
                          "window_checks" if with_checks else "NULL",
                          "hue" if with_hue else "NULL",
                          "windows" if windows else "NULL"])
        cur = self.conn.execute(f"SELECT {cols} FROM images WHERE {where} ORDER BY id")
        row_at = 0
        while batch := cur.fetchmany(50_000):
            m = len(batch)
            cols_data = list(zip(*batch, strict=True))
            at = dest[row_at:row_at + m]  # the rows' places in path order
            for c, k in enumerate(kinds, start=1):
                hashes[k][at] = [v or 0 for v in cols_data[c]]
            if with_oriented:
                oriented[at] = np.frombuffer(
                    b"".join(cols_data[len(kinds) + 1]), dtype=np.uint64).reshape(m, 7)
            if with_checks:
                check[at] = cols_data[len(kinds) + 2]
                window_checks[at] = np.frombuffer(
                    b"".join(cols_data[len(kinds) + 3]), dtype=np.uint64).reshape(m, WINDOW_COUNT)
            if with_hue:
                hue[at] = np.frombuffer(
                    b"".join(cols_data[len(kinds) + 4]), dtype=np.float16).reshape(m, HUE_BINS)
            if windows:
                blobs = [b or b"" for b in cols_data[-1]]
                chunk = np.frombuffer(b"".join(blobs), dtype=np.uint64)
                sizes = counts[row_at:row_at + m]
                starts = np.cumsum(sizes) - sizes
                where_to = np.repeat(first_window[row_at:row_at + m] - starts, sizes)
                where_to += np.arange(len(chunk), dtype=np.int64)
                win[where_to] = chunk
                owner[where_to] = np.repeat(at.astype(np.int32), sizes)
            row_at += m
        return Signatures(ids, {k: v.view(np.uint64) for k, v in hashes.items()}, win, owner,
                          oriented, check.view(np.uint64), window_checks, hue)

    def ok_row_ids(self) -> np.ndarray:
        """Row ids of the readable images in (relative path, URI) order."""
        cur = self.conn.execute("SELECT id FROM images WHERE status='ok' ORDER BY rel_path, uri")
        return np.array([r[0] for r in cur.fetchall()], dtype=np.int64)

    def rel_paths(self, ids: Iterable[int]) -> dict[int, str]:
        return {i: str(p) for i, p in self._by_ids("rel_path", ids)}

    def uris(self, ids: Iterable[int]) -> dict[int, str]:
        return {i: str(p) for i, p in self._by_ids("uri", ids)}

    def ids_with_content(self, content_hash: str) -> list[int]:
        return [r[0] for r in self.conn.execute(
            "SELECT id FROM images WHERE status='ok' AND content_hash=? ORDER BY id", (content_hash,))]

    def record_with_md5(self, md5: str, size: int, extractor: str,
                        model: str | None = None) -> ImageRecord | None:
        """A readable image already stored with this content MD5 and size (its bytes
        are the same), with its thumbnail and, with ``model``, that model's vectors
        (``copy_vectors`` gives them to the copy); None if there is none."""
        row = self.conn.execute(
            "SELECT record, thumbnail FROM images WHERE md5=? AND size=? AND extractor=? "
            "AND status='ok' AND record IS NOT NULL AND (? IS NULL OR EXISTS(SELECT 1 FROM "
            "vectors v WHERE v.image = images.id AND v.model = ?)) LIMIT 1",
            (md5, size, extractor, model, model)).fetchone()
        if row is None:
            return None
        return replace(serial.decode(row[0]), thumbnail=row[1])

    def exact_buckets(self) -> list[list[int]]:
        """Row ids sharing a content hash (buckets of two or more), lowest id first."""
        out: list[list[int]] = []
        for (ids,) in self.conn.execute(
                "SELECT group_concat(id) FROM (SELECT id, content_hash FROM images "
                "WHERE status='ok' AND content_hash IS NOT NULL ORDER BY id) "
                "GROUP BY content_hash HAVING count(*) > 1"):
            out.append(sorted(int(x) for x in ids.split(",")))
        return out

    def records(self, ids: Iterable[int], thumbnails: bool = True) -> dict[int, ImageRecord]:
        """Full records (``serial.decode``), with their thumbnails unless told otherwise."""
        cols = "record, thumbnail" if thumbnails else "record, NULL"
        out: dict[int, ImageRecord] = {}
        for i, (body, thumb) in self._by_ids(cols, ids):
            if body is None:
                continue
            rec = serial.decode(body)
            out[i] = replace(rec, thumbnail=thumb) if thumb is not None else rec
        return out

    def _by_ids(self, cols: str, ids: Iterable[int]) -> Iterator[tuple[int, Any]]:
        for row in self._where_in("id", f"id, {cols}", ids):
            yield row[0], (row[1] if len(row) == 2 else row[1:])

    def _where_in(self, col: str, cols: str, values: Iterable[Any], extra: str = ""
                  ) -> Iterator[tuple[Any, ...]]:
        """``SELECT cols FROM images WHERE col IN values [extra]``, 500 values a query."""
        vals = list(dict.fromkeys(values))
        for k in range(0, len(vals), 500):
            part = vals[k:k + 500]
            marks = ",".join("?" * len(part))
            yield from self.conn.execute(
                f"SELECT {cols} FROM images WHERE {col} IN ({marks}) {extra}", part)

    def report_rows(self) -> Iterator[ReportRow]:
        """Every image of the current collection, by relative path, streamed."""
        cur = self.conn.execute(
            "SELECT id, uri, rel_path, status, error, size, format, width, height, quality_score, "
            "dominant_colors, content_hash, note FROM images ORDER BY rel_path, uri")
        while batch := cur.fetchmany(2000):
            for r in batch:
                yield ReportRow(r[0], r[1], r[2], RecordStatus(r[3]), *r[4:])

    # -- verified pairs --------------------------------------------------------------------------
    def verifier_id(self, key: str) -> int:
        """The small id of a verifier key; verdicts of every other key are dropped
        (they can never be served again once the settings moved on)."""
        found = [int(k.split(":", 1)[1]) for k, v in self.conn.execute(
            "SELECT key, value FROM meta WHERE key LIKE 'verifier:%'") if v == key]
        with self.conn:
            self.conn.execute("BEGIN")
            if found:
                vid = found[0]
            else:
                vid = 1 + max([int(k.split(":", 1)[1]) for (k,) in self.conn.execute(
                    "SELECT key FROM meta WHERE key LIKE 'verifier:%'")] or [0])
                self.conn.execute("INSERT INTO meta VALUES (?, ?)", (f"verifier:{vid}", key))
            self.conn.execute("DELETE FROM verdicts WHERE verifier != ?", (vid,))
            self.conn.execute("DELETE FROM meta WHERE key LIKE 'verifier:%' AND key != ?",
                              (f"verifier:{vid}",))
        return vid

    def verdicts(self, verifier: int, pairs: Sequence[tuple[int, int]]
                 ) -> dict[tuple[int, int], tuple[bool, str | None]]:
        """Stored verdicts of ``pairs`` (content keys): (a, b) -> (ok, evidence JSON)."""
        out: dict[tuple[int, int], tuple[bool, str | None]] = {}
        for k in range(0, len(pairs), 20_000):
            part = pairs[k:k + 20_000]
            self.conn.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (a INTEGER, b INTEGER)")
            self.conn.execute("DELETE FROM wanted")
            self.conn.executemany("INSERT INTO wanted VALUES (?, ?)", part)
            for a, b, ok, ev in self.conn.execute(
                    "SELECT v.a, v.b, v.ok, v.evidence FROM wanted w JOIN verdicts v "
                    "ON v.verifier = ? AND v.a = w.a AND v.b = w.b", (verifier,)):
                out[(a, b)] = (bool(ok), ev)
        return out

    def put_verdicts(self, verifier: int,
                     rows: Iterable[tuple[int, int, bool, str | None]]) -> None:
        """Remember verdicts (content key a, content key b, ok, evidence JSON)."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?)",
                [(verifier, a, b, int(ok), ev) for a, b, ok, ev in rows])

    def page_thumbs(self, kind: str, keys: Iterable[int]) -> dict[int, str]:
        """Stored report thumbnails made with ``kind`` settings, by content key."""
        vals = list(dict.fromkeys(keys))
        out: dict[int, str] = {}
        for k in range(0, len(vals), 500):
            part = vals[k:k + 500]
            out.update((int(c), str(d)) for c, d in self.conn.execute(
                f"SELECT content, data FROM page_thumbs WHERE kind = ? AND content IN "
                f"({','.join('?' * len(part))})", [kind, *part]))
        return out

    def put_page_thumbs(self, kind: str, rows: Iterable[tuple[int, str]]) -> None:
        """Remember report thumbnails (content key, data URI); a read-only store keeps
        none."""
        try:
            with self.conn:
                self.conn.execute("BEGIN")
                self.conn.executemany("INSERT OR REPLACE INTO page_thumbs VALUES (?, ?, ?)",
                                      [(k, kind, d) for k, d in rows])
        except sqlite3.OperationalError:
            pass

    def provenance_among(self, version: int, keys: Sequence[int]
                         ) -> dict[tuple[int, int], bool]:
        """The stored tests under ``version`` whose copy and source are both among the
        content ``keys``: (copy, source) -> answer."""
        wanted = set(keys)
        out: dict[tuple[int, int], bool] = {}
        order = sorted(wanted)
        try:
            for k in range(0, len(order), 500):
                part = order[k:k + 500]
                marks = ",".join("?" * len(part))
                for c, s, r in self.conn.execute(
                        f"SELECT copy, source, resaved FROM provenance WHERE version = ? "
                        f"AND copy IN ({marks})", (version, *part)):
                    if s in wanted:
                        out[(c, s)] = bool(r)
        except sqlite3.OperationalError:  # a read-only store made before the table
            return {}
        return out

    def put_provenance(self, version: int, rows: Iterable[tuple[int, int, bool]]) -> None:
        """Remember tests on pixels (copy, source, answer); a read-only store keeps none;
        answers of the same test under another version are dropped (the test is the
        version's thousands: ``keeper.BLOCKS_TEST``)."""
        try:
            with self.conn:
                self.conn.execute("BEGIN")
                self.conn.execute("DELETE FROM provenance WHERE version != ? "
                                  "AND version / 1000 = ? / 1000", (version, version))
                self.conn.executemany("INSERT OR REPLACE INTO provenance VALUES (?, ?, ?, ?)",
                                      [(version, c, s, int(r)) for c, s, r in rows])
        except sqlite3.OperationalError:
            pass

    def content_hashes(self, ids: Iterable[int]) -> dict[int, str]:
        return {i: str(h) for i, h in self._by_ids("content_hash", ids) if h}

    # -- groups of the last scan and review decisions ------------------------------------------
    def set_groups(self, rows: Iterable[tuple[int, int, bool]]) -> None:
        """Replace the last scan's groups: (image row id, group id, is best)."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.execute("DELETE FROM scan_groups")
            self.conn.executemany("INSERT INTO scan_groups(image, grp, best) VALUES (?, ?, ?)",
                                  ((i, g, int(b)) for i, g, b in rows))

    def group_members(self, group_ids: Iterable[int] | None = None) -> list[GroupMember]:
        """Members of the last scan's groups (all, or of ``group_ids``), by group, best first."""
        sql = ("SELECT s.grp, s.image, s.best, i.uri, i.rel_path, i.content_hash, i.size "
               "FROM scan_groups s JOIN images i ON i.id = s.image")
        args: list[int] = []
        if group_ids is not None:
            args = [int(g) for g in group_ids]
            if not args:
                return []
            sql += f" WHERE s.grp IN ({','.join('?' * len(args))})"
        rows = self.conn.execute(sql + " ORDER BY s.grp, s.best DESC, i.rel_path, i.uri", args)
        return [GroupMember(r[0], r[1], bool(r[2]), *r[3:]) for r in rows]

    def ungrouped(self) -> list[GroupMember]:
        """The readable images in no group of the last scan (unique), as group-0 members."""
        return [GroupMember(0, r[0], True, *r[1:]) for r in self.conn.execute(
            "SELECT id, uri, rel_path, content_hash, size FROM images "
            "WHERE status='ok' AND id NOT IN (SELECT image FROM scan_groups) ORDER BY rel_path, uri")]

    def decisions(self) -> list[tuple[str, str, str]]:
        """(kind, a, b) in the order they were made; old kind names read as the new
        (a read-only store keeps its rows as they were written)."""
        return [(RENAMED_DECISIONS.get(str(k), str(k)), str(a), str(b)) for k, a, b in
                self.conn.execute("SELECT kind, a, b FROM decisions ORDER BY created")]

    def change_decisions(self, add: Iterable[tuple[str, str, str]] = (),
                         remove: Iterable[tuple[str, str, str]] = ()) -> None:
        """Remove, then add, decisions; one transaction."""
        now = time.time()
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany("DELETE FROM decisions WHERE kind=? AND a=? AND b=?", list(remove))
            self.conn.executemany("INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, ?)",
                                  [(k, a, b, now) for k, a, b in add])

    def ok_ids_with_content(self, hashes: Iterable[str]) -> dict[str, list[int]]:
        """Row ids of the readable images by content hash (only the given hashes)."""
        out: dict[str, list[int]] = {}
        for i, h in self._where_in("content_hash", "id, content_hash", hashes, "AND status='ok'"):
            out.setdefault(h, []).append(i)
        return out

    def ids_with_uri(self, uris: Iterable[str]) -> dict[str, int]:
        return {u: i for i, u in self._where_in("uri", "id, uri", uris)}

    def last_run(self) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT id, started, finished, root, mode FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else dict(zip(("id", "started", "finished", "root", "mode"),
                                                 row, strict=True))

    def report_rows_for(self, ids: Iterable[int]) -> dict[int, tuple[ReportRow, bytes | None]]:
        """Report rows of the given images, each with its stored thumbnail."""
        return {i: (ReportRow(i, r[0], r[1], RecordStatus(r[2]), *r[3:12]), r[12])
                for i, r in self._by_ids(
                    "uri, rel_path, status, error, size, format, width, height, quality_score, "
                    "dominant_colors, content_hash, note, thumbnail", ids)}

    def stats(self) -> dict[str, Any]:
        by_status = dict(self.conn.execute("SELECT status, count(*) FROM images GROUP BY status"))
        last = self.last_run()
        size = sum(os.path.getsize(self.path + s) for s in ("", "-wal")
                   if os.path.exists(self.path + s))
        return {"path": self.path, "images": sum(by_status.values()), "by_status": by_status,
                "bytes": size, "runs": self.conn.execute("SELECT count(*) FROM runs").fetchone()[0],
                "last_run": last,
                "groups": int(self.get_meta("groups") or 0),
                "duplicates": int(self.get_meta("duplicates") or 0)}


def open_existing(path: str, lock: bool = False) -> FeatureStore:
    """Open a store that must exist (stats, query): never creates an empty one."""
    if not os.path.isfile(path):
        raise StoreError(f"no feature store at {path}; run 'pixdedup scan' first (the store is "
                         f"OUT/{STORE_NAME} unless --db chose another file)")
    return FeatureStore(path, lock=lock)


def _box_json(box: Any) -> str | None:
    """A vectors row's box column: None, a box ``[x0, y0, x1, y1]`` or a description."""
    if box is None:
        return None
    if isinstance(box, dict):
        return json.dumps(box, separators=(",", ":"))
    return json.dumps([float(b) for b in box])
