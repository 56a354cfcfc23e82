"""Each mode on its own: what it adds to extraction, its candidate search for a scan
and for query images (one search, so the two agree), and its settled pairs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pixdedup.config import ScanConfig
from pixdedup.errors import ConfigError
from pixdedup.extract import extract_file
from pixdedup.ingest import extract_options
from pixdedup.models import ImageRef, Signatures
from pixdedup.modes import Found, get_mode, mode_names
from pixdedup.modes.near import hash_query_pairs

from ..conftest import synthetic_photo


def test_modes_are_registered_by_name_in_help_order() -> None:
    assert mode_names() == ["near", "exact", "similar", "faces"]
    assert [get_mode(n).window_hashes for n in mode_names()] == [True, False, True, True]
    assert [get_mode(n).embeds for n in mode_names()] == [False, False, True, False]
    assert [get_mode(n).faces for n in mode_names()] == [False, False, False, True]
    with pytest.raises(ConfigError,
                       match="unknown mode 'fuzzy'; valid modes: near, exact, similar, faces"):
        ScanConfig(mode="fuzzy").validate()


def test_extraction_follows_the_mode() -> None:
    assert extract_options(ScanConfig(mode="near")).window_hashes
    assert not extract_options(ScanConfig(mode="exact")).window_hashes


def test_exact_mode_settles_every_pair_as_distinct_and_searches_nothing() -> None:
    mode, config = get_mode("exact"), ScanConfig(mode="exact")
    ok, ev = mode.settled((0, 1), Found(), config)  # type: ignore[misc]
    assert (ok, ev.stage) == (False, "exact")
    empty = Signatures(np.zeros(0, np.int64), {}, np.zeros(0, np.uint64), np.zeros(0, np.int64))
    assert mode.query_pairs(empty, empty, config).shape == (0, 2)


def test_similar_mode_settles_embedding_pairs_only_for_dbscan() -> None:
    mode = get_mode("similar")
    found = Found(cosines={(0, 1): 0.91234})
    ok, ev = mode.settled((0, 1), found, ScanConfig(mode="similar", cluster="dbscan"))  # type: ignore[misc]
    assert (ok, ev.stage, ev.embedding_similarity) == (True, "embedding", 0.9123)
    assert mode.settled((0, 1), found, ScanConfig(mode="similar")) is None
    assert mode.settled((0, 2), found, ScanConfig(mode="similar", cluster="dbscan")) is None
    assert get_mode("near").settled((0, 1), found, ScanConfig()) is None


def _sig(values: dict[str, list[int]], windows: list[list[int]], oriented: list[list[int]]
         ) -> Signatures:
    n = len(next(iter(values.values())))
    return Signatures(np.arange(100, 100 + n, dtype=np.int64),
                      {k: np.asarray(v, np.uint64) for k, v in values.items()},
                      np.asarray([w for ws in windows for w in ws], np.uint64),
                      np.asarray([i for i, ws in enumerate(windows) for _ in ws], np.int64),
                      np.asarray(oriented, np.uint64).reshape(-1, 7))


def test_query_search_finds_full_frame_window_and_turned_matches() -> None:
    far = [0x0F0F_0F0F_0F0F_0F0F, 0xF0F0_F0F0_F0F0_F0F0, 0x00FF_00FF_00FF_00FF, 0xFF00_FF00_FF00_FF00]
    collection = _sig({"phash": far[:3]}, [[1 << 40], [], []], [[0] * 7] * 3)
    queries = _sig({"phash": [far[0] ^ 0b111,  # 3 bits from collection row 0
                              1 << 40,  # a collection window: a crop of image 100
                              far[3]]},  # nothing as it is ...
                   [[], [], []],
                   [[0] * 7, [0] * 7, [far[2], 0, 0, 0, 0, 0, 0]])  # ... but mirrored: row 2
    pairs = hash_query_pairs(collection, queries, ScanConfig())
    assert sorted(map(tuple, pairs.tolist())) == [(0, 100), (1, 100), (2, 102)]
    no_turns = hash_query_pairs(collection, queries, ScanConfig(orientations=False))
    assert (2, 102) not in set(map(tuple, no_turns.tolist()))


def test_scan_search_and_query_search_agree(tmp_path) -> None:
    # the same mirrored copy is a candidate of its original in the collection's own
    # search and when it is asked as a query
    paths = []
    for seed in range(4):
        p = tmp_path / f"p{seed}.jpg"
        synthetic_photo(seed).save(p, quality=90)
        paths.append(p)
    Image.open(paths[2]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "m.jpg")
    paths.append(tmp_path / "m.jpg")
    config = ScanConfig()
    opts = extract_options(config)
    recs = [extract_file(ImageRef(str(p), p.name, p.stat().st_size, 0.0), opts) for p in paths]
    from pixdedup.candidates import near_candidates

    everything = Signatures.from_records(recs, config.hash_kinds)
    scan_pairs = near_candidates(everything, config.max_hamming_distance, config.max_window_distance,
                                 max_orientation_distance=config.max_orientation_distance).pairs
    assert (2, 4) in set(map(tuple, scan_pairs.tolist()))
    collection = Signatures.from_records(recs[:4], config.hash_kinds)
    query = Signatures.from_records(recs[4:], config.hash_kinds)
    found = get_mode("near").query_pairs(collection, query, config)
    assert [int(rid) for _, rid in found.tolist()] == [2]
    assert np.array_equal(get_mode("similar").query_pairs(collection, query, config), found)


def test_near_mode_rejects_an_unpaired_pair_whose_hashes_are_far_without_pixels(tmp_path) -> None:
    # an image reaching a group's best through another member: verified only where
    # some way of pairing the two (the full frames, a window, an orientation) is within
    # the search radii plus the margin; the hashes come from the two records
    from pixdedup.modes.near import Reach

    photo = synthetic_photo(40, (640, 480))
    crop = photo.crop((60, 40, 600, 440))
    other = synthetic_photo(41, (640, 480))
    tiny = Image.new("RGB", (10, 10), (90, 120, 30))  # too small to hash
    records = {}
    for k, img in enumerate([photo, crop, other, tiny]):
        p = tmp_path / f"{k}.jpg"
        img.save(p, quality=90)
        records[k] = extract_file(ImageRef(str(p), p.name, p.stat().st_size, 0.0),
                                  extract_options(ScanConfig()))
    reach = Reach.of(records, ScanConfig())
    assert reach is not None
    assert reach(0, 1) and reach(1, 0)  # a crop: near one of the photo's windows
    assert not reach(0, 2)  # another photo: far every way
    assert reach(0, 3)  # no hashes: always verified
    near, config = get_mode("near"), ScanConfig()
    found = Found(pairs=[(0, 2)], distance={(0, 2): 12}, within_reach=reach)
    assert near.settled((0, 2), found, config) is None  # a candidate pair: verified
    assert near.settled((0, 1), found, config) is None
    ok, ev = near.settled((1, 2), found, config)  # type: ignore[misc]
    assert (ok, ev.stage) == (False, "signatures")
    assert Reach.of(records, ScanConfig(max_unpaired_margin=-1)) is None
    # a batch answered in one pass gives each pair's own answer; a batch with an image
    # that has no hashes is answered pair by pair
    for batch, answers in (([(0, 1), (0, 2), (1, 2)], [True, False, False]),
                           ([(0, 1), (0, 2), (0, 3), (1, 2)], [True, False, True, False])):
        assert [reach(a, b) for a, b in batch] == answers
        reach.prepare(batch)
        assert len(reach._answers) == (3 if 3 not in {x for p in batch for x in p} else 0)
        assert [reach(a, b) for a, b in batch] == answers
        assert not reach._answers  # each answer is used once
