"""`pixdedup scan --mode similar` end to end on real sample photos with strong edits
that the hashes miss, a rerun that reuses every vector, and dbscan."""

import csv
import functools
import json
import os
import shutil

import pytest
import skimage.data
from PIL import Image

from pixdedup.samples import make_edit
from pixdedup.store import FeatureStore

from ..conftest import run_cli

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
EDITS = (("flip", 1), ("filter", 3), ("rot90", 90))


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("similar") / "photos"
    root.mkdir()
    for name in PHOTOS:
        img = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        img.save(root / f"{name}.jpg", quality=92)
        if name in ("chelsea", "coffee"):
            for kind, strength in EDITS:
                edited = make_edit(img, kind, strength, seed=1)
                assert edited.image is not None
                edited.image.save(root / f"{name}_{kind}.jpg", quality=90)
    return root


_run = functools.partial(run_cli, check=False)


def _groups(out):
    with open(out / "image_report.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    groups = {}
    for r in rows:
        if r["Group ID"]:
            groups.setdefault(r["Group ID"], set()).add(r["Image Path"])
    return rows, sorted(sorted(g) for g in groups.values())


def test_similar_mode_finds_strong_edits_that_near_mode_misses(collection, tmp_path):
    near = _run("scan", str(collection), "--out", str(tmp_path / "near"), "--dry-run", "--quiet")
    assert near.returncode == 0, near.stderr
    _, near_groups = _groups(tmp_path / "near")
    # near mode finds the mirrored and turned copies (permuted wavelet hashes), not
    # the cross-processed one (its channels swapped: the hues move, the colour gate
    # says no; a warm cast that keeps the hues would pass it)
    assert near_groups[0] == ["chelsea.jpg", "chelsea_flip.jpg", "chelsea_rot90.jpg"]
    assert {"coffee.jpg", "coffee_flip.jpg", "coffee_rot90.jpg"} <= set(near_groups[1])
    plain = _run("scan", str(collection), "--out", str(tmp_path / "plain"), "--dry-run",
                 "--quiet", "--no-orientations")
    assert plain.returncode == 0, plain.stderr
    found_by_plain = {p for g in _groups(tmp_path / "plain")[1] for p in g}
    assert "chelsea_flip.jpg" not in found_by_plain and "chelsea_rot90.jpg" not in found_by_plain

    out = tmp_path / "similar"
    res = _run("scan", str(collection), "--mode", "similar", "--device", "cpu", "--out", str(out),
               "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["embedded"] == 10 and summary["errors"] == 0 and summary["unique"] == 2
    rows, groups = _groups(out)
    assert groups == [
        ["chelsea.jpg", "chelsea_filter.jpg", "chelsea_flip.jpg", "chelsea_rot90.jpg"],
        ["coffee.jpg", "coffee_filter.jpg", "coffee_flip.jpg", "coffee_rot90.jpg"],
    ]
    by_path = {r["Image Path"]: r for r in rows}
    assert by_path["chelsea.jpg"]["Status"] == "Best"
    flip = by_path["chelsea_flip.jpg"]
    assert flip["Status"] == "Duplicate" and flip["Match Stage"] in ("hash", "local")
    assert flip["Transform"].startswith("mirrored") and float(flip["Embedding Similarity"]) > 0.6
    assert by_path["coffee_rot90.jpg"]["Transform"].startswith("rotated 90 deg")
    filtered = by_path["chelsea_filter.jpg"]
    assert filtered["Match Stage"] == "embedding" and filtered["Status"] == "Duplicate"
    assert by_path["astronaut.jpg"]["Status"] == by_path["rocket.jpg"]["Status"] == "Unique"
    assert (out / "duplicates" / "chelsea_flip.jpg").read_bytes() == \
        (collection / "chelsea_flip.jpg").read_bytes()

    with FeatureStore(str(out / "pixdedup.db"), lock=False) as store:
        assert store.embedding_count("efficientnet-lite0@1") == 10
    again = _run("scan", str(collection), "--mode", "similar", "--device", "cpu", "--out",
                 str(out), "--json")
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["embedded"] == 0 and doc["extracted"] == 0 and doc["reused"] == 10
    assert _groups(out)[1] == groups


def test_members_are_confirmed_against_a_colour_filtered_best(collection, tmp_path):
    # Keep the newest file: the colour-filtered copy becomes the group's best.  The
    # near cascade rejects every pair with it (colour gate); members are confirmed
    # against it by keypoints instead, the turned copy too, although its embedding is
    # far from the filtered one's.
    root = tmp_path / "photos"
    shutil.copytree(collection, root)
    for k, name in enumerate(sorted(p.name for p in root.iterdir())):
        os.utime(root / name, (1_600_000_000 + k, 1_600_000_000 + k))
    os.utime(root / "chelsea_filter.jpg", (1_700_000_000, 1_700_000_000))
    res = _run("scan", str(root), "--mode", "similar", "--device", "cpu", "--keep", "newest",
               "--min-cosine-similarity", "0.8", "--out", str(tmp_path / "out"), "--dry-run", "--quiet")
    assert res.returncode == 0, res.stderr
    rows, groups = _groups(tmp_path / "out")
    assert ["chelsea.jpg", "chelsea_filter.jpg", "chelsea_flip.jpg", "chelsea_rot90.jpg"] in groups
    by_path = {r["Image Path"]: r for r in rows}
    turned = by_path["chelsea_rot90.jpg"]
    assert turned["Best Image"] == "chelsea_filter.jpg" and turned["Match Stage"] == "embedding"
    assert float(turned["Embedding Similarity"]) < 0.8  # not a candidate pair itself


def test_dbscan_clusters_are_unverified_components(collection, tmp_path):
    res = _run("scan", str(collection), "--mode", "similar", "--cluster", "dbscan", "--eps", "0.02",
               "--out", str(tmp_path / "db"), "--dry-run", "--json")
    assert res.returncode == 0, res.stderr
    loose = _run("scan", str(collection), "--mode", "similar", "--cluster", "dbscan", "--eps",
                 "0.9", "--out", str(tmp_path / "db2"), "--dry-run", "--json")
    assert json.loads(loose.stdout)["groups"] >= 1
    assert json.loads(loose.stdout)["duplicates"] > json.loads(res.stdout)["duplicates"]


def test_bad_model_settings_are_one_line_errors(collection, tmp_path):
    res = _run("scan", str(collection), "--mode", "similar", "--model", "nope", "--out",
               str(tmp_path / "x"))
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "valid names: clip-vit-b-32, efficientnet-lite0" in res.stderr
    res = _run("scan", str(collection), "--cluster", "dbscan", "--out", str(tmp_path / "y"))
    assert res.returncode != 0 and "use it with --mode similar" in res.stderr
    models = _run("models")
    assert models.returncode == 0 and "efficientnet-lite0 (default)\n  available" in models.stdout


def test_query_against_a_similar_mode_store_finds_a_mirrored_copy(collection, tmp_path):
    # the query uses the mode's own candidate search: in similar mode that includes the
    # hash searches (full frame, windows, mirrored and turned), as in near mode
    out = tmp_path / "out"
    scan = _run("scan", str(collection), "--out", str(out), "--mode", "similar", "--dry-run",
                "--quiet")
    assert scan.returncode == 0, scan.stderr
    q = tmp_path / "q"
    q.mkdir()
    Image.open(collection / "rocket.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT) \
        .save(q / "rocket mirrored.jpg", quality=90)
    Image.open(collection / "astronaut.jpg").resize((256, 256)).save(q / "small.png")
    proc = _run("query", str(q), "--db", str(out / "pixdedup.db"), "--json")
    assert proc.returncode == 0, proc.stderr
    answers = {os.path.basename(a["path"]): a for a in json.loads(proc.stdout)}
    (mirrored,) = answers["rocket mirrored.jpg"]["matches"]
    assert mirrored["path"] == "rocket.jpg" and mirrored["transform"].startswith("mirrored")
    assert [m["path"] for m in answers["small.png"]["matches"]] == ["astronaut.jpg"]
