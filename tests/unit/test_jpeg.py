"""Re-saved JPEGs and JPEGs saved losslessly: the earlier quality from the coefficients,
and the keeper that credits it."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from pixdedup.decode import decode
from pixdedup.features.quality import measure_quality, quality_score
from pixdedup.models import ImageRecord, ImageRef, RecordStatus
from pixdedup.selection import choose_best, scores

from ..conftest import synthetic_photo


def _save(img: Image.Image, fmt: str, **kw: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _resave(data: bytes, quality: int) -> bytes:
    return _save(Image.open(io.BytesIO(data)).convert("RGB"), "JPEG", quality=quality)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_upward_resave_shows_its_earlier_quality(seed):
    photo = synthetic_photo(seed)
    once = _save(photo, "JPEG", quality=50)
    assert decode(once).jpeg_primary_quality is None
    for higher in (70, 85):  # (at 90 and above, finer steps: found less often)
        twice = decode(_resave(once, higher))
        assert twice.jpeg_quality == higher and twice.jpeg_primary_quality == 50
    for single in (60, 75, 85, 90, 95):  # saved once: nothing to find
        assert decode(_save(photo, "JPEG", quality=single)).jpeg_primary_quality is None
    # saved again lower: the file's own quality is the lower one, nothing earlier shows
    assert decode(_resave(_save(photo, "JPEG", quality=92), 60)).jpeg_primary_quality is None


def test_lossless_copy_of_a_jpeg_counts_as_that_jpeg():
    photo = synthetic_photo(4)
    jpeg = _save(photo, "JPEG", quality=50)
    png = _save(Image.open(io.BytesIO(jpeg)).convert("RGB"), "PNG")
    decoded = decode(png)
    assert decoded.lossless and decoded.jpeg_primary_quality == 50
    assert decode(_save(photo, "PNG")).jpeg_primary_quality is None  # never a JPEG
    grey = decoded.pixels.mean(axis=2).astype("uint8")
    metrics = measure_quality(decoded, grey, len(png), 10.0)
    assert not metrics.lossless and metrics.jpeg_quality == 50


def _record(name: str, data: bytes, mtime: float) -> ImageRecord:
    decoded = decode(data)
    grey = decoded.pixels.mean(axis=2).astype("uint8")
    q = measure_quality(decoded, grey, len(data), 10.0)
    ref = ImageRef(uri=f"/c/{name}", rel_path=name, size=len(data), mtime=mtime)
    return ImageRecord(ref, RecordStatus.OK, format=decoded.format, width=decoded.width,
                       height=decoded.height, quality=q, quality_score=quality_score(q))


def test_keeper_credits_a_resave_with_its_source_in_the_group():
    photo = synthetic_photo(5)
    original = _save(photo, "JPEG", quality=50)
    records = [_record("copy.jpg", _resave(original, 85), 2.0),  # larger, "better"
               _record("original.jpg", original, 1.0)]
    assert records[0].quality_score > records[1].quality_score + 3
    credited = scores(records, [0, 1])
    assert credited[0] == quality_score(records[0].quality, 50) < records[0].quality_score
    assert choose_best(records, [0, 1]) == 1
    # without its source in the group the re-save keeps its own quality: a crop of the
    # source (another size) says nothing about it
    crop = _save(Image.open(io.BytesIO(original)).convert("RGB").crop((40, 40, 600, 440)),
                 "JPEG", quality=50)
    alone = [records[0], _record("crop.jpg", crop, 2.0)]
    assert scores(alone, [0, 1])[0] == records[0].quality_score
