"""The signature cache beside the feature store: equal to the table, never stale."""

from __future__ import annotations

import os
import random

import numpy as np

from pixdedup.models import ImageRecord, ImageRef, RecordStatus
from pixdedup.store import CACHE_SUFFIX, FeatureStore, open_existing

KINDS = ("whash", "phash", "dhash")


def _record(i: int, rng: random.Random) -> ImageRecord:
    ref = ImageRef(uri=f"/c/{i}.jpg", rel_path=f"{i}.jpg", size=1000 + i, mtime=1.0)
    if i % 7 == 3:
        return ImageRecord(ref, RecordStatus.ERROR, error="broken")
    return ImageRecord(ref, RecordStatus.OK, content_hash=f"{i:064x}", format="JPEG", width=10,
                       height=10, hashes={k: rng.getrandbits(64) for k in KINDS},
                       window_hashes=tuple(rng.getrandbits(64) for _ in range(i % 4)))


def _same(a, b) -> None:
    assert np.array_equal(a.ids, b.ids)
    assert set(a.hashes) == set(b.hashes)
    for k in a.hashes:
        assert np.array_equal(a.hashes[k], b.hashes[k])
    assert np.array_equal(a.windows, b.windows)
    assert np.array_equal(a.window_owner, b.window_owner)


def test_cache_equals_table_and_is_invalidated_by_writes(tmp_path):
    rng = random.Random(3)
    db = str(tmp_path / "pixdedup.db")
    with FeatureStore(db) as store:
        run = store.start_run("/c", "near")
        store.put([_record(i, rng) for i in range(40)], "x", run)
        table = store.signatures(KINDS, windows=True)  # holds the lock: writes the cache
        assert os.path.isfile(db + CACHE_SUFFIX + "/manifest.json")
        assert len(table.ids) == 40 - 6  # the error rows have no signatures
    with open_existing(db) as reader:  # a reader memory-maps the cache
        cached = reader.signatures(KINDS, windows=True)
        assert isinstance(cached.hashes["whash"], np.memmap)
        _same(cached, table)
        assert isinstance(reader.signatures(["phash"], windows=False).ids, np.memmap)
    with FeatureStore(db) as store:  # a write makes the cache stale at once
        run = store.start_run("/c", "near")
        store.put([_record(i, rng) for i in range(40, 45)], "x", run)
        with open_existing(db) as reader:
            fresh = reader.signatures(KINDS, windows=True)
            assert not isinstance(fresh.ids, np.memmap) and len(fresh.ids) == 39
        store.fresh([_record(i, rng).ref for i in range(40, 45)], "x", run)
        assert store.forget_unseen(run) == 40
        with open_existing(db) as reader:
            assert len(reader.signatures(KINDS, windows=True).ids) == 5


def test_broken_cache_falls_back_to_the_table(tmp_path):
    rng = random.Random(4)
    db = str(tmp_path / "pixdedup.db")
    with FeatureStore(db) as store:
        store.put([_record(i, rng) for i in range(20)], "x", store.start_run("/c", "near"))
        table = store.signatures(KINDS, windows=True)
    with open(db + CACHE_SUFFIX + "/hash_phash.npy", "wb") as fh:
        fh.write(b"garbage")
    with open_existing(db) as reader:
        _same(reader.signatures(KINDS, windows=True), table)
    with FeatureStore(db, reset=True) as store:
        assert not os.path.exists(db + CACHE_SUFFIX)


def test_rescore_recomputes_stored_scores_once_without_reading_images(tmp_path):
    from dataclasses import replace

    from pixdedup.features.quality import SCORE_VERSION, quality_score
    from pixdedup.models import QualityMetrics

    def metrics(noise: float) -> QualityMetrics:
        return QualityMetrics(width=640, height=480, effective_pixels=640 * 480, bytes=50_000,
                              bits_per_pixel=1.3, jpeg_quality=90, lossless=False, bit_depth=8,
                              sharpness=5.0, noise=noise, clipped_fraction=0.0,
                              colorfulness=20.0, has_metadata=False)

    rng = random.Random(5)
    records = [_record(i, rng) for i in range(12)]
    records = [replace(r, quality=metrics(1.0 + i), quality_score=99.0) if r.ok else r
               for i, r in enumerate(records)]
    db = str(tmp_path / "pixdedup.db")
    with FeatureStore(db) as store:
        run = store.start_run("/c", "near")
        store.put(records, "x", run)
        ok = [r for r in records if r.ok]
        assert store.rescore(SCORE_VERSION, quality_score) == len(ok)
        assert store.get_meta("quality_score_version") == SCORE_VERSION
        assert store.rescore(SCORE_VERSION, quality_score) == 0  # once per version
        stored = store.records(store.ok_row_ids().tolist(), thumbnails=False)
        by_uri = {r.ref.uri: r for r in stored.values()}
        for r in ok:
            expected = quality_score(r.quality)
            assert by_uri[r.ref.uri].quality_score == expected != 99.0
        column = dict(store.conn.execute("SELECT uri, quality_score FROM images"))
        assert all(column[r.ref.uri] == quality_score(r.quality) for r in ok)
        # a later scoring version recomputes them again
        assert store.rescore("another", lambda q: 99.0) == len(ok)


