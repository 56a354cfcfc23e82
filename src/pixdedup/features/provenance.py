"""Which of two same-size images was saved from the other: the re-save test.

A lossy save is a deterministic function of the pixels it is given: the same pixels,
the same codec and the same settings give the same file.  So when image *copy* was
made by saving the pixels of image *source* again (a conversion to another format, a
re-save at another quality, an edit outside the compared area), saving *source*'s
pixels with *copy*'s own settings reproduces *copy* (almost exactly: encoders of one
library agree to the grey level; another encoder of the same codec comes close); the
other way round it does not, since *copy*'s save lost what *source* still had.  A
copy made that way carries no more than its source, whatever quality it claims, and
the keeper must not prefer it (``selection.refine_keeper``).

*copy*'s settings are read from the file:

* JPEG: its quantisation tables and chroma subsampling (libjpeg re-creates them);
  the test compares a central, MCU-aligned crop (blocks are coded independently, so
  a crop re-saves exactly as in the whole image: cheap for large photos).
* lossy WebP: the quality that gives the key frame's luma quantiser index
  (``codecs.vp8_quantizer``); libwebp's index for a quality depends on the image, so
  the whole image is saved at the header's estimate and then at qualities stepped
  toward the index until it matches (usually one to three saves).
* HEIC: the quality of its slice QP (``codecs.HEVC_QUALITY``), the whole image saved
  with pillow-heif.  That is asked only of a HEIC *source* (is the JPEG or WebP the
  best member claims to be a re-save of it): a HEIC file is a camera's original far
  more often than a copy, and one x265 save takes about a second per megapixel here,
  so only ``COPY_FORMATS`` are tested as copies.
* a lossless file reproduces only its own pixels: it is never a re-save here (a
  lossless copy of a lossy file is the ``converted`` case of ``selection``).

A JPEG saves the same pixels again almost exactly, so a source made *from* a JPEG copy
(a HEIC or WebP of the JPEG's pixels, at the same size) also reproduces it: saved with
the JPEG's tables, it snaps back onto the JPEG's quantisation lattice.  Such a source
sits on that lattice itself (``on_lattice``), where a source the JPEG was saved from
lies anywhere within the steps; then only the opposite save tells which came first,
and where it is not made (a HEIC or WebP over ``MAX_WHOLE_PIXELS``) the answer is no.

Cost: two decodes and one to a few saves per tested pair; the answer is remembered in
the feature store (``FeatureStore.provenance``), keyed by the two content hashes and
``PROVENANCE_VERSION``, so a rerun tests only pairs with a new image.

The keeper's other tests on two files' pixels live here too: ``carries_blocks`` (the
JPEG blocks of an earlier save), ``converted_from`` (a lossless file of a lossy one's
pixels with a local edit), ``noisier`` and ``blurrier`` (noise or a blur added in an
edit, measured at full resolution: the working image averages them away).
"""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from . import codecs

PROVENANCE_VERSION = 4
"""Bump when a verdict of ``resaved_from`` can change for the same two files (3: a copy
with the source's pixels in most blocks but not all is tested, not taken for the same
pixels; 4: a source on the JPEG copy's lattice, ``on_lattice``, needs the opposite
save)."""
LOCAL_EDIT_RATIO = 6.0
"""A 16 px block differing between two images by more than this many times (their
90th percentile block difference + 1 grey level) is an edit, not a save's loss: the
two show different pictures there (a watermark), and neither is the other saved again.
On the developer benchmark's formats draws 1 and 3, re-saves down to JPEG q50 and WebP
conversions measured at most 4.1, captions at least 14, 28 of draw 1's 30 corner
watermarks over 6 (the other two are nearly invisible on a light ground)."""

