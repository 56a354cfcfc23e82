"""The keeper's re-save test through a scan: a WebP original beats its higher-quality
JPEG and WebP re-saves, the answers (and those of the tilt test on the thumbnails) are
kept in the store, and a failing test is a counted problem, not a stop."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

import pixdedup
import pixdedup.keeper

from ..conftest import synthetic_photo


def _collection(root: Path, seed: int = 7) -> Path:
    root.mkdir(parents=True)
    synthetic_photo(seed, (480, 360)).save(root / "original.webp", quality=80)
    with Image.open(root / "original.webp") as im:
        pixels = im.convert("RGB")
    pixels.save(root / "resave.jpg", quality=92)
    pixels.save(root / "resave q90.webp", quality=90)
    synthetic_photo(seed + 1, (480, 360)).save(root / "other.jpg", quality=90)
    for p in root.iterdir():  # one age: only the pixels can tell
        os.utime(p, (1_600_000_000, 1_600_000_000))
    return root


def _best(result: pixdedup.ScanResult) -> list[str]:
    return [r.path for r in result.results if r.status is pixdedup.ImageStatus.BEST]


def test_the_original_beats_its_resaves_and_the_answers_are_remembered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _collection(tmp_path / "photos")
    out = str(tmp_path / "out")
    first = pixdedup.scan(str(root), out=out, workers=1, dry_run=True)
    assert _best(first) == ["original.webp"]
    group = {r.path: r for r in first.results if r.group_id is not None}
    assert sorted(group) == ["original.webp", "resave q90.webp", "resave.jpg"]
    assert all(r.best_path == "original.webp" for p, r in group.items() if p != "original.webp")
    assert all(r.evidence is not None for p, r in group.items() if p != "original.webp")
    assert "keeper" in first.timings and first.problems.total("keeper") == 0

    def fails(copy: bytes, source: bytes) -> bool:
        raise AssertionError("a remembered pair was tested again")

    def tilt_fails(records: object, best: int, other: int) -> bool:
        raise AssertionError("a remembered pair's thumbnails were aligned again")

    monkeypatch.setattr(pixdedup.keeper, "resaved_from", fails)
    monkeypatch.setattr(pixdedup.keeper, "turned_against", tilt_fails)
    again = pixdedup.scan(str(root), out=out, workers=1, dry_run=True)
    assert _best(again) == ["original.webp"] and again.problems.total("keeper") == 0

    # in a new store the failing test is counted and the scores decide
    fresh = pixdedup.scan(str(root), out=str(tmp_path / "out2"), workers=1, dry_run=True)
    assert fresh.problems.total("keeper") > 0
    assert len(_best(fresh)) == 1 and _best(fresh) != ["original.webp"]


def test_the_tests_of_many_groups_run_on_the_workers_with_the_same_keepers(
        tmp_path: Path) -> None:
    """Three groups, each an original with its re-saves: the keeper's tests run on two
    worker processes, several groups' at once, and choose what one process does."""
    for k in range(3):
        root = tmp_path / "photos"
        sub = root / f"set{k}"
        sub.parent.mkdir(exist_ok=True)
        sub.mkdir()
        synthetic_photo(20 + k, (480, 360)).save(sub / "original.webp", quality=80)
        with Image.open(sub / "original.webp") as im:
            pixels = im.convert("RGB")
        pixels.save(sub / "resave.jpg", quality=92)
        pixels.save(sub / "resave q90.webp", quality=90)
        for p in sub.iterdir():
            os.utime(p, (1_600_000_000, 1_600_000_000))
    pooled = pixdedup.scan(str(tmp_path / "photos"), out=str(tmp_path / "out"), workers=2,
                           dry_run=True)
    alone = pixdedup.scan(str(tmp_path / "photos"), out=str(tmp_path / "out1"), workers=1,
                          dry_run=True)
    assert sorted(_best(pooled)) == [f"set{k}/original.webp" for k in range(3)]
    assert _best(alone) == _best(pooled) and pooled.problems.total("keeper") == 0


