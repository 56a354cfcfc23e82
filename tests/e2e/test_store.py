"""End to end: the feature store through the CLI — resume after real SIGKILLs,
incremental reruns, --reset, query, stats, the lock and unusable store files."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from ..conftest import run_cli, synthetic_photo

N_ORIGINALS = 72


def _report(out: Path) -> list[dict[str, str]]:
    with open(out / "image_report.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _decisions(rows: list[dict[str, str]]) -> list[tuple[str, ...]]:
    return [(r["Image Path"], r["Status"], r["Group ID"], r["Best Image"], r["Quality Score"])
            for r in rows]


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store") / "photos"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for seed in range(N_ORIGINALS):
        img = synthetic_photo(100 + seed, size=(1600, 1200))
        img.save(root / "a" / f"img{seed:02d}.jpg", quality=95)
        if seed % 3 == 0:  # a smaller, lower-quality copy
            img.resize((800, 600)).save(root / "b" / f"copy{seed:02d}.jpg", quality=70)
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


@pytest.fixture(scope="module")
def reference(collection: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    out = tmp_path_factory.mktemp("ref") / "out"
    run_cli("scan", str(collection), "--out", str(out), "--quiet", "--workers", "2")
    return _report(out)


def test_reference_run_groups_the_copies(reference):
    assert len(reference) == N_ORIGINALS + N_ORIGINALS // 3 + 1
    dups = [r for r in reference if r["Status"] == "Duplicate"]
    assert sorted(r["Image Path"] for r in dups) == [f"b/copy{s:02d}.jpg" for s in range(0, N_ORIGINALS, 3)]
    assert [r["Status"] for r in reference if r["Image Path"] == "b/broken.jpg"] == ["Error"]


def test_resume_after_sigkill_at_random_points(collection, reference, tmp_path):
    out = tmp_path / "out"
    # small batches: several commits per run, so a kill lands between them
    cmd = [sys.executable, "-m", "pixdedup", "scan", str(collection), "--out", str(out), "--quiet",
           "--workers", "2", "--batch-size", "4"]
    db = out / "pixdedup.db"
    rng = random.Random(7)
    kills = partial_kills = 0

    def committed() -> int:
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                return int(con.execute("SELECT count(*) FROM images").fetchone()[0])
            finally:
                con.close()
        except sqlite3.Error:  # not created yet
            return 0

    for _attempt in range(8):
        before = committed()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        # kill right after this run committed something, at a random moment of its batch
        while proc.poll() is None and committed() <= before:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the scan and its worker processes
            kills += 1
            partial_kills += 0 < committed() < len(reference)
        proc.wait()
        if db.exists():  # whatever survived is whole rows only
            con = sqlite3.connect(db)
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            con.close()
    assert kills >= 2 and partial_kills >= 1  # resumed from a partial store at least once
    final = run_cli(*cmd[3:-1], "2", "--json")
    doc = json.loads(final.stdout)
    assert _decisions(_report(out)) == _decisions(reference)
    paths = [r["Image Path"] for r in _report(out)]
    assert len(paths) == len(set(paths)) == len(reference)
    con = sqlite3.connect(out / "pixdedup.db")
    # no committed image was ever extracted a second time
    assert con.execute("SELECT max(extractions) FROM images").fetchone()[0] == 1
    assert con.execute("SELECT count(*) FROM images").fetchone()[0] == len(reference)
    con.close()
    assert doc["extracted"] + doc["reused"] == len(reference)  # every file accounted for


def test_incremental_rerun_reads_only_new_and_changed_files(collection, tmp_path):
    src = tmp_path / "photos"
    subprocess.run(["cp", "-r", str(collection), str(src)], check=True)
    out = tmp_path / "out"
    first = json.loads(run_cli("scan", str(src), "--out", str(out), "--json").stdout)
    assert first["extracted"] == first["images"] and first["reused"] == 0
    synthetic_photo(500, size=(800, 600)).save(src / "a" / "new.jpg", quality=90)
    Image.open(src / "a" / "img01.jpg").save(src / "b" / "copy-of-01.png")
    synthetic_photo(501, size=(800, 600)).save(src / "a" / "img02.jpg", quality=90)  # changed
    os.remove(src / "a" / "img04.jpg")
    second = json.loads(run_cli("scan", str(src), "--out", str(out), "--json").stdout)
    assert second["extracted"] == 3
    assert second["reused"] == first["images"] - 2
    assert second["removed"] == 1
    rows = {r["Image Path"]: r for r in _report(out)}
    assert "a/img04.jpg" not in rows
    assert rows["b/copy-of-01.png"]["Best Image"] == "a/img01.jpg"
    assert rows["a/new.jpg"]["Status"] == "Unique"
    third = json.loads(run_cli("scan", str(src), "--out", str(out), "--json", "--reset").stdout)
    assert third["extracted"] == third["images"] == second["images"] and third["reused"] == 0


def test_query_answers_from_the_store(collection, tmp_path):
    out = tmp_path / "out"
    run_cli("scan", str(collection), "--out", str(out), "--quiet")
    assert (out / "pixdedup.db.signatures" / "manifest.json").is_file()  # what query maps
    q = tmp_path / "q"
    q.mkdir()
    Image.open(collection / "a" / "img05.jpg").resize((640, 480)).save(q / "resized.webp", quality=80)
    synthetic_photo(900).save(q / "unrelated.jpg", quality=90)
    Image.open(collection / "a" / "img07.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT) \
        .save(q / "mirrored.jpg", quality=90)
    proc = run_cli("query", str(q / "resized.webp"), "--db", str(out / "pixdedup.db"))
    assert "a/img05.jpg" in proc.stdout and "1 match" in proc.stdout
    proc = run_cli("query", str(q), "--db", str(out / "pixdedup.db"), "--json", check=False)
    assert proc.returncode == 1  # one query has no match
    answers = {Path(a["path"]).name: a for a in json.loads(proc.stdout)}
    assert [m["path"] for m in answers["resized.webp"]["matches"]] == ["a/img05.jpg"]
    assert answers["unrelated.jpg"]["matches"] == []
    (turned,) = answers["mirrored.jpg"]["matches"]
    assert turned["path"] == "a/img07.jpg" and turned["transform"].startswith("mirrored")
    proc = run_cli("query", str(q), "--db", str(tmp_path / "nope.db"), check=False)
    assert proc.returncode == 2 and "no feature store" in proc.stderr and "Traceback" not in proc.stderr


def test_stats(collection, tmp_path):
    out = tmp_path / "out"
    run_cli("scan", str(collection), "--out", str(out), "--quiet")
    doc = json.loads(run_cli("stats", "--db", str(out / "pixdedup.db"), "--json").stdout)
    assert doc["images"] == N_ORIGINALS + N_ORIGINALS // 3 + 1
    assert doc["by_status"] == {"ok": doc["images"] - 1, "error": 1}
    assert doc["groups"] == N_ORIGINALS // 3 and doc["last_run"]["finished"]
    text = run_cli("stats", "--db", str(out / "pixdedup.db")).stdout
    n = N_ORIGINALS // 3
    assert f"groups      {n}  ({n} duplicates)" in text


def test_second_concurrent_run_is_refused(collection, tmp_path):
    out = tmp_path / "out"
    run_cli("scan", str(collection), "--out", str(out), "--quiet")
    with open(out / "pixdedup.db.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running scan holds it
        proc = run_cli("scan", str(collection), "--out", str(out), "--quiet", check=False)
    assert proc.returncode == 2
    assert "is in use by another pixdedup run" in proc.stderr and "Traceback" not in proc.stderr
    # the refused run touched nothing of the running one's output
    assert (out / "image_report.csv").is_file() and len(list((out / "best").rglob("*.jpg"))) > 0
    run_cli("scan", str(collection), "--out", str(out), "--quiet")  # released: fine again


@pytest.mark.parametrize("content", [b"garbage, not a database" * 100, "foreign"])
def test_unusable_store_is_one_clear_line_and_reset_recovers(collection, tmp_path, content):
    db = tmp_path / "features.db"
    if content == "foreign":
        con = sqlite3.connect(db)
        con.execute("CREATE TABLE photos (x)")
        con.commit()
        con.close()
    else:
        db.write_bytes(content)
    out = tmp_path / "out"
    proc = run_cli("scan", str(collection), "--out", str(out), "--db", str(db), check=False)
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and str(db) in line and "--reset" in line
    run_cli("scan", str(collection), "--out", str(out), "--db", str(db), "--reset", "--quiet")
    assert len(_report(out)) == N_ORIGINALS + N_ORIGINALS // 3 + 1
