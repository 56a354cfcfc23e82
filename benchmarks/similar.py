"""Similar-mode benchmark: strong edits that hashes miss, near mode vs similar mode.

    python benchmarks/similar.py --photos DEV_PHOTOS_DIR [--originals 20] [--work bench-data/similar]

The first N photos (seeded shuffle) get every strong edit (samples.STRONG_EDITS: crops of
30 and 50%, mirrored left-right and upside down, 90/180/270-degree rotations, three heavy
colour filters, pasted into a canvas 1.4x and 2x larger); all the other photos are added
unedited as distractors, which include the hard negatives of the set (stereo pairs,
video frames, second shots of one scene, calibration series).  Both modes scan the same
folder (each with its own store); the table gives recall per edit kind, pairwise
precision and images per second.  Then the default model's raw inference rate (random
inputs, same backend and batch size as the scan) against the similar scan's rate.
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

import numpy as np

import pixdedup
from pixdedup.features.embeddings import DEFAULT_MODEL, load_model
from pixdedup.samples import STRONG_EDITS, build_collection


def evaluate(result: pixdedup.ScanResult, truth: dict[str, dict[str, str]]
             ) -> tuple[float, float, dict[tuple[str, str], tuple[int, int]], set[tuple[str, str]]]:
    group_of = {r.path: r.group_id for r in result.results if r.group_id is not None}
    per_kind: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for f, row in truth.items():
        if row["edit"] in ("original", "distractor"):
            continue
        key = (row["edit"], row["strength"])
        per_kind[key][1] += 1
        g = group_of.get(f)
        if g is not None and g == group_of.get(row["original"]):
            per_kind[key][0] += 1
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
                x, y = sorted((truth[a]["original"], truth[b]["original"]))
                false_pairs.add((x, y))
    families: dict[str, int] = defaultdict(int)
    for row in truth.values():
        families[row["original"]] += 1
    total_pos = sum(n * (n - 1) // 2 for n in families.values())
    kinds = {k: (v[0], v[1]) for k, v in per_kind.items()}
    return true_pos / max(1, predicted), true_pos / max(1, total_pos), kinds, false_pairs


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--originals", type=int, default=20)
    ap.add_argument("--work", type=Path, default=Path("bench-data/similar"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    photos = sorted(p for p in args.photos.iterdir() if p.is_file())
    random.Random(args.seed).shuffle(photos)
    edited, distractors = photos[: args.originals], photos[args.originals :]
    coll = args.work / "collection"
    shutil.rmtree(args.work, ignore_errors=True)
    build_collection(edited, coll, kinds=STRONG_EDITS)
    (coll / "distractors").mkdir()
    for p in distractors:
        shutil.copy2(p, coll / "distractors" / p.name)
    with open(coll / "truth.csv", newline="", encoding="utf-8") as fh:
        truth = {r["file"]: r for r in csv.DictReader(fh)}
    for p in distractors:
        rel = f"distractors/{p.name}"
        truth[rel] = {"file": rel, "original": rel, "edit": "distractor", "strength": ""}
    runs = {}
    for mode in ("near", "similar"):
        t = time.perf_counter()
        result = pixdedup.scan(str(coll), out=str(args.work / f"out-{mode}"), dry_run=True,
                               mode=mode, device=args.device)
        seconds = time.perf_counter() - t
        runs[mode] = (result, seconds, evaluate(result, truth))
    n = len(truth)
    print(f"images {n} ({len(edited)} originals x {n - len(edited) - len(distractors)} strong "
          f"edits, {len(distractors)} distractors)\n")
    print("| mode | pairwise precision | pairwise recall | seconds | images/s |")
    print("|---|---:|---:|---:|---:|")
    for mode, (_res, seconds, (prec, rec, _k, _f)) in runs.items():
        print(f"| {mode} | {prec:.4f} | {rec:.4f} | {seconds:.1f} | {n / seconds:.1f} |")
    print("\n| edit | strength | near recall | similar recall |\n|---|---|---:|---:|")
    kinds = runs["near"][2][2]
    for key in sorted(kinds):
        (h1, t1), (h2, t2) = kinds[key], runs["similar"][2][2][key]
        print(f"| {key[0]} | {key[1]} | {h1 / t1:.2f} ({h1}/{t1}) | {h2 / t2:.2f} ({h2}/{t2}) |")
    for mode in runs:
        false = runs[mode][2][3]
        if false:
            print(f"\n{mode}: merged different photos:",
                  ", ".join(f"{a} + {b}" for a, b in sorted(false)))
    sim = runs["similar"][0]
    print("\nsimilar-mode timings (s): "
          + ", ".join(f"{k} {v:.2f}" for k, v in sim.timings.items()))
    embedder = load_model(DEFAULT_MODEL, args.device)
    batch = np.random.default_rng(0).integers(0, 256, (32, 224, 224, 3), dtype=np.uint8)
    embedder.embed(batch)
    t = time.perf_counter()
    rounds = 5
    for _ in range(rounds):
        embedder.embed(batch)
    raw = rounds * len(batch) / (time.perf_counter() - t)
    scan_rate = n / runs["similar"][1]
    print(f"\n{DEFAULT_MODEL} on {embedder.backend}: raw inference {raw:.1f} images/s (batch 32); "
          f"similar scan end to end {scan_rate:.1f} images/s = {scan_rate / raw:.2f}x of it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
