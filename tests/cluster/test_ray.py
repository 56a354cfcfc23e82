"""The Ray engine on a real two-node cluster on loopback (``conftest.ray_cluster``):
work runs on both nodes, the results equal the local engine's, a node killed mid-run
and a driver killed mid-run lose nothing, a bucket is read by the workers themselves
under one rate limit for the whole cluster.  (The node-kill test runs last: it takes
the second node down and starts it again.)"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from pixdedup.config import ScanConfig
from pixdedup.engines import engine_for
from pixdedup.pipeline import scan

from ..cloud.servers import FaultProxy
from ..cloud.test_cloud import EXPECTED, S3_ENV, _s3_bucket, collection
from ..conftest import run_cli, synthetic_photo
from ..faces.conftest import faceless
from ..unit.test_engine import CRASH_ON, crashed, square_or_die

ORIGINALS = 14


@pytest.fixture(scope="module")
def album(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """14 large originals, each with a smaller re-encode, a byte copy for some, and a
    broken file: 32 files."""
    folder = tmp_path_factory.mktemp("album")
    for i in range(ORIGINALS):
        img = synthetic_photo(900 + i, size=(2400, 1800))
        img.save(folder / f"orig{i:02d}.jpg", "JPEG", quality=93)
        img.resize((1200, 900)).save(folder / f"small{i:02d}.jpg", "JPEG", quality=80)
        if i % 4 == 0:
            (folder / f"copy{i:02d}.jpg").write_bytes((folder / f"orig{i:02d}.jpg").read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    return folder


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def local_rows(album: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    """The local engine's report of the album: what every Ray run must equal."""
    out = tmp_path_factory.mktemp("local") / "out"
    run_cli("scan", str(album), "--out", str(out), "--dry-run", "--quiet", "--workers", "2")
    rows = _rows(out / "image_report.csv")
    assert sum(r["Status"] == "Duplicate" for r in rows) == ORIGINALS + 4
    return rows


def _nodes(report: Path) -> list[dict[str, object]]:
    return json.loads(report.read_text())["engine"]["per_node"]


def test_work_runs_on_both_nodes_and_equals_the_local_engine(ray_cluster, album, local_rows,
                                                             tmp_path):
    with pytest.raises(urllib.error.HTTPError, match="401"):  # the cluster wants its token
        urllib.request.urlopen(ray_cluster.dashboard + "/api/version", timeout=10)
    ask = urllib.request.Request(ray_cluster.dashboard + "/api/version", headers={
        "Authorization": f"Bearer {os.environ['RAY_AUTH_TOKEN']}"})
    with urllib.request.urlopen(ask, timeout=10) as resp:
        assert resp.status == 200 and "ray_version" in json.loads(resp.read())
    out = tmp_path / "out"
    proc = run_cli("scan", str(album), "--out", str(out), "--dry-run", "--engine", "ray",
                   "--address", ray_cluster.address)
    assert f"engine      ray at {ray_cluster.address}: 2 CPUs" in proc.stderr
    assert "2 nodes, " in proc.stdout
    assert _rows(out / "image_report.csv") == local_rows  # same groups, best, statuses, scores
    nodes = _nodes(out / "report.json")
    assert len({n["node"] for n in nodes}) == 2 and all(n["address"] for n in nodes)
    assert all(n["extract"] > 0 for n in nodes)  # type: ignore[operator]
    assert sum(n["extract"] for n in nodes) == len(local_rows)  # type: ignore[misc]


def test_similar_mode_embeds_on_a_model_actor_and_equals_the_local_engine(ray_cluster, album,
                                                                          tmp_path):
    """The model inputs go from the decoding node's object store to the actor that holds
    the model; the vectors, groups and best images are the local engine's."""
    args = ["--mode", "similar", "--dry-run", "--json"]
    local = json.loads(run_cli("scan", str(album), "--out", str(tmp_path / "local"), *args).stdout)
    ray = json.loads(run_cli("scan", str(album), "--out", str(tmp_path / "ray"), *args, "--engine",
                             "ray", "--address", ray_cluster.address).stdout)
    assert ray["embedded"] == local["embedded"] == len(list(album.iterdir())) - 1  # not broken.jpg
    assert _rows(tmp_path / "ray" / "image_report.csv") == _rows(tmp_path / "local" / "image_report.csv")
    assert sum(n["extract"] for n in ray["engine"]["per_node"]) == ray["extracted"]


def test_faces_mode_finds_the_faces_on_the_workers_and_equals_the_local_engine(
        ray_cluster, portraits, tmp_path):
    folder = tmp_path / "people"
    folder.mkdir()
    for path in portraits[:16]:
        shutil.copy(path, folder / path.name)
    Image.open(portraits[3]).resize((200, 250)).save(folder / "again.jpg", quality=80)
    faceless(folder)
    args = ["--mode", "faces", "--dry-run", "--json"]
    local = json.loads(run_cli("scan", str(folder), "--out", str(tmp_path / "local"), *args).stdout)
    ray = json.loads(run_cli("scan", str(folder), "--out", str(tmp_path / "ray"), *args, "--engine",
                             "ray", "--address", ray_cluster.address).stdout)
    assert ray["faces"] == local["faces"] >= 17 and ray["persons"] == local["persons"] == 16
    assert _rows(tmp_path / "ray" / "image_report.csv") == _rows(tmp_path / "local" / "image_report.csv")
    assert len(ray["engine"]["per_node"]) == 2


def test_a_worker_that_crashes_on_an_item_costs_only_that_item(ray_cluster):
    engine = engine_for("ray", 1, ray_cluster.address)
    try:
        got = sorted(engine.map_cpu(square_or_die, range(24), chunk=4, on_crash=crashed))
        about = engine.describe()
    finally:
        engine.close()
    assert got == sorted(-x if x in CRASH_ON else x * x for x in range(24))
    assert about["items_crashed"] == len(CRASH_ON)


