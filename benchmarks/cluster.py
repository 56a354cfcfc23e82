"""The Ray engine against the local engine on the same large photos.

    python benchmarks/cluster.py --photos DIR [--megapixels 3 12] [--limit 154] [--repeat 3]

Every image under DIR (the first ``--limit``) is copied at about each ``--megapixels``
size (cached in bench-data/, as ``throughput.py --upscale-to`` does; the copies of one
photo at two sizes are near-duplicates of each other), then each contender
scans the copies with a fresh feature store (``pixdedup scan --dry-run --json``, a
subprocess each), ``--repeat`` times round-robin; the medians are reported:

* ``local``: ``--engine local --workers C`` (C: this machine's cores);
* ``ray 1 node x C CPUs``: a Ray cluster of one node with C CPUs, ``--engine ray
  --address``: the engine's overhead against ``local`` (target >= 0.9x);
* ``ray 1 node x 1 CPU`` and ``ray 2 nodes x 1 CPU``: scaling with nodes (target >= 1.8x).

The clusters are started with ``ray start`` on 127.0.0.1 (token authentication on) and
their start-up time is shown apart; a scan's time is the scan's own total (connecting
to the cluster is not in it, the wall time with it is shown too).  The projection for
3 million images divides by the measured rate per CPU of the two-node run beyond its
fixed cost.  A scan's fixed cost is measured apart as its time on the first 8 images: on
Ray it is mostly the job's new worker processes and their imports, once per scan
whatever its size.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import DEFAULT_CACHE, list_images, resized_copies  # noqa: E402

RAY = str(Path(sys.executable).with_name("ray"))
SMALL = 8
"""A scan of this many images measures a scan's fixed cost (starting and importing the
workers, the store, the reports)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """``nodes`` Ray nodes of ``cpus`` CPUs each on this machine, each a ``ray start
    --block`` in a process group of its own."""

    def __init__(self, nodes: int, cpus: int, env: dict[str, str]) -> None:
        self.env = env
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        common = ["--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus),
                  "--disable-usage-stats", "--block"]
        t = time.perf_counter()
        self.procs = [self._start([*common, "--head", "--port", str(port), "--dashboard-host",
                                   "127.0.0.1", "--ray-client-server-port", str(free_port())])]
        self._wait_port(port)
        for _ in range(nodes - 1):
            self.procs.append(self._start([*common, "--address", self.address]))
        self._wait_nodes(nodes)
        self.startup = time.perf_counter() - t

    def _start(self, args: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen([RAY, "start", *args], env=self.env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @staticmethod
    def _wait_port(port: int) -> None:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError("the Ray head did not start")

    def _wait_nodes(self, n: int) -> None:
        code = (f"import ray; ray.init(address={self.address!r}, logging_level='ERROR', "
                "log_to_driver=False); print(sum(1 for x in ray.nodes() if x['Alive']))")
        end = time.monotonic() + 90
        while time.monotonic() < end:
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 env=self.env)
            if out.returncode == 0 and out.stdout.strip().endswith(str(n)):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the cluster has not {n} live nodes")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(20)
                    break
                except ProcessLookupError:
                    break
                except subprocess.TimeoutExpired:
                    continue
        time.sleep(2)


def scan_once(folder: Path, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pixdedup-bench-") as tmp:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pixdedup", "scan", str(folder), "--out",
                               f"{tmp}/out", "--db", f"{tmp}/f.db", "--dry-run", "--json", *args],
                              capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise RuntimeError(f"scan failed: {proc.stderr[-2000:]}")
        doc = json.loads(proc.stdout)
    per_node = [n.get("extract", 0) for n in doc.get("engine", {}).get("per_node", [])]
    return {"seconds": doc["seconds"], "wall": wall, "images": doc["images"],
            "per_node": per_node}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--megapixels", type=float, nargs="+", default=[3.0, 12.0])
    ap.add_argument("--limit", type=int, default=154)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    sources = list_images(args.photos)[:args.limit]
    sizes = "+".join(f"{mp:g}" for mp in args.megapixels)
    folder = DEFAULT_CACHE / f"cluster-{sizes}mp-{len(sources)}"  # exactly these images
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    paths = []
    for mp in args.megapixels:
        for path in resized_copies(sources, args.photos, mp, 0.0, DEFAULT_CACHE, cores):
            paths.append(folder / f"{mp:g}mp-{path.name}")
            os.link(path, paths[-1])
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    small = DEFAULT_CACHE / f"cluster-{sizes}mp-first{SMALL}"
    small.mkdir(parents=True, exist_ok=True)
    for old in small.iterdir():
        old.unlink()
    for path in paths[:SMALL]:
        os.link(path, small / path.name)
    print(f"{len(paths)} images of about {sizes} MP in {folder}, {cores} cores",
          file=sys.stderr)

    setups: list[tuple[str, int, int]] = [("local", 0, 0), (f"ray 1 node x {cores} CPUs", 1, cores),
                                          ("ray 1 node x 1 CPU", 1, 1), ("ray 2 nodes x 1 CPU", 2, 1)]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in setups}
    fixed: dict[str, list[float]] = {name: [] for name, _, _ in setups}
    startup: dict[str, float] = {}
    for name, nodes, cpus in setups:  # one cluster at a time (each holds the cores)
        cluster = Cluster(nodes, cpus, env) if nodes else None
        try:
            if cluster:
                startup[name] = cluster.startup
            engine = (["--engine", "ray", "--address", cluster.address] if cluster
                      else ["--engine", "local", "--workers", str(cores)])
            scan_once(folder, engine, env)  # warm: the page cache
            for _ in range(args.repeat):
                runs[name].append(scan_once(folder, engine, env))
                fixed[name].append(scan_once(small, engine, env)["seconds"])
                print(f"{name}: {runs[name][-1]}, {SMALL} images: {fixed[name][-1]} s",
                      file=sys.stderr)
        finally:
            if cluster:
                cluster.stop()

    def rate(name: str) -> float:
        return len(paths) / statistics.median(r["seconds"] for r in runs[name])

    def steady(name: str) -> float:
        """Images/s beyond the fixed cost of a scan (its time on SMALL images)."""
        extra = statistics.median(r["seconds"] for r in runs[name]) - statistics.median(fixed[name])
        return (len(paths) - SMALL) / extra

    rows = []
    for name, _, _ in setups:
        rows.append({"setup": name, "images_per_s": round(rate(name), 2),
                     "median_s": round(statistics.median(r["seconds"] for r in runs[name]), 2),
                     "median_wall_s": round(statistics.median(r["wall"] for r in runs[name]), 2),
                     "startup_s": round(startup[name], 1) if name in startup else None,
                     "fixed_s": round(statistics.median(fixed[name]), 2),
                     "steady_images_per_s": round(steady(name), 2),
                     "images_per_node": runs[name][-1]["per_node"]})
    overhead = rate(setups[1][0]) / rate("local")
    scaling = rate("ray 2 nodes x 1 CPU") / rate("ray 1 node x 1 CPU")
    steady_overhead = steady(setups[1][0]) / steady("local")
    steady_scaling = steady("ray 2 nodes x 1 CPU") / steady("ray 1 node x 1 CPU")
    per_cpu = steady("ray 2 nodes x 1 CPU") / 2
    result = {"images": len(paths), "megapixels": args.megapixels, "cores": cores,
              "repeat": args.repeat, "rows": rows, "ray_vs_local": round(overhead, 3),
              "two_nodes_vs_one": round(scaling, 3),
              "ray_vs_local_steady": round(steady_overhead, 3),
              "two_nodes_vs_one_steady": round(steady_scaling, 3),
              "images_per_s_per_cpu": round(per_cpu, 2),
              "projection_3M_hours": {f"{n} x 16 CPUs": round(3e6 / (per_cpu * 16 * n) / 3600, 1)
                                      for n in (1, 4, 16, 64)}}
    print(f"| setup | images/s | median scan s | median wall s (with connect) | scan of {SMALL} "
          "images s (fixed cost) | images/s beyond it | cluster start s | images per node |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setup']} | {r['images_per_s']} | {r['median_s']} | {r['median_wall_s']} | "
              f"{r['fixed_s']} | {r['steady_images_per_s']} | "
              f"{r['startup_s'] if r['startup_s'] is not None else '-'} | {r['images_per_node'] or '-'} |")
    print(f"\nray / local: {overhead:.2f}x ({steady_overhead:.2f}x beyond the fixed cost); "
          f"2 nodes / 1 node: {scaling:.2f}x ({steady_scaling:.2f}x); "
          f"{per_cpu:.1f} images/s per CPU")
    print("3M images at that rate: " + ", ".join(f"{k}: {v} h" for k, v in
                                                 result["projection_3M_hours"].items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
