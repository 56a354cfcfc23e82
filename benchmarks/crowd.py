"""The candidate stage on a crowd of near-identical images planted among real ones.

    python benchmarks/crowd.py --store bench-data/real-scale/run/n20000_out/pixdedup.db --crowd 2000 5000
    python benchmarks/crowd.py --synthetic 100000 --crowd 20000

A real collection holds crowds of images whose hashes are all alike: blank or black
frames, one logo or screenshot saved thousands of times, a static video scene.  This
takes the signatures of a scanned collection (``--store``: a feature store, for
example the 20,000 real photo tiles of ``real_scale.py``), adds C copies of one
image's signature, once all identical and once with one random bit flipped in half of
each copy's hashes, and times the scan's search alone (``modes.near.search``: the
default settings; no decode, no verification): the time, the candidate pairs per image
and the pairs that may start a group.  ``--synthetic N`` instead takes N random DCT
hashes (no windows, orientations or check hashes), so that N can be large enough for
the multi-index search (above about 44,000 images).  ``--unbounded``: every hit within
the radii, as before each search kept only each image's nearest
(``candidates.SEARCH_NEAREST``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from pixdedup import candidates as cand
from pixdedup.config import ScanConfig
from pixdedup.features.hashes import WINDOW_COUNT
from pixdedup.models import Signatures
from pixdedup.modes.near import search
from pixdedup.store import FeatureStore


def with_crowd(sig: Signatures, row: int, copies: int, noisy: bool,
               rng: np.random.Generator) -> Signatures:
    """``sig`` and ``copies`` more rows with row ``row``'s signature (``noisy``: one
    random bit flipped in half of the hash values)."""
    def copy(a: np.ndarray) -> np.ndarray:
        block = np.repeat(np.asarray(a)[row:row + 1], copies, axis=0)
        if noisy:
            bits = rng.integers(0, 64, size=block.shape).astype(np.uint64)
            block = block ^ np.where(rng.random(block.shape) < 0.5, np.uint64(1) << bits,
                                     np.uint64(0))
        return block

    n = len(sig.ids)
    per = WINDOW_COUNT if len(sig.windows) else 0
    windows = np.asarray(sig.windows).reshape(n, per)
    return dataclasses.replace(
        sig, ids=np.arange(n + copies),
        hashes={k: np.concatenate([v, copy(v)]) for k, v in sig.hashes.items()},
        windows=np.concatenate([windows, copy(windows)]).ravel(),
        window_owner=np.repeat(np.arange(n + copies, dtype=np.int32), per),
        oriented=np.concatenate([sig.oriented, copy(sig.oriented)]),
        check=np.concatenate([sig.check, copy(sig.check)]),
        window_checks=np.concatenate([sig.window_checks, copy(sig.window_checks)]),
        hue=np.concatenate([sig.hue, np.repeat(np.asarray(sig.hue)[row:row + 1], copies,
                                                axis=0)]))


def synthetic(n: int) -> Signatures:
    """``n`` random DCT hashes, nothing else."""
    codes = np.random.default_rng(1).integers(0, 2**63, n, dtype=np.uint64)
    return Signatures(np.arange(n), {"phash": codes}, np.zeros(0, np.uint64),
                      np.zeros(0, np.int32))


def timed(sig: Signatures) -> tuple[float, cand.CandidatePairs]:
    """The scan's search (``modes.near.search``, default settings) and its time."""
    t = time.perf_counter()
    found = search(sig, ScanConfig())
    return time.perf_counter() - t, found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--store", type=Path, help="a feature store (pixdedup.db)")
    where.add_argument("--synthetic", type=int, metavar="N", help="N random hashes instead")
    ap.add_argument("--crowd", type=int, nargs="+", default=[2000, 5000])
    ap.add_argument("--row", type=int, default=5, help="the image whose copies make the crowd")
    ap.add_argument("--unbounded", action="store_true",
                    help="without the per-image bound of each search (candidates.SEARCH_NEAREST)")
    args = ap.parse_args()
    if args.unbounded:
        cand.SEARCH_NEAREST = 0
    c = ScanConfig()
    if args.synthetic:
        sig = synthetic(args.synthetic)
    else:
        if not args.store.is_file():
            print(f"no such store: {args.store}", file=sys.stderr)
            return 2
        with FeatureStore(str(args.store), lock=False) as store:
            sig = store.signatures(c.search_hash_kinds, windows=True)
        if len(sig.windows) != WINDOW_COUNT * len(sig.ids) or not len(sig.check):
            print("the store lacks window or check hashes", file=sys.stderr)
            return 2
    rng = np.random.default_rng(0)
    print("| crowd | images | search | candidates s | candidate pairs / image | of them may "
          "start a group |\n|---|---:|---|---:|---:|---:|")
    runs = [("none", sig)]
    for crowd in args.crowd:
        runs.append((f"{crowd} identical", with_crowd(sig, args.row, crowd, False, rng)))
        runs.append((f"{crowd} noisy", with_crowd(sig, args.row, crowd, True, rng)))
    for label, s in runs:
        seconds, found = timed(s)
        n = len(s.ids)
        tables = cand.choose_tables(n, n)
        search = "exhaustive" if tables == 0 else f"multi-index, {tables} tables"
        print(f"| {label} | {n} | {search} | {seconds:.2f} | {len(found) / n:.3f} | "
              f"{int(found.starts.sum())} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
