"""The colour gate on hue distributions and the pixel (ECC) alignment that takes over
where keypoints cannot align a copy."""

from __future__ import annotations

import io
import math

import cv2
import numpy as np
from PIL import Image

from pixdedup.config import ScanConfig
from pixdedup.extract import extract_bytes
from pixdedup.features import keypoints as kp
from pixdedup.features.color import HUE_BINS, SAT_BINS, color_correlation
from pixdedup.ingest import extract_options
from pixdedup.models import ColorSignature, ImageRecord, ImageRef
from pixdedup.verify import Verifier, VerifyOptions

from ..conftest import synthetic_photo


def _signature(cells: dict[tuple[int, int], float]) -> ColorSignature:
    hist = np.zeros((HUE_BINS, SAT_BINS), np.float32)
    for (hue, sat), weight in cells.items():
        hist[hue, sat] = weight
    hist /= hist.sum()
    return ColorSignature(histogram=hist.ravel(), grey_fraction=0.5, colorfulness=10.0,
                          dominant_colors=())


def test_a_saturation_change_keeps_the_hues() -> None:
    # a lower contrast moves every pixel down one saturation bin: same hues
    vivid = _signature({(2, 2): 5, (3, 2): 3, (11, 3): 2, (12, 2): 1})
    muted = _signature({(2, 1): 5, (3, 1): 3, (11, 2): 2, (12, 1): 1})
    old = float(np.corrcoef(vivid.histogram, muted.histogram)[0, 1])  # hue x saturation
    assert old < 0.1
    cc = color_correlation(vivid, muted)
    assert cc is not None and cc > 0.99


def test_a_recolouring_moves_the_hues() -> None:
    red = _signature({(0, 2): 5, (1, 2): 3, (11, 3): 2})
    green = _signature({(6, 2): 5, (7, 2): 3, (11, 3): 2})  # the product, another colour
    cc = color_correlation(red, green)
    assert cc is not None and cc < 0.6


def _tiles(size: tuple[int, int] = (640, 480), square: int = 24) -> Image.Image:
    """A chessboard-like floor under uneven light: every corner looks like every other
    to ORB (its matches fail the ratio test)."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    board = ((x // square + y // square) % 2) * 120 + 40
    light = 0.55 + 0.45 * np.exp(-(((x - 0.3 * w) / (0.5 * w)) ** 2
                                   + ((y - 0.6 * h) / (0.6 * h)) ** 2))
    img = cv2.GaussianBlur(board * light, (0, 0), 1.2)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8)).convert("RGB")


def _straightened(img: Image.Image, degrees: float) -> Image.Image:
    """Turned by ``degrees`` and cropped to the largest inner rectangle of its shape."""
    w, h = img.size
    turned = img.rotate(degrees, resample=Image.Resampling.BICUBIC)
    a = math.radians(abs(degrees))
    k = 1 / (math.cos(a) + max(w / h, h / w) * math.sin(a))
    cw, ch = int(w * k), int(h * k)
    left, top = (w - cw) // 2, (h - ch) // 2
    return turned.crop((left, top, left + cw, top + ch))


def _record(img: Image.Image, name: str) -> ImageRecord:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    return extract_bytes(ImageRef(name, name, len(data), 0.0), data, extract_options(ScanConfig()))


def test_a_turned_copy_of_a_repetitive_pattern_is_aligned_on_its_pixels() -> None:
    board = _tiles()
    records = [_record(board, "floor.jpg"), _record(_straightened(board, 2.0), "turned.jpg"),
               _record(synthetic_photo(5), "unrelated.jpg")]
    v = Verifier(records, VerifyOptions.of(ScanConfig()))
    assert kp.align(v.features(0), v.features(1)) is None  # the keypoints cannot
    ok, ev = v.verify(0, 1)
    assert ok and ev.stage == "local", ev
    assert ev.transform is not None and ev.transform.endswith("(aligned on the pixels)")
    rotation = float(ev.transform.split("rotation ")[1].split(" deg")[0])
    assert abs(abs(rotation) - 2.0) < 0.3
    assert ev.similarity is not None and ev.similarity > 0.99
    assert v.verify(0, 2)[0] is False


def test_no_pixel_alignment_where_the_motion_check_cannot_measure() -> None:
    small = np.asarray(_tiles((128, 96), 8).convert("L"))
    assert kp.align_intensity(small, small) is None
    large = np.asarray(_tiles((320, 240), 12).convert("L"))
    matrix = kp.align_intensity(large, large)
    assert matrix is not None
    assert np.allclose(matrix, [[1, 0, 0], [0, 1, 0]], atol=0.02)


def test_a_keypoint_alignment_that_looks_moved_is_refined_on_the_pixels(monkeypatch) -> None:
    photo = synthetic_photo(7)
    records = [_record(photo, "photo.jpg"), _record(_straightened(photo, 3.0), "turned.jpg")]
    monkeypatch.setattr(kp, "MOTION_CHECK_BELOW", 1.01)  # check every pair for motion
    calls: list[np.ndarray] = []

    def moved_first_time(a: np.ndarray, b: np.ndarray, matrix: np.ndarray) -> int:
        calls.append(matrix)  # the keypoints' alignment looks moved, the refined one not
        return 9 if len(calls) == 1 else 0

    monkeypatch.setattr(kp, "moved_cells", moved_first_time)
    ok, ev = Verifier(records, VerifyOptions.of(ScanConfig())).verify(0, 1)
    assert ok and ev.transform is not None and ev.transform.endswith("(refined on the pixels)")
    assert ev.inliers is not None and ev.inliers >= 12  # the keypoints found it first
    assert len(calls) == 2 and not np.allclose(calls[0], calls[1])
    monkeypatch.setattr(kp, "moved_cells", lambda a, b, matrix: 9)  # moved however aligned
    ok, ev = Verifier(records, VerifyOptions.of(ScanConfig())).verify(0, 1)
    assert (ok, ev.stage) == (False, "moment")


def test_the_aligned_comparison_counts_the_cells_a_caption_changed() -> None:
    rng = np.random.default_rng(5)
    a = cv2.GaussianBlur(rng.integers(0, 256, (240, 360), dtype=np.uint8), (0, 0), 3)
    a = cv2.normalize(a, None, 0, 255, cv2.NORM_MINMAX)
    b = a.copy()
    b[200:240, :120] = 255  # a caption box over 2 x 4 of the 12 x 12 cells, and part of a third row
    same = kp.compare_aligned(a, a.copy(), kp.identity_alignment(a.shape, a.shape))
    assert same.bad_cell_fraction == 0.0 and same.clean_similarity > 0.999
    cmp = kp.compare_aligned(a, b, kp.identity_alignment(a.shape, b.shape))
    assert 8 / 144 <= cmp.bad_cell_fraction <= 12 / 144
    assert cmp.clean_similarity > 0.99 > cmp.similarity  # the clean cells still agree
    tiny = kp.compare_aligned(a[:9, :10], b[:9, :10], kp.identity_alignment((9, 10), (9, 10)))
    assert tiny.bad_cell_fraction == 0.0  # fewer pixels than cells: empty cells count nowhere
