"""bytes -> one small RGB array, decoded once at reduced size.

JPEGs are decoded with DCT scaling (``Image.draft``), so a 12 MP photo costs a
fraction of a full decode.  EXIF orientation is applied, alpha is composited on
white, 16-bit data is scaled to 8 bits, animated images give their first frame.
Dimensions are checked *before* pixels are decoded (decompression-bomb guard).
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DecodeError
from .features.codecs import codec_quality, webp_lossless
from .features.jpeg import STD_LUMA, central_crop, converted_quality, primary_quality
from .models import DecodedImage

_HEIF_REGISTERED = False

#: File extensions pixdedup treats as images (lower case, with the dot).
IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".tif", ".tiff", ".bmp",
        ".dib", ".gif", ".heic", ".heif", ".hif", ".avif",
    }
)  # fmt: skip

LOSSLESS_FORMATS = frozenset({"PNG", "TIFF", "BMP", "GIF", "DIB"})


def register_heif() -> bool:
    """Register the HEIC/HEIF opener (pillow-heif) once; False if not installed."""
    global _HEIF_REGISTERED
    if not _HEIF_REGISTERED:
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
        except ImportError:  # pragma: no cover - pillow-heif is a core dependency
            return False
        _HEIF_REGISTERED = True
    return True


def warm_up() -> None:
    """Load now what the first decode and feature pass would load on the way: Pillow's
    image plugins, the HEIC opener and ``numpy.ma`` (``engines.preload``)."""
    import numpy.ma  # noqa: F401 - np.median imports it on its first call

    Image.init()
    register_heif()


def decode(data: bytes, working_size: int = 480, max_pixels: int = 200_000_000) -> DecodedImage:
    """Decode ``data`` once, at a size close to ``working_size`` (longest side).

    Raises :class:`DecodeError` with a one-line reason for anything that is not a
    readable image.
    """
    if not data:
        raise DecodeError("empty file (0 bytes)")
    register_heif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DecodeError("not a recognised image format") from None
    except Image.DecompressionBombError as exc:  # pragma: no cover - we disable Pillow's guard
        raise DecodeError(f"decompression bomb: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise many types on bad data
        raise DecodeError(f"cannot open image: {_reason(exc)}") from None
    try:
        with warnings.catch_warnings():  # e.g. corrupt EXIF: the image is still decoded
            warnings.simplefilter("ignore")
            return _decode_opened(im, data, working_size, max_pixels)
    except DecodeError:
        raise
    except Image.DecompressionBombError as exc:  # pragma: no cover
        raise DecodeError(f"decompression bomb: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - e.g. TypeError from a truncated TIFF page
        raise DecodeError(f"corrupt or truncated image data: {_reason(exc)}") from None
    finally:
        im.close()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _decode_opened(im: Image.Image, data: bytes, working_size: int, max_pixels: int) -> DecodedImage:
    fmt = im.format or "UNKNOWN"
    w, h = im.size
    if w <= 0 or h <= 0:
        raise DecodeError(f"invalid dimensions {w}x{h}")
    if w * h > max_pixels:
        raise DecodeError(
            f"image too large: {w}x{h} = {w * h / 1e6:.0f} megapixels exceeds the limit of "
            f"{max_pixels / 1e6:.0f} (decompression-bomb guard; raise --max-megapixels to allow)"
        )
    info = im.info
    has_metadata = bool(info.get("exif") or info.get("xmp") or info.get("icc_profile") or
                        info.get("XML:com.adobe.xmp"))
    jpeg_quality = estimate_jpeg_quality(im) if fmt == "JPEG" else None
    bit_depth = _bit_depth(im)
    orientation = 1
    try:
        orientation = int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # a broken EXIF block must not fail the image
        orientation = 1
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
    if fmt == "JPEG":
        # DCT scaling: decode at 1/2, 1/4 or 1/8 while the longest side stays
        # >= working_size (Pillow picks the largest factor keeping both sides >= the box).
        im.draft("RGB", draft_box(w, h, working_size))
    heif = heif_pixels(data) if fmt == "HEIF" and im.mode == "RGB" and orientation == 1 and \
        getattr(im, "n_frames", 1) == 1 else None
    if heif is None:
        im.load()
    lossless = fmt in LOSSLESS_FORMATS or bool(info.get("lossless")) or \
        (fmt == "WEBP" and webp_lossless(data))
    primary = _primary_quality(im, fmt, lossless, jpeg_quality, (w, h))  # before EXIF turns
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    if orientation != 1:
        im = ImageOps.exif_transpose(im)
    pixels = heif if heif is not None else _to_rgb_array(im)
    return DecodedImage(
        pixels=pixels,
        width=w,
        height=h,
        format=fmt,
        bit_depth=bit_depth,
        jpeg_quality=jpeg_quality,
        has_metadata=has_metadata,
        lossless=lossless,
        jpeg_primary_quality=primary,
        codec_quality=None if lossless else codec_quality(fmt, data),
    )


def heif_pixels(data: bytes) -> np.ndarray | None:
    """A single-image 8-bit RGB HEIC's pixels from libheif's own buffer: the same
    pixels as through Pillow (the same decoder, libheif's own turns applied), without
    Pillow copying a whole photo out once more (a 12 MP HEIC: about 500 -> 290 ms).
    None where it is not one."""
    import pillow_heif

    heif = pillow_heif.open_heif(data, convert_hdr_to_8bit=True)
    if len(heif) != 1 or heif.mode != "RGB":
        return None
    return np.asarray(heif)


def _primary_quality(im: Image.Image, fmt: str, lossless: bool, jpeg_quality: int | None,
                     size: tuple[int, int]) -> int | None:
    """``features.jpeg.primary_quality`` of a JPEG decoded at full size (not DCT-scaled),
    ``converted_quality`` of an 8-bit lossless file; None for anything else."""
    box = central_crop(*im.size)
    if box is None or im.mode not in ("RGB", "L") or im.size != size:
        return None
    if lossless:
        return converted_quality(np.asarray(im.crop(box).convert("L")))
    table = (getattr(im, "quantization", None) or {}).get(0)
    if fmt != "JPEG" or jpeg_quality is None or table is None or len(table) != 64:
        return None
    return primary_quality(np.asarray(im.crop(box).convert("L")), np.asarray(table),
                           jpeg_quality)


def draft_box(width: int, height: int, working_size: int) -> tuple[int, int]:
    """The box to pass to ``Image.draft`` so that the longest side of the DCT-scaled
    decode stays >= ``working_size`` (the working image's aspect ratio)."""
    scale = working_size / max(width, height)
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def _bit_depth(im: Image.Image) -> int:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I") or mode.endswith(";16"):
        return 16
    if mode == "F":
        return 32
    if mode == "1":
        return 1
    return 8


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im)
        if mode == "F":
            top = float(np.nanmax(arr)) if arr.size else 1.0
            grey = np.clip(np.nan_to_num(arr) / (top if top > 1.0 else 1.0) * 255.0, 0, 255)
        else:
            top = int(arr.max()) if arr.size else 0
            shift = 8 if top > 255 else 0
            grey = np.clip(arr.astype(np.int64) >> shift, 0, 255)
        g8 = grey.astype(np.uint8)
        return np.repeat(g8[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im)


def estimate_jpeg_quality(im: Image.Image) -> int | None:
    """Estimate the IJG quality (1..100) a JPEG was saved with, from its luminance
    quantisation table (the inverse of libjpeg's table scaling)."""
    tables = getattr(im, "quantization", None)
    if not tables:
        return None
    luma = tables.get(0)
    if luma is None or len(luma) != 64:
        return None
    if max(luma) <= 1:
        return 100
    scale = float(np.mean(np.asarray(luma, dtype=np.float64) * 100.0 / STD_LUMA.ravel()))
    if scale <= 1.0:
        return 100
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return int(max(1, min(100, round(quality))))



Image.MAX_IMAGE_PIXELS = None  # our own guard (max_pixels) runs before any pixel is decoded
