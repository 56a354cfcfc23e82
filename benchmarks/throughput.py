"""Throughput benchmark: pixdedup against the decode floor and against imagededup (PHash).

    python benchmarks/throughput.py --photos DIR [--workers N] [--repeat 3] [--limit N]
                                    [--upscale-to MP [MP ...] | --make-large] [--copies]
                                    [--json PATH]

All contenders work on the same images (every image file under DIR, recursive, sorted,
the first ``--limit``), each in a fresh subprocess, ``--repeat`` times, round-robin:

* ``floor``: the cheapest decode that still sees the image: read the bytes, then
  Pillow ``open`` + ``draft`` to the smallest JPEG DCT scale whose sides are both at
  least 64 px (``FLOOR_SIDE``; 1/8 for any photo of 512 x 512 px or more) + ``load()``;
  no orientation, no conversion, no feature work.  Same worker count,
  ``multiprocessing`` pool (forkserver, as pixdedup's local engine).  The ratios are
  to this floor.
* ``decode``: the same, with the draft box pixdedup's own decode asks for (longest
  side at least the working size): the part of the floor's gap that is pixdedup's
  choice of decode size, shown for reference.
* ``pixdedup``: ``pixdedup.pipeline.scan`` end to end (near mode, ``dry_run=True``, output
  and reports in a temporary folder), plus its per-stage ``timings``.
* ``extract``: pixdedup's extraction only (``extract_file`` on pixdedup's worker pool:
  read, decode, hashes, colour, quality, thumbnail; no feature store, no grouping), the
  part of the scan that the floor is the lower bound of.
* ``imagededup``: ``PHash().encode_images`` + ``find_duplicates(encoding_map=...)``,
  which is exactly what ``find_duplicates(image_dir=...)`` runs, timed in two parts.
  imagededup is loaded without its package ``__init__`` files (they import torch):
  ``pip install --no-deps imagededup && pip install tqdm scikit-learn`` (numpy, scipy,
  PyWavelets and Pillow come with pixdedup).  If it cannot be loaded the row says why.

Workers start with their libraries preloaded (forkserver preload for pixdedup and the
floor, fork for imagededup), as under the ``pixdedup`` command, whose forkserver imports
the console script and with it pixdedup.  Starting that forkserver (once per run: it
imports pixdedup, OpenCV, FAISS) is timed on its own and reported as "start", not in
images/s: it is a fixed cost, about a quarter of a second, that a 100-image set would
otherwise spread over every image.  Pools made after it (the scan makes one for
extraction and one for verification) are timed.  Files are read once before timing
(warm page cache).

Memory: the process tree of each run (the subprocess, its pool workers and the
forkserver) is sampled from /proc every 100 ms; "peak RSS" is the largest sum of the
processes' RSS (shared pages count once per process), "peak PSS" the largest sum of
their proportional set sizes (shared pages split), the max over the repeats.  Linux only
for memory; elsewhere those columns read n/a.

``--copies`` adds, after each set, the same set with near-duplicates among its photos
(issue 15's large photos: "many near-duplicates among them"): every ``COPY_EVERY``-th
photo gets four edited copies, a JPEG re-save at q80 and a same-size conversion
(HEIC and PNG in turn) that the keeper tests on their full-resolution pixels, a
half-size JPEG and a 10% crop (written once into ``<cache>/throughput-<MP>mp-copies``).
Then a scan also verifies the copies, groups them and chooses each group's best.

``--upscale-to 3 12`` (or ``--make-large``) first writes resized JPEG copies (LANCZOS,
quality 92, EXIF orientation applied) of the chosen images at about 3 and 12 megapixels
into ``bench-data/throughput-<MP>mp`` (cached between runs) and benchmarks each size in
turn; the developer photos are mostly < 1 MP, camera photos are 3 to 24 MP.  Upscaled
photos are smooth, so their JPEGs are smaller and quicker to entropy-decode than a
camera's; ``--grain 3`` adds seeded Gaussian noise for camera-like file sizes.

The Markdown tables go to stdout, progress to stderr; ``--json PATH`` keeps every run.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import io
import json
import math
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO / "bench-data"
CONTENDERS = ("floor", "decode", "pixdedup", "extract", "imagededup")
FLOOR_SIDE = 64
"""The floor's decode: the smallest DCT scale whose sides are both >= this many px."""
LABELS = {
    "floor": f"decode floor (read + Pillow draft to >= {FLOOR_SIDE} px a side + load)",
    "decode": "decode at pixdedup's draft box (longest side >= working size)",
    "pixdedup": "pixdedup scan (near, dry run)",
    "extract": "pixdedup extraction only (no store, no grouping)",
    "imagededup": "imagededup PHash (encode + find_duplicates)",
}
SAMPLE_INTERVAL_S = 0.1  # one sample of a 5-process tree costs ~1-3 ms of CPU
UPSCALE_QUALITY = 92
CHUNK = 4  # items per task, as pixdedup's local engine


