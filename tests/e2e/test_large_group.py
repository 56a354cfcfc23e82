"""A crowd of copies of one photo is one group, found in bounded time."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from PIL import Image

import pixdedup
from pixdedup.modes.near import NearMode

from ..conftest import synthetic_photo


def _crowd(root: Path, copies: int) -> Path:
    """A PNG original and ``copies`` JPEG and WebP re-saves of it (a quarter of them at
    3/4 size), at qualities 50 to 95."""
    root.mkdir(parents=True)
    src = synthetic_photo(21, (320, 240))
    src.save(root / "original.png")
    rng = random.Random(3)
    for k in range(copies):
        img = src.resize((240, 180), Image.Resampling.LANCZOS) if k % 4 == 2 else src
        fmt = ("JPEG", "WEBP")[k % 2]
        img.save(root / f"copy_{k:03d}.{fmt.lower()}", fmt, quality=rng.randint(50, 95))
    return root


def _groups(result: pixdedup.ScanResult) -> list[int]:
    return sorted((len(g.members) for g in result.groups), reverse=True)


def test_a_crowd_of_copies_that_the_per_image_cap_splits_is_one_group(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each image keeps its 2 nearest candidate pairs here (8 by default: a crowd of
    hundreds of copies falls apart the same way): the pieces meet through their bests,
    searched alone (``NearMode.best_pairs``), and merge; the original stays the best."""
    root = _crowd(tmp_path / "photos", 60)
    result = pixdedup.scan(str(root), out=str(tmp_path / "out"), dry_run=True, workers=1,
                           max_candidates_per_image=2)
    assert _groups(result) == [61]
    best = [r.path for r in result.results if r.status is pixdedup.ImageStatus.BEST]
    assert best == ["original.png"]

    monkeypatch.setattr(NearMode, "best_pairs", lambda self, view, bests, config: [])
    split = pixdedup.scan(str(root), out=str(tmp_path / "out2"), dry_run=True, workers=1,
                          max_candidates_per_image=2)
    assert len(split.groups) > 1  # the pieces, without it
