"""Where extraction time goes: each step of ``extract._features`` timed per image, in
one process, against the DCT-scaled decode it starts from.

    python benchmarks/extract_stages.py --photos bench-data/throughput-3mp [--limit 60]

The steps are those of ``pixdedup.extract.extract_bytes`` in its order (content hash,
decode, reduction to the working size, grey, hashes, window hashes, colour, quality,
thumbnail); medians over ``--repeat`` passes of the per-image mean, in milliseconds.
The ratio printed last is the best extraction/floor ratio these costs allow:
decode / (decode + the rest), with no process pool, store or verification.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2

from pixdedup.decode import IMAGE_EXTENSIONS, decode
from pixdedup.extract import (
    ExtractOptions,
    _reduce,
    content_hash,
    near_search_note,
    thumbnail_jpeg,
)
from pixdedup.features.color import color_signature
from pixdedup.features.hashes import (
    HashSource,
    compute_hashes,
    oriented_hashes,
    window_check_hashes,
    window_hashes,
)
from pixdedup.features.quality import measure_quality


def one_pass(datas: list[bytes], opt: ExtractOptions) -> dict[str, float]:
    spent: dict[str, float] = {}

    def tick(step: str, t0: float) -> float:
        now = time.perf_counter()
        spent[step] = spent.get(step, 0.0) + now - t0
        return now

    for data in datas:
        t = time.perf_counter()
        content_hash(data)
        t = tick("content hash", t)
        decoded = decode(data, opt.working_size, opt.max_pixels)
        t = tick("decode", t)
        work = _reduce(decoded.pixels, opt.working_size)
        t = tick("reduce", t)
        grey = cv2.cvtColor(work, cv2.COLOR_RGB2GRAY)
        t = tick("grey", t)
        near_search_note(decoded.width, decoded.height, grey)
        t = tick("flat check", t)
        source = HashSource(grey)
        compute_hashes(source, opt.hash_kinds)
        t = tick("hashes", t)
        window_hashes(source)
        t = tick("window hashes", t)
        window_check_hashes(source)
        t = tick("window check hashes", t)
        oriented_hashes(source)
        t = tick("oriented hashes", t)
        color = color_signature(work)
        t = tick("colour", t)
        measure_quality(decoded, grey, len(data), color.colorfulness, None)
        t = tick("quality", t)
        thumbnail_jpeg(work, opt)
        tick("thumbnail", t)
    return {k: 1000.0 * v / len(datas) for k, v in spent.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    cv2.setNumThreads(1)  # as in the pool's workers
    files = sorted(p for p in args.photos.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    datas = [p.read_bytes() for p in files[: args.limit]]
    if not datas:
        print(f"no images under {args.photos}", file=sys.stderr)
        return 2
    opt = ExtractOptions()
    one_pass(datas[:2], opt)  # imports, first-call set-up
    passes = [one_pass(datas, opt) for _ in range(args.repeat)]
    ms = {k: statistics.median(p[k] for p in passes) for k in passes[0]}
    rest = sum(v for k, v in ms.items() if k != "decode")
    print(f"{len(datas)} images from {args.photos}, ms per image (median of {args.repeat}):")
    print("| step | ms |\n|---|---:|")
    for k, v in ms.items():
        print(f"| {k} | {v:.2f} |")
    print(f"| all but decode | {rest:.2f} |")
    print(f"best extraction / floor these costs allow: {ms['decode'] / (ms['decode'] + rest):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