# --------------------------------------------------------------------------- contenders
# Each runs inside a fresh ``--run-one`` subprocess and returns a JSON-able dict with at
# least "seconds" (the timed part) and "processed" (images it handled successfully).


def _floor_init() -> None:
    try:  # decode the same formats pixdedup can (HEIC/HEIF/AVIF through pillow-heif)
        import pillow_heif

        pillow_heif.register_heif_opener()
    except ImportError:
        pass


def _floor_decode(path: str, working_size: int) -> bool:
    """``working_size`` 0: the floor's box (both sides >= FLOOR_SIDE); otherwise the box
    pixdedup's decode.draft_box asks for (longest side >= working size)."""
    from PIL import Image

    try:
        with open(path, "rb") as fh:
            data = fh.read()
        with Image.open(io.BytesIO(data)) as im:
            if im.format == "JPEG":
                w, h = im.size
                if working_size:
                    scale = working_size / max(w, h)
                    box = (max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale)))
                else:  # Pillow keeps both sides >= the box: the smallest such DCT scale
                    box = (min(w, FLOOR_SIDE), min(h, FLOOR_SIDE))
                im.draft("RGB", box)
            im.load()
        return True
    except Exception:  # an unreadable image counts as not processed, as in pixdedup
        return False


def _start_forkserver(ctx: Any, workers: int) -> float:
    """Start ``ctx``'s forkserver (its preload imports run there); returns seconds."""
    t = time.perf_counter()
    with ctx.Pool(workers) as pool:
        pool.map(abs, range(workers))
    return time.perf_counter() - t


def run_floor(paths: Sequence[str], workers: int, working_size: int) -> dict[str, Any]:
    fn = partial(_floor_decode, working_size=working_size)
    start = 0.0
    if workers <= 1:
        t = time.perf_counter()
        _floor_init()
        ok = sum(fn(p) for p in paths)
    else:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["__main__", "PIL.Image"])
        start = _start_forkserver(ctx, workers)
        t = time.perf_counter()
        with ctx.Pool(workers, initializer=_floor_init) as pool:
            ok = sum(pool.imap_unordered(fn, paths, chunksize=CHUNK))
    return {"seconds": time.perf_counter() - t, "processed": ok, "start": start}


def _preload_pixdedup(workers: int) -> float:
    # The ``pixdedup`` console script imports pixdedup, so its forkserver (which imports
    # __main__ and pixdedup's WORKER_PRELOAD) hands workers a process with pixdedup
    # already imported; do the same.
    from pixdedup.engines.local import WORKER_PRELOAD

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__", "pixdedup", *WORKER_PRELOAD[1:]])
    return _start_forkserver(ctx, workers) if workers > 1 else 0.0


