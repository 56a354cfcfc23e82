"""End to end: the CLI on a generated collection with known groups, hard negatives
and a corpus of bad input."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pixdedup.reports import CSV_COLUMNS
from pixdedup.samples import build_collection

from ..conftest import run_cli, synthetic_photo

KINDS = ("exact", "reencode", "format", "resize", "crop", "tone", "rotate", "grey", "blur",
         "noise", "text", "border")


def hue_rotated(img: Image.Image) -> Image.Image:
    hsv = np.asarray(img.convert("HSV")).copy()
    hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + 85) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def second_shot(img: Image.Image) -> Image.Image:
    out = img.copy()
    draw = ImageDraw.Draw(out)
    for k in range(6):  # the subject moved: big regions differ
        x, y = 60 + 90 * k, 80 + 50 * (k % 3)
        draw.ellipse((x, y, x + 120, y + 110), fill=(30 * k, 200 - 20 * k, 90))
    return out


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory, photos: list[Path]) -> Path:
    root = tmp_path_factory.mktemp("collection") / "photos"
    build_collection(photos, root, kinds=KINDS, strengths="first")
    for p in photos:  # originals are older than their copies
        os.utime(root / "originals" / p.name, (1_500_000_000, 1_500_000_000))
    neg = root / "negatives"
    neg.mkdir()
    hue_rotated(Image.open(photos[0])).save(neg / "recoloured product.jpg", quality=90)
    second_shot(Image.open(photos[1])).save(neg / "second shot.jpg", quality=90)
    synthetic_photo(99).save(neg / "unrelated.jpg", quality=90)
    # odd names and hidden files are images like any other
    shutil.copyfile(photos[2], root / "with space ü\nnewline.jpg")
    shutil.copyfile(photos[3], root / ".hidden.jpg")
    # bad input
    bad = root / "bad"
    bad.mkdir()
    (bad / "zero.jpg").write_bytes(b"")
    (bad / "not-an-image.png").write_text("hello, I am text")
    data = (root / "originals" / photos[0].name).read_bytes()
    (bad / "truncated.jpg").write_bytes(data[: len(data) // 3])
    Image.new("L", (12000, 12000)).save(bad / "bomb.png")
    (bad / "notes.txt").write_text("not an image")
    os.symlink("self.jpg", bad / "self.jpg")
    os.symlink("missing-target.jpg", bad / "dangling.jpg")
    os.symlink("..", bad / "loop")
    return root


@pytest.fixture(scope="module")
def scanned(
    collection: Path,
) -> tuple[Path, list[dict[str, str]], subprocess.CompletedProcess[str]]:
    proc = run_cli("scan", str(collection), "--workers", "2", "--max-megapixels", "100")
    out = Path(str(collection) + "_deduplicated")
    with open(out / "image_report.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return out, rows, proc


def test_report_has_every_input_once(collection, scanned):
    out, rows, _ = scanned
    listed = sorted(r["Image Path"] for r in rows)
    assert len(listed) == len(set(listed))
    expected = set()
    for dirpath, dirnames, filenames in os.walk(collection):
        rel = os.path.relpath(dirpath, collection)
        for name in filenames + [d for d in dirnames if d == "loop"]:
            expected.add(os.path.normpath(os.path.join(rel, name)).replace(os.sep, "/"))
    assert set(listed) == expected
    assert list(rows[0].keys()) == list(CSV_COLUMNS)


def test_groups_are_exactly_the_edit_families(collection, scanned, photos):
    _, rows, _ = scanned
    truth = {r["file"]: r["original"] for r in csv.DictReader(open(collection / "truth.csv"))}
    truth["with space ü\nnewline.jpg"] = f"originals/{photos[2].name}"
    truth[".hidden.jpg"] = f"originals/{photos[3].name}"
    groups: dict[str, set[str]] = {}
    for r in rows:
        if r["Status"] in ("Best", "Duplicate"):
            groups.setdefault(r["Group ID"], set()).add(r["Image Path"])
    expected: dict[str, set[str]] = {}
    for f, orig in truth.items():
        expected.setdefault(orig, set()).add(f)
    assert sorted(map(sorted, groups.values())) == sorted(map(sorted, expected.values()))
    by_path = {r["Image Path"]: r for r in rows}
    for name in ("recoloured product.jpg", "second shot.jpg", "unrelated.jpg"):
        assert by_path[f"negatives/{name}"]["Status"] == "Unique"
    for orig in expected:
        assert by_path[orig]["Status"] == "Best", orig
        assert by_path[orig]["Group Size"] == str(len(expected[orig]))


def test_columns_explain_the_decision(scanned):
    _, rows, _ = scanned
    by_path = {r["Image Path"]: r for r in rows}
    exact = next(r for p, r in by_path.items() if p.startswith("edits/exact/"))
    assert exact["Status"] == "Duplicate" and exact["Match Stage"] == "exact"
    assert exact["Similarity"] == "1"
    crop = next(r for p, r in by_path.items() if p.startswith("edits/crop/"))
    assert crop["Match Stage"] == "local" and float(crop["Similarity"]) >= 0.975
    grey = next(r for p, r in by_path.items() if p.startswith("edits/grey/"))
    assert grey["Avg Color Correlation"] == ""  # hue says nothing about a grey image
    for r in rows:
        if r["Status"] in ("Best", "Duplicate", "Unique"):
            assert float(r["Quality Score"]) > 0
            assert int(r["Width"]) > 0 and int(r["Height"]) > 0 and int(r["Bytes"]) > 0
            assert len(r["Content Hash"]) == 64 and r["Format"]
            assert r["Dominant Colors"].startswith("#")
        if r["Status"] == "Duplicate":
            assert r["Best Image"] and r["Output Path"].startswith("duplicates/")
            assert r["Hash Distance"] != ""


def test_bad_input_rows(scanned):
    _, rows, proc = scanned
    by_path = {r["Image Path"]: r for r in rows}
    expect = {
        "bad/zero.jpg": "empty file (0 bytes)",
        "bad/not-an-image.png": "not a recognised image format",
        "bad/truncated.jpg": "corrupt or truncated",
        "bad/bomb.png": "image too large: 12000x12000",
        "bad/self.jpg": "symlink loop",
        "bad/dangling.jpg": "broken symlink",
        "bad/loop": "symlink loop",
    }
    for path, reason in expect.items():
        assert by_path[path]["Status"] == "Error", path
        assert reason in by_path[path]["Error"], (path, by_path[path]["Error"])
        assert by_path[path]["Output Path"] == ""
    assert by_path["bad/notes.txt"]["Status"] == "Skipped"
    assert "not an image extension (.txt)" in by_path["bad/notes.txt"]["Error"]
    assert "Traceback" not in proc.stderr


def test_output_layout(collection, scanned):
    out, rows, proc = scanned
    for r in rows:
        if r["Status"] in ("Best", "Unique"):
            dest = out / "best" / r["Image Path"]
        elif r["Status"] == "Duplicate":
            dest = out / "duplicates" / r["Image Path"]
        else:
            assert not (out / "best" / r["Image Path"]).exists()
            continue
        assert dest.read_bytes() == (collection / r["Image Path"]).read_bytes()
        assert r["Output Path"] == dest.relative_to(out).as_posix()
    files = [p for p in (out / "best").rglob("*") if p.is_file()]
    files += [p for p in (out / "duplicates").rglob("*") if p.is_file()]
    assert len(files) == sum(r["Status"] in ("Best", "Unique", "Duplicate") for r in rows)
    assert (out / "report.json").exists()
    assert "groups      4" in proc.stdout and "errors" in proc.stdout


def test_input_is_untouched_and_rerun_replaces(collection, scanned):
    out, rows, _ = scanned
    before = sorted(str(p) for p in collection.rglob("*"))
    stale = out / "best" / "stale.jpg"
    stale.write_bytes(b"old")
    run_cli("scan", str(collection), "--mode", "exact", "--quiet", "--max-megapixels", "100")
    assert not stale.exists()
    assert sorted(str(p) for p in collection.rglob("*")) == before
    with open(out / "image_report.csv", newline="", encoding="utf-8") as fh:
        exact_rows = list(csv.DictReader(fh))
    stages = {r["Match Stage"] for r in exact_rows if r["Status"] == "Duplicate"}
    assert stages == {"exact"}
    # byte copies: one exact edit per photo, plus the odd-name and hidden copies
    assert sum(r["Status"] == "Duplicate" for r in exact_rows) == 6


def test_dry_run_writes_only_reports(tmp_path, photos):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copyfile(photos[0], src / "a.jpg")
    shutil.copyfile(photos[0], src / "b.jpg")
    proc = run_cli("scan", str(src), "--dry-run", "--out", str(tmp_path / "o"), "--json")
    assert '"duplicates": 1' in proc.stdout
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        ".pixdedup-output", "image_report.csv", "pixdedup.db", "pixdedup.db.lock",
        "pixdedup.db.signatures", "report.html", "report.json", "report_files"]


def test_hard_links(tmp_path, photos):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copyfile(photos[1], src / "a.jpg")
    run_cli("scan", str(src), "--link", "hard", "--out", str(tmp_path / "o"), "-q")
    assert (tmp_path / "o" / "best" / "a.jpg").stat().st_ino == (src / "a.jpg").stat().st_ino


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["does-not-exist"], "input folder not found: does-not-exist"),
        (["{file}"], "input is not a folder"),
        (["{dir}", "--out", "{dir}/out"], "is inside the input folder"),
        (["{dir}", "--out", "{foreign}"], "was not written by pixdedup"),
        (["{dir}", "--mode", "fuzzy"], "Invalid value for '--mode'"),
    ],
)
def test_one_line_errors(tmp_path, photos, args, message):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copyfile(photos[0], d / "a.jpg")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    args = [a.format(file=photos[0], dir=d, foreign=foreign) for a in args]
    proc = subprocess.run([sys.executable, "-m", "pixdedup", "scan", *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (foreign / "keep.txt").read_text() == "mine"


def test_turned_and_mirrored_copies_are_found_and_named(tmp_path, photos):
    src = tmp_path / "in"
    src.mkdir()
    img = Image.open(photos[0]).convert("RGB")
    img.save(src / "original.jpg", quality=95)
    turns = {"mirrored.jpg": Image.Transpose.FLIP_LEFT_RIGHT,
             "upside-down.jpg": Image.Transpose.FLIP_TOP_BOTTOM,
             "turned-left.jpg": Image.Transpose.ROTATE_90,
             "turned-right.jpg": Image.Transpose.ROTATE_270,
             "turned-over.jpg": Image.Transpose.ROTATE_180,
             "transposed.jpg": Image.Transpose.TRANSPOSE,
             "transversed.jpg": Image.Transpose.TRANSVERSE}
    for name, how in turns.items():
        img.transpose(how).save(src / name, quality=75)
    Image.open(photos[1]).save(src / "other.jpg", quality=90)
    run_cli("scan", str(src), "--out", str(tmp_path / "o"), "--dry-run", "-q")
    with open(tmp_path / "o" / "image_report.csv", newline="", encoding="utf-8") as fh:
        rows = {r["Image Path"]: r for r in csv.DictReader(fh)}
    assert rows["original.jpg"]["Status"] == "Best"
    assert rows["original.jpg"]["Group Size"] == "8"
    assert rows["other.jpg"]["Status"] == "Unique"
    expected = {"mirrored.jpg": "mirrored", "upside-down.jpg": "upside down",
                "turned-left.jpg": "rotated 90 deg", "turned-right.jpg": "rotated 90 deg",
                "turned-over.jpg": "rotated 180 deg",
                "transposed.jpg": "mirrored on the main diagonal",
                "transversed.jpg": "mirrored on the other diagonal"}
    for name, label in expected.items():
        row = rows[name]
        assert row["Status"] == "Duplicate" and row["Best Image"] == "original.jpg", row
        assert row["Transform"] == label, row
        # the turned thumbnail is compared as it is (stage hash): quarter turns swap the
        # width and height the aspect test sees
        assert row["Match Stage"] == "hash" and float(row["Similarity"]) >= 0.975, row

    run_cli("scan", str(src), "--out", str(tmp_path / "plain"), "--dry-run", "-q",
            "--no-orientations")
    with open(tmp_path / "plain" / "image_report.csv", newline="", encoding="utf-8") as fh:
        plain = {r["Image Path"]: r["Status"] for r in csv.DictReader(fh)}
    # (the two quarter turns are half a turn apart: the keypoint stage may pair them)
    assert {plain[n] for n in ("original.jpg", "mirrored.jpg", "upside-down.jpg")} == {"Unique"}
