"""One photo and hundreds of its copies: the cost of a very large duplicate group.

    python benchmarks/large_group.py --photos DEV_PHOTOS_DIR --copies 400 1500

A real collection holds groups far larger than the accuracy draws' 30: a meme saved
again and again, the same screenshot, a photo shared through many apps.  For each
size the benchmark writes the photo (a PNG, the original, at most 800 px a side) and
that many copies of it: in turn a JPEG or WebP re-save at a random quality from 50
to 95, a brightness change of up to 10% saved the same way, and a 3/4-size resize
(written once into ``<work>/large-group-<N>``), then scans them (near mode, dry run,
2 workers, a fresh store) and prints the stage timings, the groups found (all the
images are copies of one photo: one group is right) and whether the original is the
best of its group.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import time
from pathlib import Path

from PIL import Image, ImageEnhance

import pixdedup
from pixdedup.config import ScanConfig
from pixdedup.pipeline import scan


def build(photo: Path, folder: Path, copies: int, seed: int = 1) -> Path:
    """The original and ``copies`` copies of it in ``folder`` (made once)."""
    done = folder.with_name(folder.name + ".complete")  # not in the scanned folder
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with Image.open(photo) as im:
        src = im.convert("RGB")
    src.thumbnail((800, 800))
    src.save(folder / "original.png")
    rng = random.Random(seed)
    for k in range(copies):
        img = src
        if k % 4 == 1:
            img = ImageEnhance.Brightness(src).enhance(rng.uniform(0.9, 1.1))
        elif k % 4 == 2:
            img = src.resize((src.width * 3 // 4, src.height * 3 // 4),
                             Image.Resampling.LANCZOS)
        fmt = ("JPEG", "WEBP")[k % 2]
        img.save(folder / f"copy_{k:05d}.{fmt.lower()}", fmt, quality=rng.randint(50, 95))
    done.touch()
    return folder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--photo", default="mate-backgrounds__Aqua.jpg",
                    help="the photo the copies are made of (a file in --photos)")
    ap.add_argument("--copies", type=int, nargs="+", default=[400, 1500])
    ap.add_argument("--work", type=Path, default=Path("bench-data"))
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    photo = args.photos / args.photo
    if not photo.is_file():
        print(f"no such photo: {photo}", file=sys.stderr)
        return 2
    print("| copies | images | scan s | extract s | candidates s | verify s | keeper s | "
          "groups (sizes) | original kept |\n|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for n in args.copies:
        folder = build(photo, args.work / f"large-group-{n}", n)
        out = folder.with_name(folder.name + "_out")
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        result = scan(str(folder), ScanConfig(mode="near", out=str(out), workers=args.workers,
                                              dry_run=True))
        seconds = time.perf_counter() - t
        best = [r.path for r in result.results if r.status is pixdedup.ImageStatus.BEST]
        tm = result.timings
        sizes = sorted((len(g.members) for g in result.groups), reverse=True)
        print(f"| {n} | {result.summary.images} | {seconds:.1f} | {tm.get('extract', 0):.2f} | "
              f"{tm.get('candidates', 0):.2f} | {tm.get('verify', 0):.2f} | "
              f"{tm.get('keeper', 0):.2f} | {result.summary.groups} ({', '.join(map(str, sizes))}) | "
              f"{'yes' if 'original.png' in best else 'no'} |", flush=True)
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
