"""End to end against real servers on loopback: Azure Blob Storage (Azurite) and S3
(moto).  A generated collection with known duplicates is uploaded, the CLI scans the
bucket, and the test checks the groups, the blobs under best/ and duplicates/ (byte
for byte), the uploaded reports, what was downloaded, faults and bad input."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path

import boto3
from azure.storage.blob import BlobServiceClient

from ..conftest import run_cli, synthetic_photo
from ..faces.conftest import portraits  # noqa: F401 - the fixture
from .servers import KEY, FaultProxy, connection_string

ROOT = Path(__file__).resolve().parents[2]


def _jpeg(img, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def collection() -> dict[str, bytes]:
    """Relative name -> bytes: 5 originals, 2 byte copies (one with a space and one
    with unicode in its name), 2 smaller re-encodes, a text file and a broken JPEG."""
    files: dict[str, bytes] = {}
    for i in range(5):
        img = synthetic_photo(300 + i, size=(900, 675))
        files[f"a/img{i}.jpg"] = _jpeg(img)
        if i == 0:
            files["b/copy of img0.jpg"] = files["a/img0.jpg"]
        if i == 1:
            files["b/kopie-ü 1.jpg"] = files["a/img1.jpg"]
        if i in (2, 3):
            files[f"c/small{i}.jpg"] = _jpeg(img.resize((450, 338)), 70)
    files["notes.txt"] = b"not an image"
    files["b/broken.jpg"] = b"\xff\xd8\xff\xe0 truncated"
    return files


EXPECTED = {  # duplicate -> its best image
    "b/copy of img0.jpg": "a/img0.jpg", "b/kopie-ü 1.jpg": "a/img1.jpg",
    "c/small2.jpg": "a/img2.jpg", "c/small3.jpg": "a/img3.jpg"}


def _rows(text: str) -> dict[str, dict[str, str]]:
    return {r["Image Path"]: r for r in csv.DictReader(io.StringIO(text))}


def check_results(listing: dict[str, bytes], out: str, files: dict[str, bytes]) -> dict[str, dict[str, str]]:
    """Common assertions on the output prefix ``out`` (key -> bytes of every object)."""
    rows = _rows(listing[out + "image_report.csv"].decode("utf-8"))
    assert set(rows) == set(files)  # every input object is in the report, exactly once
    assert rows["notes.txt"]["Status"] == "Skipped"
    assert rows["b/broken.jpg"]["Status"] == "Error" and rows["b/broken.jpg"]["Error"]
    for dup, best in EXPECTED.items():
        assert rows[dup]["Status"] == "Duplicate", dup
        assert rows[dup]["Best Image"] == best
        assert listing[out + "duplicates/" + dup] == files[dup]  # byte-identical copy
    for name in ("a/img0.jpg", "a/img1.jpg", "a/img2.jpg", "a/img3.jpg", "a/img4.jpg"):
        assert listing[out + "best/" + name] == files[name]
    placed = {k for k in listing if k.startswith(out + "best/") or k.startswith(out + "duplicates/")}
    assert len(placed) == 9
    return rows


# -- Azure -----------------------------------------------------------------------------------

def _azure(port: int, container: str, files: dict[str, bytes], prefix: str = "2024/") -> BlobServiceClient:
    svc = BlobServiceClient.from_connection_string(connection_string(port))
    cc = svc.get_container_client(container)
    cc.create_container()
    for name, data in files.items():
        cc.upload_blob(prefix + name, data)
    return svc


def _blobs(svc: BlobServiceClient, container: str, prefix: str) -> dict[str, bytes]:
    cc = svc.get_container_client(container)
    return {b.name: cc.download_blob(b.name).readall() for b in cc.list_blobs(name_starts_with=prefix)}


def test_azure_scan_writes_best_duplicates_and_reports_back(azurite, tmp_path):
    files = collection()
    svc = _azure(azurite, "photos", files)
    env = {"AZURE_STORAGE_CONNECTION_STRING": connection_string(azurite),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    doc = json.loads(run_cli("scan", "az://photos/2024/", "--json", env=env).stdout)
    assert doc["output"] == "az://photos/2024_deduplicated/"
    assert doc["groups"] == 4 and doc["duplicates"] == 4 and doc["errors"] == 1
    image_bytes = sum(len(v) for k, v in files.items() if k.endswith(".jpg"))
    copies = len(files["a/img0.jpg"]) + len(files["a/img1.jpg"])
    # each image downloaded once; the two byte copies not at all (same Content-MD5 and size)
    assert doc["bytes_downloaded"] == image_bytes - copies
    listing = _blobs(svc, "photos", "2024_deduplicated/")
    check_results(listing, "2024_deduplicated/", files)
    report = json.loads(listing["2024_deduplicated/report.json"])
    assert report["requests"]["bytes_downloaded"] == doc["bytes_downloaded"]
    assert report["config"]["input"] == "az://photos/2024/"
    assert KEY not in listing["2024_deduplicated/report.json"].decode()

    # incremental rerun: nothing downloaded, nothing extracted
    again = json.loads(run_cli("scan", "az://photos/2024/", "--json", env=env).stdout)
    assert again["bytes_downloaded"] == 0 and again["extracted"] == 0
    assert again["groups"] == 4

    # a local output folder from the cloud input: same layout, every image downloaded once
    out = tmp_path / "local"
    local = json.loads(run_cli("scan", "az://photos/2024/", "--out", str(out), "--json", env=env).stdout)
    assert local["bytes_downloaded"] == image_bytes
    on_disk = {str(p.relative_to(out)).replace(os.sep, "/"): p.read_bytes()
               for p in out.rglob("*") if p.is_file()}
    check_results(on_disk, "", files)
    assert not (out / ".pixdedup-staging").exists()


def test_azure_survives_throttling_dropped_connections_and_holds_the_rate(azurite, tmp_path):
    files = collection()
    svc = _azure(azurite, "faulty", files)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    with FaultProxy(azurite, every=4) as proxy:
        env["AZURE_STORAGE_CONNECTION_STRING"] = connection_string(proxy.port)
        proc = run_cli("scan", "az://faulty/2024/", "--json", "--max-requests-per-second", "20",
                       "--download-concurrency", "8", env=env)
    doc = json.loads(proc.stdout)
    assert proxy.faults["503"] and proxy.faults["429"] and proxy.faults["drop"]
    listing = _blobs(svc, "faulty", "2024_deduplicated/")
    check_results(listing, "2024_deduplicated/", files)  # nothing lost
    report = json.loads(listing["2024_deduplicated/report.json"])
    retried = report["requests"]["retries_by_reason"]
    assert sum(retried.values()) == doc["retries"]
    assert retried.get("503") == proxy.faults["503"] and retried.get("429") == proxy.faults["429"]
    # a body cut off half-way is read again by the Azure SDK itself (its stream downloader
    # retries incomplete reads internally); either way the bytes arrive whole, as checked above
    # the limit holds: 20 requests/s plus a burst of 2 in any one-second window
    assert proxy.max_rate(1.0) <= 22, proxy.max_rate(1.0)


def test_azure_bad_input_is_one_line(azurite, tmp_path):
    env = {"AZURE_STORAGE_CONNECTION_STRING": connection_string(azurite),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    _azure(azurite, "tiny", {"x.jpg": _jpeg(synthetic_photo(1))})
    wrong = connection_string(azurite, key="d3JvbmdrZXl3cm9uZ2tleXdyb25na2V5d3Jvbmc=")
    cases = [
        ("az://missing-container/x/", env, "container 'missing-container' does not exist"),
        ("az://tiny/empty/", env, "nothing to scan: no objects under az://tiny/empty/"),
        ("az://tiny/", {**env, "AZURE_STORAGE_CONNECTION_STRING": wrong}, "access denied"),
        ("az://tiny/", {"XDG_CACHE_HOME": env["XDG_CACHE_HOME"], "AZURE_STORAGE_CONNECTION_STRING": ""},
         "no Azure credentials"),
    ]
    for url, e, message in cases:
        proc = run_cli("scan", url, env=e, check=False)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], proc.stderr
        assert "d3Jvbmdr" not in proc.stderr and KEY not in proc.stderr


# -- S3 --------------------------------------------------------------------------------------

def _s3(port: int):
    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing-secret")


def _s3_bucket(port: int, bucket: str, files: dict[str, bytes], prefix: str):
    """A new bucket holding ``files`` under ``prefix``; returns the client."""
    s3 = _s3(port)
    s3.create_bucket(Bucket=bucket)
    for name, data in files.items():
        s3.put_object(Bucket=bucket, Key=prefix + name, Body=data)
    return s3


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret",
          "AWS_DEFAULT_REGION": "us-east-1"}


def test_s3_scan_end_to_end(moto_s3, tmp_path):
    files = collection()
    files["//lead/slash.jpg"] = _jpeg(synthetic_photo(77))
    files["../escape.jpg"] = _jpeg(synthetic_photo(78))
    s3 = _s3_bucket(moto_s3, "shots", files, "trip/")
    env = {**S3_ENV, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    endpoint = f"http://127.0.0.1:{moto_s3}"
    doc = json.loads(run_cli("scan", "s3://shots/trip", "--endpoint-url", endpoint, "--json",
                             env=env).stdout)
    assert doc["output"] == "s3://shots/trip_deduplicated/"
    image_bytes = sum(len(v) for k, v in files.items() if k.endswith(".jpg") and ".." not in k)
    copies = len(files["a/img0.jpg"]) + len(files["a/img1.jpg"])
    assert doc["bytes_downloaded"] == image_bytes - copies  # ETag = MD5: copies not downloaded
    objs = s3.list_objects_v2(Bucket="shots", Prefix="trip_deduplicated/")["Contents"]
    listing = {o["Key"]: s3.get_object(Bucket="shots", Key=o["Key"])["Body"].read() for o in objs}
    # the leading slashes are dropped inside the output prefix, never outside it
    assert listing["trip_deduplicated/best/lead/slash.jpg"] == files["//lead/slash.jpg"]
    del listing["trip_deduplicated/best/lead/slash.jpg"]
    del files["//lead/slash.jpg"], files["../escape.jpg"]
    rows = _rows(listing["trip_deduplicated/image_report.csv"].decode())
    assert rows.pop("//lead/slash.jpg")["Status"] == "Unique"
    escape = rows.pop("../escape.jpg")
    assert escape["Status"] == "Error" and "unsafe object name" in escape["Error"]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="shots")["Contents"]}
    assert {k for k in keys if not k.startswith(("trip/", "trip_deduplicated/"))} == set()
    listing["trip_deduplicated/image_report.csv"] = _csv(rows)
    check_results(listing, "trip_deduplicated/", files)
    again = json.loads(run_cli("scan", "s3://shots/trip/", "--endpoint-url", endpoint, "--json",
                               env=env).stdout)
    assert again["bytes_downloaded"] == 0 and again["extracted"] == 0
    proc = run_cli("scan", "s3://no-such-bucket/x/", "--endpoint-url", endpoint, env=env, check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == \
        "pixdedup: error: bucket 'no-such-bucket' does not exist"


def _csv(rows: dict[str, dict[str, str]]) -> bytes:
    buf = io.StringIO()
    cols = list(next(iter(rows.values())))
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(rows.values())
    return buf.getvalue().encode()


def test_local_folder_to_s3_output(moto_s3, tmp_path):
    s3 = _s3(moto_s3)
    s3.create_bucket(Bucket="results")
    src = tmp_path / "photos"
    files = collection()
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    env = {**S3_ENV}
    run_cli("scan", str(src), "--out", "s3://results/dedup/", "--db", str(tmp_path / "f.db"),
            "--endpoint-url", f"http://127.0.0.1:{moto_s3}", "--quiet", env=env)
    objs = s3.list_objects_v2(Bucket="results", Prefix="dedup/")["Contents"]
    listing = {o["Key"]: s3.get_object(Bucket="results", Key=o["Key"])["Body"].read() for o in objs}
    check_results(listing, "dedup/", files)
    assert hashlib.sha256(listing["dedup/best/a/img0.jpg"]).digest() == \
        hashlib.sha256(files["a/img0.jpg"]).digest()


def test_s3_survives_throttling_and_dropped_connections(moto_s3, tmp_path):
    files = collection()
    s3 = _s3_bucket(moto_s3, "flaky", files, "in/")
    env = {**S3_ENV, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    with FaultProxy(moto_s3, every=4) as proxy:
        doc = json.loads(run_cli("scan", "s3://flaky/in/", "--endpoint-url",
                                 f"http://127.0.0.1:{proxy.port}", "--json",
                                 "--max-requests-per-second", "30", env=env).stdout)
    objs = s3.list_objects_v2(Bucket="flaky", Prefix="in_deduplicated/")["Contents"]
    listing = {o["Key"]: s3.get_object(Bucket="flaky", Key=o["Key"])["Body"].read() for o in objs}
    check_results(listing, "in_deduplicated/", files)  # nothing lost
    retried = json.loads(listing["in_deduplicated/report.json"])["requests"]["retries_by_reason"]
    # every injected fault was retried by pixdedup itself: throttling and the cut-off bodies
    assert sum(retried.values()) == sum(proxy.faults.values()) == doc["retries"]
    assert retried["503"] == proxy.faults["503"] and retried["429"] == proxy.faults["429"]
    assert proxy.faults["drop"] and proxy.max_rate(1.0) <= 33, proxy.requests


# -- apply and undo on a bucket ----------------------------------------------------------------

def test_azure_apply_delete_to_trash_and_undo(azurite, tmp_path):
    """Duplicates go to the trash prefix by server-side copy + delete, after their bytes
    were checked against the scan; undo brings every blob back, byte for byte."""
    files = collection()
    svc = _azure(azurite, "album", files)
    env = {"AZURE_STORAGE_CONNECTION_STRING": connection_string(azurite),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    run_cli("scan", "az://album/2024/", "--quiet", env=env)
    before = _blobs(svc, "album", "2024/")
    proc = run_cli("apply", "az://album/2024_deduplicated/", "--action", "delete", env=env)
    assert "4 files" in proc.stdout and "az://album/2024_deduplicated/trash/" in proc.stdout
    after = _blobs(svc, "album", "2024/")
    assert set(after) == {"2024/" + k for k in files} - {"2024/" + d for d in EXPECTED}
    trash = _blobs(svc, "album", "2024_deduplicated/trash/")
    assert trash == {"2024_deduplicated/trash/" + d: files[d] for d in EXPECTED}
    proc = run_cli("undo", "az://album/2024_deduplicated/", env=env)
    assert "4 files restored" in proc.stdout
    assert _blobs(svc, "album", "2024/") == before
    assert _blobs(svc, "album", "2024_deduplicated/trash/") == {}


def test_s3_apply_move_from_a_local_output_and_undo(moto_s3, tmp_path):
    """A bucket scanned into a local folder: duplicates move to a prefix of the same
    bucket; an object changed after the scan stays where it is."""
    files = collection()
    s3 = _s3_bucket(moto_s3, "roll", files, "2023/")
    env = {**S3_ENV, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    endpoint = f"http://127.0.0.1:{moto_s3}"
    out = tmp_path / "out"
    run_cli("scan", "s3://roll/2023/", "--endpoint-url", endpoint, "--out", str(out), "--dry-run",
            "--quiet", env=env)
    s3.put_object(Bucket="roll", Key="2023/c/small3.jpg", Body=files["c/small3.jpg"] + b"edited")

    def objects(prefix: str) -> dict[str, bytes]:
        got = s3.list_objects_v2(Bucket="roll", Prefix=prefix).get("Contents", [])
        return {o["Key"]: s3.get_object(Bucket="roll", Key=o["Key"])["Body"].read() for o in got}

    before = objects("2023/")
    proc = run_cli("apply", str(out), "--action", "move", "--to", "s3://roll/removed/", env=env,
                   check=False)
    assert proc.returncode == 1
    assert "s3://roll/2023/c/small3.jpg: changed since the scan" in proc.stdout
    assert set(objects("removed/")) == {"removed/b/copy of img0.jpg", "removed/b/kopie-ü 1.jpg",
                                        "removed/c/small2.jpg"}
    assert "2023/c/small3.jpg" in objects("2023/")
    proc = run_cli("apply", str(out), "--action", "move", "--to", "s3://other/x/", env=env, check=False)
    assert proc.returncode == 2 and "another container or bucket" in proc.stderr
    run_cli("undo", str(out), env=env)
    assert objects("2023/") == before and objects("removed/") == {}


def test_a_bucket_can_be_sent_to_a_worker_process(moto_s3, tmp_path, monkeypatch):
    # what a cluster engine sends to its workers: the reader travels as its address
    # and options, and the worker opens its own client
    import multiprocessing
    import pickle

    from pixdedup.sources.cloud import Bucket, CloudOptions, parse_url

    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    _s3_bucket(moto_s3, "sent", {"a.jpg": b"the bytes"}, "p/")
    bucket = Bucket(parse_url("s3://sent/p/"),
                    CloudOptions(endpoint_url=f"http://127.0.0.1:{moto_s3}"))
    copy = pickle.loads(pickle.dumps(bucket))
    assert copy.read_key("p/a.jpg") == b"the bytes" and copy.fs is not bucket.fs
    with multiprocessing.get_context("forkserver").Pool(1) as pool:
        assert pool.apply(_read_key, (bucket, "p/a.jpg")) == b"the bytes"


def _read_key(bucket, key: str) -> bytes:
    return bucket.read_key(key)


def test_s3_faces_mode_byte_copies_take_their_twins_faces(moto_s3, tmp_path, portraits):  # noqa: F811
    """Faces mode on a bucket: the workers read the objects, people are grouped, a
    faceless photo is NO_FACE_DETECTED; a byte copy added later is not downloaded and
    takes its stored twin's faces, so the next run reads nothing."""
    from PIL import Image

    a, b = (p.read_bytes() for p in portraits[40:42])
    files = {"reg/a.jpg": a, "reg/b.jpg": b,
             "reg/a_again.jpg": _jpeg(Image.open(portraits[40]).convert("RGB").resize((266, 354)), 60),
             "misc/plain.jpg": _jpeg(synthetic_photo(5))}
    s3 = _s3_bucket(moto_s3, "people", files, "in/")
    env = {**S3_ENV, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    endpoint = f"http://127.0.0.1:{moto_s3}"

    def scan() -> tuple[dict, dict[str, dict[str, str]]]:
        doc = json.loads(run_cli("scan", "s3://people/in/", "--mode", "faces", "--endpoint-url",
                                 endpoint, "--json", "--dry-run", env=env).stdout)
        body = s3.get_object(Bucket="people", Key="in_deduplicated/image_report.csv")["Body"]
        return doc, _rows(body.read().decode())

    doc, rows = scan()
    assert rows["reg/a_again.jpg"]["Best Image"] == "reg/a.jpg"
    assert rows["reg/b.jpg"]["Status"] == "Unique" and rows["reg/b.jpg"]["Face Count"] == "1"
    assert rows["misc/plain.jpg"]["Status"] == "NO_FACE_DETECTED"
    assert (doc["faces"], doc["no_face"], doc["persons"]) == (3, 1, 2)
    s3.put_object(Bucket="people", Key="in/later/a copy.jpg", Body=a)
    doc, rows = scan()
    assert doc["bytes_downloaded"] == 0 and doc["extracted"] == 0  # the twin's record and faces
    copy = rows["later/a copy.jpg"]
    assert copy["Group ID"] == rows["reg/a.jpg"]["Group ID"] and copy["Face Count"] == "1"
    assert copy["Match Stage"] == "exact" or rows["reg/a.jpg"]["Status"] == "Duplicate"
    doc, _ = scan()
    assert doc["extracted"] == 0 and doc["reused"] == 5