def test_a_decision_stored_under_its_old_name_is_renamed_on_open(tmp_path):
    """The review's accepted pairs were once stored as 'same': a store renames them on
    open, and reads them under the new name where it could not (a read-only file)."""
    import sqlite3

    from pixdedup.decisions import ACCEPTED, Decisions

    db = str(tmp_path / "s.db")
    with FeatureStore(db) as store:  # a row the open could not rename, as in a read-only file
        store.conn.execute("INSERT INTO decisions(kind, a, b, created) VALUES ('same', 'h1', 'h2', 1)")
        assert store.decisions() == [(ACCEPTED, "h1", "h2")]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT kind FROM decisions").fetchall() == [("same",)]
    with FeatureStore(db) as store:
        assert Decisions.load(store).accepted == {("h1", "h2")}
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT kind FROM decisions").fetchall() == [(ACCEPTED,)]


def test_signatures_come_in_path_order_whatever_the_order_rows_were_stored_in(tmp_path):
    rng = random.Random(5)
    records = [_record(i, rng) for i in range(60)]
    order = list(range(60))
    random.Random(6).shuffle(order)
    with FeatureStore(str(tmp_path / "pixdedup.db")) as store:
        store.put([records[i] for i in order], "x", store.start_run("/c", "near"))
        sig = store.signatures(KINDS, windows=True)
        paths = store.rel_paths(sig.ids.tolist())
    listed = [paths[int(i)] for i in sig.ids]
    ok = {r.ref.rel_path: r for r in records if r.ok}
    assert listed == sorted(ok)  # "0.jpg", "1.jpg", "10.jpg", ...: path order, not id order
    for row, path in enumerate(listed):
        rec = ok[path]
        assert [int(sig.hashes[k][row]) for k in KINDS] == [rec.hashes[k] for k in KINDS]
        assert [int(w) for w in sig.windows[sig.window_owner == row]] == list(rec.window_hashes)
    assert np.all(np.diff(sig.window_owner) >= 0)  # each row's windows together, in row order


def test_a_crowd_gets_the_same_candidates_whatever_the_order_rows_were_stored_in(tmp_path):
    # 150 images whose DCT hashes are all within a few bits of each other: every image
    # has more hits than the search keeps (SEARCH_NEAREST) and more candidates than the
    # cap, so ties between equally near images decide which pairs are kept
    from pixdedup.candidates import SEARCH_NEAREST
    from pixdedup.config import ScanConfig
    from pixdedup.modes.near import search
    from pixdedup.view import CollectionView

    rng = random.Random(7)
    base = rng.getrandbits(64)
    records = []
    for i in range(150):
        ref = ImageRef(uri=f"/c/crowd{i:03d}.jpg", rel_path=f"crowd{i:03d}.jpg", size=1000,
                       mtime=1.0)
        flips = sum(1 << b for b in rng.sample(range(64), i % 3))
        records.append(ImageRecord(ref, RecordStatus.OK, content_hash=f"{i:064x}", format="JPEG",
                                   width=10, height=10,
                                   hashes={k: base ^ flips for k in KINDS}))
    assert len(records) > 2 * SEARCH_NEAREST
    config = ScanConfig(mode="near")
    found = []
    for seed in (1, 2, 3):
        order = list(range(len(records)))
        random.Random(seed).shuffle(order)
        with FeatureStore(str(tmp_path / f"s{seed}.db")) as store:
            store.put([records[i] for i in order], "x", store.start_run("/c", "near"))
            view = CollectionView(store)
            pairs = search(view.signatures(config.search_hash_kinds, windows=True), config).pairs
            paths = view.paths({int(p) for p in pairs.ravel()})
            found.append(sorted((paths[int(a)], paths[int(b)]) for a, b in pairs))
    assert len(found[0]) > 0
    assert found[0] == found[1] == found[2]
