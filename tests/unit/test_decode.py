import io

import numpy as np
import pytest
from PIL import Image

from pixdedup.decode import decode, estimate_jpeg_quality
from pixdedup.errors import DecodeError

from ..conftest import synthetic_photo


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("q", [30, 50, 75, 90, 95])
def test_jpeg_quality_estimate(q):
    data = _bytes(synthetic_photo(1), "JPEG", quality=q)
    assert decode(data).jpeg_quality == q
    assert estimate_jpeg_quality(Image.open(io.BytesIO(data))) == q


def test_jpeg_is_dct_scaled_but_reports_original_size():
    big = synthetic_photo(1, (2400, 1600))
    d = decode(_bytes(big, "JPEG", quality=90), working_size=512)
    assert (d.width, d.height) == (2400, 1600)
    assert d.pixels.shape == (400, 600, 3)  # 1/4: the smallest scale whose longest side >= 512


def test_exif_orientation_applied():
    img = synthetic_photo(2, (300, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW for display
    d = decode(_bytes(img, "JPEG", quality=95, exif=exif.tobytes()))
    assert (d.width, d.height) == (200, 300)
    assert d.pixels.shape[:2] == (300, 200)
    assert d.has_metadata


def test_sixteen_bit_and_alpha():
    arr16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    d = decode(_bytes(Image.fromarray(arr16), "PNG"))
    assert d.bit_depth == 16 and d.pixels.dtype == np.uint8 and d.pixels.max() > 200
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    d = decode(_bytes(rgba, "PNG"))
    assert tuple(d.pixels[0, 0]) == (255, 255, 255)  # transparent -> white background


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF", "BMP", "GIF", "HEIF", "AVIF"])
def test_formats(fmt):
    d = decode(_bytes(synthetic_photo(4, (160, 120)).convert("RGB"), fmt))
    assert d.pixels.shape == (120, 160, 3)
    assert d.format in (fmt, "HEIF", "AVIF")


def test_gif_first_frame():
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    d = decode(buf.getvalue())
    assert d.pixels[0, 0, 0] > 200 and d.pixels[0, 0, 2] < 50


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"this is not an image at all", "not a recognised image format"),
    ],
)
def test_bad_bytes(data, message):
    with pytest.raises(DecodeError, match=message):
        decode(data)


def test_truncated_jpeg():
    data = _bytes(synthetic_photo(5), "JPEG", quality=90)
    with pytest.raises(DecodeError, match="truncated|corrupt"):
        decode(data[: len(data) // 3])


def test_decompression_bomb_guard_runs_before_decoding():
    data = _bytes(Image.new("L", (12000, 12000)), "PNG")
    with pytest.raises(DecodeError, match="image too large: 12000x12000"):
        decode(data, max_pixels=100_000_000)
