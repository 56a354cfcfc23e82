"""Saved quality of WebP and HEIC files, and the keeper's derivation evidence."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps

from pixdedup.decode import decode, register_heif
from pixdedup.extract import ExtractOptions, extract_bytes
from pixdedup.features.codecs import codec_quality, webp_lossless
from pixdedup.models import ImageRef
from pixdedup.selection import choose_best, derivation, scores

from ..conftest import synthetic_photo


def _save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    register_heif()
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("quality", [50, 75, 80, 90])
def test_webp_and_heic_say_the_quality_they_were_saved_with(quality):
    img = synthetic_photo(1, (320, 240))
    assert codec_quality("WEBP", _save(img, "WEBP", quality=quality)) == quality
    assert codec_quality("HEIF", _save(img, "HEIF", quality=quality)) == quality
    decoded = decode(_save(img, "WEBP", quality=quality))
    assert decoded.codec_quality == quality and not decoded.lossless


def test_lossless_webp_is_lossless_and_odd_bytes_have_no_quality():
    img = synthetic_photo(2, (200, 150))
    data = _save(img, "WEBP", lossless=True)
    assert webp_lossless(data) and codec_quality("WEBP", data) is None
    assert decode(data).lossless
    assert codec_quality("WEBP", b"RIFF\x10\x00\x00\x00WEBPVP8 \x02\x00\x00\x00\x00\x00") is None
    assert codec_quality("HEIF", b"\x00\x00\x00\x18ftypheic" + b"\x00" * 40) is None
    assert codec_quality("PNG", data) is None


def _records(files: dict[str, bytes]):
    out = []
    for name, data in files.items():
        ref = ImageRef(uri=name, rel_path=name, size=len(data), mtime=1_600_000_000)
        out.append(extract_bytes(ref, data, ExtractOptions()))
    return out


def test_keeper_finds_a_lossy_webp_original_among_its_edited_copies():
    src = synthetic_photo(3, (640, 480))
    original = Image.open(io.BytesIO(_save(src, "WEBP", quality=80))).convert("RGB")
    arr = np.asarray(original).astype(np.float32)
    noisy = np.clip(arr + np.random.default_rng(0).normal(0, 8, arr.shape), 0, 255)
    files = {
        "original.webp": _save(src, "WEBP", quality=80),
        "converted.png": _save(original, "PNG"),
        "noise.png": _save(Image.fromarray(noisy.astype(np.uint8)), "PNG"),
        "blur.png": _save(original.filter(ImageFilter.GaussianBlur(3)), "PNG"),
        "grey.png": _save(ImageOps.grayscale(original), "PNG"),
        "border.jpg": _save(ImageOps.expand(original, 40, (255, 255, 255)), "JPEG", quality=92),
    }
    records = _records(files)
    members = list(range(len(records)))
    marks, deviation = derivation(records, members)
    by_name = {r.ref.rel_path: marks[k] for k, r in enumerate(records)}
    assert by_name["original.webp"] == []
    assert "converted" in by_name["converted.png"]
    assert "noisier" in by_name["noise.png"]
    assert "blurred" in by_name["blur.png"]
    assert "less colour" in by_name["grey.png"]
    assert "border" in by_name["border.jpg"]
    assert deviation[0] < max(deviation.values())
    score = scores(records, members)
    assert score[1] == score[0]  # the lossless conversion scores as the WebP it came from
    assert records[choose_best(records, members)].ref.rel_path == "original.webp"
