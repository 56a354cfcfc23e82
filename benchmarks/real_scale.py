"""Candidate pairs and verification as N grows, on real images (not random hashes).

    python benchmarks/real_scale.py --photos DEV_PHOTOS_DIR --sizes 1000,5000,20000

Distinct real images: non-overlapping 96x72 tiles of the developer photos at five
scales (flat tiles left out).  They have the statistics of real photographs (skies
over ground, textures, the same colours within one photo).  Two tiles are *related*
when they show the same place: their regions overlap (one photo at two scales: one
tile is a crop of the other) and they come from one photo or one family of photos
(``family``: a stereo pair, consecutive video frames, one calibration series).  A
pair of related tiles may rightly be grouped and is counted nowhere; every other pair
between two tiles is *unrelated*: a false candidate if searched, a false merge if
grouped.  Into each collection of N tiles, copies of 3% of them are planted
(re-encode, resize, 10% crop, a tone change, a small rotation, a mirror image).  For
each N the table shows the candidate pairs (all, without the related ones, and those
between photos), the pairs verified (all, without the related ones, the unrelated ones, and those
between photos: planted copies and pairs of two different photos, leaving out the
pieces of one photo, whose number per image grows with N by construction like the
related pairs'), the verification time per image, the recall on the planted copies
and the unrelated pairs joined into one group.  ``--incremental`` also rescans
the smallest collection after adding 5 new images: the rerun's share of a full scan.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

import pixdedup

TILE = (96, 72)
SCALES = (1.0, 0.7, 0.5, 0.35, 0.25)
MIN_TILE_STD = 8.0
COPY_SHARE = 0.03
EDITS = ("reencode", "resize", "crop", "tone", "rotate", "mirror")


def make_tiles(photos: Path, folder: Path) -> list[Path]:
    done = folder / "tiles.json"
    if done.exists():
        return [folder / p for p in json.loads(done.read_text())]
    folder.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    for src in sorted(p for p in photos.iterdir() if p.is_file()):
        with Image.open(src) as im:
            rgb = im.convert("RGB")
        for scale in SCALES:
            w, h = round(rgb.width * scale), round(rgb.height * scale)
            img = rgb.resize((w, h), Image.Resampling.LANCZOS) if scale != 1.0 else rgb
            arr = np.asarray(img)
            for y in range(0, h - TILE[1] + 1, TILE[1]):
                for x in range(0, w - TILE[0] + 1, TILE[0]):
                    tile = arr[y:y + TILE[1], x:x + TILE[0]]
                    if float(tile.mean(axis=2).std()) < MIN_TILE_STD:
                        continue
                    name = f"{src.stem}_s{int(scale * 100)}_{x}_{y}.jpg"
                    Image.fromarray(tile).save(folder / name, quality=90)
                    names.append(name)
    done.write_text(json.dumps(names))
    return [folder / n for n in names]


def family(stem: str) -> str:
    """The family of a developer photo: its name without numbers, a left/right or A/B
    suffix or anything after its first word (``aloeL``/``aloeR``, ``left01``/``right07``,
    ``rubberwhale1``/``rubberwhale2``, ``ela_original``/``ela_modified`` -> one family).
    Coarse on purpose: two unrelated photos in one family only leave their pairs out
    of the counts."""
    name = re.sub(r"(?<=[a-z])[LRAB]$", "", stem.split("__")[-1]).lower()
    word = re.split(r"[-_\d]", name)[0] or name
    return "leftright" if word in ("left", "right") else word


Region = tuple[str, float, float, float, float]


def region(tile_name: str, sizes: dict[str, tuple[int, int]]) -> Region:
    """(family, x0, y0, x1, y1): where a tile lies in its photo, as fractions of it."""
    stem, scale, x, y = re.fullmatch(r"(.+)_s(\d+)_(\d+)_(\d+)\.jpg", tile_name).groups()
    s = int(scale) / 100
    w, h = sizes[stem]
    x0, y0 = int(x) / s / w, int(y) / s / h
    return family(stem), x0, y0, x0 + TILE[0] / s / w, y0 + TILE[1] / s / h


def related(a: Region, b: Region) -> bool:
    return a[0] == b[0] and a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]


def photo_sizes(photos: Path) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for src in photos.iterdir():
        if src.is_file():
            with Image.open(src) as im:  # the header only
                out[src.stem] = im.size
    return out


def edit(img: Image.Image, kind: str) -> Image.Image:
    w, h = img.size
    if kind == "resize":
        return img.resize((round(w * 0.75), round(h * 0.75)), Image.Resampling.LANCZOS)
    if kind == "crop":
        return img.crop((round(w * 0.05), round(h * 0.05), round(w * 0.95), round(h * 0.95)))
    if kind == "tone":
        return ImageEnhance.Contrast(ImageEnhance.Brightness(img).enhance(1.1)).enhance(1.1)
    if kind == "rotate":
        return img.rotate(3, resample=Image.Resampling.BICUBIC, expand=False)
    if kind == "mirror":
        return ImageOps.mirror(img)
    return img  # reencode: saved at a lower quality below


def build(tiles: list[Path], n: int, work: Path, seed: int) -> tuple[Path, dict[str, str]]:
    """N tiles (hard links) + planted copies; returns the root and copy -> source."""
    root = work / f"n{n}"
    shutil.rmtree(work, ignore_errors=True)
    (root / "tiles").mkdir(parents=True)
    (root / "copies").mkdir()
    chosen = random.Random(seed).sample(tiles, n)
    for p in chosen:
        os.link(p, root / "tiles" / p.name)
    rng = random.Random(seed + 1)
    source_of: dict[str, str] = {}
    for k, p in enumerate(rng.sample(chosen, max(1, int(n * COPY_SHARE)))):
        kind = EDITS[k % len(EDITS)]
        with Image.open(p) as im:
            out = edit(im.convert("RGB"), kind)
        name = f"copies/{kind}_{p.name}"
        out.save(root / name, quality=70 if kind == "reencode" else 90)
        source_of[name] = f"tiles/{p.name}"
    return root, source_of


def candidate_pairs(db: Path) -> tuple[list[tuple[str, str]], int, int, int]:
    """The near-mode candidate pairs of a scanned collection, from its store, as pairs
    of paths relative to the collection (``tiles/NAME``, ``copies/NAME``); how many of
    them may start a group (``candidates.pair_roles``); the hits of the radius searches
    (what a search that held them all would hold) and the pairs held once the hits are
    filtered as they come (colour gate, check hashes: ``candidates._confirmed_pairs``)."""
    from pixdedup import candidates as cand
    from pixdedup.config import ScanConfig
    from pixdedup.modes.near import search
    from pixdedup.store import FeatureStore

    c = ScanConfig()
    with FeatureStore(str(db), lock=False) as store:
        sig = store.signatures(c.search_hash_kinds, windows=True)
        found = search(sig, c)

        def blocks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            return cand._search_blocks(sig, c.max_hamming_distance, c.max_window_distance,
                                       c.max_orientation_distance, None,
                                       cand.SEARCH_NEAREST if c.max_candidates_per_image else 0)

        hits = sum(len(q) for q, _ in blocks())
        radii = cand.Radii(c.max_hamming_distance, c.max_window_distance,
                           c.max_orientation_distance, c.max_check_distance)
        held, _ = cand._confirmed_pairs(sig, blocks(), radii, c.min_color_correlation)
        uris = store.uris(int(i) for i in np.unique(found.pairs))
    rel = {i: "/".join(Path(u).parts[-2:]) for i, u in uris.items()}
    return ([(rel[int(a)], rel[int(b)]) for a, b in found.pairs], int(found.starts.sum()),
            hits, len(held))


def verified_pairs(db: Path) -> list[tuple[str, str]]:
    """The pairs a scan verified (every one is remembered in the store's verdicts
    table; a fresh store holds this scan's only), as pairs of relative paths."""
    import sqlite3

    from pixdedup.store import content_key

    conn = sqlite3.connect(str(db))
    try:
        by_key: dict[int, list[str]] = {}
        for uri, h in conn.execute("SELECT uri, content_hash FROM images WHERE content_hash != ''"):
            by_key.setdefault(content_key(h), []).append("/".join(Path(uri).parts[-2:]))
        return [(a, b) for ka, kb in conn.execute("SELECT a, b FROM verdicts")
                for a in by_key.get(ka, ()) for b in by_key.get(kb, ()) if a != b]
    finally:
        conn.close()


def same_place_pairs(paths: list[str], truth: Truth) -> int:
    """Pairs of the collection's images that show one place (related, see the module
    docstring), planted copies left out: how many a perfect search may rightly find."""
    by_family: dict[str, list[Region]] = {}
    for p in paths:
        if p not in truth.source_of:
            r = truth.region(p)
            by_family.setdefault(r[0], []).append(r)
    count = 0
    for regions in by_family.values():
        box = np.array([r[1:] for r in regions])
        for k in range(len(box) - 1):
            rest = box[k + 1:]
            count += int(((rest[:, 0] < box[k, 2]) & (box[k, 0] < rest[:, 2])
                          & (rest[:, 1] < box[k, 3]) & (box[k, 1] < rest[:, 3])).sum())
    return count


class Truth:
    """Which pairs of a collection are unrelated (see the module's docstring)."""

    def __init__(self, source_of: dict[str, str], sizes: dict[str, tuple[int, int]]):
        self.source_of, self.sizes = source_of, sizes

    def region(self, path: str) -> Region:
        return region(Path(self.source_of.get(path, path)).name, self.sizes)

    def unrelated(self, a: str, b: str) -> bool:
        return not related(self.region(a), self.region(b))

    def same_photo(self, a: str, b: str) -> bool:
        """Two tiles of one photo (or family): unrelated when they do not overlap, but
        pieces of one scene (one wall, one lawn, one sky)."""
        return self.region(a)[0] == self.region(b)[0]


def score(result: pixdedup.ScanResult, truth: Truth) -> tuple[float, int, int]:
    """Recall on the planted copies; unrelated pairs put in one group (all, and those
    of two different photos)."""
    group = {r.path: r.group_id for r in result.results if r.group_id is not None}
    found = sum(1 for c, s in truth.source_of.items() if c in group and group[c] == group.get(s))
    members: dict[int, list[str]] = {}
    for p, g in group.items():
        members.setdefault(g, []).append(p)
    false = [(a, b) for ms in members.values() for i, a in enumerate(ms) for b in ms[i + 1:]
             if truth.unrelated(a, b)]
    across = sum(1 for a, b in false if not truth.same_photo(a, b))
    return found / max(1, len(truth.source_of)), len(false), across


def per_image(found: list[tuple[str, str]], truth: Truth, images: int) -> str:
    """Pairs per image, all / without the related ones (planted copies are not related)."""
    related = sum(1 for a, b in found if not truth.unrelated(a, b)
                  and truth.source_of.get(a) != b and truth.source_of.get(b) != a)
    return f"{len(found) / images:.3f} / {(len(found) - related) / images:.3f}"


def between_photos(found: list[tuple[str, str]], truth: Truth, images: int) -> str:
    """Pairs per image that are planted copies or join two different photos (tiles of
    one photo left out: the denser the sample, the more pieces of each photo's one
    wall, lawn or sky are both in it, like the same-place pairs)."""
    count = sum(1 for a, b in found if truth.source_of.get(a) == b
                or truth.source_of.get(b) == a or not truth.same_photo(a, b))
    return f"{count / images:.3f}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--sizes", default="1000,5000,20000")
    ap.add_argument("--work", type=Path, default=Path("bench-data/real-scale"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--incremental", action="store_true",
                    help="also rescan the smallest collection with 5 new images")
    args = ap.parse_args()
    tiles = make_tiles(args.photos, args.work / "tiles")
    sizes = [int(s) for s in args.sizes.split(",")]
    if max(sizes) > len(tiles):
        print(f"only {len(tiles)} distinct tiles", file=sys.stderr)
        return 2
    print(f"{len(tiles)} distinct real tiles of {TILE[0]}x{TILE[1]} px from {args.photos}")
    sizes_of = photo_sizes(args.photos)
    print("\nCandidate pairs and pairs verified per image, each as all / without the related "
          "pairs (two tiles of one place: rightly found, and their number per image grows "
          "with N by construction: 'same-place pairs' is how many the collection holds)\n")
    print("| N | images | same-place pairs / image | search hits / image (held after "
          "filtering) | candidate pairs / image | of them between photos | of them may "
          "start a group | pairs verified / image | unrelated pairs verified / image | "
          "pairs verified / image between photos (planted copies and pairs of two photos) | "
          "verify ms / image | scan s | recall on planted copies | unrelated pairs grouped "
          "(across photos) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        root, source_of = build(tiles, n, args.work / "run", args.seed)
        t = time.perf_counter()
        result = pixdedup.scan(str(root), out=str(root) + "_out", dry_run=True)
        seconds = time.perf_counter() - t
        images = result.summary.images
        truth = Truth(source_of, sizes_of)
        db = Path(str(root) + "_out") / "pixdedup.db"
        pairs, starts, hits, held = candidate_pairs(db)
        verified = verified_pairs(db)
        paths = [r.path for r in result.results]

        unrelated = sum(1 for a, b in verified if truth.unrelated(a, b))
        recall, false, false_across = score(result, truth)
        print(f"| {n} | {images} | {same_place_pairs(paths, truth) / images:.2f} | "
              f"{hits / images:.2f} ({held / images:.2f}) | "
              f"{per_image(pairs, truth, images)} | {between_photos(pairs, truth, images)} | "
              f"{starts / images:.3f} | "
              f"{per_image(verified, truth, images)} | "
              f"{unrelated / images:.3f} | {between_photos(verified, truth, images)} | "
              f"{1000 * result.timings['verify'] / images:.2f} | "
              f"{seconds:.1f} | {recall:.3f} | {false} ({false_across}) |", flush=True)
        if args.incremental and n == min(sizes):
            extra = [p for p in tiles if not (root / "tiles" / p.name).exists()][:5]
            for p in extra:
                shutil.copy(p, root / "tiles" / p.name)
            t = time.perf_counter()
            again = pixdedup.scan(str(root), out=str(root) + "_out", dry_run=True)
            rerun = time.perf_counter() - t
            print(f"|   | +5 images: rescan {rerun:.2f} s = {rerun / seconds:.1%} of the full scan "
                  f"({again.summary.extracted} decoded, {again.summary.pairs_verified} pairs "
                  f"verified, {again.summary.pairs_reused} reused) | | | | | | | | | | | | |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
