"""report.html at scale: writing it for N groups, and opening it in Chromium.

    python benchmarks/report_page.py --groups 100000

Fills a feature store with N synthetic groups (2 or 3 members each, every member with
a real 320 px JPEG thumbnail, as a scan stores them), then:

1. the cost of one report thumbnail (re-encode of the stored thumbnail to 160 px),
   median over 500, and per thumbnail on one thread per core as a scan makes them;
2. writing report.html + report_files/ for all N groups (thumbnails made once and
   reused here, so this is the page-file writing; add 1. x members for a real scan);
3. opening the page from file:// in headless Chromium until the first page of groups
   is drawn, and jumping to the last page (median of 3 each).
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from pixdedup.models import Evidence, Group, ScanSummary
from pixdedup.reports import html
from pixdedup.store import FeatureStore

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def thumbnail() -> bytes:
    from skimage import data

    img = Image.fromarray(data.astronaut()).resize((320, 320))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def fill(store: FeatureStore, groups: int, thumb: bytes, seed: int) -> list[Group]:
    rng = np.random.default_rng(seed)
    sizes = rng.choice([2, 3], size=groups, p=[0.7, 0.3])
    rows, out, at = [], [], 0
    for g, size in enumerate(sizes, start=1):
        members = list(range(at, at + int(size)))
        out.append(Group(id=g, best=members[0], members=members,
                         evidence={m: Evidence(stage="hash", hash_distance=3, similarity=0.991)
                                   for m in members[1:]}))
        for m in members:
            rel = f"folder{m // 1000:04d}/IMG_{m:07d}.jpg"
            rows.append((f"/photos/{rel}", rel, 3_000_000 + m, 0.0, "bench", "ok", f"{m:064x}",
                         "JPEG", 4000, 3000, 50.0, thumb, 1))
        at += int(size)
    with store.conn:
        store.conn.execute("BEGIN")
        store.conn.executemany(
            "INSERT INTO images(uri, rel_path, size, mtime, extractor, status, content_hash, format, "
            "width, height, quality_score, thumbnail, run) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", type=int, default=100_000)
    ap.add_argument("--work", type=Path, default=Path("bench-data/report-page"))
    ap.add_argument("--chromium", default=os.environ.get("PIXDEDUP_CHROMIUM", "/usr/bin/chromium"))
    args = ap.parse_args()
    work = (args.work / f"g{args.groups}").resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    thumb = thumbnail()
    store = FeatureStore(str(work / "pixdedup.db"))
    groups = fill(store, args.groups, thumb, seed=1)
    members = sum(g.size for g in groups)

    per_thumb = []
    for _ in range(500):
        t = time.perf_counter()
        html.small_thumbnail(thumb)
        per_thumb.append(time.perf_counter() - t)
    thumb_ms = statistics.median(per_thumb) * 1000
    workers = os.cpu_count() or 1
    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:  # as the scan does, one thread per worker
        list(pool.map(html.small_thumbnail, [thumb] * 2000))
    pool_ms = (time.perf_counter() - t) / 2000 * 1000

    real = html.small_thumbnail
    html.small_thumbnail = functools.lru_cache(maxsize=4)(real)  # type: ignore[assignment]
    summary = ScanSummary(images=members, ok=members, groups=len(groups),
                          duplicates=members - len(groups))
    t = time.perf_counter()
    html.write_html(str(work), store, groups, lambda p: p + 1, summary,
                    {"mode": "near", "input": "/photos", "output": str(work)}, [])
    write_s = time.perf_counter() - t
    html.small_thumbnail = real  # type: ignore[assignment]
    store.close()
    files = list((work / "report_files").iterdir())
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    page_mb = (work / "report_files" / html.page_file(1)).stat().st_size / 1e6
    html_kb = (work / "report.html").stat().st_size / 1e3

    open_s, jump_s = [], []
    if os.path.exists(args.chromium):
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=FLAGS)
            for _ in range(3):
                page = browser.new_page()
                t = time.perf_counter()
                page.goto((work / "report.html").as_uri())
                page.wait_for_selector("body[data-ready='1']")
                open_s.append(time.perf_counter() - t)
                last = str(len(files))
                t = time.perf_counter()
                page.fill("#page", last)
                page.dispatch_event("#page", "change")
                page.wait_for_function(
                    "n => document.querySelector('.group h2').textContent === 'Group ' + n",
                    arg=str((len(files) - 1) * html.PAGE_SIZE + 1))
                jump_s.append(time.perf_counter() - t)
                page.close()
            browser.close()
    else:
        print(f"no Chromium at {args.chromium}: page opening not measured", file=sys.stderr)

    print(f"| groups | members | page files | report_files | report.html | thumbnail (1 thread / "
          f"{workers} threads) | write (excl. thumbnails) | open in Chromium | jump to last page |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    fmt = (lambda xs: f"{statistics.median(xs):.2f} s") if open_s else (lambda xs: "n/a")
    print(f"| {len(groups):,} | {members:,} | {len(files):,} | {size_mb:.0f} MB ({page_mb:.2f} MB "
          f"each) | {html_kb:.0f} KB | {thumb_ms:.2f} / {pool_ms:.2f} ms | {write_s:.1f} s | "
          f"{fmt(open_s)} | "
          f"{fmt(jump_s)} |")


if __name__ == "__main__":
    main()
