"""Perceptual hashes as 64-bit values.

The seed cascade starts with a wavelet hash; pixdedup computes the wavelet hash,
the DCT hash (pHash), the difference hash (dHash) and the average hash from one
greyscale working image.  The definitions are ImageHash's (same bit order, same
thresholds, so a value's hex form reads like ``str(imagehash_value)``), in a
vectorised implementation: pHash, dHash and aHash start from one area-averaged 64x64
reduction of the working image (OpenCV ``INTER_AREA``; dHash's last 9x8 step stays
Lanczos), the wavelet hash and its windows from block means of one integral image,
instead of a Lanczos resize per hash: all of them together cost about a millisecond.
On an input already at a hash's own size the values equal ImageHash's bit for bit
(tests/unit/test_hashes.py); on photos they differ from ImageHash's by a few bits, as
two resampling filters do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image

from ..registry import Registry

HASH_BITS = 64
BASE_SIZE = 64
"""Every hash starts from the working image reduced (area average) to 64x64."""


@dataclass(frozen=True, slots=True)
class PerceptualHash:
    """A 64-bit perceptual hash value with a Hamming distance, a hex form and a parser."""

    value: int

    @property
    def hex(self) -> str:
        return f"{self.value:016x}"

    def distance(self, other: PerceptualHash) -> int:
        return hamming(self.value, other.value)

    def __sub__(self, other: PerceptualHash) -> int:
        return self.distance(other)

    @classmethod
    def parse(cls, text: str) -> PerceptualHash:
        value = int(text, 16)
        if not 0 <= value < 1 << HASH_BITS or len(text) != 16:
            raise ValueError(f"not a 64-bit hex hash: {text!r}")
        return cls(value)

    def __str__(self) -> str:
        return self.hex


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def bits_to_uint64(bits: np.ndarray) -> int:
    """64 booleans, row-major, first bit most significant (ImageHash's order)."""
    return int.from_bytes(np.packbits(np.asarray(bits, dtype=bool).ravel()).tobytes(), "big")


def reduce_to(grey: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-average ``grey`` (uint8 or float32, any size) to ``width`` x ``height``
    as float32; an input already at that size is returned unchanged (as float32)."""
    arr = np.asarray(grey)
    if arr.shape[:2] == (height, width):
        return arr.astype(np.float32, copy=False)
    return cv2.resize(arr.astype(np.float32, copy=False), (width, height), interpolation=cv2.INTER_AREA)


class HashSource:
    """One greyscale working image and the two reductions every hash starts from,
    each computed once: the 64x64 area average and the integral image."""

    def __init__(self, grey: np.ndarray) -> None:
        self.grey = np.asarray(grey)
        self._base: np.ndarray | None = None
        self._blocks32: np.ndarray | None = None
        self._integral: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        h, w = self.grey.shape[:2]
        return h, w

    @property
    def base(self) -> np.ndarray:
        # An area resize, not block means on whole pixels: those are five times quicker,
        # but the DCT hashes of turned copies moved enough to lose two of the accuracy
        # benchmark's rotated copies.
        if self._base is None:
            self._base = reduce_to(self.grey, BASE_SIZE, BASE_SIZE)
        return self._base

    @property
    def blocks32(self) -> np.ndarray:
        """The 32x32 block means of ``base`` (the DCT hash's input, in every orientation)."""
        if self._blocks32 is None:
            self._blocks32 = _blocks(self.base, 32)
        return self._blocks32

    @property
    def integral(self) -> np.ndarray:
        if self._integral is None:
            if self.grey.dtype == np.uint8 and self.grey.size < 2**23:  # int32 sums are exact
                self._integral = cv2.integral(self.grey, sdepth=cv2.CV_32S)
            else:
                self._integral = cv2.integral(self.grey.astype(np.float64), sdepth=cv2.CV_64F)
        return self._integral

    def block_means(self, boxes: np.ndarray, n: int = 8) -> np.ndarray:
        """Means of an ``n`` x ``n`` grid of blocks over each window (x, y, w, h) of
        ``boxes`` (k x 4), block edges rounded to whole pixels, from the integral image
        (no resampling): a k x n x n array."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        steps = np.arange(n + 1) / n
        # edges relative to the window's origin, so a window is hashed exactly like
        # the same pixels cropped out as an image of their own
        xs = (boxes[:, :1] + np.round(boxes[:, 2:3] * steps)).astype(np.intp)
        ys = (boxes[:, 1:2] + np.round(boxes[:, 3:4] * steps)).astype(np.intp)
        s = self.integral[ys[:, :, None], xs[:, None, :]].astype(np.float64)
        sums = s[:, 1:, 1:] - s[:, 1:, :-1] - s[:, :-1, 1:] + s[:, :-1, :-1]
        area = np.maximum(np.diff(ys), 1)[:, :, None] * np.maximum(np.diff(xs), 1)[:, None, :]
        means: np.ndarray = sums / area
        return means


def _dct_matrix(n: int, keep: int) -> np.ndarray:
    """The first ``keep`` rows of the unnormalised DCT-II of length ``n`` (scipy's
    ``fftpack.dct`` type 2, which ImageHash's phash uses)."""
    k = np.arange(keep)[:, None]
    i = np.arange(n)[None, :]
    return (2.0 * np.cos(np.pi * k * (2 * i + 1) / (2 * n))).astype(np.float64)


_DCT_32_8 = _dct_matrix(32, 8)


def _blocks(img: np.ndarray, out: int) -> np.ndarray:
    """Mean of ``out`` x ``out`` equal blocks of a square image whose side ``out`` divides."""
    n = img.shape[0] // out
    return img.reshape(out, n, out, n).mean(axis=(1, 3))


def phash_of(src: HashSource) -> int:
    """ImageHash phash (hash_size 8, highfreq_factor 4): 32x32, DCT, the 8x8 lowest
    frequencies against their median."""
    return phash_bits(src.blocks32)


def phash_bits(px: np.ndarray) -> int:
    """The phash of a 32x32 array (ImageHash's computation after its resize)."""
    low = (_DCT_32_8 @ np.asarray(px, dtype=np.float64) @ _DCT_32_8.T).reshape(1, 64)
    return bits_to_uint64(low > row_medians(low))


def phash_bits_many(px: np.ndarray) -> tuple[int, ...]:
    """``phash_bits`` of each 32x32 array of a k x 32 x 32 stack, in one product."""
    low = (_DCT_32_8 @ np.asarray(px, dtype=np.float64) @ _DCT_32_8.T).reshape(len(px), 64)
    bits = np.packbits(low > row_medians(low), axis=1)
    return tuple(int(v) for v in bits.view(">u8").ravel())


def row_medians(rows: np.ndarray) -> np.ndarray:
    """``np.median(rows, axis=1, keepdims=True)`` of a 2-D float array, the same values
    (the middle element, or the mean of the two middle ones) from one sort: numpy's
    general median costs about 50 us a call on 64 values, a tenth of a hash's budget."""
    s = np.sort(rows, axis=1)
    n = rows.shape[1]
    if n % 2:
        return s[:, n // 2 : n // 2 + 1]
    return (s[:, n // 2 - 1 : n // 2] + s[:, n // 2 : n // 2 + 1]) / 2


def dhash_of(src: HashSource) -> int:
    """ImageHash dhash (hash_size 8): 9x8, each pixel brighter than its left neighbour."""
    # Lanczos (as ImageHash) for this last step: neighbour differences are sensitive
    # to the filter, and an area average here would disagree with ImageHash on ~7 bits.
    return dhash_bits(np.asarray(
        Image.fromarray(src.base, mode="F").resize((9, 8), Image.Resampling.LANCZOS)))


def dhash_bits(px: np.ndarray) -> int:
    """The dhash of an 8-row, 9-column array."""
    px = np.asarray(px, dtype=np.float64)
    return bits_to_uint64(px[:, 1:] > px[:, :-1])


def whash_of(src: HashSource) -> int:
    """ImageHash whash (haar, image_scale 64, remove_max_haar_ll): with the Haar basis
    the level-3 approximation of the 64x64 image is, up to an affine map the median
    threshold ignores, its 8x8 block means (removing the DC term shifts all equally).
    The block means are taken from the integral image, so a window of the image
    (``window_hashes``) is hashed exactly like the whole."""
    h, w = src.shape
    return _whash_of_windows(src, np.array([[0, 0, w, h]]))[0]


def _whash_of_windows(src: HashSource, boxes: np.ndarray) -> list[int]:
    ll = src.block_means(boxes).reshape(len(boxes), 64)
    bits = np.packbits(ll > row_medians(ll), axis=1)
    return [int(v) for v in bits.view(">u8").ravel()]


def ahash_of(src: HashSource) -> int:
    """ImageHash average_hash (hash_size 8): 8x8 against their mean."""
    return ahash_bits(_blocks(src.base, 8))


def ahash_bits(px: np.ndarray) -> int:
    """The average hash of an 8x8 array."""
    px = np.asarray(px, dtype=np.float64)
    return bits_to_uint64(px > px.mean())


@dataclass(frozen=True, slots=True)
class HashKind:
    name: str
    version: str
    compute: Callable[[HashSource], int]
    """Takes the working image's HashSource, returns the 64-bit hash."""


HASH_KINDS: Registry[HashKind] = Registry("hash kind")

HASH_KINDS.add("whash", HashKind("whash", "blockmean-haar-2", whash_of))
HASH_KINDS.add("phash", HashKind("phash", "area64-dct-32-2", phash_of))
HASH_KINDS.add("dhash", HashKind("dhash", "area64-9x8-2", dhash_of))
HASH_KINDS.add("ahash", HashKind("ahash", "area64-8x8-2", ahash_of))

DEFAULT_HASH_KINDS = ("whash", "phash", "dhash")


def compute_hashes(grey: np.ndarray | HashSource,
                   kinds: tuple[str, ...] = DEFAULT_HASH_KINDS) -> dict[str, int]:
    """``grey``: the uint8 greyscale working image (any 2-D array) or its HashSource."""
    src = grey if isinstance(grey, HashSource) else HashSource(grey)
    return {name: HASH_KINDS.get(name).compute(src) for name in kinds}


WINDOW_LAYOUT = ((0.9, 3), (0.8, 5))
"""The windows of ``window_hashes``: for each (scale, n), windows of that share of the
width and height at n x n positions, evenly from one corner to the other.  A crop
matches the window nearest its position: at the 0.8 scale a 3x3 grid left a 20% crop
up to 5% of the frame off its window, and on the developer photos only half of such
crops were within the search radius of one; the 5x5 grid finds 88 of 90."""
WINDOW_COUNT = sum(n * n for _, n in WINDOW_LAYOUT)
"""Windows per image (34)."""


@lru_cache(maxsize=64)
def window_boxes(width: int, height: int) -> np.ndarray:
    """The (x, y, w, h) windows of ``window_hashes`` (``WINDOW_LAYOUT``), in order
    (cached per size, read-only: the window and check hashes of one image share them,
    and a collection has few distinct working sizes)."""
    boxes = []
    for scale, n in WINDOW_LAYOUT:
        ww, hh = max(1, round(width * scale)), max(1, round(height * scale))
        positions = np.linspace(0.0, 1.0, n)
        for fy in positions:
            for fx in positions:
                boxes.append((round((width - ww) * fx), round((height - hh) * fy), ww, hh))
    out = np.array(boxes)
    out.flags.writeable = False
    return out


WINDOW_HASH_KIND = "phash"
"""The full-frame hash that window hashes are compared with.  The DCT hash, not the
wavelet hash: on real photographs the coarse 8x8 wavelet hash of a window matches the
full frame of unrelated photos with the same layout (sky over ground) far too often
(on the developer photos 32% of all pairs were crop candidates, true or not, with
window whashes; window phashes keep the crops and drop nearly all of those)."""


def window_hashes(grey: np.ndarray | HashSource) -> tuple[int, ...]:
    """DCT hashes of the sub-windows ``window_boxes`` of ``grey``, used to find crops
    and padded copies: each window's 32x32 block means come from the integral image,
    then the phash computation (``phash_bits``), so a window hashes like the same
    pixels cropped out (within a few bits of that crop's ``phash_of``)."""
    src = grey if isinstance(grey, HashSource) else HashSource(grey)
    h, w = src.shape
    return phash_bits_many(src.block_means(window_boxes(w, h), 32))


CHECK_HASH_KIND = "whash"
"""The hash that confirms a search hit on the same frame, window or orientation before
the pair becomes a candidate (``candidates.corroborated``): the wavelet hash (8x8 block
means) describes the layout that the DCT hash's 64 signs can match by chance in
unrelated photos of one texture or one kind of scene."""


def window_check_hashes(grey: np.ndarray | HashSource) -> tuple[int, ...]:
    """Wavelet hashes (``whash_of``) of the same windows as ``window_hashes``, from
    the same integral image: a crop's full-frame wavelet hash is close to its
    original's window wavelet hash where their DCT hashes are close."""
    src = grey if isinstance(grey, HashSource) else HashSource(grey)
    h, w = src.shape
    return tuple(_whash_of_windows(src, window_boxes(w, h)))


ORIENTATIONS: dict[str, tuple[bool, int]] = {
    "rotated 90": (False, 1),
    "rotated 180": (False, 2),
    "rotated 270": (False, 3),
    "mirrored": (True, 0),
    "mirrored, rotated 90": (True, 1),
    "flipped": (True, 2),
    "mirrored, rotated 270": (True, 3),
}
"""The seven non-identity orientations of an image (the dihedral group of the
square): name -> (mirrored left-right first, then counter-clockwise quarter turns).
'flipped' is upside down (mirrored and turned 180 degrees)."""


ORIENTATION_LABELS = {
    "rotated 90": "rotated 90 deg", "rotated 180": "rotated 180 deg",
    "rotated 270": "rotated 90 deg", "mirrored": "mirrored",
    "mirrored, rotated 90": "mirrored on the main diagonal", "flipped": "upside down",
    "mirrored, rotated 270": "mirrored on the other diagonal",
}
"""How reports name an orientation.  A pair's evidence does not say which of its two
images is the turned one, so a quarter turn either way reads the same; mirror images
(the two diagonals included: the main one runs from the top left corner) are their
own inverse and keep their names."""


def orient(image: np.ndarray, orientation: str) -> np.ndarray:
    """``image`` (2-D or H x W x C) in ``orientation``, as a contiguous array."""
    mirrored, turns = ORIENTATIONS[orientation]
    arr = image[:, ::-1] if mirrored else image
    return np.ascontiguousarray(np.rot90(arr, turns))


_BIT_ORDER = {name: orient(np.arange(HASH_BITS).reshape(8, 8), name).ravel()
              for name in ORIENTATIONS}
_ORIENT_CHUNK = 1 << 20


def orient_whash(values: np.ndarray | int, orientation: str) -> np.ndarray:
    """The wavelet hashes of the images in ``orientation``, from their hashes alone.

    The wavelet hash is its image's 8x8 block means against their median; turning or
    mirroring the image moves the blocks (both sides are cut into eight) and keeps
    the median, so the oriented image's hash is a permutation of the bits
    (tests/unit/test_hashes.py checks it bit for bit).  The scan no longer searches
    these (``ORIENTED_HASH_KIND``: they pair unrelated real photos far too often); the
    candidate tests and benchmarks use them as exact synthetic oriented hashes."""
    arr = np.atleast_1d(np.asarray(values, dtype=np.uint64))
    order = _BIT_ORDER[orientation]
    out = np.empty_like(arr)
    for c0 in range(0, len(arr), _ORIENT_CHUNK):
        part = arr[c0:c0 + _ORIENT_CHUNK].astype(">u8").view(np.uint8).reshape(-1, 8)
        bits = np.unpackbits(part, axis=1).take(order, axis=1)
        packed = np.ascontiguousarray(np.packbits(bits, axis=1))
        out[c0:c0 + _ORIENT_CHUNK] = packed.view(">u8").ravel()
    return out


ORIENTED_HASH_KIND = "phash"
"""The hash searched in its mirrored and turned forms (``oriented_hashes``): on real
photographs the wavelet hash's exact bit permutation (``orient_whash``) matched about
6% of all pairs of unrelated images within 6 bits; the DCT hash matches far fewer."""


def oriented_hashes(src: HashSource) -> tuple[int, ...]:
    """The DCT hash of the image in each of the seven ``ORIENTATIONS``, in that order:
    the 32x32 block means of ``phash_of`` mirrored or turned (a square, so a quarter
    turn of the image is a quarter turn of its blocks), then ``phash_bits``."""
    blocks = src.blocks32
    return phash_bits_many(np.stack([orient(blocks, name) for name in ORIENTATIONS]))
