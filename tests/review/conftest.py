"""A small collection with known groups, scanned through the library (the commands
under test run as subprocesses), and helpers to compare folders byte for byte."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import pixdedup
from pixdedup.decisions import Change, Decisions, GroupState, group_states
from pixdedup.models import ImageStatus, ScanResult
from pixdedup.store import FeatureStore

from ..conftest import run_cli as shared_run_cli
from ..conftest import synthetic_photo

SCRIPT_NAME = "<img src=x onerror=alert(1)>.jpg"
"""A copy of photo3 whose name is HTML: the page must show it as text."""


@dataclass
class Collection:
    root: Path
    out: Path
    result: ScanResult

    def group_of(self, rel_path: str) -> int | None:
        return next(r.group_id for r in self.result.results if r.path == rel_path)

    def status(self) -> dict[str, ImageStatus]:
        return {r.path: r.status for r in self.result.results}

    def best_paths(self) -> set[str]:
        return {r.path for r in self.result.results if r.status is ImageStatus.BEST}

    def duplicate_paths(self) -> set[str]:
        return {r.path for r in self.result.results if r.status is ImageStatus.DUPLICATE}

    def store(self) -> FeatureStore:
        return FeatureStore(str(self.out / "pixdedup.db"), lock=False)

    def decisions(self) -> Decisions:
        with self.store() as store:
            return Decisions.load(store)

    def state(self, member: str) -> GroupState:
        """The current state of the group that holds ``member`` (a relative path)."""
        with self.store() as store:
            return next(s for s in group_states(store)
                        if any(m.rel_path == member for m in s.members))

    def decide(self, changes: Callable[..., tuple[list[Change], list[Change]]], group: str,
               *members: str | None) -> GroupState:
        """One review action (``keep_changes``, ``distinct_changes``, ...) on the group
        that holds ``group``; ``members`` by relative path (None: the whole group)."""
        state = self.state(group)
        by_path = {m.rel_path: m for m in state.members}
        with self.store() as store:
            store.change_decisions(*changes(state, *(None if p is None else by_path[p]
                                                     for p in members)))
        return self.state(group)


def make_collection(root: Path) -> None:
    """photo0: original + byte copy in sub/ + half-size + re-encode; photo1: original +
    re-encode + byte copy under the same name in sub/; photo2: unique; photo3: original
    + re-encode + a byte copy with an HTML file name."""
    (root / "sub").mkdir(parents=True)
    for seed in range(4):
        synthetic_photo(seed).save(root / f"photo{seed}.jpg", "JPEG", quality=92)
    p0, p1, p3 = (synthetic_photo(s) for s in (0, 1, 3))
    shutil.copy2(root / "photo0.jpg", root / "sub" / "photo0 copy.jpg")
    p0.resize((320, 240)).save(root / "photo0_small.jpg", "JPEG", quality=85)
    p0.save(root / "photo0_q60.jpg", "JPEG", quality=60)
    p1.save(root / "photo1_q70.jpg", "JPEG", quality=70)
    shutil.copy2(root / "photo1.jpg", root / "sub" / "photo1.jpg")
    p3.save(root / "photo3_q70.jpg", "JPEG", quality=70)
    shutil.copy2(root / "photo3.jpg", root / SCRIPT_NAME)
    old = 1_600_000_000  # originals are the oldest files: they win quality ties
    for seed in range(4):
        os.utime(root / f"photo{seed}.jpg", (old, old))


def scan(root: Path, out: Path, **settings: object) -> ScanResult:
    return pixdedup.scan(str(root), out=str(out), workers=1, **settings)


@pytest.fixture
def collection(tmp_path: Path) -> Collection:
    root = tmp_path / "photos"
    make_collection(root)
    out = tmp_path / "out"
    return Collection(root, out, scan(root, out, dry_run=True))


def tree_hashes(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``folder`` (symlinks followed)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            out[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


run_cli = functools.partial(shared_run_cli, check=False, timeout=300)
"""The review tests read the exit status themselves."""
