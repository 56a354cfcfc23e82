"""The extract stage: ImageRef + bytes -> ImageRecord, from one read and one decode.

Everything the later stages need is computed here from that single decode: the
content hash (blake3 of the bytes), the perceptual hashes, the colour signature,
the quality metrics and a small thumbnail that local verification and the reports
use.  A failure is recorded on the record (status ``error``), never raised.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import blake3
import cv2
import numpy as np

from .decode import decode
from .errors import DecodeError
from .features.color import color_signature
from .features.faces import FaceOptions, face_extractor
from .features.hashes import (
    DEFAULT_HASH_KINDS,
    HashSource,
    compute_hashes,
    oriented_hashes,
    window_check_hashes,
    window_hashes,
)
from .features.quality import measure_quality, quality_score
from .models import DecodedImage, ImageRecord, ImageRef, RecordStatus

log = logging.getLogger(__name__)

FEATURES_VERSION = 11
"""Bump when any feature's computation changes: stored features are then recomputed.
5: degenerate images (tiny, extreme aspect ratio, flat) get no perceptual hashes;
6: window hashes are DCT hashes (``features.hashes.WINDOW_HASH_KIND``), and the DCT
hash is also taken of the image mirrored and turned (``oriented_hashes``); 7: the saved
quality of lossy WebP and HEIC files (``features.codecs``), lossless WebP is lossless;
8: a lossy WebP the keeper's re-save test covers keeps its saved quality when its pixels
show JPEG blocks; 9: the wavelet hashes of the windows (``window_check_hashes``), which
confirm window hits before they become candidates; 10: the 80% windows at 5x5 positions
(was 3x3: ``features.hashes.WINDOW_LAYOUT``); colour's 64x64 reduction (``color.reduced``) and the
thumbnail encoded by OpenCV (quicker); 11: nested uniform borders (a pad around a
letterboxed photo: ``quality.border_fractions``) left out of the effective pixels."""

MIN_NEAR_SIDE = 16
"""Near-duplicate search needs at least this many pixels on the shorter side, of the
original and of the working image (an aspect ratio up to 32:1 at the default working
size): below it the perceptual hashes and keypoints describe interpolation, not content."""
MIN_DETAIL_STD = 2.0
"""Grey-level standard deviation of the working image below which an image is flat (one
colour, or one colour with compression noise): its hashes would be noise."""


@dataclass(frozen=True, slots=True)
class ExtractOptions:
    working_size: int = 480
    """``ScanConfig.working_size``."""
    thumbnail_size: int = 320
    thumbnail_quality: int = 85
    max_pixels: int = 200_000_000
    hash_kinds: tuple[str, ...] = DEFAULT_HASH_KINDS
    window_hashes: bool = True
    """The window hashes and the 7 oriented hashes serve only the near-mode crop and
    orientation searches."""
    model_input_size: int = 0
    """Similar mode: also cut the embedding model's input square (this side) from the decode."""
    faces: FaceOptions | None = None
    """Faces mode: also detect and embed the faces (the decode is then at least the
    detector's size)."""

    @property
    def decode_size(self) -> int:
        return max(self.working_size, self.faces.detect_size if self.faces else 0)


