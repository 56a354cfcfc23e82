"""The keeper's re-save test through a scan: a WebP original beats its higher-quality
JPEG and WebP re-saves, the answers are kept in the store, and a failing test is a
counted problem, not a stop."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

import pixdedup
import pixdedup.keeper

from ..conftest import synthetic_photo


def _collection(root: Path) -> Path:
    root.mkdir()
    synthetic_photo(7, (480, 360)).save(root / "original.webp", quality=80)
    with Image.open(root / "original.webp") as im:
        pixels = im.convert("RGB")
    pixels.save(root / "resave.jpg", quality=92)
    pixels.save(root / "resave q90.webp", quality=90)
    synthetic_photo(8, (480, 360)).save(root / "other.jpg", quality=90)
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

    monkeypatch.setattr(pixdedup.keeper, "resaved_from", fails)
    again = pixdedup.scan(str(root), out=out, workers=1, dry_run=True)
    assert _best(again) == ["original.webp"] and again.problems.total("keeper") == 0

    # in a new store the failing test is counted and the scores decide
    fresh = pixdedup.scan(str(root), out=str(tmp_path / "out2"), workers=1, dry_run=True)
    assert fresh.problems.total("keeper") > 0
    assert len(_best(fresh)) == 1 and _best(fresh) != ["original.webp"]