CROP = 512
"""Side of the central crop compared for JPEG (a multiple of the 16-pixel MCU)."""
MAX_PIXELS = 40_000_000
"""Larger images are not tested."""
MAX_WHOLE_PIXELS = 8_000_000
"""Larger images are not saved whole (a lossy WebP is then not tested as a copy, and
a HEIC source not saved the other way): each save takes about a second per 4
megapixels here."""
COPY_FORMATS = ("JPEG", "WEBP")
"""The formats whose files are tested as copies (see the module docstring)."""
REPRODUCED = 0.1
"""The re-save reproduces the copy: typical difference at most this share of the
difference between the two images (or ``EXACT`` grey levels, whichever is larger)..."""
EXACT = 0.05
REVERSE_RATIO = 0.5
"""... and at most this share of the difference the opposite re-save leaves.  That is
asked unless the two codecs differ and the re-save is ``IDENTICAL`` (or the source too
large to save whole) and the source is not ``on_lattice`` (on it and too large: no):
within one codec,
saving a re-save again at the coarser, earlier setting snaps back to the earlier file
almost exactly (a JPEG q85 of a q50 file, saved at q50, gives that file back), so only
the opposite direction tells."""
IDENTICAL = 0.01
BLOCK = 16
"""Side of the blocks whose median difference measures a reproduction."""
MIN_DIFFERENCE = 0.05
"""Typical (block median) grey-level difference below which two images count as the
same pixels."""


@dataclass(frozen=True, slots=True)
class SaveSettings:
    """How to save pixels the way a lossy file was saved."""

    format: str
    """Pillow format name: JPEG, WEBP or HEIF."""
    options: dict[str, object]
    """Pillow save options (WebP: the quality the search starts from)."""
    whole: bool
    """The whole image must be saved (else a central MCU-aligned crop is enough)."""
    webp_index: int | None = None
    """WebP: the luma quantiser index to match (the quality is searched)."""


WEBP_SEARCH = 8
"""Most whole-image WebP saves tried to match a quantiser index."""


def save_settings(data: bytes, fmt: str) -> SaveSettings | None:
    """How ``data`` (a file of Pillow format ``fmt``) was saved, or None (a lossless
    file, or one whose settings cannot be read)."""
    from PIL import Image, JpegImagePlugin

    if fmt == "JPEG":
        with Image.open(io.BytesIO(data)) as im:
            tables = getattr(im, "quantization", None)
            if not tables:
                return None
            sampling = JpegImagePlugin.get_sampling(im)
        return SaveSettings("JPEG", {"qtables": tables, "subsampling": max(0, sampling)},
                            whole=False)
    if fmt == "WEBP":
        if codecs.webp_lossless(data):
            return None
        index = codecs.vp8_quantizer(data)
        if index is None:
            return None
        quality = codecs.webp_quality(data)
        return SaveSettings("WEBP", {"quality": quality if quality is not None else 80},
                            whole=True, webp_index=index)
    if fmt == "HEIF":
        q = codecs.heif_quality(data)
        if q is None:
            return None
        return SaveSettings("HEIF", {"quality": q}, whole=True)
    return None


DECODED_BYTES = 256 * 2**20
"""Decoded files kept in a process, the most recent first (at least the last two, one
test's): a group's tests ask about its best and the members of its size again and
again (``keeper.run_group``, which lets go of them when the group's task ends:
``forget_decoded``), and each file is decoded once."""
_recent: OrderedDict[bytes, tuple[np.ndarray, str]] = OrderedDict()


def forget_decoded() -> None:
    """Let go of the decoded files (a group's tests are done: the next group's are
    other files)."""
    _recent.clear()


def _pixels(data: bytes) -> tuple[np.ndarray, str]:
    """The file's RGB pixels, upright, and its format (``DECODED_BYTES``)."""
    found = _recent.get(data)
    if found is not None:
        _recent.move_to_end(data)
        return found
    found = _rgb(data)
    found[0].flags.writeable = False  # kept for the next test: no one may change it
    _recent[data] = found
    held = sum(a.nbytes for a, _ in _recent.values())
    while len(_recent) > 2 and held > DECODED_BYTES:
        _, (dropped, _) = _recent.popitem(last=False)
        held -= dropped.nbytes
    return found