def run_pixdedup(set_dir: str, workers: int) -> dict[str, Any]:
    start = _preload_pixdedup(workers)
    from pixdedup.config import ScanConfig
    from pixdedup.pipeline import scan

    with tempfile.TemporaryDirectory(prefix="pixdedup-throughput-out-") as tmp:
        config = ScanConfig(mode="near", out=os.path.join(tmp, "out"), workers=workers, dry_run=True)
        t = time.perf_counter()
        result = scan(set_dir, config)
        seconds = time.perf_counter() - t
    s = result.summary
    # a fresh output folder per run, so the feature store starts empty: nothing is reused
    return {"seconds": seconds, "processed": s.ok, "timings": dict(result.timings), "start": start,
            "groups": s.groups, "duplicates": s.duplicates, "errors": s.errors,
            "reused": getattr(s, "reused", 0), "originals": originals_kept(result.results)}


def originals_kept(results: Sequence[Any]) -> tuple[int, int]:
    """With ``--copies``: (groups whose best is the photo its copies were made from,
    groups that hold such a photo).  A copy's name is its photo's stem + ``__edit``
    (``_copy_plan``)."""
    suffixes = tuple(f"__{edit}" for edit in ("q80", "half", "crop", "same"))
    groups: dict[int, list[Any]] = {}
    for r in results:
        if r.group_id is not None:
            groups.setdefault(r.group_id, []).append(r)
    kept = held = 0
    for members in groups.values():
        originals = [r for r in members if not Path(r.path).stem.endswith(suffixes)]
        if len(originals) == 1:
            held += 1
            kept += originals[0].status.name == "BEST"
    return kept, held


def run_extract(set_dir: str, workers: int) -> dict[str, Any]:
    start = _preload_pixdedup(workers)
    from pixdedup import ingest
    from pixdedup.config import ScanConfig
    from pixdedup.engines.local import map_unordered
    from pixdedup.extract import extract_file
    from pixdedup.models import ImageRef, RecordStatus
    from pixdedup.sources.local import list_local

    refs = [x for x in list_local(set_dir) if isinstance(x, ImageRef)]
    config = ScanConfig(mode="near", workers=workers, dry_run=True)
    t = time.perf_counter()
    # the pipeline's own extraction, minus the feature store
    fn = partial(extract_file, options=ingest.extract_options(config))
    records = list(map_unordered(fn, refs, workers))
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "processed": sum(r.status is RecordStatus.OK for r in records),
            "start": start}


class Unavailable(Exception):
    """A contender that cannot run here (e.g. imagededup not installed)."""


def load_imagededup_phash() -> type[Any]:
    """``imagededup.methods.hashing.PHash`` without running the package ``__init__``
    files: ``imagededup.methods`` imports the CNN method and ``imagededup.utils`` the
    plotter and models (torch, torchvision, matplotlib).  Empty namespace-like modules
    stand in for those three packages; hashing.py itself needs numpy, scipy,
    PyWavelets, Pillow, tqdm and scikit-learn (handlers/search/retrieval.py)."""
    spec = importlib.util.find_spec("imagededup")
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable("imagededup is not installed: pip install --no-deps imagededup && "
                          "pip install tqdm scikit-learn")
    root = Path(list(spec.submodule_search_locations)[0])
    for name in ("imagededup", "imagededup.methods", "imagededup.utils"):
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
            sys.modules[name] = module
    try:
        hashing = importlib.import_module("imagededup.methods.hashing")
    except ImportError as exc:
        raise Unavailable(f"imagededup.methods.hashing cannot be imported: {exc}") from None
    phash: type[Any] = hashing.PHash
    return phash


