"""The stored form of an ``ImageRecord``: a versioned, typed serialisation.

    b"PXR" + version byte | u32 header length | header (JSON)
    | window and oriented hashes (uint64) | colour histogram (float32)

The header holds the record's fields by name.  Reading takes the fields this version
knows and leaves the rest to their defaults, so a field added later does not make
older rows unreadable, and nothing but plain values is ever decoded.  Rows written
before this format (pickles, ``_legacy``) are still read: open only feature stores
this project wrote.  The thumbnail and the model input are not part of it (the
thumbnail has its own column, the model input is never stored).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pickle
import struct
from typing import Any

import numpy as np

from .models import ColorSignature, ImageRecord, ImageRef, QualityMetrics, RecordStatus

MAGIC = b"PXR"
VERSION = 1
_LENGTH = struct.Struct("<I")


@functools.cache
def _names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


def _known(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    names = _names(cls)
    return {k: v for k, v in values.items() if k in names}


def encode(rec: ImageRecord) -> bytes:
    header: dict[str, Any] = {
        "ref": dataclasses.asdict(rec.ref), "status": rec.status.value, "error": rec.error,
        "content_hash": rec.content_hash, "format": rec.format, "width": rec.width,
        "height": rec.height, "hashes": rec.hashes, "oriented": len(rec.oriented_hashes),
        "windows": len(rec.window_hashes), "window_checks": len(rec.window_checks),
        "quality_score": rec.quality_score, "note": rec.note,
        "quality": dataclasses.asdict(rec.quality) if rec.quality is not None else None,
    }
    histogram = b""
    if rec.color is not None:
        hist = np.ascontiguousarray(rec.color.histogram, dtype=np.float32)
        header["color"] = {"shape": list(hist.shape), "grey_fraction": rec.color.grey_fraction,
                           "colorfulness": rec.color.colorfulness,
                           "dominant_colors": list(rec.color.dominant_colors)}
        histogram = hist.tobytes()
    text = json.dumps(header, separators=(",", ":")).encode()
    codes = np.asarray([*rec.window_hashes, *rec.oriented_hashes, *rec.window_checks],
                       dtype=np.uint64).tobytes()
    return MAGIC + bytes([VERSION]) + _LENGTH.pack(len(text)) + text + codes + histogram


def decode(body: bytes) -> ImageRecord:
    if body[:3] != MAGIC:
        return _legacy(body)
    if body[3] > VERSION:
        raise ValueError(f"stored record version {body[3]} is newer than this pixdedup ({VERSION})")
    (n,) = _LENGTH.unpack_from(body, 4)
    header: dict[str, Any] = json.loads(body[8:8 + n])
    n_windows, n_oriented = header.get("windows", 0), header.get("oriented", 0)
    n_checks = header.get("window_checks", 0)
    codes = np.frombuffer(body, dtype=np.uint64, count=n_windows + n_oriented + n_checks,
                          offset=8 + n).tolist()
    color = None
    if header.get("color") is not None:
        c = header["color"]
        hist = np.frombuffer(body, dtype=np.float32, offset=8 + n + 8 * len(codes)
                             ).reshape(c["shape"]).copy()
        color = ColorSignature(hist, c["grey_fraction"], c["colorfulness"],
                               tuple(c["dominant_colors"]))
    quality = header.get("quality")
    fields = _known(ImageRecord, header)
    fields.update(
        ref=ImageRef(**_known(ImageRef, header["ref"])), status=RecordStatus(header["status"]),
        hashes={k: int(v) for k, v in header.get("hashes", {}).items()},
        window_hashes=tuple(codes[:n_windows]),
        oriented_hashes=tuple(codes[n_windows:n_windows + n_oriented]),
        window_checks=tuple(codes[n_windows + n_oriented:]),
        color=color,
        quality=QualityMetrics(**_known(QualityMetrics, quality)) if quality is not None else None)
    return ImageRecord(**fields)


def _legacy(body: bytes) -> ImageRecord:
    """Rows written before this format (pickles of the record, stores of this project
    only); read once so an existing store stays usable, rewritten as they change."""
    rec = pickle.loads(body)  # the store's own earlier rows
    if not isinstance(rec, ImageRecord):
        raise ValueError("stored record is not an image record")
    _fill_defaults(rec)
    return rec


def _fill_defaults(obj: Any) -> None:
    """Slots an older pickle did not have (fields added since) get their defaults."""
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        if not hasattr(obj, f.name):
            if f.default is not dataclasses.MISSING:
                object.__setattr__(obj, f.name, f.default)
            elif f.default_factory is not dataclasses.MISSING:
                object.__setattr__(obj, f.name, f.default_factory())
        else:
            _fill_defaults(getattr(obj, f.name))
