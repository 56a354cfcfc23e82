"""Accuracy benchmark: pairwise precision/recall per edit kind and strength, and how
often the original is kept as best.

    python benchmarks/accuracy.py --photos DEV_PHOTOS_DIR [--originals 40] [--work bench-data/accuracy]

DEV_PHOTOS_DIR: e.g. the developer set (shared/datasets/fetch_dev_photos.sh DEST ->
DEST/photos).  The first N photos (sorted, seeded shuffle) get every edit at every
strength; all the other photos are added unedited as distractors (they include stereo
pairs, video frames and second shots of one scene: hard negatives).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import groundtruth
import numpy as np

import pixdedup
from pixdedup.config import ScanConfig


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--originals", type=int, default=40)
    ap.add_argument("--work", type=Path, default=Path("bench-data/accuracy"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-orientation-distance", type=int, default=ScanConfig().max_orientation_distance,
                    help="radius of the mirrored/turned search; -1: off (to measure its cost)")
    ap.add_argument("--max-candidates-per-image", type=int,
                    default=ScanConfig().max_candidates_per_image)
    ap.add_argument("--formats", action="store_true",
                    help="originals as lossy WebP, HEIC, PNG and JPEG, edits saved as JPEG, PNG "
                         "and lossy/lossless WebP, all files with one modification time")
    ap.add_argument("--keeper-losses", action="store_true",
                    help="list the groups whose best is not the original (or an exact copy): "
                         "both files' scores and the keeper's notes")
    ap.add_argument("--incremental", action="store_true",
                    help="then add 5 new images (resized copies of 5 originals) and rescan")
    args = ap.parse_args()
    coll = groundtruth.build(args.photos, args.work, args.originals, args.seed,
                            formats=args.formats)
    truth = coll.truth
    t = time.perf_counter()
    settings = dict(dry_run=True, orientations=args.max_orientation_distance >= 0,
                    max_orientation_distance=max(0, args.max_orientation_distance),
                    max_candidates_per_image=args.max_candidates_per_image)
    result = pixdedup.scan(str(coll.root), out=str(args.work / "out"), **settings)
    seconds = time.perf_counter() - t
    s = groundtruth.score(result, truth)
    best_ok = sum(1 for r in result.results if r.status is pixdedup.ImageStatus.BEST
                  and kept_original(coll.root, r.path, truth))
    print(f"images {len(truth)} ({coll.originals} originals x edits, {coll.distractors} "
          f"distractors), {seconds:.1f} s")
    print("timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items()))
    print(f"pairwise precision {s.precision:.4f}  recall {s.recall:.4f}"
          f"  ({s.predicted_pairs} predicted pairs)")
    # a group of merged distractors holds no original: it counts against precision
    with_original = {r.group_id for r in result.results
                     if r.group_id is not None and truth[r.path]["edit"] == "original"}
    print(f"original kept as best: {best_ok}/{len(with_original)} groups that hold an "
          f"original ({best_ok / max(1, len(with_original)):.1%}); groups without one: "
          f"{len(result.groups) - len(with_original)}")
    print("\n| edit | strength | recall (copy grouped with its original) |\n|---|---|---|")
    for (kind, strength), (hit, n) in sorted(s.per_kind.items()):
        print(f"| {kind} | {strength} | {hit / n:.3f} ({hit}/{n}) |")
    if args.keeper_losses:
        print_keeper_losses(result, truth, coll.root)
    if s.false_pairs:
        print("\nmerged different photos:", ", ".join(f"{a} + {b}" for a, b in sorted(s.false_pairs)))
    if args.incremental:
        from PIL import Image

        added = coll.root / "added"
        added.mkdir(exist_ok=True)
        originals = sorted(p for p, row in truth.items() if row["edit"] == "original")[:5]
        for k, rel in enumerate(originals):
            with Image.open(coll.root / rel) as im:
                im.convert("RGB").resize((im.width * 3 // 5, im.height * 3 // 5)).save(
                    added / f"new{k}.jpg", quality=88)
        t = time.perf_counter()
        again = pixdedup.scan(str(coll.root), out=str(args.work / "out"), **settings)
        rerun = time.perf_counter() - t
        print(f"\nincremental: +5 images rescanned in {rerun:.2f} s = {rerun / seconds:.1%} of the "
              f"full scan ({again.summary.extracted} decoded, {again.summary.pairs_verified} pairs "
              f"verified, {again.summary.pairs_reused} reused)")
    return 0


def print_keeper_losses(result: pixdedup.ScanResult, truth: dict[str, dict], root: Path) -> None:
    """Each group holding an original whose best is another edit: what won and why."""
    by_group: dict[int, list[pixdedup.ImageResult]] = {}
    for r in result.results:
        if r.group_id is not None:
            by_group.setdefault(r.group_id, []).append(r)

    def line(r: pixdedup.ImageResult) -> str:
        row = truth[r.path]
        return (f"{r.path} ({row['edit']} {row.get('strength', '')}, {r.format}) "
                f"score {r.quality_score}{', ' + r.note if r.note else ''}")

    print("\nkeeper losses:")
    for gid, members in sorted(by_group.items()):
        best = next((r for r in members if r.status is pixdedup.ImageStatus.BEST), None)
        original = next((r for r in members if truth[r.path]["edit"] == "original"), None)
        if best is None or original is None or kept_original(root, best.path, truth):
            continue
        print(f"  group {gid}: best {line(best)}\n            original {line(original)}")


EQUAL_PIXELS = 0.05
"""Mean grey-level difference up to which a best counts as an equal copy."""


def kept_original(root: Path, path: str, truth: dict[str, dict[str, str]]) -> bool:
    """``path`` is its group's original or an equal copy of it: a byte copy, or a file
    whose decoded pixels are the original's (a PNG of a PNG; a greyscale copy of a
    photo that was grey already; a JPEG q50 of a photo decoded from a JPEG q50, which
    gives its pixels back to ``EQUAL_PIXELS``)."""
    row = truth[path]
    if row["edit"] in ("original", "exact"):
        return True
    from PIL import Image

    from pixdedup.decode import register_heif

    register_heif()
    with Image.open(root / path) as a, Image.open(root / row["original"]) as b:
        if a.size != b.size:
            return False
        x = np.asarray(a.convert("RGB"), dtype=np.int16)
        y = np.asarray(b.convert("RGB"), dtype=np.int16)
        return float(np.abs(x - y).mean()) <= EQUAL_PIXELS


if __name__ == "__main__":
    sys.exit(main())