def run_imagededup(set_dir: str, workers: int) -> dict[str, Any]:
    phash_class = load_imagededup_phash()
    # imagededup's pools use the default start method; the workers must inherit the
    # stand-in modules above (a spawned or forkserver worker would import
    # imagededup.methods, hence torch, to unpickle PHash), so fork explicitly.
    multiprocessing.set_start_method("fork", force=True)
    import warnings

    _floor_init()  # HEIC opens as for the other contenders (the workers are forked)
    hasher = phash_class(verbose=False)
    t = time.perf_counter()
    encodings = hasher.encode_images(image_dir=set_dir, num_enc_workers=workers)
    t_encode = time.perf_counter() - t
    with warnings.catch_warnings():  # "num_enc_workers has no effect": encodings are given
        warnings.simplefilter("ignore")
        duplicates = hasher.find_duplicates(encoding_map=encodings, num_dist_workers=workers)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "processed": len(encodings),
            "timings": {"encode_images": t_encode, "find_duplicates": seconds - t_encode},
            "with_duplicates": sum(1 for v in duplicates.values() if v),
            "version": importlib.metadata.version("imagededup")}


def run_one(name: str, set_dir: str, workers: int, working_size: int) -> dict[str, Any]:
    if name in ("floor", "decode"):
        paths = sorted(str(p) for p in Path(set_dir).iterdir())
        return run_floor(paths, workers, working_size if name == "decode" else 0)
    if name == "pixdedup":
        return run_pixdedup(set_dir, workers)
    if name == "extract":
        return run_extract(set_dir, workers)
    if name == "imagededup":
        return run_imagededup(set_dir, workers)
    raise ValueError(f"unknown contender {name!r}")


def child_main(args: argparse.Namespace) -> int:
    try:
        result = run_one(args.run_one, args.set_dir, args.workers, args.working_size)
    except Unavailable as exc:
        result = {"unavailable": str(exc)}
    except Exception:
        traceback.print_exc()
        return 1
    Path(args.result).write_text(json.dumps(result), encoding="utf-8")
    return 0


# --------------------------------------------------------------------------- memory


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as fh:
                kids.extend(int(x) for x in fh.read().split())
        except OSError:
            continue
    return kids


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(_children(p))
    return pids


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB; (0, 0) once it is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return rss, pss


class TreeMemorySampler:
    """Samples the summed RSS and PSS of a process and all its descendants."""

    def __init__(self, pid: int, interval: float = SAMPLE_INTERVAL_S) -> None:
        self.pid = pid
        self.interval = interval
        self.available = os.path.exists(f"/proc/{os.getpid()}/smaps_rollup")
        self.peak_rss_kb = 0
        self.peak_pss_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeMemorySampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            rss = pss = 0
            for p in _tree(self.pid):
                r, q = _memory_kb(p)
                rss += r
                pss += q
            self.peak_rss_kb = max(self.peak_rss_kb, rss)
            self.peak_pss_kb = max(self.peak_pss_kb, pss)
            self.samples += 1
            self._stop.wait(self.interval)

    def peaks_mb(self) -> tuple[float | None, float | None]:
        if not self.available or self.samples == 0:
            return None, None
        return self.peak_rss_kb / 1024, self.peak_pss_kb / 1024


# --------------------------------------------------------------------------- orchestration


@dataclass
class Run:
    seconds: float
    processed: int
    wall_seconds: float
    """The whole subprocess: interpreter start, imports, the timed part, exit."""
    peak_rss_mb: float | None
    peak_pss_mb: float | None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class ContenderResult:
    name: str
    runs: list[Run] = field(default_factory=list)
    unavailable: str | None = None
    failed: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.runs) and self.unavailable is None and self.failed is None

    def median_ips(self, images: int) -> float:
        return statistics.median(images / r.seconds for r in self.runs)

    def median_seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    def peak(self, attr: str) -> float | None:
        values = [v for r in self.runs if (v := getattr(r, attr)) is not None]
        return max(values) if values else None

    def median_timings(self) -> dict[str, float]:
        keys: list[str] = []
        for r in self.runs:
            keys.extend(k for k in r.detail.get("timings", {}) if k not in keys)
        return {k: statistics.median(r.detail["timings"][k] for r in self.runs
                                     if k in r.detail.get("timings", {})) for k in keys}