def test_a_group_whose_keeper_tests_kill_their_worker_keeps_its_scored_best_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two groups: the worker running the first group's tests dies; that group keeps
    the best its scores chose, one problem is counted, the other group's tests run."""
    import pixdedup.keeper as keeper

    calls: list[int] = []

    class Dying:
        workers = 2

        def map(self, fn, items, chunk=1, on_crash=None):  # noqa: ANN001, ANN202
            for item in items:  # the first task's worker dies, the others answer
                calls.append(item.number)
                yield on_crash(item, "the worker died") if len(calls) == 1 else fn(item)

    root = tmp_path / "photos"
    for k in range(2):
        _collection(root / f"set{k}", seed=7 + 2 * k)
    first = pixdedup.scan(str(root), out=str(tmp_path / "out"), workers=1, dry_run=True)
    assert sorted(_best(first)) == ["set0/original.webp", "set1/original.webp"]
    from pixdedup.config import ScanConfig
    from pixdedup.models import Group, Problems
    from pixdedup.selection import choose_best
    from pixdedup.store import FeatureStore
    from pixdedup.view import CollectionView

    view = CollectionView(FeatureStore(str(tmp_path / "out" / "pixdedup.db"), lock=False))
    # the groups as grown, each best as its scores chose (a re-save of the original)
    scored = []
    for g in first.groups:  # positions in the store's view
        b = choose_best(view.fetch(g.members), list(g.members))
        evidence = dict(g.evidence)
        evidence[g.best] = evidence.pop(b)
        scored.append(Group(id=g.id, best=b, members=[b, *(m for m in g.members if m != b)],
                            evidence=evidence))
    assert not any(view[g.best].ref.rel_path.endswith("original.webp") for g in scored)
    monkeypatch.setattr(view.store, "provenance_among", lambda *a: {})  # every test runs again
    monkeypatch.setattr(view.store, "put_provenance", lambda *a: None)
    problems = Problems()
    refined = keeper.refine_groups(scored, view, ScanConfig(), lambda ref: Path(
        ref.uri).read_bytes(), problems, pool=Dying())
    assert calls[0] == 0 and problems.total("keeper") == 1
    assert len(refined) == len(scored) == 2
    dead, alive = refined
    assert dead.best == scored[0].best and set(dead.members) == set(scored[0].members)
    assert view[alive.best].ref.rel_path.endswith("original.webp")
    assert set(alive.members) == set(scored[1].members)


def test_the_keeper_does_not_depend_on_the_best_the_grouping_left(tmp_path: Path) -> None:
    """A group's tests start from the quality rule's choice among its final members:
    whichever member the grouping left as best (merges and adoptions add members after
    it chose; a rescan can grow the group on another path), the keeper is the same.
    Before, a best with no member of its size (a half-size copy) stayed the keeper."""
    from pixdedup.config import ScanConfig
    from pixdedup.models import Group, Problems
    from pixdedup.store import FeatureStore
    from pixdedup.view import CollectionView

    root = _collection(tmp_path / "photos", seed=9)
    with Image.open(root / "original.webp") as im:
        im.convert("RGB").resize((240, 180)).save(root / "half.jpg", quality=90)
    os.utime(root / "half.jpg", (1_600_000_000, 1_600_000_000))
    first = pixdedup.scan(str(root), out=str(tmp_path / "out"), workers=1, dry_run=True)
    assert _best(first) == ["original.webp"]
    (group,) = first.groups
    view = CollectionView(FeatureStore(str(tmp_path / "out" / "pixdedup.db"), lock=False))
    assert sorted(view[m].ref.rel_path for m in group.members) == [
        "half.jpg", "original.webp", "resave q90.webp", "resave.jpg"]
    kept = []
    for start in group.members:
        evidence = dict(group.evidence)
        if start != group.best:
            evidence[group.best] = evidence.pop(start)
        left = Group(id=group.id, best=start,
                     members=[start, *(m for m in group.members if m != start)],
                     evidence=evidence)
        (refined,) = pixdedup.keeper.refine_groups(
            [left], view, ScanConfig(), lambda ref: Path(ref.uri).read_bytes(), Problems())
        kept.append(view[refined.best].ref.rel_path)
        assert set(refined.members) == set(group.members)
    assert kept == ["original.webp"] * 4
