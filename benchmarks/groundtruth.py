"""Shared by the accuracy benchmarks: a collection with known duplicate families
(edited copies of some photos, the other photos as unedited distractors) and the
pairwise scoring of a scan's groups against it."""

from __future__ import annotations

import csv
import itertools
import os
import random
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pixdedup
from pixdedup.samples import build_collection


@dataclass
class Collection:
    root: Path
    truth: dict[str, dict[str, str]]
    """file -> {file, original, edit, strength}; distractors are their own original."""
    originals: int
    distractors: int


@dataclass
class Score:
    precision: float
    recall: float
    predicted_pairs: int
    per_kind: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    """(edit, strength) -> (copies grouped with their original, copies)."""
    false_pairs: set[tuple[str, str]] = field(default_factory=set)


ORIGINAL_FORMATS = (("WEBP", {"quality": 80}, ".webp"), ("WEBP", {"quality": 80}, ".webp"),
                    ("HEIF", {"quality": 80}, ".heic"), ("PNG", {}, ".png"), None)
"""--formats: the originals, in turn (None: the photo as it is)."""
EDIT_FORMATS = (("JPEG", {"quality": 92}, ".jpg"), ("PNG", {}, ".png"),
                ("WEBP", {"quality": 90}, ".webp"), ("JPEG", {"quality": 85}, ".jpg"),
                ("WEBP", {"lossless": True}, ".webp"))
"""--formats: the edited copies, in turn (lossless ones included)."""
SAME_TIME = 1_600_000_000
"""--formats: every file's modification time (the keeper cannot tell by age)."""


def _convert(photos: list[Path], dest: Path) -> list[Path]:
    """Each photo saved in its turn of ORIGINAL_FORMATS (the file that is the original)."""
    from PIL import Image, ImageOps

    from pixdedup.decode import register_heif

    register_heif()
    dest.mkdir(parents=True)
    out = []
    for k, p in enumerate(photos):
        chosen = ORIGINAL_FORMATS[k % len(ORIGINAL_FORMATS)]
        if chosen is None:
            target = dest / p.name
            shutil.copyfile(p, target)
        else:
            fmt, options, suffix = chosen
            target = dest / (p.stem + suffix)
            with Image.open(p) as im:
                ImageOps.exif_transpose(im).convert("RGB").save(target, fmt, **options)
        out.append(target)
    return out


def build(photos: Path, work: Path, originals: int, seed: int,
          kinds: tuple[str, ...] | None = None, formats: bool = False) -> Collection:
    """The first ``originals`` photos (seeded shuffle) get every edit of ``kinds``; the
    rest are copied unedited into ``distractors/``.  ``formats``: the originals come
    as lossy WebP, HEIC, PNG and as they are, the edits are saved as JPEG, PNG and
    lossy and lossless WebP, and every file has the same modification time."""
    files = sorted(p for p in photos.iterdir() if p.is_file())
    random.Random(seed).shuffle(files)
    edited, distractors = files[:originals], files[originals:]
    root = work / "collection"
    shutil.rmtree(work, ignore_errors=True)
    save_as = None
    if formats:
        edited = _convert(edited, work / "sources")

        def save_as(i: int, kind: str, level: float) -> tuple[str, dict[str, object], str]:
            return EDIT_FORMATS[(i + sum(map(ord, f"{kind}{level}"))) % len(EDIT_FORMATS)]
    build_collection(edited, root, kinds, save_as=save_as)
    (root / "distractors").mkdir()
    for p in distractors:
        shutil.copy2(p, root / "distractors" / p.name)
    if formats:
        for f in root.rglob("*"):
            if f.is_file():
                os.utime(f, (SAME_TIME, SAME_TIME))
    with open(root / "truth.csv", newline="", encoding="utf-8") as fh:
        truth = {r["file"]: r for r in csv.DictReader(fh)}
    for p in distractors:
        rel = f"distractors/{p.name}"
        truth[rel] = {"file": rel, "original": rel, "edit": "distractor", "strength": ""}
    return Collection(root, truth, len(edited), len(distractors))


def score(result: pixdedup.ScanResult, truth: dict[str, dict[str, str]]) -> Score:
    """Pairwise precision and recall of the scan's groups, and recall per edit kind."""
    group_of = {r.path: r.group_id for r in result.results if r.group_id is not None}
    per_kind: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for f, row in truth.items():
        if row["edit"] in ("original", "distractor"):
            continue
        key = (row["edit"], row["strength"])
        per_kind[key][1] += 1
        g = group_of.get(f)
        if g is not None and g == group_of.get(row["original"]):
            per_kind[key][0] += 1
    members: dict[int, list[str]] = defaultdict(list)
    for path, g in group_of.items():
        members[g].append(path)
    predicted = true_pos = 0
    false_pairs: set[tuple[str, str]] = set()
    for paths in members.values():
        for a, b in itertools.combinations(paths, 2):
            predicted += 1
            if truth[a]["original"] == truth[b]["original"]:
                true_pos += 1
            else:
                x, y = sorted((truth[a]["original"], truth[b]["original"]))
                false_pairs.add((x, y))
    families: dict[str, int] = defaultdict(int)
    for row in truth.values():
        families[row["original"]] += 1
    total_pos = sum(n * (n - 1) // 2 for n in families.values())
    return Score(true_pos / max(1, predicted), true_pos / max(1, total_pos), predicted,
                 {k: (v[0], v[1]) for k, v in per_kind.items()}, false_pairs)