def launch(name: str, set_dir: Path, workers: int, working_size: int) -> Run | Exception:
    fd, result_path = tempfile.mkstemp(prefix=f"throughput-{name}-", suffix=".json")
    os.close(fd)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run-one", name, "--set-dir", str(set_dir),
           "--workers", str(workers), "--working-size", str(working_size), "--result", result_path]
    try:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with TreeMemorySampler(proc.pid) as sampler:
            _out, err = proc.communicate()
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            tail = [line for line in err.strip().splitlines() if line.strip()][-1:] or ["no output"]
            return RuntimeError(f"exit status {proc.returncode}: {tail[0]}")
        data = json.loads(Path(result_path).read_text(encoding="utf-8"))
    finally:
        os.unlink(result_path)
    if "unavailable" in data:
        return Unavailable(data["unavailable"])
    rss, pss = sampler.peaks_mb()
    seconds, processed = float(data.pop("seconds")), int(data.pop("processed"))
    return Run(seconds, processed, wall, rss, pss, data)


def is_image(path: Path) -> bool:
    from pixdedup.decode import IMAGE_EXTENSIONS

    return path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
    return sorted((p for p in found if p.is_file() and is_image(p)), key=lambda p: p.relative_to(root))


def flat_name(path: Path, root: Path) -> str:
    return "__".join(path.relative_to(root).parts)


def _resize_one(src: Path, dst: Path, megapixels: float, grain: float) -> None:
    import zlib

    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(src) as im:
        rgb = ImageOps.exif_transpose(im).convert("RGB")
    scale = math.sqrt(megapixels * 1e6 / (rgb.width * rgb.height))
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    big = rgb.resize(size, Image.Resampling.LANCZOS)
    if grain > 0:  # sensor-like noise: an upscaled photo is smoother than a camera's
        rng = np.random.default_rng(zlib.crc32(dst.name.encode()))
        noisy = np.asarray(big, dtype=np.float32) + rng.normal(0.0, grain, (size[1], size[0], 3))
        big = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    part = dst.with_name(dst.name + ".part")
    big.save(part, "JPEG", quality=UPSCALE_QUALITY)
    os.replace(part, dst)


def _resize_job(job: tuple[Path, Path, float, float]) -> None:
    _resize_one(*job)


