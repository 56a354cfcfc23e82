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
import csv
import itertools
import random
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import pixdedup
from pixdedup.samples import build_collection


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--originals", type=int, default=40)
    ap.add_argument("--work", type=Path, default=Path("bench-data/accuracy"))
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    photos = sorted(p for p in args.photos.iterdir() if p.is_file())
    random.Random(args.seed).shuffle(photos)
    edited, distractors = photos[: args.originals], photos[args.originals :]
    coll = args.work / "collection"
    shutil.rmtree(args.work, ignore_errors=True)
    build_collection(edited, coll)
    (coll / "distractors").mkdir()
    for p in distractors:
        shutil.copy2(p, coll / "distractors" / p.name)
    truth = {r["file"]: r for r in csv.DictReader(open(coll / "truth.csv"))}
    for p in distractors:
        rel = f"distractors/{p.name}"
        truth[rel] = {"file": rel, "original": rel, "edit": "distractor", "strength": ""}
    t = time.perf_counter()
    result = pixdedup.scan(str(coll), out=str(args.work / "out"), dry_run=True)
    seconds = time.perf_counter() - t
    group_of = {r.path: r.group_id for r in result.results if r.group_id is not None}
    # positives: (original, edited copy) pairs, per edit kind/strength
    per_kind: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for f, row in truth.items():
        if row["edit"] in ("original", "distractor"):
            continue
        key = (row["edit"], row["strength"])
        per_kind[key][1] += 1
        g = group_of.get(f)
        if g is not None and g == group_of.get(row["original"]):
            per_kind[key][0] += 1
    # pairwise precision over all predicted pairs
    members: dict[int, list[str]] = defaultdict(list)
    for path, g in group_of.items():
        members[g].append(path)
    predicted = true_pos = 0
    false_pairs: set[tuple[str, str]] = set()
    for paths in members.values():
        for a, b in itertools.combinations(paths, 2):
            predicted += 1
            if truth[a]["original"] == truth[b]["original"]:
                true_pos += 1
            else:
                false_pairs.add(tuple(sorted((truth[a]["original"], truth[b]["original"]))))
    total_pos = sum(
        len(list(itertools.combinations(fs, 2)))
        for fs in _families(truth).values()
    )
    best_ok = sum(1 for r in result.results if r.status is pixdedup.ImageStatus.BEST
                  and truth[r.path]["edit"] in ("original", "exact"))
    print(f"images {len(truth)} ({len(edited)} originals x edits, {len(distractors)} distractors), "
          f"{seconds:.1f} s")
    print(f"pairwise precision {true_pos / max(1, predicted):.4f}  recall {true_pos / max(1, total_pos):.4f}"
          f"  ({predicted} predicted pairs)")
    print(f"original kept as best: {best_ok}/{len(result.groups)} groups "
          f"({best_ok / max(1, len(result.groups)):.1%})")
    print("\n| edit | strength | recall (copy grouped with its original) |\n|---|---|---|")
    for (kind, strength), (hit, n) in sorted(per_kind.items()):
        print(f"| {kind} | {strength} | {hit / n:.3f} ({hit}/{n}) |")
    if false_pairs:
        print("\nmerged different photos:", ", ".join(f"{a} + {b}" for a, b in sorted(false_pairs)))
    return 0


def _families(truth: dict[str, dict[str, str]]) -> dict[str, list[str]]:
    fam: dict[str, list[str]] = defaultdict(list)
    for f, row in truth.items():
        fam[row["original"]].append(f)
    return fam


if __name__ == "__main__":
    sys.exit(main())