def _rgb(data: bytes) -> tuple[np.ndarray, str]:
    """A file's RGB pixels (a JPEG turned upright by its EXIF orientation) and its
    format.  An upright JPEG in RGB or grey is decoded by OpenCV's libjpeg-turbo,
    straight into an array: the same pixels as Pillow's (checked on 42 photos, 4:4:4,
    4:2:2 and 4:2:0, baseline and progressive), in about half the time on a 12 MP
    photo (Pillow copies the decoded image out twice more); one turned by its EXIF or
    XMP orientation goes through Pillow, as everything else does.  An RGB HEIC is read
    from libheif's own buffer (the same pixels, 40% less time)."""
    from PIL import Image, ImageOps

    from ..decode import heif_pixels, register_heif

    register_heif()
    with Image.open(io.BytesIO(data)) as im:
        fmt = im.format or ""
        upright = im.getexif().get(0x0112, 1) in (0, 1)  # Pillow reads XMP's too
        if fmt == "JPEG" and im.mode in ("RGB", "L") and upright:
            rgb = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV 4.10 on
            flags = cv2.IMREAD_IGNORE_ORIENTATION | (cv2.IMREAD_COLOR if rgb is None else rgb)
            decoded = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
            if decoded is not None:
                return (decoded if rgb is not None else
                        cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB, dst=decoded)), fmt
        if fmt == "HEIF" and im.mode == "RGB" and (heif := heif_pixels(data)) is not None:
            return heif, fmt
        pixels: Image.Image = im
        if fmt == "JPEG" and not upright:
            pixels = ImageOps.exif_transpose(pixels)
        if pixels.mode != "RGB":  # no copies of a large photo where none is needed
            pixels = pixels.convert("RGB")
        return np.asarray(pixels), fmt


