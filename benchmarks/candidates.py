"""How the candidate search grows with N (synthetic signatures, planted duplicates).

    python benchmarks/candidates.py --sizes 10000,100000,1000000,3000000

Every image gets three 64-bit perceptual hashes (whash, phash, dhash) and 18 window
hashes, as a near-mode scan computes them.  A known fraction of the images are planted
edited copies of an original: each of their hashes is the original's with 0 to 8 bits
flipped (uniformly; real re-encodes and resizes flip 0 to 2), and a quarter of them
are crops whose whash is one of the original's window hashes with 0 to 8 bits flipped.
Each size runs in its own process (clean peak RSS); the table gives seconds, seconds
per million images, candidate pairs, the recall of the planted pairs and the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

from pixdedup.candidates import Signatures, choose_tables, near_candidates

KINDS = ("whash", "phash", "dhash")
WINDOWS = 18


@dataclass
class Synthetic:
    sig: Signatures
    planted: np.ndarray
    """(M, 2) planted duplicate pairs (original, copy), original < copy."""
    crop: np.ndarray
    """True where the planted copy is a crop (found through the window hashes)."""


def flip_bits(codes: np.ndarray, flips: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flip ``flips[k]`` distinct random bits of ``codes[k]``."""
    out = codes.copy()
    for f in range(1, int(flips.max(initial=0)) + 1):
        rows = np.nonzero(flips >= f)[0]
        out[rows] ^= np.uint64(1) << rng.integers(0, 64, len(rows)).astype(np.uint64)
    # repeated positions cancel; the distance is at most flips[k], which is what matters
    return out


def make_signatures(n: int, dup_rate: float = 0.1, max_flips: int = 8,
                    seed: int = 0) -> Synthetic:
    rng = np.random.default_rng(seed)
    n_dup = int(n * dup_rate)
    n_orig = n - n_dup
    hashes = {k: rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) << np.uint64(1)
              | rng.integers(0, 2, n).astype(np.uint64) for k in KINDS}
    windows = rng.integers(0, 2**63, n * WINDOWS, dtype=np.int64).astype(np.uint64)
    src = rng.integers(0, n_orig, n_dup)  # the original each copy derives from
    copies = np.arange(n_orig, n)
    crop = rng.random(n_dup) < 0.25
    for k in KINDS:
        flips = rng.integers(0, max_flips + 1, n_dup)
        base = hashes[k][src]
        if k == "whash":  # a crop's full hash is close to one of the original's windows
            which = rng.integers(0, WINDOWS, n_dup)
            base = np.where(crop, windows[src * WINDOWS + which], base)
        hashes[k][copies] = flip_bits(base, flips, rng)
        if k != "whash":  # a crop's other hashes are unrelated to the original's
            hashes[k][copies[crop]] = rng.integers(0, 2**63, int(crop.sum()), dtype=np.int64)
    owner = np.repeat(np.arange(n, dtype=np.int32), WINDOWS)
    sig = Signatures(np.arange(n, dtype=np.int64), hashes, windows, owner)
    return Synthetic(sig, np.stack([src, copies], axis=1), crop)


def run_one(n: int, radius: int, window_radius: int) -> dict[str, float]:
    t = time.perf_counter()
    syn = make_signatures(n)
    t_make = time.perf_counter() - t
    t = time.perf_counter()
    pairs = near_candidates(syn.sig, radius, window_radius)
    seconds = time.perf_counter() - t
    key = pairs[:, 0] * n + pairs[:, 1]
    planted = syn.planted[:, 0] * n + syn.planted[:, 1]
    hit = np.isin(planted, key)
    crop = syn.crop
    recall = float(hit[~crop].mean()) if (~crop).any() else 1.0
    crop_recall = float(hit[crop].mean()) if crop.any() else 1.0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"images": n, "seconds": seconds, "generate_seconds": t_make, "pairs": len(pairs),
            "planted": len(planted), "recall": recall, "crop_recall": crop_recall,
            "peak_rss_mb": rss, "tables_hashes": choose_tables(n, n),
            "tables_windows": choose_tables(n, n * WINDOWS)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--radius", type=int, default=10)
    ap.add_argument("--window-radius", type=int, default=10)
    ap.add_argument("--json", help="write the rows to this file")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.radius, args.window_radius)))
        return
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--radius", str(args.radius),
                              "--window-radius", str(args.window_radius)],
                             check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{n}: {rows[-1]['seconds']:.2f} s", file=sys.stderr, flush=True)
    print(f"Candidate search, 3 hashes + 18 windows per image, radius {args.radius}/{args.window_radius}\n")
    print("| images | tables (hashes / windows) | seconds | s per 1M images | candidate pairs "
          "| recall: edited copies | recall: crops | peak RSS MB |")
    print("|---:|:---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        tables = " / ".join("exact" if t == 0 else f"m={t}"
                            for t in (r["tables_hashes"], r["tables_windows"]))
        print(f"| {r['images']:,} | {tables} | {r['seconds']:.2f} | {r['seconds'] / r['images'] * 1e6:.1f} "
              f"| {r['pairs']:,} | {r['recall']:.4f} | {r['crop_recall']:.4f} | {r['peak_rss_mb']:.0f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
