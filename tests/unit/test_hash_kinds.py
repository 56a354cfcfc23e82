"""A hash kind registered by name is computed, stored (a column of its own, added by
the store on first use) and searched, without any change to the store's code."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest
from PIL import Image

import pixdedup
from pixdedup.candidates import hash_pairs
from pixdedup.features.hashes import HASH_KINDS, HashKind, HashSource, ahash_of
from pixdedup.store import FeatureStore, hash_column

from ..conftest import synthetic_photo

KIND = "inverted_ahash"


def inverted_ahash(src: HashSource) -> int:
    return ahash_of(src) ^ 0xFFFF_FFFF_FFFF_FFFF


@pytest.fixture
def registered() -> Iterator[None]:
    HASH_KINDS.add(KIND, HashKind(KIND, "test-1", inverted_ahash))
    yield
    HASH_KINDS.remove(KIND)


def test_a_registered_hash_kind_is_stored_and_searched(tmp_path, registered):
    src = tmp_path / "photos"
    src.mkdir()
    for seed in range(3):
        synthetic_photo(seed).save(src / f"p{seed}.jpg", quality=90)
    Image.open(src / "p1.jpg").resize((320, 240)).save(src / "p1 small.png")
    out = tmp_path / "out"
    result = pixdedup.scan(str(src), out=str(out), dry_run=True, workers=1,  # registered here only
                           hash_kinds=("whash", "phash", "dhash", KIND),
                           search_hash_kinds=("phash", KIND))
    assert [sorted(result.groups[0].members)] == [[1, 2]]  # p1.jpg, p1 small.png
    db = out / "pixdedup.db"
    with sqlite3.connect(db) as conn:
        stored = dict(conn.execute(f"SELECT rel_path, {hash_column(KIND)} FROM images"))
    assert hash_column(KIND) == "hash_inverted_ahash" and len(stored) == 4
    assert all(v is not None for v in stored.values())
    with FeatureStore(str(db), lock=False) as store:
        sig = store.signatures(("phash", KIND), windows=False)
        records = store.records(sig.ids.tolist())
        paths = store.rel_paths(sig.ids.tolist())
    assert set(sig.hashes) == {"phash", KIND}
    for row, rid in enumerate(sig.ids.tolist()):  # the column holds what the extractor made
        assert int(sig.hashes[KIND][row]) == records[rid].hashes[KIND]
        assert records[rid].hashes[KIND] != records[rid].hashes["phash"]
    found = {tuple(sorted((paths[int(sig.ids[a])], paths[int(sig.ids[b])])))
             for a, b in hash_pairs(sig.hashes[KIND], 10).tolist()}
    assert ("p1 small.png", "p1.jpg") in found
