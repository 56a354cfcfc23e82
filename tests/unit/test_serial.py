"""The stored record format: every field comes back, unknown fields are ignored,
missing ones take their defaults, and older pickled rows are still read."""

from __future__ import annotations

import io
import json
import pickle
import struct
from dataclasses import replace

import numpy as np
import pytest

from pixdedup import serial
from pixdedup.config import ScanConfig
from pixdedup.extract import extract_bytes
from pixdedup.features.hashes import WINDOW_COUNT
from pixdedup.ingest import extract_options
from pixdedup.models import ImageRecord, ImageRef

from ..conftest import synthetic_photo


@pytest.fixture(scope="module")
def record() -> ImageRecord:
    buf = io.BytesIO()
    synthetic_photo(3).save(buf, "JPEG", quality=88)
    data = buf.getvalue()
    rec = extract_bytes(ImageRef("/x/p.jpg", "p.jpg", len(data), 12.5, etag="e", md5="m"), data,
                        extract_options(ScanConfig()))
    return replace(rec, thumbnail=None, model_input=None)


def _same(a: ImageRecord, b: ImageRecord) -> None:
    assert a.color is not None and b.color is not None
    assert np.array_equal(a.color.histogram, b.color.histogram)
    assert a.color.histogram.dtype == b.color.histogram.dtype
    assert replace(a, color=None) == replace(b, color=None)
    assert replace(a.color, histogram=None) == replace(b.color, histogram=None)  # type: ignore[arg-type]


def test_round_trip_keeps_every_field(record: ImageRecord) -> None:
    body = serial.encode(record)
    assert body[:4] == b"PXR\x01" and b"pickle" not in body
    back = serial.decode(body)
    _same(back, record)
    assert back.hashes["phash"] == record.hashes["phash"] and len(back.window_hashes) == WINDOW_COUNT
    assert back.quality is not None and back.quality.jpeg_quality == 88


def test_unknown_fields_are_ignored_and_missing_ones_default(record: ImageRecord) -> None:
    body = serial.encode(record)
    (n,) = struct.unpack_from("<I", body, 4)
    header = json.loads(body[8:8 + n])
    header["a field from a later version"] = 1
    header["quality"]["a later metric"] = 2.0
    del header["note"], header["quality"]["codec_quality"]
    text = json.dumps(header).encode()
    back = serial.decode(body[:4] + struct.pack("<I", len(text)) + text + body[8 + n:])
    assert back.note is None and back.quality is not None and back.quality.codec_quality is None
    assert back.quality.sharpness == record.quality.sharpness  # type: ignore[union-attr]


def test_a_newer_version_is_refused_and_old_pickles_are_read(record: ImageRecord) -> None:
    with pytest.raises(ValueError, match="newer than this pixdedup"):
        serial.decode(b"PXR\x09" + serial.encode(record)[4:])
    _same(serial.decode(pickle.dumps(record, protocol=5)), record)


def test_an_old_pickle_without_later_fields_gets_their_defaults(
        record: ImageRecord, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pickle from before ``codec_quality`` existed: its quality metrics carry one value
    fewer, and the field it lacks reads as its default instead of raising."""
    assert record.quality is not None
    cls = type(record.quality)
    full = cls.__getstate__  # type: ignore[attr-defined]
    monkeypatch.setattr(cls, "__getstate__", lambda self: full(self)[:-1])  # the older class
    old = pickle.dumps(record, protocol=5)
    monkeypatch.undo()
    back = serial.decode(old)
    assert back.quality is not None and back.quality.codec_quality is None
    assert back.quality.sharpness == record.quality.sharpness
