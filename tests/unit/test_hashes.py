import imagehash
import numpy as np
import pytest

from pixdedup.errors import UnknownNameError
from pixdedup.features.hashes import (
    HASH_KINDS,
    ORIENTATIONS,
    WINDOW_COUNT,
    HashSource,
    PerceptualHash,
    ahash_bits,
    compute_hashes,
    dhash_bits,
    hamming,
    orient,
    orient_whash,
    oriented_hashes,
    phash_bits,
    window_boxes,
    window_hashes,
)

from ..conftest import synthetic_photo


def test_hash_math_equals_imagehash_at_each_hash_size():
    # After its own resize ImageHash computes exactly what these do: feed inputs that
    # are already at that size (ImageHash's resize is then a copy).
    for seed in range(8):
        img = synthetic_photo(seed).convert("L")
        s32, s98, s8 = img.resize((32, 32)), img.resize((9, 8)), img.resize((8, 8))
        assert PerceptualHash(phash_bits(np.asarray(s32))).hex == str(imagehash.phash(s32))
        assert PerceptualHash(dhash_bits(np.asarray(s98))).hex == str(imagehash.dhash(s98))
        assert PerceptualHash(ahash_bits(np.asarray(s8))).hex == str(imagehash.average_hash(s8))


def test_hashes_stay_close_to_imagehash_on_photos():
    # The only difference is the reduction filter (area average, then the hash's own
    # size): a few bits at most, far below the near-duplicate thresholds.
    diffs: dict[str, list[int]] = {"phash": [], "dhash": [], "whash": []}
    for seed in range(12):
        grey = synthetic_photo(seed).convert("L").resize((512, 384))
        values = compute_hashes(np.asarray(grey))
        ref = {"phash": imagehash.phash(grey), "dhash": imagehash.dhash(grey),
               "whash": imagehash.whash(grey, image_scale=64)}
        for kind in diffs:
            diffs[kind].append(hamming(values[kind], int(str(ref[kind]), 16)))
    for kind, d in diffs.items():
        assert max(d) <= 8 and sum(d) / len(d) <= 2.5, (kind, d)


def test_whash_of_a_64_pixel_image_equals_imagehash():
    diffs = []
    for seed in range(12):
        grey = synthetic_photo(seed).convert("L").resize((64, 64))
        value = compute_hashes(np.asarray(grey), ("whash",))["whash"]
        diffs.append(hamming(value, int(str(imagehash.whash(grey, image_scale=64)), 16)))
    # equal except on exact float ties of the median (Haar round trip vs block means)
    assert max(diffs) <= 2 and sum(diffs) <= 4


def test_window_hash_is_the_phash_of_the_cropped_window():
    diffs = []
    for seed in range(4):
        grey = np.asarray(synthetic_photo(seed).convert("L").resize((512, 384)))
        src = HashSource(grey)
        boxes = window_boxes(512, 384)
        assert len(boxes) == len(window_hashes(src)) == WINDOW_COUNT == 34
        for (x, y, w, h), value in zip(boxes, window_hashes(src), strict=True):
            crop = np.ascontiguousarray(grey[y : y + h, x : x + w])
            diffs.append(hamming(value, compute_hashes(crop, ("phash",))["phash"]))
    # block means from the integral image vs an area resize to 64 and 2x2 blocks
    assert max(diffs) <= 4 and np.mean(diffs) <= 1.5, diffs


@pytest.mark.parametrize("size", [(512, 384), (640, 480), (333, 517)])
def test_oriented_whash_is_the_whash_of_the_oriented_image(size):
    # The candidate search relies on it: a turned or mirrored copy's hash is a
    # permutation of the original's bits, exactly, at any size.
    for seed in range(4):
        grey = np.asarray(synthetic_photo(seed).convert("L").resize(size))
        value = compute_hashes(grey, ("whash",))["whash"]
        assert len({orient(grey, o).shape for o in ORIENTATIONS}) == 2
        for name in ORIENTATIONS:
            turned = compute_hashes(orient(grey, name), ("whash",))["whash"]
            assert int(orient_whash(value, name)[0]) == turned, (seed, name)
    values = np.array([compute_hashes(np.asarray(synthetic_photo(s).convert("L").resize(size)),
                                      ("whash",))["whash"] for s in range(4)], dtype=np.uint64)
    turned_twice = orient_whash(orient_whash(values, "rotated 90"), "rotated 270")
    assert turned_twice.tolist() == values.tolist()


