"""``pixdedup scan --mode faces`` end to end through the CLI: the groups are people,
NO_FACE_DETECTED rows, the face columns, the store reused on a rerun, ``query`` (is
this person already registered?), ``--faces all`` on a group photo, ``models`` and bad
settings."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from PIL import Image

from ..conftest import run_cli
from .conftest import People, make_people


def rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "image_report.csv", newline="", encoding="utf-8") as fh:
        return {r["Image Path"]: r for r in csv.DictReader(fh)}


def groups_of(table: dict[str, dict[str, str]]) -> list[set[str]]:
    by: dict[str, set[str]] = {}
    for path, r in table.items():
        if r["Group ID"]:
            by.setdefault(r["Group ID"], set()).add(path)
    return sorted(by.values(), key=sorted)


def scan(root: Path, out: Path, *flags: str) -> dict:
    proc = run_cli("scan", str(root), "--mode", "faces", "--out", str(out), "--workers", "2",
                   "--json", *flags)
    return json.loads(proc.stdout)


def test_groups_are_people_with_face_columns_and_no_face_rows(people: People, tmp_path: Path) -> None:
    out = tmp_path / "out"
    doc = scan(people.root, out)
    table = rows(out)
    assert len(table) == 19  # every input file has a row, the broken one included
    assert groups_of(table) == sorted(people.groups.values(), key=sorted)
    for person, files in people.groups.items():
        best = [f for f in files if table[f]["Status"] == "Best"]
        assert best == [f"{person}.jpg"]  # the unedited portrait is kept
        ids = {table[f]["Person ID"] for f in files}
        assert ids == {table[f"{person}.jpg"]["Group ID"]}
        for f in files - set(best):
            assert table[f]["Status"] == "Duplicate"
            assert 0 <= float(table[f]["Face Distance"]) < 0.45
            assert table[f]["Face Count"] == "1"
            assert len(table[f]["Face Box"].split(",")) == 4
    # a re-encoded copy is found by the near-duplicate stages first, and named so
    assert table[f"{people.registrants[0]}_q60.jpg"]["Match Stage"] == "hash"
    for other in people.others:
        assert table[other]["Status"] == "Unique" and table[other]["Face Count"] == "1"
    persons = {table[f]["Person ID"] for f in table if table[f]["Person ID"]}
    assert len(persons) == 6  # three registrants, three others
    for name in ("noface_coffee.jpg", "noface_rocket.jpg", "noface_chelsea.jpg"):
        assert table[name]["Status"] == "NO_FACE_DETECTED"
        assert table[name]["Face Count"] == "0" and table[name]["Person ID"] == ""
    assert table["broken.jpg"]["Status"] == "Error" and table["broken.jpg"]["Error"]
    assert (doc["groups"], doc["duplicates"], doc["no_face"]) == (3, 9, 3)
    assert (doc["faces"], doc["persons"], doc["possible_same"]) == (15, 6, 0)
    report = json.loads((out / "report.json").read_text())
    assert report["faces"]["max_face_distance"] == 0.45
    assert report["faces"]["metric"] == "euclidean"
    assert report["summary"]["face_seconds"] > 0
    # the layout: the kept portraits and the faceless photos in best/, the rest in duplicates/
    assert sorted(p.name for p in (out / "duplicates").iterdir()) == sorted(
        f for person, files in people.groups.items() for f in files if f != f"{person}.jpg")
    assert (out / "best" / "noface_coffee.jpg").exists()

    # a rerun reads nothing again: every face comes from the store
    again = scan(people.root, out)
    assert again["extracted"] == 0 and again["reused"] == 19
    assert groups_of(rows(out)) == groups_of(table)


def test_query_is_this_person_already_registered(people: People, tmp_path: Path,
                                                 portraits: list[Path]) -> None:
    out = tmp_path / "out"
    scan(people.root, out, "--dry-run")
    person = people.registrants[1]
    with Image.open(people.root / f"{person}.jpg") as im:  # a new photo: turned, cropped
        w, h = im.size
        im.convert("RGB").rotate(7, fillcolor="white").crop((15, 20, w - 10, h - 5)).save(
            tmp_path / "new_photo.jpg", quality=80)
    shutil.copy(portraits[100], tmp_path / "stranger.jpg")
    proc = run_cli("query", str(tmp_path / "new_photo.jpg"), str(tmp_path / "stranger.jpg"),
                   "--db", str(out / "pixdedup.db"), "--json", check=False)
    assert proc.returncode == 1  # the stranger has no match
    answers = {Path(a["path"]).name: a for a in json.loads(proc.stdout)}
    matched = {m["path"] for m in answers["new_photo.jpg"]["matches"]}
    assert f"{person}.jpg" in matched and matched <= people.groups[person]
    assert all(m["stage"] in ("face", "local", "hash") for m in answers["new_photo.jpg"]["matches"])
    assert answers["stranger.jpg"]["matches"] == []
    text = run_cli("query", str(tmp_path / "new_photo.jpg"), "--db", str(out / "pixdedup.db")).stdout
    assert "same person, face distance" in text or "local" in text


def test_all_faces_of_a_group_photo(portraits: list[Path], tmp_path: Path) -> None:
    """Two people side by side: two faces; with --faces all the group photo joins one
    of them, with --faces largest it is matched by its larger face only."""
    root = tmp_path / "photos"
    root.mkdir()
    a, b = (Image.open(p).convert("RGB") for p in portraits[10:12])
    pair = Image.new("RGB", (a.width + b.width, max(a.height, b.height)), "white")
    pair.paste(a, (0, 0))
    pair.paste(b.resize((b.width * 3 // 4, b.height * 3 // 4)), (a.width, 0))
    pair.save(root / "together.jpg", quality=92)
    shutil.copy(portraits[11], root / "b_alone.jpg")
    doc = scan(root, tmp_path / "all", "--faces", "all", "--dry-run")
    table = rows(tmp_path / "all")
    assert table["together.jpg"]["Face Count"] == "2"
    assert len(table["together.jpg"]["Face Box"].split()) == 2
    assert groups_of(table) == [{"together.jpg", "b_alone.jpg"}]
    assert doc["faces"] == 3
    scan(root, tmp_path / "largest", "--faces", "largest", "--dry-run")
    assert groups_of(rows(tmp_path / "largest")) == []  # the larger face is a's


def test_models_lists_face_detectors_and_models() -> None:
    listed = json.loads(run_cli("models", "--json").stdout)
    kinds = {(m["kind"], m["name"]): m for m in listed}
    assert kinds[("face-detector", "hog")]["default"] and kinds[("face-detector", "hog")]["available"]
    assert kinds[("face-detector", "libfacedetection")]["available"]
    model = kinds[("face-model", "dlib-resnet")]
    assert model["available"] and model["max_face_distance"] == 0.45 and model["metric"] == "euclidean"
    text = run_cli("models").stdout
    assert "Face detectors (--mode faces --face-detector)" in text and "onnx:PATH" in text


def test_bad_face_settings_are_one_line_errors(tmp_path: Path, portraits: list[Path]) -> None:
    root = tmp_path / "p"
    root.mkdir()
    shutil.copy(portraits[0], root / "a.jpg")
    for flags, says in ((["--face-detector", "nope"], "unknown face detector 'nope'"),
                        (["--face-model", "onnx:/no/such.onnx"], "/no/such.onnx"),
                        (["--max-face-distance", "3"], "max_face_distance must be between 0 and 2")):
        proc = run_cli("scan", str(root), "--mode", "faces", "--dry-run", *flags, check=False)
        assert proc.returncode == 2, proc.stderr
        assert says in proc.stderr and "Traceback" not in proc.stderr


def test_a_store_of_faces_follows_changed_files(portraits: list[Path], tmp_path: Path) -> None:
    root = tmp_path / "people"
    make_people(root, portraits[20:26])
    out = tmp_path / "out"
    scan(root, out, "--dry-run")
    # a portrait replaced by another person's: its faces are computed again, its group changes
    shutil.copy(portraits[30], root / f"{portraits[20].stem}.jpg")
    doc = scan(root, out, "--dry-run")
    assert doc["extracted"] == 1
    table = rows(out)
    assert table[f"{portraits[20].stem}.jpg"]["Status"] == "Unique"
    assert len([g for g in groups_of(table) if any(portraits[20].stem in f for f in g)]) == 1
