"""Verified pairs are remembered in the feature store: a rerun verifies only the pairs
of new or changed images, and a settings change voids exactly the verdicts it affects."""

from __future__ import annotations

import shutil
from pathlib import Path

import pixdedup

from ..conftest import synthetic_photo


def _collection(root: Path) -> Path:
    root.mkdir()
    for seed in range(4):
        photo = synthetic_photo(seed)
        photo.save(root / f"p{seed}.jpg", quality=92)
        photo.resize((480, 360)).save(root / f"p{seed} small.png")
        photo.crop((20, 16, 620, 466)).save(root / f"p{seed} crop.jpg", quality=85)
    return root


def _groups(result: pixdedup.ScanResult) -> list[list[str]]:
    by_group: dict[int, list[str]] = {}
    for r in result.results:
        if r.group_id is not None:
            by_group.setdefault(r.group_id, []).append(r.path)
    return sorted(sorted(g) for g in by_group.values())


def test_a_rerun_verifies_only_pairs_with_new_images(tmp_path: Path) -> None:
    root = _collection(tmp_path / "photos")
    out = str(tmp_path / "out")
    first = pixdedup.scan(str(root), out=out, workers=1, dry_run=True)
    assert first.summary.pairs_verified > 0 and first.summary.pairs_reused == 0
    assert len(_groups(first)) == 4

    again = pixdedup.scan(str(root), out=out, workers=1, dry_run=True)
    assert again.summary.pairs_verified == 0
    assert again.summary.pairs_reused == first.summary.pairs_verified
    assert _groups(again) == _groups(first)
    assert [(r.path, r.status, r.evidence) for r in again.results] == \
        [(r.path, r.status, r.evidence) for r in first.results]

    synthetic_photo(1).resize((400, 300)).save(root / "p1 smaller.jpg", quality=80)
    added = pixdedup.scan(str(root), out=out, workers=1, dry_run=True)
    assert 0 < added.summary.pairs_verified <= 6  # only pairs with the new image
    assert ["p1 crop.jpg", "p1 small.png", "p1 smaller.jpg", "p1.jpg"] in _groups(added)

    # a renamed file keeps its content: its verdicts still apply
    shutil.move(root / "p2 crop.jpg", root / "p2 cropped.jpg")
    renamed = pixdedup.scan(str(root), out=out, workers=1, dry_run=True)
    assert renamed.summary.pairs_verified == 0

    # another pixel threshold: every verdict is void, the pairs are verified again
    strict = pixdedup.scan(str(root), out=out, workers=1, dry_run=True, min_pixel_similarity=0.99)
    assert strict.summary.pairs_reused == 0
    assert strict.summary.pairs_verified == added.summary.pairs_verified + added.summary.pairs_reused
