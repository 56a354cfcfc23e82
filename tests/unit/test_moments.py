"""Different moments (a subject that moved between two frames) are not copies."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from pixdedup.extract import ExtractOptions, extract_bytes
from pixdedup.features.keypoints import MIN_MOVED_CELLS, identity_alignment, moved_cells
from pixdedup.models import ImageRef
from pixdedup.verify import Verifier, VerifyOptions

from ..conftest import synthetic_photo


def _frames(shift: int) -> tuple[Image.Image, Image.Image]:
    """The same scene twice; in the second, a textured subject moved by ``shift`` px."""
    scene = synthetic_photo(7, (640, 480))
    subject = synthetic_photo(8, (200, 160))
    first, second = scene.copy(), scene.copy()
    first.paste(subject, (220, 160))
    second.paste(subject, (220 + shift, 160 + shift // 2))
    return first, second


def _grey(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L").resize((320, 240), Image.Resampling.LANCZOS))


def _jpeg(img: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def test_a_moved_subject_is_motion_and_a_copy_is_not():
    first, second = _frames(6)
    a, b = _grey(first), _grey(second)
    assert moved_cells(a, b, identity_alignment(a.shape, b.shape)) >= MIN_MOVED_CELLS
    assert moved_cells(b, a, identity_alignment(b.shape, a.shape)) >= MIN_MOVED_CELLS
    copy = _grey(Image.open(io.BytesIO(_jpeg(first, 60))))
    assert moved_cells(a, copy, identity_alignment(a.shape, copy.shape)) < MIN_MOVED_CELLS
    captioned = first.copy()
    ImageDraw.Draw(captioned).text((40, 420), "Summer holidays 2024", fill=(255, 255, 255))
    c = _grey(captioned)
    assert moved_cells(a, c, identity_alignment(a.shape, c.shape)) < MIN_MOVED_CELLS


def test_verify_keeps_two_frames_apart_and_says_why():
    first, second = _frames(6)
    records = [extract_bytes(ImageRef(uri=n, rel_path=n, size=1, mtime=0), _jpeg(im, 92),
                             ExtractOptions())
               for n, im in (("frame1.jpg", first), ("frame2.jpg", second), ("copy.jpg", first))]
    verifier = Verifier(records, VerifyOptions())
    ok, ev = verifier.verify(0, 1)
    assert not ok and ev.stage == "moment" and "a different moment" in (ev.transform or "")
    ok, ev = verifier.verify(0, 2)
    assert ok and ev.stage == "exact"


def test_cells_count_as_moved_only_when_they_do_both_ways(monkeypatch):
    """A blurred copy looked moved one way (its cells shifted onto the sharp ones came
    closer, 6 cells) and not the other (1): motion is what shows both ways."""
    from pixdedup.features import keypoints as kp

    first, second = _frames(6)
    a, b = _grey(first), _grey(second)
    answers = iter([6, 1, 2])
    calls: list[tuple[np.ndarray, np.ndarray]] = []

    def one_way(za, zb, index, ch, cw):
        calls.append((za, zb))
        return next(answers)

    monkeypatch.setattr(kp, "_moved", one_way)
    assert moved_cells(a, b, identity_alignment(a.shape, b.shape)) == 1
    assert len(calls) == 2 and calls[1][0] is calls[0][1] and calls[1][1] is calls[0][0]
    assert moved_cells(a, b, identity_alignment(a.shape, b.shape)) == 2  # under the bar:
    assert len(calls) == 3  # the other way is not measured