def _store_rows(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return int(con.execute("SELECT count(*) FROM images").fetchone()[0])
    except sqlite3.Error:
        return 0


KILLED_DRIVER = """
import os, signal, sys
from pixdedup.config import ScanConfig
from pixdedup.pipeline import scan

def progress(stage, done, total):
    if stage == "extract" and done >= 20:  # SIGKILL: no cleanup, no final commit
        os.kill(os.getpid(), signal.SIGKILL)

scan(sys.argv[1], ScanConfig(engine="ray", address=sys.argv[2], out=sys.argv[3],
                             db=sys.argv[4], dry_run=True), progress)
"""


def test_a_driver_killed_mid_run_resumes(ray_cluster, album, local_rows, tmp_path):
    out, db = tmp_path / "out", tmp_path / "features.db"
    driver = subprocess.run([sys.executable, "-c", KILLED_DRIVER, str(album), ray_cluster.address,
                             str(out), str(db)], capture_output=True, text=True, timeout=300)
    assert driver.returncode == -signal.SIGKILL, driver.stderr
    committed = _store_rows(db)
    assert 1 <= committed < len(local_rows)  # part of the extraction was committed
    doc = json.loads(run_cli("scan", str(album), "--out", str(out), "--db", str(db), "--dry-run",
                             "--json", "--engine", "ray", "--address", ray_cluster.address).stdout)
    assert doc["reused"] == committed  # what the killed driver committed is not redone
    assert doc["extracted"] == len(local_rows) - committed
    assert _rows(out / "image_report.csv") == local_rows


def test_a_bucket_is_read_by_the_workers_under_one_rate_limit(ray_cluster, moto_s3, tmp_path,
                                                              monkeypatch):
    files = collection()
    _s3_bucket(moto_s3, "cluster", files, "in/")
    for key, value in {**S3_ENV, "XDG_CACHE_HOME": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(key, value)  # the driver's credentials reach the workers

    def driver_read(self, ref):  # the driver never downloads an image itself
        raise AssertionError(f"the driver read {ref.uri}")

    monkeypatch.setattr("pixdedup.sources.cloud.Bucket.read", driver_read)
    with FaultProxy(moto_s3, every=4) as proxy:
        config = ScanConfig(engine="ray", address=ray_cluster.address, dry_run=True,
                            out=str(tmp_path / "out"), endpoint_url=f"http://127.0.0.1:{proxy.port}",
                            max_requests_per_second=20)
        result = scan("s3://cluster/in/", config, collect=False)
    rows = {r["Image Path"]: r for r in _rows(tmp_path / "out" / "image_report.csv")}
    assert len(rows) == len(files)  # every object reported once
    assert rows["notes.txt"]["Status"] == "Skipped" and rows["b/broken.jpg"]["Status"] == "Error"
    for dup, best in EXPECTED.items():  # the groups and best of the cloud tests
        assert rows[dup]["Status"] == "Duplicate" and rows[dup]["Best Image"] == best, dup
    engine = result.engine
    assert sum(n.get("extract", 0) for n in engine["per_node"]) == result.summary.extracted
    assert len(engine["per_node"]) == 2
    # the workers' requests and retries reach the report; every injected fault was retried
    assert result.summary.retries == sum(proxy.faults.values()) > 0
    image_bytes = sum(len(v) for k, v in files.items() if k.endswith(".jpg"))
    copies = len(files["a/img0.jpg"]) + len(files["a/img1.jpg"])
    assert result.summary.bytes_downloaded == image_bytes - copies
    # one token bucket for the driver and both nodes: 20 requests/s, a burst of 2
    limit = engine["shared_rate_limits"]
    assert limit[0]["rate"] == 20 and limit[0]["requests"] >= len(proxy.requests)
    assert proxy.max_rate(1.0) <= 22, proxy.max_rate(1.0)


def test_killing_a_node_mid_run_loses_nothing(ray_cluster, album, local_rows, tmp_path):
    """SIGKILL of the second node's raylet while it has work: Ray runs its tasks again
    on the head; every image is reported once and the results equal the local run."""
    raylet = ray_cluster.raylet_of_second()
    killed: list[int] = []

    def progress(stage: str, done: int, total: int | None) -> None:
        if stage == "extract" and done >= 8 and not killed:
            raylet.send_signal(signal.SIGKILL)
            killed.append(done)

    config = ScanConfig(engine="ray", address=ray_cluster.address, dry_run=True,
                        out=str(tmp_path / "out"), db=str(tmp_path / "features.db"))
    try:
        result = scan(str(album), config, progress, collect=False)
    finally:
        ray_cluster.start_second()  # for any test after this one
    assert killed and killed[0] < len(local_rows)
    assert _rows(tmp_path / "out" / "image_report.csv") == local_rows
    assert result.summary.errors == 1  # broken.jpg only: no image lost to the dead node
    assert os.path.exists(tmp_path / "out" / "report.json")


def test_without_an_address_a_local_ray_on_loopback_runs_the_scan(album, local_rows, tmp_path,
                                                                  monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out = tmp_path / "out"
    proc = run_cli("scan", str(album), "--out", str(out), "--dry-run", "--engine", "ray",
                   "--workers", "2")
    assert "engine      ray at local: 2 CPUs" in proc.stderr
    about = json.loads((out / "report.json").read_text())["engine"]
    assert about["address"] == "local" and about["nodes"] == 1
    assert about["dashboard"] is None or about["dashboard"].startswith("http://127.0.0.1:")
    assert _rows(out / "image_report.csv") == local_rows