def test_orient_turns_counter_clockwise_after_mirroring():
    a = np.array([[1, 2, 3], [4, 5, 6]])
    assert orient(a, "mirrored").tolist() == [[3, 2, 1], [6, 5, 4]]
    assert orient(a, "rotated 90").tolist() == [[3, 6], [2, 5], [1, 4]]
    assert orient(a, "flipped").tolist() == [[4, 5, 6], [1, 2, 3]]
    assert orient(a, "rotated 180").tolist() == [[6, 5, 4], [3, 2, 1]]


def test_oriented_hashes_are_the_phash_of_the_oriented_image():
    for seed in range(3):
        grey = np.asarray(synthetic_photo(seed).convert("L").resize((512, 384)))
        turned = oriented_hashes(HashSource(grey))
        assert len(turned) == 7
        for value, name in zip(turned, ORIENTATIONS, strict=True):
            direct = compute_hashes(orient(grey, name), ("phash",))["phash"]
            assert hamming(value, direct) <= 2, (seed, name)


def test_verify_names_the_turn_nearest_first():
    from pixdedup.models import ImageRecord, ImageRef, RecordStatus
    from pixdedup.verify import matching_orientations

    grey = np.asarray(synthetic_photo(2).convert("L").resize((512, 384)))

    def record(img: np.ndarray) -> ImageRecord:
        src = HashSource(img)
        return ImageRecord(ref=ImageRef("x", "x", 0, 0.0), status=RecordStatus.OK,
                           hashes=compute_hashes(src, ("phash",)), oriented_hashes=oriented_hashes(src))

    a, b = record(grey), record(orient(grey, "rotated 90"))
    found = matching_orientations(a, b, 10)
    assert found[0][1] == "rotated 270" and found[0][0] <= 2  # b turned 270 more is a
    assert [d for d, _ in found] == sorted(d for d, _ in found)
    assert sorted(o for _, o in matching_orientations(a, b, 64)) == sorted(ORIENTATIONS)


def test_golden_values_are_stable():
    # Golden values: a change here means stored hashes would silently change meaning.
    grey = np.asarray(synthetic_photo(3).convert("L").resize((256, 192)))
    values = compute_hashes(grey, ("phash", "dhash", "whash"))
    assert {k: PerceptualHash(v).hex for k, v in values.items()} == GOLDEN


GOLDEN = {"phash": "873c21dbe370e998", "dhash": "566426646868e8cb", "whash": "0b1617be3f3c046b"}


def test_perceptual_hash_value_semantics():
    a = PerceptualHash.parse("00000000000000ff")
    b = PerceptualHash(0)
    assert a.distance(b) == 8 == a - b
    assert str(a) == "00000000000000ff"
    assert hamming(0xF0, 0x0F) == 8
    with pytest.raises(ValueError):
        PerceptualHash.parse("xyz")


def test_unknown_hash_kind_lists_valid_names():
    with pytest.raises(UnknownNameError, match="valid names: ahash, dhash, phash, whash"):
        HASH_KINDS.get("nope")


def test_row_medians_are_numpy_medians():
    from pixdedup.features.hashes import row_medians

    rng = np.random.default_rng(5)
    for n in (63, 64):
        rows = rng.normal(size=(50, n))
        rows[::3, : n // 2] = rows[::3, :1]  # ties at the middle
        rows[1::7] = np.round(rows[1::7])
        assert np.array_equal(row_medians(rows), np.median(rows, axis=1, keepdims=True))


def test_window_boxes_are_shared_and_read_only():
    assert window_boxes(480, 360) is window_boxes(480, 360)
    with pytest.raises(ValueError):
        window_boxes(480, 360)[0, 0] = 1
