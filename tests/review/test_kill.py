"""kill -9 during apply, at many points: afterwards every file is in exactly one place
with its bytes, and apply again finishes the job or undo restores the collection."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pixdedup.journal import Journal
from pixdedup.models import ImageStatus

from ..conftest import synthetic_photo
from .conftest import run_cli, scan, tree_hashes

COPIES = 20


def _collection(root: Path) -> None:
    """3 originals with noise (about 1 MB each) and 20 byte copies of each in sub-folders."""
    rng = np.random.default_rng(7)
    for seed in range(3):
        base = np.asarray(synthetic_photo(seed, (1600, 1200)), np.int16)
        noisy = (base + rng.integers(-12, 12, base.shape)).clip(0, 255).astype(np.uint8)
        folder = root / f"set{seed}"
        folder.mkdir(parents=True)
        Image.fromarray(noisy).save(folder / "original.jpg", "JPEG", quality=95)
        for k in range(COPIES):
            shutil.copy2(folder / "original.jpg", folder / f"copy{k:02d}.jpg")


def _start(out: Path, action: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "pixdedup", "apply", str(out), "--action", action],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for_plan(proc: subprocess.Popen[bytes], out: Path, number: int) -> float:
    plan = Journal(str(out), number).plan_path
    while proc.poll() is None and not Path(plan).exists():
        time.sleep(0.001)
    return time.perf_counter()


def test_sigkill_at_random_points(tmp_path: Path) -> None:
    root, out = tmp_path / "photos", tmp_path / "out"
    _collection(root)
    result = scan(root, out, dry_run=True)
    before = tree_hashes(root)
    kept = {r.path for r in result.results if r.status is ImageStatus.BEST}
    assert len(kept) == 3 and len(result.groups) == 3
    # a full apply, timed from the moment its plan is on disk to its last operation,
    # sets the kill window
    proc = _start(out, "move")
    t0 = _wait_for_plan(proc, out, 1)
    while not Journal(str(out), 1).complete():
        time.sleep(0.0005)
    window = time.perf_counter() - t0
    assert proc.wait(timeout=120) == 0
    assert run_cli("undo", str(out)).returncode == 0
    assert tree_hashes(root) == before

    rng = random.Random(2026)
    mid_run = 0
    number = 1
    for i in range(12):
        action = "move" if i % 3 else "delete"
        dest = out / ("moved" if action == "move" else "trash")
        number += 1
        proc = _start(out, action)
        _wait_for_plan(proc, out, number)
        time.sleep(rng.uniform(0, window))
        proc.kill()
        proc.wait()
        journal = Journal(str(out), number)
        if Path(journal.plan_path).exists() and not journal.complete():
            done = len(journal.finished())
            mid_run += 0 < done < 3 * COPIES
        # nothing lost, nothing duplicated: each file in exactly one place, bytes intact
        here, there = tree_hashes(root), tree_hashes(dest) if dest.exists() else {}
        assert kept <= set(here)
        assert set(here) | set(there) == set(before)
        # at most the one move in flight shows in both places, as two names of one inode
        both = set(here) & set(there)
        assert len(both) <= 1 and all((root / p).samefile(dest / p) for p in both)
        assert all(h == before[p] for p, h in {**here, **there}.items())
        assert not list(tmp_path.rglob("*.pixdedup-part"))
        if i % 2 == 0 and Path(journal.plan_path).exists() and not journal.complete():
            proc2 = run_cli("apply", str(out), "--action", action)
            assert proc2.returncode == 0, proc2.stdout + proc2.stderr
            assert set(tree_hashes(root)) == kept
            assert tree_hashes(dest) == {p: before[p] for p in before if p not in kept}
        if Path(journal.plan_path).exists():
            proc2 = run_cli("undo", str(out))
            assert proc2.returncode == 0, proc2.stdout + proc2.stderr
        else:  # killed before its plan reached the disk: it changed nothing, took no number
            number -= 1
        assert tree_hashes(root) == before
        assert not dest.exists()
    assert mid_run >= 3, f"only {mid_run} of 12 kills landed in the middle of a run"