def resized_copies(sources: Sequence[Path], root: Path, megapixels: float, grain: float, cache: Path,
                   workers: int) -> list[Path]:
    """JPEG copies of ``sources`` at about ``megapixels`` MP in ``cache``, made once."""
    out_dir = cache / (f"throughput-{megapixels:g}mp" + (f"-grain{grain:g}" if grain > 0 else ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = []
    for src in sources:
        name = flat_name(src, root)
        dst = out_dir / (name if name.lower().endswith(".jpg") else name + ".jpg")
        jobs.append((src, dst, megapixels, grain))
    todo = [j for j in jobs if not j[1].exists() or j[1].stat().st_mtime < j[0].stat().st_mtime]
    if todo:
        log(f"writing {len(todo)} JPEGs at {megapixels:g} MP into {out_dir} ...")
        with ProcessPoolExecutor(max(1, workers)) as pool:
            list(pool.map(_resize_job, todo))
    return [job[1] for job in jobs]


COPY_EVERY = 4
"""With ``--copies``: every this many-th photo of a set gets its four edited copies."""


def _copy_plan(src: Path, k: int) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """The ``k``-th photo's copies: file name -> (edit, Pillow format, save options)."""
    heic = k % 2 == 1
    return {f"{src.stem}__q80.jpg": ("same", "JPEG", {"quality": 80}),
            f"{src.stem}__half.jpg": ("half", "JPEG", {"quality": 90}),
            f"{src.stem}__crop.jpg": ("crop", "JPEG", {"quality": 90}),
            f"{src.stem}__same.{'heic' if heic else 'png'}":
                ("same", "HEIF" if heic else "PNG", {"quality": 80} if heic else {})}


def _edited_copies(job: tuple[Path, Path, int]) -> None:
    """A photo's four copies (see the module docstring), each written once."""
    src, out_dir, k = job
    from PIL import Image

    from pixdedup.decode import register_heif

    register_heif()
    with Image.open(src) as im:
        rgb = im.convert("RGB")
    w, h = rgb.size
    for name, (edit, fmt, options) in _copy_plan(src, k).items():
        dst = out_dir / name
        if dst.exists():
            continue
        pixels = rgb.resize((w // 2, h // 2), Image.Resampling.LANCZOS) if edit == "half" else \
            rgb.crop((w // 20, h // 20, w - w // 20, h - h // 20)) if edit == "crop" else rgb
        part = dst.with_name(dst.name + ".part")
        pixels.save(part, fmt, **options)
        os.replace(part, dst)


def edited_copies(photos: Sequence[Path], out_dir: Path, workers: int) -> list[Path]:
    """The copies of every ``COPY_EVERY``-th of ``photos`` in ``out_dir``, made once."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(p, out_dir, k) for k, p in enumerate(photos[::COPY_EVERY])]
    wanted = [out_dir / name for p, _, k in jobs for name in _copy_plan(p, k)]
    if not all(p.exists() for p in wanted):
        log(f"writing the edited copies of {len(jobs)} photos into {out_dir} ...")
        with ProcessPoolExecutor(max(1, workers)) as pool:
            list(pool.map(_edited_copies, jobs))
    return wanted


def describe(paths: Sequence[Path]) -> dict[str, Any]:
    from PIL import Image

    _floor_init()  # HEIC copies

    pixels, formats = 0, {}
    for p in paths:
        with Image.open(p) as im:
            pixels += im.width * im.height
            formats[im.format or "?"] = formats.get(im.format or "?", 0) + 1
    size = sum(p.stat().st_size for p in paths)
    n = max(1, len(paths))
    return {"images": len(paths), "mean_megapixels": pixels / n / 1e6, "mean_megabytes": size / n / 1e6,
            "total_megabytes": size / 1e6, "formats": formats}


def warm_cache(paths: Iterable[Path]) -> None:
    for p in paths:
        with open(p, "rb") as fh:
            while fh.read(1 << 20):
                pass


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bench_set(label: str, paths: Sequence[Path], root: Path, contenders: Sequence[str], workers: int,
              repeat: int, working_size: int) -> dict[str, Any]:
    info = describe(paths)
    results = {name: ContenderResult(name) for name in contenders}
    with tempfile.TemporaryDirectory(prefix="pixdedup-throughput-set-") as tmp:
        set_dir = Path(tmp) / "images"
        set_dir.mkdir()
        for p in paths:  # one flat folder: imagededup does not recurse by default
            (set_dir / flat_name(p, root)).symlink_to(p.resolve())
        warm_cache(paths)
        for r in range(repeat):
            for name in contenders:
                res = results[name]
                if res.unavailable or res.failed:
                    continue
                log(f"[{label}] run {r + 1}/{repeat}: {name} ...")
                outcome = launch(name, set_dir, workers, working_size)
                if isinstance(outcome, Unavailable):
                    res.unavailable = str(outcome)
                elif isinstance(outcome, Exception):
                    res.failed = str(outcome)
                else:
                    res.runs.append(outcome)
                    log(f"    {len(paths) / outcome.seconds:7.1f} images/s  ({outcome.seconds:.2f} s)")
    return {"label": label, "info": info, "workers": workers, "repeat": repeat, "results": results}


# --------------------------------------------------------------------------- report


def _fmt(value: float | None, spec: str = ".0f") -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(bench: dict[str, Any]) -> str:
    info, results = bench["info"], bench["results"]
    n = info["images"]
    formats = ", ".join(f"{k} {v}" for k, v in sorted(info["formats"].items()))
    lines = [
        f"### Throughput: {bench['label']}",
        "",
        f"{n} images ({formats}), mean {info['mean_megapixels']:.2f} MP and {info['mean_megabytes']:.2f} MB "
        f"per file; {bench['workers']} worker processes; median of {bench['repeat']} run(s); "
        f"warm page cache; {os.cpu_count()} CPUs, Python {platform.python_version()}.",
        "",
        "| contender | images/s | seconds | start s | peak RSS (MB) | peak PSS (MB) | images processed |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    ips: dict[str, float] = {}
    notes: list[str] = []
    for name, res in results.items():
        if not res.ok:
            why = f"not available ({res.unavailable})" if res.unavailable else f"failed ({res.failed})"
            lines.append(f"| {LABELS[name]} | – | – | – | – | – | {why} |")
            notes.append(f"{name}: {why}")
            continue
        ips[name] = res.median_ips(n)
        processed = statistics.median(r.processed for r in res.runs)
        start = statistics.median(float(r.detail.get("start", 0.0)) for r in res.runs)
        lines.append(f"| {LABELS[name]} | {ips[name]:.1f} | {res.median_seconds():.2f} | {start:.2f} | "
                     f"{_fmt(res.peak('peak_rss_mb'))} | {_fmt(res.peak('peak_pss_mb'))} | "
                     f"{processed:.0f} / {n} |")
    lines.append("")
    ratios = [("pixdedup", "floor", "pixdedup scan / decode floor"),
              ("extract", "floor", "pixdedup extract / decode floor"),
              ("decode", "floor", "decode at pixdedup's draft box / decode floor"),
              ("pixdedup", "imagededup", "pixdedup scan / imagededup PHash")]
    for a, b, text in ratios:
        if a in ips and b in ips:
            lines.append(f"- {text}: **{ips[a] / ips[b]:.2f}×** images/s")
    for name, title in (("pixdedup", "pixdedup stages"), ("imagededup", "imagededup")):
        res = results.get(name)
        if res is not None and res.ok:
            stages = ", ".join(f"{k} {v:.2f}" for k, v in res.median_timings().items())
            if stages:
                lines.append(f"- {title} (median seconds): {stages}")
    for name in ("pixdedup", "imagededup"):
        res = results.get(name)
        if res is not None and res.ok:
            last = res.runs[-1].detail
            if name == "pixdedup":
                lines.append(f"- pixdedup found {last['groups']} groups, {last['duplicates']} duplicates")
                kept, held = last.get("originals") or (0, 0)
                if held:
                    lines.append(f"- pixdedup kept the original photo in {kept} of the {held} groups "
                                 "of it and its copies")
            else:
                lines.append(f"- imagededup {last['version']}: {last['with_duplicates']} images have a "
                             "match within Hamming distance 10")
    lines.extend(f"- {note}" for note in notes)
    return "\n".join(lines) + "\n"


def to_json(bench: dict[str, Any]) -> dict[str, Any]:
    n = bench["info"]["images"]
    out: dict[str, Any] = {k: v for k, v in bench.items() if k != "results"}
    out["contenders"] = {}
    for name, res in bench["results"].items():
        doc: dict[str, Any] = {"label": LABELS[name], "unavailable": res.unavailable, "failed": res.failed,
                               "runs": [asdict(r) for r in res.runs]}
        if res.ok:
            doc.update(median_images_per_second=res.median_ips(n), median_seconds=res.median_seconds(),
                       peak_rss_mb=res.peak("peak_rss_mb"), peak_pss_mb=res.peak("peak_pss_mb"),
                       median_timings=res.median_timings())
        out["contenders"][name] = doc
    return out


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--photos", type=Path, help="folder of images (searched recursively)")
    ap.add_argument("--workers", type=int, default=None, help="worker processes (default: usable CPUs)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per contender; the median is reported")
    ap.add_argument("--limit", type=int, default=None, help="use the first N images (sorted by path)")
    ap.add_argument("--upscale-to", type=float, nargs="+", metavar="MP", default=None,
                    help="benchmark JPEG copies resized to about MP megapixels (one table per size)")
    ap.add_argument("--make-large", action="store_true", help="shorthand for --upscale-to 3 12")
    ap.add_argument("--copies", action="store_true",
                    help=f"also benchmark each set with four edited copies of every {COPY_EVERY}th photo "
                         "(re-save, same-size HEIC or PNG, half size, crop): near-duplicates to group")
    ap.add_argument("--grain", type=float, default=0.0, metavar="SIGMA",
                    help="add Gaussian noise (SIGMA in 8-bit levels) to the resized copies, for "
                         "camera-like file sizes (default 0: plain LANCZOS upscale)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                    help="where the resized copies are kept (default: bench-data/, git-ignored)")
    ap.add_argument("--contenders", default=",".join(CONTENDERS),
                    help=f"comma-separated subset of {','.join(CONTENDERS)}")
    ap.add_argument("--json", type=Path, default=None, help="also write every run to this JSON file")
    # internal: one contender, one run, in a fresh process
    ap.add_argument("--run-one", choices=CONTENDERS, help=argparse.SUPPRESS)
    ap.add_argument("--set-dir", help=argparse.SUPPRESS)
    ap.add_argument("--working-size", type=int, default=512, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.run_one:
        return args
    if args.photos is None:
        ap.error("--photos is required")
    if not args.photos.is_dir():
        ap.error(f"not a folder: {args.photos}")
    if args.repeat < 1 or (args.limit is not None and args.limit < 1):
        ap.error("--repeat and --limit must be at least 1")
    args.contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = sorted(set(args.contenders) - set(CONTENDERS))
    if unknown:
        ap.error(f"unknown contenders: {', '.join(unknown)}")
    if args.make_large:
        args.upscale_to = sorted(set(args.upscale_to or []) | {3.0, 12.0})
    if args.upscale_to and min(args.upscale_to) <= 0:
        ap.error("--upscale-to takes positive megapixel counts")
    if args.grain < 0:
        ap.error("--grain must not be negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run_one:
        return child_main(args)
    from pixdedup import __version__
    from pixdedup.config import ScanConfig
    from pixdedup.engines.local import default_workers

    workers = args.workers or default_workers()
    working_size = ScanConfig().working_size
    root = args.photos.resolve()
    sources = list_images(root)[: args.limit]
    if not sources:
        log(f"no images under {root}")
        return 2
    sets: list[tuple[str, list[Path], Path]] = []
    if args.upscale_to:
        for mp in args.upscale_to:
            copies = resized_copies(sources, root, mp, args.grain, args.cache.resolve(), workers)
            grain = f", grain σ={args.grain:g}" if args.grain > 0 else ""
            sets.append((f"{len(copies)} JPEGs at {mp:g} MP (q{UPSCALE_QUALITY}{grain})", copies,
                         copies[0].parent))
            if args.copies:
                extra = edited_copies(copies, copies[0].parent.with_name(
                    copies[0].parent.name + "-copies"), workers)
                sets.append((f"the {len(copies)} JPEGs at {mp:g} MP and {len(extra)} edited copies "
                             f"of every {COPY_EVERY}th", copies + extra, copies[0].parent.parent))
    else:
        sets.append((f"{len(sources)} images from {args.photos}, original sizes", sources, root))
    benches = []
    for label, paths, set_root in sets:
        bench = bench_set(label, paths, set_root, args.contenders, workers, args.repeat, working_size)
        benches.append(bench)
        print(markdown(bench), flush=True)
    if args.json:
        doc = {"pixdedup_version": __version__, "python": platform.python_version(), "cpus": os.cpu_count(),
               "working_size": working_size, "sets": [to_json(b) for b in benches]}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2), encoding="utf-8")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