def content_hash(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def read_bytes(ref: ImageRef) -> bytes:
    with open(ref.uri, "rb") as fh:
        return fh.read()


def extract_file(ref: ImageRef, options: ExtractOptions) -> ImageRecord:
    """Read ``ref`` once and extract its record; I/O errors become an error record."""
    try:
        data = read_bytes(ref)
    except PermissionError:
        return error_record(ref, "permission denied: the file cannot be read")
    except IsADirectoryError:
        return error_record(ref, "is a directory")
    except FileNotFoundError:
        return error_record(ref, "file disappeared before it could be read")
    except OSError as exc:
        return error_record(ref, f"cannot read file: {exc.strerror or exc}")
    return extract_bytes(ref, data, options)


def error_record(ref: ImageRef, reason: str, content: str | None = None) -> ImageRecord:
    return ImageRecord(ref=ref, status=RecordStatus.ERROR, error=reason, content_hash=content)


def extract_bytes(ref: ImageRef, data: bytes, options: ExtractOptions) -> ImageRecord:
    digest = content_hash(data) if data else None
    try:
        decoded = decode(data, options.decode_size, options.max_pixels)
    except DecodeError as exc:
        return error_record(ref, str(exc), digest)
    try:
        return _features(ref, data, digest, decoded, options)
    except Exception as exc:  # a feature bug on one odd image must not stop the run
        log.exception("feature extraction failed for %s", ref.rel_path)
        return error_record(ref, f"feature extraction failed: {type(exc).__name__}: {exc}", digest)


def _features(
    ref: ImageRef, data: bytes, digest: str | None, decoded: DecodedImage, options: ExtractOptions
) -> ImageRecord:
    pixels = decoded.pixels
    full_res_grey = None
    if decoded.lossless or decoded.codec_quality is not None:
        # Lossless, WebP and HEIC files are decoded at full size: look for JPEG block
        # artefacts in a central crop before reducing (a PNG or WebP made from a JPEG
        # is not an original).
        h, w = pixels.shape[:2]
        y, x = max(0, h // 2 - 128) // 8 * 8, max(0, w // 2 - 128) // 8 * 8  # on the grid
        crop = pixels[y : y + 256, x : x + 256]
        full_res_grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    work = _reduce(pixels, options.working_size)
    grey = cv2.cvtColor(work, cv2.COLOR_RGB2GRAY)
    note = near_search_note(decoded.width, decoded.height, grey)
    hashes: dict[str, int] = {}
    windows: tuple[int, ...] = ()
    checks: tuple[int, ...] = ()
    oriented: tuple[int, ...] = ()
    if note is None:
        source = HashSource(grey)
        hashes = compute_hashes(source, options.hash_kinds)
        if options.window_hashes:
            windows = window_hashes(source)
            checks = window_check_hashes(source)
            oriented = oriented_hashes(source)
    color = color_signature(work)
    quality = measure_quality(decoded, grey, len(data), color.colorfulness, full_res_grey)
    thumbnail = thumbnail_jpeg(work, options)
    faces, face_error, face_seconds = None, None, 0.0
    if options.faces is not None:
        t = time.perf_counter()
        try:
            faces = tuple(face_extractor(options.faces).faces(pixels, decoded.width, decoded.height))
        except Exception as exc:  # one image's face stage must not lose its record
            log.warning("face stage failed for %s", ref.rel_path, exc_info=True)
            face_error = f"face stage failed: {type(exc).__name__}: {exc}"
        face_seconds = time.perf_counter() - t
    return ImageRecord(
        ref=ref,
        status=RecordStatus.OK,
        content_hash=digest,
        format=decoded.format,
        width=decoded.width,
        height=decoded.height,
        hashes=hashes,
        window_hashes=windows,
        window_checks=checks,
        oriented_hashes=oriented,
        color=color,
        quality=quality,
        quality_score=quality_score(quality),
        thumbnail=thumbnail,
        model_input=model_input(work, options.model_input_size) if options.model_input_size else None,
        note=note,
        faces=faces,
        face_error=face_error,
        face_seconds=face_seconds,
    )


def thumbnail_jpeg(work: np.ndarray, options: ExtractOptions) -> bytes:
    """The stored thumbnail: the working image reduced to ``thumbnail_size``, as JPEG."""
    thumb = _reduce(work, options.thumbnail_size)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(thumb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, options.thumbnail_quality])
    if not ok:
        raise ValueError("the thumbnail could not be encoded")
    return encoded.tobytes()


def near_search_note(width: int, height: int, grey: np.ndarray) -> str | None:
    """Why near-duplicate search is skipped for an image (None: it is not).  Such an
    image keeps its content hash, so its byte copies are still grouped, and it gets
    no perceptual hash, so it is never a near-duplicate candidate."""
    if min(width, height) < MIN_NEAR_SIDE:
        return (f"too small for near-duplicate search ({width}x{height} px, under "
                f"{MIN_NEAR_SIDE} px on a side): only byte copies are found")
    if min(grey.shape[:2]) < MIN_NEAR_SIDE:
        return (f"too narrow for near-duplicate search ({width}x{height} px): only byte "
                "copies are found")
    if float(cv2.meanStdDev(grey)[1][0, 0]) < MIN_DETAIL_STD:
        return "flat image (one colour, no detail): near-duplicate search skipped, only byte copies are found"
    return None


def model_input(rgb: np.ndarray, size: int) -> np.ndarray:
    """The whole frame squeezed into a ``size`` square (no crop: a crop would hide the
    borders that tell a padded or cropped copy from its original)."""
    h, w = rgb.shape[:2]
    interpolation = cv2.INTER_AREA if max(h, w) >= 2 * size else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interpolation)


def _reduce(rgb: np.ndarray, size: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    longest = max(h, w)
    if longest <= size:
        return np.ascontiguousarray(rgb)
    scale = size / longest
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    # Area averaging where aliasing would matter; below 2x (always the case after a
    # JPEG's DCT scaling) bilinear is as good and five times quicker.
    interpolation = cv2.INTER_AREA if scale <= 0.5 else cv2.INTER_LINEAR
    return cv2.resize(rgb, new, interpolation=interpolation)

