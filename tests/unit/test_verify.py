"""The pixel cascade on its own (``verify.Verifier``): byte copies, re-encodes, the
colour gate, unrelated photos, mirrored copies and the similar-mode embedding check."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageOps

from pixdedup.config import ScanConfig
from pixdedup.extract import extract_bytes
from pixdedup.ingest import extract_options
from pixdedup.models import ImageRecord, ImageRef, RecordStatus
from pixdedup.verify import Verifier, VerifyOptions, decide, verify_pairs

from ..conftest import synthetic_photo


def _record(img: Image.Image, name: str, fmt: str = "JPEG", **save: object) -> ImageRecord:
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    data = buf.getvalue()
    return extract_bytes(ImageRef(name, name, len(data), 0.0), data, extract_options(ScanConfig()))


@pytest.fixture(scope="module")
def records() -> list[ImageRecord]:
    photo = synthetic_photo(11)
    hue = ImageOps.colorize(ImageOps.grayscale(photo), "#0000ff", "#ffff00")
    return [
        _record(photo, "original.jpg", quality=92),
        _record(photo, "same bytes.jpg", quality=92),
        _record(photo.resize((480, 360)), "smaller.png", "PNG"),
        _record(synthetic_photo(12), "unrelated.jpg", quality=92),
        _record(ImageOps.mirror(photo), "mirrored.jpg", quality=90),
        _record(hue, "recoloured.jpg", quality=90),
    ]


def test_cascade_verdicts(records: list[ImageRecord]) -> None:
    v = Verifier(records, VerifyOptions.of(ScanConfig()))
    ok, ev = v.verify(0, 1)
    assert (ok, ev.stage, ev.similarity) == (True, "exact", 1.0)
    ok, ev = v.verify(0, 2)
    assert ok and ev.stage == "hash" and ev.similarity is not None and ev.similarity > 0.975
    ok, ev = v.verify(0, 3)
    assert not ok
    ok, ev = v.verify(0, 4)
    assert ok and ev.transform is not None and ev.transform.startswith("mirrored")
    ok, ev = v.verify(0, 5)
    assert (ok, ev.stage) == (False, "color")  # the colour gate: no pixels compared


def test_without_orientations_a_mirror_image_is_not_a_copy(records: list[ImageRecord]) -> None:
    v = Verifier(records, VerifyOptions.of(ScanConfig(orientations=False)))
    assert v.verify(0, 4)[0] is False


def test_the_embedding_check_confirms_what_the_near_cascade_rejects(records) -> None:
    v = Verifier(records, VerifyOptions.of(ScanConfig(mode="similar")))
    (ok, ev), fresh = decide(v, 0, 5, cosine=0.95, min_cosine=0.6)
    assert fresh is not None and fresh[0] is False and fresh[1].stage == "color"  # what is remembered
    assert (ok, ev.stage, ev.embedding_similarity) == (True, "embedding", 0.95)  # keypoints agree
    (ok_low, ev_low), _ = decide(v, 0, 3, cosine=0.1, min_cosine=0.6)
    assert ok_low is False and ev_low.embedding_similarity == 0.1
    out = verify_pairs(v, [(0, 2), (0, 3)])
    assert [(a, b, ok) for a, b, ok, _, _ in out] == [(0, 2, True), (0, 3, False)]


def test_the_verdict_key_keeps_the_names_it_was_first_stored_under() -> None:
    """Renaming a setting must not void the verdicts a store remembers: the key spells
    the settings as they were first keyed (min_similarity, similar_min_similarity)."""
    from pixdedup.verdicts import verifier_key

    options = VerifyOptions()
    key = verifier_key(ScanConfig(), options)
    old_repr = repr(options).replace("min_pixel_similarity", "min_similarity")
    assert old_repr in key and "min_pixel_similarity" not in key
    assert verifier_key(ScanConfig(), VerifyOptions(min_pixel_similarity=0.9)) != key


def test_a_few_pairs_are_split_over_the_workers_with_only_their_records() -> None:
    from pixdedup.verify import PAIRS_PER_TASK, make_tasks

    pairs = [(4, 1), (0, 1), (2, 3), (0, 2), (5, 6)]
    fetched: list[set[int]] = []

    def fetch(ids: set[int]) -> dict[int, ImageRecord]:
        fetched.append(set(ids))
        return {i: ImageRecord(ref=ImageRef(uri=str(i), rel_path=str(i), size=1, mtime=0),
                               status=RecordStatus.OK)
                for i in ids}

    tasks = list(make_tasks(pairs, fetch, VerifyOptions(), size=3))
    assert [t.pairs for t in tasks] == [[(0, 1), (0, 2), (2, 3)], [(4, 1), (5, 6)]]
    assert [set(t.records) for t in tasks] == [{0, 1, 2, 3}, {1, 4, 5, 6}] == fetched
    assert len(list(make_tasks(pairs * 20, fetch, VerifyOptions()))) == -(-100 // PAIRS_PER_TASK)
