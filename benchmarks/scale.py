"""Scale: a feature store of N images, candidate search, grouping and report writing.

    python benchmarks/scale.py --images 3000000

Fills a feature store with realistic synthetic signatures (three 64-bit perceptual
hashes and 34 window hashes per image, as a near-mode scan stores them; 10% planted
edited copies of originals, a quarter of them crops, a quarter mirrored or turned, and
2% byte-identical copies; see benchmarks/candidates.py), then runs the real stages on
it: the store's signature arrays -> exact buckets -> multi-index candidate search (the
orientation search included) -> grouping (union-find; synthetic rows have no pixels, so
the candidate pairs count as verified) -> the streamed image_report.csv and report.json.
Prints seconds, peak RSS and store size per stage, and checks that the planted
duplicates were found. Last, ``pixdedup query`` of one new photo against the store
(extraction + the memory-mapped signature cache + the range searches), median of five
runs, as a user sees it between scans.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from candidates import make_signatures  # noqa: E402

from pixdedup.candidates import choose_tables, near_candidates  # noqa: E402
from pixdedup.config import ScanConfig  # noqa: E402
from pixdedup.models import Evidence, ImageResult, ImageStatus, ScanSummary  # noqa: E402
from pixdedup.pipeline import config_json  # noqa: E402
from pixdedup.query import query  # noqa: E402
from pixdedup.reports import ReportWriter, result_row  # noqa: E402
from pixdedup.store import FeatureStore, to_signed64  # noqa: E402

KINDS = ("whash", "phash", "dhash")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fill(store: FeatureStore, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    syn = make_signatures(n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    content = np.arange(n, dtype=np.int64)
    exact = rng.random(n) < 0.02  # byte-identical copies share their source's content hash
    exact[: n - len(syn.planted)] = False
    copies = syn.planted[:, 1]
    content[copies[exact[copies]]] = syn.planted[exact[copies], 0]
    run = store.start_run("synthetic", "near")
    extractor = "synthetic"
    h = {k: syn.sig.hashes[k] for k in KINDS}
    win = syn.sig.windows.reshape(n, -1)
    chunk = 50_000
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        rows = [(f"synthetic://{i:08d}.jpg", f"{i // 1000:05d}/{i:08d}.jpg", 1_000_000 + i % 977,
                 0.0, extractor, "ok", f"{content[i]:064x}", "JPEG", 4000, 3000,
                 float(50 + i % 40), to_signed64(int(h["whash"][i])), to_signed64(int(h["phash"][i])),
                 to_signed64(int(h["dhash"][i])), win[i].tobytes(), syn.sig.oriented[i].tobytes(), run)
                for i in range(a, b)]
        with store.conn:
            store.conn.execute("BEGIN")
            store.conn.executemany(
                "INSERT INTO images(uri, rel_path, size, mtime, extractor, status, content_hash, "
                "format, width, height, quality_score, whash, phash, dhash, windows, oriented, run) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    store.finish_run(run)
    return syn.planted, syn.crop, syn.turned


def find_root(parent: np.ndarray, x: np.ndarray) -> np.ndarray:
    while True:
        up = parent[x]
        if np.array_equal(up, x):
            return x
        x = up


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Label of every node (vectorised union-find by repeated pointer jumping)."""
    parent = np.arange(n, dtype=np.int64)
    a, b = pairs[:, 0].copy(), pairs[:, 1].copy()
    while len(a):
        ra, rb = find_root(parent, a), find_root(parent, b)
        lo, hi = np.minimum(ra, rb), np.maximum(ra, rb)
        keep = lo != hi
        lo, hi = lo[keep], hi[keep]
        np.minimum.at(parent, hi, lo)
        a, b = lo, hi
    return find_root(parent, np.arange(n, dtype=np.int64))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--work", type=Path, default=Path("bench-data/scale"))
    ap.add_argument("--keep", action="store_true", help="keep the store afterwards")
    args = ap.parse_args()
    n = args.images
    work = args.work / f"n{n}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    stages: list[tuple[str, float, float, str]] = []

    def stage(name: str, t: float, note: str = "") -> None:
        stages.append((name, time.perf_counter() - t, rss_mb(), note))
        print(f"{name}: {stages[-1][1]:.1f} s, peak RSS {stages[-1][2]:.0f} MB {note}", file=sys.stderr)

    t = time.perf_counter()
    store = FeatureStore(str(work / "pixdedup.db"))
    planted, crop, turned = fill(store, n, seed=1)
    db_mb = os.path.getsize(work / "pixdedup.db") / 1e6
    stage("fill store (synthetic)", t, f"store {db_mb:.0f} MB")
    # from here on: only what a scan keeps
    t0 = time.perf_counter()
    t = time.perf_counter()
    config = ScanConfig()  # what a scan searches, the orientation search included
    sig = store.signatures(config.search_hash_kinds, windows=True)
    stage("load signature arrays (+ write cache)", t)
    t = time.perf_counter()
    buckets = store.exact_buckets()
    stage("exact buckets (SQL)", t, f"{len(buckets):,} buckets")
    t = time.perf_counter()
    pairs = near_candidates(sig, config.max_hamming_distance, config.max_window_distance,
                            max_orientation_distance=config.max_orientation_distance,
                            max_candidates_per_image=config.max_candidates_per_image).pairs
    tables = f"m={choose_tables(n, n)}/{choose_tables(n, len(sig.windows))}"
    stage("candidate search", t, f"{len(pairs):,} pairs, tables {tables}")
    del sig
    t = time.perf_counter()
    exact_pairs = np.array([(b[0], m) for b in buckets for m in b[1:]], dtype=np.int64).reshape(-1, 2)
    all_pairs = np.concatenate([pairs, exact_pairs]) - 1  # row ids start at 1
    label = components(n, all_pairs)
    sizes = np.bincount(label, minlength=n)
    n_groups = int((sizes > 1).sum())
    found = label[planted[:, 0]] == label[planted[:, 1]]
    stage("grouping", t, f"{n_groups:,} groups")
    t = time.perf_counter()
    writer = ReportWriter(str(work))
    summary = ScanSummary()
    ev = Evidence(stage="hash")
    for row in store.report_rows():
        k = row.id - 1
        g = int(label[k])
        grouped = sizes[g] > 1
        status = ImageStatus.UNIQUE if not grouped else ImageStatus.BEST if g == k else ImageStatus.DUPLICATE
        res = ImageResult(row.rel_path, status, g + 1 if grouped else None, int(sizes[g]),
                          row.quality_score, None, ev if status is ImageStatus.DUPLICATE else None,
                          uri=row.uri, size=row.size, width=row.width, height=row.height,
                          format=row.format, content_hash=row.content_hash)
        summary.images += 1
        summary.duplicates += status is ImageStatus.DUPLICATE
        writer.add(result_row(res))
    writer.close(summary, {"images": n}, {}, [])
    report_mb = sum(os.path.getsize(work / f) for f in ("image_report.csv", "report.json")) / 1e6
    stage("report writing (CSV + JSON)", t, f"{report_mb:.0f} MB")
    total = time.perf_counter() - t0
    store.set_meta("config", config_json(ScanConfig()))
    store.close()
    photo = work / "query.jpg"
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 255, (768, 1024, 3), dtype=np.uint8)).save(photo, quality=90)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        answers = query([str(photo)], str(work / "pixdedup.db"), workers=1)
        times.append(time.perf_counter() - t)
        assert answers[0].error is None, answers[0].error
    stages.append(("query one new image (median of 5)", float(np.median(times)), rss_mb(),
                   f"first run {times[0]:.2f} s"))
    edited = ~crop & ~turned
    recall = float(found[edited].mean())
    crop_recall = float(found[crop].mean()) if crop.any() else 1.0
    turned_recall = float(found[turned].mean()) if turned.any() else 1.0
    print(f"\nScale benchmark, {n:,} images (store {db_mb:.0f} MB)\n")
    print("| stage | seconds | peak RSS MB | notes |")
    print("|---|---:|---:|---|")
    for name, sec, rss, note in stages:
        print(f"| {name} | {sec:.2f} | {rss:.0f} | {note} |")
    search = sum(sec for name, sec, _, _ in stages if name in ("candidate search", "grouping",
                                                                 "exact buckets (SQL)"))
    print(f"\ncandidates + grouping: {search:.1f} s; everything after the fill: {total:.1f} s; "
          f"peak RSS {rss_mb():.0f} MB")
    print(f"planted duplicates found: edited copies {recall:.4f}, crops {crop_recall:.4f}, "
          f"turned {turned_recall:.4f}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
