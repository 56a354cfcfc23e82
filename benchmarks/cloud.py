"""Cloud: pixdedup on an Azure Blob Storage container (Azurite on loopback) against a
plain sequential download of the same blobs.

    python benchmarks/cloud.py --photos FOLDER [--limit 150] [--repeat 3]

Uploads the photos (plus byte copies of a tenth of them, as a real collection has) to
a container, then, ``--repeat`` times each: (1) downloads every blob one after the
other with the Azure SDK (no decoding: the network floor of a naive tool), (2) runs
``pixdedup scan az://...`` from a fresh feature store (list, download once, extract,
group, server-side copies into best/ and duplicates/, upload the reports), and (3) the
same scan again (incremental: nothing changed).  Prints medians: images per second and
bytes downloaded per byte of image.  Needs Azurite (``make test`` installs it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.cloud.servers import connection_string, start_azurite  # noqa: E402

from pixdedup.config import ScanConfig  # noqa: E402
from pixdedup.decode import IMAGE_EXTENSIONS  # noqa: E402
from pixdedup.pipeline import scan  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=150)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    photos = sorted(p for p in args.photos.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)[: args.limit]
    if not photos:
        sys.exit(f"no photos under {args.photos}")
    from azure.storage.blob import BlobServiceClient

    work = Path(tempfile.mkdtemp(prefix="pixdedup-cloud-bench-"))
    proc, port = start_azurite(work / "azurite")
    try:
        conn = connection_string(port)
        os.environ["AZURE_STORAGE_CONNECTION_STRING"] = conn
        svc = BlobServiceClient.from_connection_string(conn)
        cc = svc.get_container_client("bench")
        cc.create_container()
        total = 0
        names = []
        for i, p in enumerate(photos):
            data = p.read_bytes()
            for name in [f"photos/{p.name}"] + ([f"photos/copies/{p.name}"] if i % 10 == 0 else []):
                cc.upload_blob(name, data)
                names.append(name)
                total += len(data)
        n = len(names)
        print(f"{n} blobs ({len(photos)} photos + {n - len(photos)} byte copies), "
              f"{total / 1e6:.1f} MB, workers {args.workers}", file=sys.stderr)

        seq, full, incr, ratios = [], [], [], []
        for r in range(args.repeat):
            t = time.perf_counter()
            got = 0
            for name in names:
                got += len(cc.download_blob(name).readall())
            seq.append(n / (time.perf_counter() - t))
            assert got == total
            cache = work / f"cache{r}"
            os.environ["XDG_CACHE_HOME"] = str(cache)
            config = ScanConfig(workers=args.workers)
            t = time.perf_counter()
            res = scan("az://bench/photos/", config, collect=False)
            full.append(n / (time.perf_counter() - t))
            ratios.append(res.summary.bytes_downloaded / total)
            assert res.summary.images == n and res.summary.errors == 0, res.summary
            t = time.perf_counter()
            again = scan("az://bench/photos/", config, collect=False)
            incr.append(n / (time.perf_counter() - t))
            assert again.summary.bytes_downloaded == 0
            print(f"run {r + 1}: sequential download {seq[-1]:.1f} img/s, scan {full[-1]:.1f} img/s "
                  f"(downloaded {ratios[-1]:.3f} x image bytes), rerun {incr[-1]:.1f} img/s, "
                  f"{res.summary.groups} groups", file=sys.stderr)
            shutil.rmtree(cache, ignore_errors=True)
        med = statistics.median
        print(f"\nCloud benchmark (Azurite on loopback): {n} blobs, {total / 1e6:.1f} MB, "
              f"median of {args.repeat}\n")
        print("| run | images/s | bytes downloaded per image byte |")
        print("|---|---:|---:|")
        print(f"| plain sequential download (Azure SDK, no decoding) | {med(seq):.1f} | 1.000 |")
        print(f"| pixdedup scan az:// (download, extract, group, server-side copies, reports) "
              f"| {med(full):.1f} | {med(ratios):.3f} |")
        print(f"| pixdedup scan az:// again (incremental, nothing changed) | {med(incr):.1f} | 0.000 |")
        print(f"\nscan / sequential download: {med(full) / med(seq):.2f}x")
    finally:
        proc.terminate()
        proc.wait(10)
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