def _crop(a: np.ndarray, side: int = CROP) -> np.ndarray:
    """The central ``side`` x ``side`` crop on the 16-pixel grid."""
    h, w = a.shape[:2]
    y = max(0, (h - side) // 2) // 16 * 16
    x = max(0, (w - side) // 2) // 16 * 16
    return a[y:y + side, x:x + side]


def _save(pixels: np.ndarray, fmt: str, options: dict[str, object]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **options)
    return buf.getvalue()


def _decoded(data: bytes) -> np.ndarray:
    return _rgb(data)[0]


def _webp_save(pixels: np.ndarray, settings: SaveSettings) -> bytes | None:
    """``pixels`` saved as WebP at the quality that gives ``settings.webp_index``
    (stepping from the header's estimate), or None when none does."""
    quality = int(settings.options["quality"])  # type: ignore[call-overload]
    tried: set[int] = set()
    for _ in range(WEBP_SEARCH):
        if quality in tried or not 0 <= quality <= 100:
            break
        tried.add(quality)
        data = _save(pixels, "WEBP", {"quality": quality})
        index = codecs.vp8_quantizer(data)
        if index is None:
            break
        if index == settings.webp_index:
            return data
        gap = index - (settings.webp_index or 0)  # higher quality, lower index: about
        quality += max(1, round(abs(gap) * 0.75)) * (1 if gap > 0 else -1)  # 1.3 per point
    return None


def _block_differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The mean grey-level difference of two same-size RGB images in each whole
    ``BLOCK`` x ``BLOCK`` block (an image under a block a side: one value, its whole
    mean difference)."""
    d = cv2.absdiff(np.ascontiguousarray(a), np.ascontiguousarray(b))
    h, w = d.shape[0] // BLOCK * BLOCK, d.shape[1] // BLOCK * BLOCK
    if h == 0 or w == 0:
        return np.array([[float(d.mean())]])
    # exact integer sums: each block's rows first (at most 16 x 255 per byte), then its
    # 16 pixels' three channels side by side in a row (48 bytes)
    rows = d[:h, :w].reshape(h // BLOCK, BLOCK, w * 3).sum(axis=1, dtype=np.uint16)
    sums = rows.reshape(h // BLOCK, w // BLOCK, 3 * BLOCK).sum(axis=2, dtype=np.uint32)
    out: np.ndarray = sums / (3 * BLOCK * BLOCK)
    return out


def _locally_edited(blocks: np.ndarray) -> bool:
    """Whether two same-size images differ in some block far more than in most
    (``LOCAL_EDIT_RATIO``; ``blocks``: their ``_block_differences`` over the whole
    frame): the JPEG test compares a central crop, which a corner watermark misses, and
    a coarse JPEG gives its own pixels back from any close copy."""
    return float(blocks.max()) > LOCAL_EDIT_RATIO * (float(np.percentile(blocks, 90)) + 1.0)


def _typical_difference(a: np.ndarray, b: np.ndarray) -> float:
    """The median over 16x16 blocks of the mean difference: a caption or watermark
    added before the save (a few blocks) does not hide that the rest is reproduced."""
    return float(np.median(_block_differences(a, b)))


def _reproduction(source: np.ndarray, copy: np.ndarray, settings: SaveSettings) -> float:
    """The typical difference between ``copy`` and ``source`` saved with ``settings``
    (infinite where no WebP quality gives the index)."""
    if not settings.whole:
        source, copy = _crop(source), _crop(copy)
    data = _webp_save(source, settings) if settings.webp_index is not None else \
        _save(source, settings.format, settings.options)
    return float("inf") if data is None else _typical_difference(_decoded(data), copy)


def resaved_from(copy: bytes, source: bytes) -> bool:
    """True when ``copy`` is ``source``'s pixels saved again (see the module docstring).
    Images of different sizes, the same pixels, a ``copy`` not in ``COPY_FORMATS`` or
lossless: False."""
    a, fmt_a = _pixels(copy)
    b, fmt_b = _pixels(source)
    pixels = a.shape[0] * a.shape[1]
    if a.shape != b.shape or pixels > MAX_PIXELS or fmt_a not in COPY_FORMATS:
        return False
    settings = save_settings(copy, fmt_a)
    if settings is None or (settings.whole and pixels > MAX_WHOLE_PIXELS):
        return False
    blocks = _block_differences(a, b)
    if _locally_edited(blocks):
        return False
    base = float(np.median(blocks)) if settings.whole else _typical_difference(_crop(a), _crop(b))
    if base < MIN_DIFFERENCE and not _rounding(blocks):
        return False  # the same pixels but for an edit, or everywhere: no save between
    # The source's pixels in most blocks and a little off in many others is a JPEG
    # saved from pixels that came from a JPEG already: a PNG holding a JPEG q85's
    # pixels, saved as a JPEG q85 again, gives most blocks back exactly.  A plain
    # conversion (the JPEG's pixels in a PNG) differs nowhere, and one with a faint
    # caption in a few blocks only (``converted_from``).
    forward = _reproduction(b, a, settings)
    if forward > max(EXACT, REPRODUCED * base):
        return False
    back = save_settings(source, fmt_b)
    if back is None:  # a lossless source: saving the copy losslessly gives the copy
        return True
    too_large = back.whole and pixels > MAX_WHOLE_PIXELS
    # A source whose pixels sit on the copy's own DCT coefficients was made from pixels
    # decoded from that JPEG (a HEIC made from it): saving it with the JPEG's tables
    # snaps back to the JPEG whichever came first, so only the opposite save tells.
    if back.format != settings.format and (forward <= IDENTICAL or too_large) and not (
            settings.format == "JPEG" and on_lattice(a, b, settings.options["qtables"])):
        return True  # another codec that gives the copy to the grey level: no coincidence
    if too_large:
        return False  # which came first cannot be told without saving the source whole
    return forward < REVERSE_RATIO * _reproduction(a, b, back)


LATTICE_OFFSET = 0.19
"""Mean distance (in quantisation steps) of a source's DCT coefficients from a JPEG
copy's below which the source sits on the copy's lattice (``on_lattice``).  A JPEG
saved from the source rounds each coefficient to its step: the source lies anywhere in
the step, about 0.25 of it away on average (0.20 to 0.34 on the developer benchmark's
JPEG re-saves of WebP and HEIC originals, but for 5 of 162 at 0.03 to 0.15 whose
originals sit near that lattice already: the opposite save decides those); a HEIC q80
made from a JPEG q93 at 3 and 12 MP: 0.085 to 0.18."""
LATTICE_STEP = 4
"""Quantisation steps below this are left out: decoding rounds the pixels by half a
grey level, which blurs a finer lattice."""
LATTICE_SAMPLES = 200
"""Fewest coefficients the offset is measured on (else no answer, and the re-save test
goes on as if the source were off the lattice: a JPEG saved at about q97 or more, or
of a very smooth picture, has too few coarse steps)."""


def _dct_matrix() -> np.ndarray:
    """The orthonormal 8-point DCT-II (JPEG's): row k is frequency k."""
    k = np.arange(8, dtype=np.float64)
    basis = np.cos(np.pi * np.outer(k, 2 * k + 1) / 16)
    basis[0] *= np.sqrt(1 / 8)
    basis[1:] *= np.sqrt(2 / 8)
    return basis.astype(np.float32)


_DCT = _dct_matrix()


def _central_luma(pixels: np.ndarray) -> np.ndarray:
    """The luma (JPEG's weights) of the central ``BLOCK_CROP`` crop, on the 16-pixel
    grid: an upright JPEG's own block grid."""
    crop = _crop(pixels, BLOCK_CROP).astype(np.float32)
    if crop.ndim == 2:
        return crop
    luma: np.ndarray = crop @ np.array([0.299, 0.587, 0.114], np.float32)
    return luma


def _luma_blocks(pixels: np.ndarray) -> np.ndarray:
    """The 8x8 DCT coefficients of ``_central_luma``."""
    y = _central_luma(pixels)
    h, w = y.shape[0] // 8 * 8, y.shape[1] // 8 * 8
    blocks = y[:h, :w].reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3) - 128.0
    return _DCT @ blocks.reshape(-1, 8, 8) @ _DCT.T


def lattice_offset(jpeg: np.ndarray, other: np.ndarray, table: Sequence[int]) -> float | None:
    """How far ``other``'s luma DCT coefficients lie from ``jpeg``'s own (pixels
    decoded from a JPEG whose luma quantisation table, in natural order, is
    ``table``): the mean distance in steps, over the coefficients the JPEG did not
    round to zero with steps of ``LATTICE_STEP`` or more.  None: too few of them, or
    no table of 64 steps."""
    if len(table) != 64:
        return None
    step = np.asarray(table, np.float32).reshape(8, 8)
    mine, theirs = _luma_blocks(jpeg), _luma_blocks(other)
    kept = (np.abs(mine) >= step / 2) & (step >= LATTICE_STEP)
    if int(kept.sum()) < LATTICE_SAMPLES:
        return None
    return float((np.abs(theirs - mine) / step)[kept].mean())


def on_lattice(jpeg: np.ndarray, other: np.ndarray, tables: object) -> bool:
    """Whether ``other``'s pixels sit on ``jpeg``'s own DCT coefficients (Pillow's
    ``quantization`` tables of the JPEG, luma first), within ``LATTICE_OFFSET`` steps:
    made from pixels decoded from that JPEG, not the pixels it was saved from (those
    lie anywhere within each step)."""
    if not isinstance(tables, dict) or 0 not in tables:
        return False
    offset = lattice_offset(jpeg, other, tables[0])
    return offset is not None and offset < LATTICE_OFFSET


BLOCKS_VERSION = 1
"""Bump when a verdict of ``carries_blocks`` can change for the same two files."""
BLOCK_CROP = 1024
"""Side of the central crop (on the 16-pixel grid) whose JPEG blocks are compared."""
INHERITED_BLOCKS = 1.22
"""``quality.jpeg_block_signal`` a source's pixels must reach to count as decoded from
a JPEG (clean photos and WebP or HEIC saves of them: 1.0 to 1.18; pixels decoded from a
JPEG q50: 1.28 to 1.6 on the developer photos)."""
BLOCK_MARGIN = 0.16
"""How far below the source's signal the copy's may be and still carry its blocks (a
tone change, a caption, a JPEG q92 over them keep it within 0.05; a WebP q90 over them
lowers it by 0.15; a blur, a resize, a turn or a crop off the grid take it away)."""


def carries_blocks(copy: bytes, source: bytes) -> bool:
    """True when ``copy``'s pixels carry the JPEG blocks that ``source``'s pixels
    carry, on the same grid: both were decoded from one earlier JPEG, whatever each
    was saved as since (a tone edit of a photo made from a JPEG q50, saved as a JPEG
    q92, keeps the q50 blocks: it is worth no more than the photo it came from).  Ask
    it of a ``source`` whose own coding makes no JPEG blocks (lossless, HEIC, WebP).
    Images of different sizes, or a source without JPEG blocks: False."""
    from .quality import jpeg_block_signal

    if (pair := _same_size(copy, source)) is None:
        return False
    mine, theirs = (jpeg_block_signal(_central_luma(rgb)) for rgb in pair)
    return mine is not None and theirs is not None and theirs >= INHERITED_BLOCKS \
        and mine >= theirs - BLOCK_MARGIN


NOISE_VERSION = 2
"""Bump when a verdict of ``noisier`` can change for the same two files."""
NOISE_CROP = 1024
"""Side of the central crop whose noise ``noise_level`` measures, at full resolution."""
NOISIER_RATIO, NOISIER_OFFSET = 1.6, 0.4
"""Full-resolution noise above this multiple of another same-size member's, plus this
many grey levels: 'noisier'.  On the developer benchmark's formats draw 3, originals
measured at most 1.12 times the median of their same-size members, edits without added
noise at most 1.63 (a caption's stroked edges, the blocks of a JPEG q50), copies with
Gaussian noise of 4 or 8 grey levels 0.9 to 11 times (most above 1.8; the weakest lie
under the photo's own grain).  The offset keeps a smooth picture (a wallpaper: 0.35
grey levels, its WebP and blurred copies 0.05) from looking noisy beside its copies."""


def _same_size(copy: bytes, source: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """Both files' pixels, or None where their sizes differ or exceed ``MAX_PIXELS``."""
    a, _ = _pixels(copy)
    b, _ = _pixels(source)
    if a.shape != b.shape or a.shape[0] * a.shape[1] > MAX_PIXELS:
        return None
    return a, b


def _central_grey(pixels: np.ndarray) -> np.ndarray:
    """The grey central ``NOISE_CROP`` crop of an RGB image, at full resolution."""
    grey = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    y, x = max(0, (h - NOISE_CROP) // 2), max(0, (w - NOISE_CROP) // 2)
    out: np.ndarray = grey[y:y + NOISE_CROP, x:x + NOISE_CROP]
    return out


def noise_level(pixels: np.ndarray) -> float:
    """The standard deviation of the noise in an RGB image at full resolution:
    ``quality.estimate_noise`` (Immerkaer's estimate) on the grey central
    ``NOISE_CROP`` crop.  The keeper's other measures come from the reduced working
    image, where added noise averages out."""
    from .quality import estimate_noise

    return estimate_noise(_central_grey(pixels))


def noisier(copy: bytes, source: bytes) -> bool:
    """True when ``copy`` (of ``source``'s size) carries more than ``NOISIER_RATIO``
    times ``source``'s noise at full resolution plus ``NOISIER_OFFSET``: noise added in
    an edit (images of different sizes or over ``MAX_PIXELS``: False)."""
    if (pair := _same_size(copy, source)) is None:
        return False
    a, b = pair
    return noise_level(a) > NOISIER_RATIO * noise_level(b) + NOISIER_OFFSET


BLUR_VERSION = 1
"""Bump when a verdict of ``blurrier`` can change for the same two files."""
BLURRIER_MARGIN = 0.7
"""Log sharpness (``quality.measure_sharpness``) at full resolution by which a copy
must fall below another same-size member's to be 'blurred'.  On the developer
benchmark's formats draws 1 and 3, against the median of their same-size members:
originals at least -0.07, edits without blur at least -0.51 (a JPEG q50, a contrast of
0.8), blurs of 0.2% and 0.4% of the longest side -2.2 or less in nine of ten (the rest,
on smooth pictures, tell nothing).  The working image (2 to 3 times smaller) hides
a blur of a pixel or two."""


def sharpness_level(pixels: np.ndarray) -> float:
    """``quality.measure_sharpness`` of an RGB image at full resolution, on the grey
    central ``NOISE_CROP`` crop."""
    from .quality import measure_sharpness

    return measure_sharpness(_central_grey(pixels))


def blurrier(copy: bytes, source: bytes) -> bool:
    """True when ``copy`` (of ``source``'s size) is more than ``BLURRIER_MARGIN`` less
    sharp than ``source`` at full resolution: a blur added in an edit (images of
    different sizes or over ``MAX_PIXELS``: False)."""
    if (pair := _same_size(copy, source)) is None:
        return False
    a, b = pair
    return sharpness_level(a) < sharpness_level(b) - BLURRIER_MARGIN


CONVERSION_VERSION = 4
"""Bump when a verdict of ``converted_from`` can change for the same two files (3: the
changed blocks must stand out from a save's rounding; 4: a plain conversion, every
pixel the source's, is one too)."""
EDITED_BLOCK = 1.0
"""Mean difference (grey levels) of a 16-pixel block changed by an edit (a caption's
strokes), against the rounding of a save that gives a JPEG's pixels back (under 0.2)."""
EDITED_SHARE = 0.25
"""At most this share of the blocks changed: a local edit, not another picture."""


def converted_from(copy: bytes, source: bytes) -> bool:
    """True when lossless ``copy`` holds lossy ``source``'s decoded pixels except in a
    few places that an edit changed: its typical block difference under
    ``MIN_DIFFERENCE``, between one block and ``EDITED_SHARE`` of them more than
    ``EDITED_BLOCK`` off, and those changes standing out: more blocks changed that
    much than a little, or one far more than most (``_locally_edited``: a PNG or
    lossless WebP made from the JPEG or WebP, with a caption or watermark added; the
    rest of its blocks are the source's exactly).  A lossy save made the other way
    round differs by its rounding, a little in many blocks: even where the pixels came
    from a JPEG already and the save gives most blocks back (a PNG holding a JPEG
    q85's pixels, saved as a JPEG q85 again: on the developer benchmark 102 and 415
    blocks a little off against 5 and 11 up to 2 grey levels; a faint caption: 2
    against 18), it is no edit.  A ``copy`` with every one of ``source``'s pixels is a
    plain conversion: True too (its stored measures match the source's only where both
    were reduced alike, and a large JPEG's are taken from a DCT-scaled decode).  Images
    of different sizes or over ``MAX_PIXELS``: False."""
    if (pair := _same_size(copy, source)) is None:
        return False
    if np.array_equal(*pair):
        return True
    blocks = _block_differences(*pair)
    edited = int((blocks > EDITED_BLOCK).sum())
    return float(np.median(blocks)) < MIN_DIFFERENCE and 1 <= edited <= EDITED_SHARE * blocks.size \
        and (not _rounding(blocks) or _locally_edited(blocks))


def _rounding(blocks: np.ndarray) -> bool:
    """Whether the blocks that differ (``_block_differences``) differ as a lossy save's
    rounding does, a little in many blocks: at least as many off by ``MIN_DIFFERENCE``
    to ``EDITED_BLOCK`` grey levels as by more (an edit changes a few blocks clearly
    and leaves the rest exactly as they were)."""
    edited = int((blocks > EDITED_BLOCK).sum())
    rounded = int(((blocks >= MIN_DIFFERENCE) & (blocks <= EDITED_BLOCK)).sum())
    return rounded > 0 and rounded >= edited
