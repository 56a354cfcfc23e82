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
