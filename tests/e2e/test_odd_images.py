"""One odd image never stops a scan: degenerate images on purpose, failures as data,
one line (and a log file) for an unexpected error, and a property-based test over
sizes, aspect ratios, modes, EXIF orientations, frame counts and formats.

``make test`` runs the property test with a small number of examples; ``make fuzz``
runs the ``fuzz`` Hypothesis profile (many more)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import pixdedup
from pixdedup import cli, matching, pipeline
from pixdedup.extract import MIN_NEAR_SIDE
from pixdedup.verify import Verifier

from ..conftest import synthetic_photo

settings.register_profile("default", max_examples=12, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=400, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def rows_of(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "image_report.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    by_path = {r["Image Path"]: r for r in rows}
    assert len(by_path) == len(rows), "an image has more than one row"
    return by_path


@pytest.fixture()
def odd_folder(tmp_path: Path) -> Path:
    """The issue's collection: a 1x1 PNG and a 1x20000 PNG (each used to stop the scan
    in ORB) beside ordinary photos, their edited copies and other degenerate images."""
    root = tmp_path / "odd"
    root.mkdir()
    Image.new("RGB", (1, 1), (10, 20, 30)).save(root / "one.png")
    shutil.copy(root / "one.png", root / "one copy.png")
    Image.new("RGB", (1, 20000), (10, 20, 30)).save(root / "tall.png")
    Image.new("RGB", (20000, 1), (200, 20, 30)).save(root / "wide.png")
    Image.new("RGB", (3, 2), (200, 20, 30)).save(root / "tiny.png")
    Image.new("RGB", (400, 300), (128, 128, 128)).save(root / "grey.png")
    Image.new("RGB", (400, 300), (128, 128, 128)).save(root / "grey.jpg", quality=95)
    strip = np.asarray(synthetic_photo(5, (2000, 40)))
    Image.fromarray(strip).save(root / "strip.png")  # 50:1, too narrow once reduced
    Image.fromarray(strip[:, :600]).save(root / "narrow but fine.png")  # 15:1
    for seed in range(3):
        photo = synthetic_photo(seed)
        photo.save(root / f"photo{seed}.jpg", quality=92)
        photo.resize((320, 240)).save(root / f"photo{seed} small.png")
    return root


def test_degenerate_images_get_a_note_and_the_scan_finishes(odd_folder: Path) -> None:
    out = odd_folder.parent / "out"
    result = CliRunner().invoke(cli.main, ["scan", str(odd_folder), "--out", str(out), "--workers",
                                           "2", "--quiet"])
    assert result.exit_code == 0, result.output
    rows = rows_of(out)
    assert len(rows) == len(os.listdir(odd_folder))
    small = f"under {MIN_NEAR_SIDE} px on a side"
    for name in ("one.png", "one copy.png", "tall.png", "wide.png", "tiny.png"):
        assert small in rows[name]["Note"], rows[name]
    assert "too narrow" in rows["strip.png"]["Note"]
    assert rows["grey.png"]["Note"].startswith("flat image")
    assert rows["grey.jpg"]["Note"].startswith("flat image")
    # byte copies are still found; near search is skipped (two flat greys stay apart)
    assert rows["one.png"]["Group ID"] and rows["one.png"]["Group ID"] == rows["one copy.png"]["Group ID"]
    assert rows["grey.png"]["Status"] == rows["grey.jpg"]["Status"] == "Unique"
    assert rows["narrow but fine.png"]["Note"] == ""
    for seed in range(3):  # ordinary near duplicates are unaffected
        a, b = rows[f"photo{seed}.jpg"], rows[f"photo{seed} small.png"]
        assert a["Group ID"] and a["Group ID"] == b["Group ID"]
        assert a["Note"] == b["Note"] == ""
    assert {r["Status"] for r in rows.values()} <= {"Best", "Duplicate", "Unique"}
    doc = json.loads((out / "report.json").read_text())
    assert doc["problems"] == {}  # handled on purpose, not by catching an exception
    # the rerun reuses the store and gives the same report
    again = CliRunner().invoke(cli.main, ["scan", str(odd_folder), "--out", str(out), "--quiet"])
    assert again.exit_code == 0, again.output
    assert rows_of(out) == rows


def test_a_pair_that_fails_verification_is_data(odd_folder: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real = Verifier.verify

    def flaky(self: Verifier, i: int, j: int) -> object:
        names = {self.records[i].ref.rel_path, self.records[j].ref.rel_path}
        if "photo1.jpg" in names:
            raise ValueError("simulated bug in a verification stage")
        return real(self, i, j)

    monkeypatch.setattr(Verifier, "verify", flaky)
    out = odd_folder.parent / "out"
    result = pixdedup.scan(str(odd_folder), out=str(out), workers=1, dry_run=True)
    rows = rows_of(out)
    assert len(rows) == len(os.listdir(odd_folder))
    assert rows["photo1.jpg"]["Status"] == "Unique"  # never joined on a failed check
    assert rows["photo0.jpg"]["Group ID"] == rows["photo0 small.png"]["Group ID"] != ""
    problems = json.loads((out / "report.json").read_text())["problems"]
    assert problems["verify"] == {"ValueError: simulated bug in a verification stage": 1}
    assert result.problems.total("verify") == 1


def test_a_failing_keeper_rule_keeps_the_first_member(odd_folder: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> int:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(matching, "choose_best", broken)
    out = odd_folder.parent / "out"
    result = pixdedup.scan(str(odd_folder), out=str(out), workers=1, dry_run=True)
    assert result.summary.groups == 4
    rows = rows_of(out)
    for g in result.groups:
        assert g.best == min(g.members)
    assert rows["photo0 small.png"]["Status"] == "Best"  # first by path, not by quality
    problems = json.loads((out / "report.json").read_text())["problems"]
    assert problems["keeper"] == {"ZeroDivisionError: division by zero": 4}


def test_an_unexpected_error_is_one_line_and_a_log_file(odd_folder: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def bug(*args: object, **kwargs: object) -> object:
        raise KeyError("surprise")

    monkeypatch.setattr(pipeline, "find_groups", bug)
    out = odd_folder.parent / "out"
    result = CliRunner().invoke(cli.main, ["scan", str(odd_folder), "--out", str(out), "--quiet"])
    assert result.exit_code == 2
    log = out / cli.ERROR_LOG
    lines = result.output.strip().splitlines()
    assert lines == [f"pixdedup: error: unexpected failure (KeyError: 'surprise'); "
                     f"the full trace is in {log}"]
    assert "Traceback" not in result.output
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "find_groups" not in lines[0]
    assert "KeyError: 'surprise'" in text
    # what was done is kept: the extracted features are in the store for the next run
    monkeypatch.undo()
    again = pixdedup.scan(str(odd_folder), out=str(out), workers=1, dry_run=True)
    assert again.summary.extracted == 0 and again.summary.images == len(os.listdir(odd_folder))


# -- property-based: any image beside ordinary photos ------------------------------------------

SMALL_SIDES = (1, 2, 3, 7, 15, 16, 17, 31, 32, 33)
SIDES = st.one_of(st.sampled_from(SMALL_SIDES), st.sampled_from((64, 90, 200, 333, 640)))
MODES = ("1", "L", "LA", "P", "PT", "RGB", "RGBA", "CMYK", "I;16", "I", "F")
FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "GIF", "BMP", "HEIF")
ORIENTATIONS = (None, 1, 3, 6, 8, 2, 5, 7, 0, 9, 255, 65535)


@st.composite
def odd_image(draw: st.DrawFn) -> tuple[bytes, str]:
    w = draw(st.one_of(SIDES, st.just(2400)))
    h = draw(st.one_of(SIDES, st.just(4000))) if w < 64 else draw(SIDES)
    mode = draw(st.sampled_from(MODES))
    fmt = draw(st.sampled_from(FORMATS))
    content = draw(st.sampled_from(("noise", "flat", "gradient", "photo")))
    frames = draw(st.integers(1, 3))
    orientation = draw(st.sampled_from(ORIENTATIONS))
    seed = draw(st.integers(0, 2**16))
    data = make_image(w, h, mode, fmt, content, frames, orientation, seed)
    cut = draw(st.sampled_from((None,) * 6 + (0.5, 0.95)))  # now and then a truncated file
    return (data if cut is None else data[:int(len(data) * cut)]), fmt.lower()


def make_image(w: int, h: int, mode: str, fmt: str, content: str, frames: int,
               orientation: int | None, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    images = []
    for k in range(frames):
        if content == "photo" and w >= 64 and h >= 64:
            rgb = np.asarray(synthetic_photo(seed + k, (w, h)))
        elif content == "noise":
            rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        elif content == "gradient":
            rgb = np.broadcast_to(np.linspace(0, 255, w, dtype=np.float32)[None, :, None],
                                  (h, w, 3)).astype(np.uint8)
        else:
            rgb = np.full((h, w, 3), rng.integers(0, 256, 3), np.uint8)
        images.append(convert(Image.fromarray(np.ascontiguousarray(rgb)), mode))
    extra: dict[str, object] = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        extra["exif"] = exif.tobytes()
    if frames > 1:
        extra.update(save_all=True, append_images=images[1:])
    buf = io.BytesIO()
    if fmt == "HEIF":
        from pixdedup.decode import register_heif

        register_heif()
    try:
        images[0].save(buf, fmt, **extra)
    except (OSError, ValueError, KeyError, TypeError):  # this format cannot hold this mode
        buf = io.BytesIO()
        extra.pop("append_images", None)
        extra.pop("save_all", None)
        images[0].convert("RGB").save(buf, fmt, **extra)
    return buf.getvalue()


def convert(im: Image.Image, mode: str) -> Image.Image:
    if mode == "PT":  # palette with a transparent entry
        p = im.convert("P")
        p.info["transparency"] = 0
        return p
    if mode in ("I;16", "I", "F"):
        grey = np.asarray(im.convert("L"), dtype=np.float64)
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        scale = 257.0 if mode != "F" else 1 / 255.0
        return Image.fromarray((grey * scale).astype(dtype), mode if mode != "I;16" else None)
    return im.convert(mode)


@given(st.lists(odd_image(), min_size=1, max_size=5))
def test_any_images_beside_ordinary_photos(images: list[tuple[bytes, str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "in"
        root.mkdir()
        for k, (data, ext) in enumerate(images):
            (root / f"odd{k}.{ext}").write_bytes(data)
        (root / "copy of odd0.bin.png").write_bytes(images[0][0])  # a byte copy
        photo = synthetic_photo(1)
        photo.save(root / "photo.jpg", quality=90)
        photo.resize((320, 240)).save(root / "photo small.png")
        out = Path(tmp) / "out"
        result = pixdedup.scan(str(root), out=str(out), workers=1, dry_run=True)
        rows = rows_of(out)
        assert set(rows) == set(os.listdir(root)) - {"out"}
        assert result.summary.images == len(rows)
        a, b = rows["odd0." + images[0][1]], rows["copy of odd0.bin.png"]
        if a["Status"] != "Error":
            assert a["Group ID"] != "" and a["Group ID"] == b["Group ID"], (a, b)
        else:
            assert b["Status"] == "Error" and b["Error"] == a["Error"]
        assert rows["photo.jpg"]["Group ID"] != ""
        assert rows["photo.jpg"]["Group ID"] == rows["photo small.png"]["Group ID"]
        assert json.loads((out / "report.json").read_text())["problems"] == {}
