"""How the candidate search grows with N (synthetic signatures, planted duplicates).

    python benchmarks/candidates.py --sizes 10000,100000,1000000,3000000

Every image gets three 64-bit perceptual hashes (whash, phash, dhash) and 34 window
hashes, as a near-mode scan computes them.  A known fraction of the images are planted
edited copies of an original: each of their hashes is the original's with 0 to 8 bits
flipped (uniformly; real re-encodes and resizes flip 0 to 2), and a quarter of them
are crops whose whash is one of the original's window hashes with 0 to 8 bits flipped,
and another quarter are mirrored or turned copies: their whash is the original's,
permuted for a random one of the seven orientations, with 0 to 6 bits flipped (their
other hashes are unrelated), found by the orientation search (``--max-orientation-distance``,
6 as in a scan; -1 leaves it out).  Each size runs in its own process (clean peak RSS);
the table gives seconds (and those of the orientation search alone), seconds per
million images, candidate pairs, the recall of each kind of planted pair and the peak
RSS.
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

from pixdedup.candidates import Signatures, choose_tables, near_candidates, oriented_pairs
from pixdedup.features.hashes import ORIENTATIONS, WINDOW_COUNT, orient_whash

KINDS = ("whash", "phash", "dhash")
WINDOWS = WINDOW_COUNT


@dataclass
class Synthetic:
    sig: Signatures
    planted: np.ndarray
    """(M, 2) planted duplicate pairs (original, copy), original < copy."""
    crop: np.ndarray
    """True where the planted copy is a crop (found through the window hashes)."""
    turned: np.ndarray
    """True where the planted copy is mirrored or turned (the orientation search)."""


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
    kind = rng.random(n_dup)
    crop = kind < 0.25
    turned = (kind >= 0.25) & (kind < 0.5)
    names = list(ORIENTATIONS)
    orientation = rng.integers(0, len(names), n_dup)
    for k in KINDS:
        flips = rng.integers(0, max_flips + 1, n_dup)
        base = hashes[k][src]
        if k == "phash":  # a crop's full hash is close to one of the original's windows
            which = rng.integers(0, WINDOWS, n_dup)
            base = np.where(crop, windows[src * WINDOWS + which], base)
        if k == "phash":  # a turned copy's hash is one of the original's oriented hashes
            for o, name in enumerate(names):
                rows = turned & (orientation == o)
                base[rows] = orient_whash(base[rows], name)
            flips = np.where(turned, np.minimum(flips, 6), flips)
        hashes[k][copies] = flip_bits(base, flips, rng)
        if k != "phash":  # a crop's or turned copy's other hashes are unrelated
            other = crop | turned
            hashes[k][copies[other]] = rng.integers(0, 2**63, int(other.sum()), dtype=np.int64)
    owner = np.repeat(np.arange(n, dtype=np.int32), WINDOWS)
    # each image's oriented hashes: synthetic, the bit permutation stands in for the DCT
    # hash of the turned image (computed at extraction)
    oriented = np.stack([orient_whash(hashes["phash"], name) for name in names], axis=1)
    sig = Signatures(np.arange(n, dtype=np.int64), hashes, windows, owner, oriented)
    return Synthetic(sig, np.stack([src, copies], axis=1), crop, turned)


def run_one(n: int, radius: int, window_radius: int, orientation_radius: int
            ) -> dict[str, float]:
    t = time.perf_counter()
    syn = make_signatures(n)
    t_make = time.perf_counter() - t
    oriented = orientation_radius if orientation_radius >= 0 else None
    t = time.perf_counter()
    pairs = near_candidates(syn.sig, radius, window_radius,
                            max_orientation_distance=oriented).pairs
    seconds = time.perf_counter() - t
    t = time.perf_counter()
    if oriented is not None:  # again on its own, for its share of the time
        oriented_pairs(syn.sig.oriented, syn.sig.hashes["phash"], oriented)
    orientation_seconds = time.perf_counter() - t
    key = pairs[:, 0] * n + pairs[:, 1]
    planted = syn.planted[:, 0] * n + syn.planted[:, 1]
    hit = np.isin(planted, key)
    crop, turned = syn.crop, syn.turned
    edited = ~crop & ~turned
    recall = float(hit[edited].mean()) if edited.any() else 1.0
    crop_recall = float(hit[crop].mean()) if crop.any() else 1.0
    turned_recall = float(hit[turned].mean()) if turned.any() else 1.0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"images": n, "seconds": seconds, "generate_seconds": t_make, "pairs": len(pairs),
            "orientation_seconds": orientation_seconds,
            "planted": len(planted), "recall": recall, "crop_recall": crop_recall,
            "turned_recall": turned_recall,
            "peak_rss_mb": rss, "tables_hashes": choose_tables(n, n),
            "tables_windows": choose_tables(n, n * WINDOWS)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--radius", type=int, default=10)
    ap.add_argument("--window-radius", type=int, default=10)
    ap.add_argument("--max-orientation-distance", type=int, default=6)
    ap.add_argument("--json", help="write the rows to this file")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.radius, args.window_radius,
                                 args.max_orientation_distance)))
        return
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--radius", str(args.radius),
                              "--window-radius", str(args.window_radius),
                              "--max-orientation-distance", str(args.max_orientation_distance)],
                             check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{n}: {rows[-1]['seconds']:.2f} s", file=sys.stderr, flush=True)
    print(f"Candidate search, 3 hashes + {WINDOWS} windows per image + 6 orientation searches, radius "
          f"{args.radius}/{args.window_radius}/{args.max_orientation_distance}\n")
    print("| images | tables (hashes / windows) | seconds | of which orientations | s per 1M images "
          "| candidate pairs | recall: edited copies | recall: crops | recall: turned | peak RSS MB |")
    print("|---:|:---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        tables = " / ".join("exact" if t == 0 else f"m={t}"
                            for t in (r["tables_hashes"], r["tables_windows"]))
        print(f"| {r['images']:,} | {tables} | {r['seconds']:.2f} | {r['orientation_seconds']:.2f} "
              f"| {r['seconds'] / r['images'] * 1e6:.1f} | {r['pairs']:,} | {r['recall']:.4f} "
              f"| {r['crop_recall']:.4f} | {r['turned_recall']:.4f} | {r['peak_rss_mb']:.0f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
