"""Saved quality of WebP and HEIC files, and the keeper's derivation evidence."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from pixdedup import selection
from pixdedup.decode import decode, register_heif
from pixdedup.extract import ExtractOptions, extract_bytes
from pixdedup.features.codecs import codec_quality, webp_lossless
from pixdedup.features.provenance import resaved_from
from pixdedup.features.quality import compression_credit
from pixdedup.models import ImageRef
from pixdedup.selection import choose_best, derivation, local_changes, refine_keeper, scores

from ..conftest import synthetic_photo


def _save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    register_heif()
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("quality", [50, 75, 80, 90])
def test_webp_and_heic_say_the_quality_they_were_saved_with(quality):
    img = synthetic_photo(1, (320, 240))
    assert codec_quality("WEBP", _save(img, "WEBP", quality=quality)) == quality
    assert codec_quality("HEIF", _save(img, "HEIF", quality=quality)) == quality
    decoded = decode(_save(img, "WEBP", quality=quality))
    assert decoded.codec_quality == quality and not decoded.lossless


def test_lossless_webp_is_lossless_and_odd_bytes_have_no_quality():
    img = synthetic_photo(2, (200, 150))
    data = _save(img, "WEBP", lossless=True)
    assert webp_lossless(data) and codec_quality("WEBP", data) is None
    assert decode(data).lossless
    assert codec_quality("WEBP", b"RIFF\x10\x00\x00\x00WEBPVP8 \x02\x00\x00\x00\x00\x00") is None
    assert codec_quality("HEIF", b"\x00\x00\x00\x18ftypheic" + b"\x00" * 40) is None
    assert codec_quality("PNG", data) is None


def _records(files: dict[str, bytes]):
    out = []
    for name, data in files.items():
        ref = ImageRef(uri=name, rel_path=name, size=len(data), mtime=1_600_000_000)
        out.append(extract_bytes(ref, data, ExtractOptions()))
    return out


def _on_files(test, records, files, asked=None):
    """``test`` on two files' bytes as a keeper test on positions; each asked pair of
    names is appended to ``asked``."""
    def run(copy: int, source: int) -> bool:
        names = records[copy].ref.rel_path, records[source].ref.rel_path
        if asked is not None:
            asked.append(names)
        return test(files[names[0]], files[names[1]])

    return run


def test_keeper_finds_a_lossy_webp_original_among_its_edited_copies():
    src = synthetic_photo(3, (640, 480))
    original = Image.open(io.BytesIO(_save(src, "WEBP", quality=80))).convert("RGB")
    arr = np.asarray(original).astype(np.float32)
    noisy = np.clip(arr + np.random.default_rng(0).normal(0, 8, arr.shape), 0, 255)
    files = {
        "original.webp": _save(src, "WEBP", quality=80),
        "converted.png": _save(original, "PNG"),
        "noise.png": _save(Image.fromarray(noisy.astype(np.uint8)), "PNG"),
        "blur.png": _save(original.filter(ImageFilter.GaussianBlur(3)), "PNG"),
        "grey.png": _save(ImageOps.grayscale(original), "PNG"),
        "border.jpg": _save(ImageOps.expand(original, 40, (255, 255, 255)), "JPEG", quality=92),
    }
    records = _records(files)
    members = list(range(len(records)))
    marks, deviation = derivation(records, members)
    by_name = {r.ref.rel_path: marks[k] for k, r in enumerate(records)}
    assert by_name["original.webp"] == []
    assert "converted" in by_name["converted.png"]
    assert "noisier" in by_name["noise.png"]
    assert "blurred" in by_name["blur.png"]
    assert "less colour" in by_name["grey.png"]
    assert "border" in by_name["border.jpg"]
    assert deviation[0] < max(deviation.values())
    score = scores(records, members)
    assert score[1] == score[0]  # the lossless conversion scores as the WebP it came from
    assert records[choose_best(records, members)].ref.rel_path == "original.webp"


def test_a_caption_or_watermark_is_a_local_change_a_tone_edit_is_not(monkeypatch):
    src = synthetic_photo(4, (640, 480))
    original = Image.open(io.BytesIO(_save(src, "WEBP", quality=80))).convert("RGB")
    captioned = original.copy()
    ImageDraw.Draw(captioned).rectangle((40, 400, 420, 450), fill=(255, 255, 255))
    marked = original.copy()
    ImageDraw.Draw(marked).text((470, 20), "(c) someone", fill=(250, 250, 250),
                                stroke_width=3, stroke_fill=(0, 0, 0))
    files = {
        "original.webp": _save(src, "WEBP", quality=80),
        "resaved.jpg": _save(original, "JPEG", quality=90),
        "brighter.jpg": _save(original.point(lambda v: min(255, int(v * 1.1) + 5)), "JPEG",
                              quality=90),
        "caption.webp": _save(captioned, "WEBP", quality=90),
        "watermark.png": _save(marked, "PNG"),
    }
    records = _records(files)
    members = list(range(len(records)))
    changed = {records[m].ref.rel_path for m in local_changes(records, members)}
    assert changed == {"caption.webp", "watermark.png"}
    toned = {records[m].ref.rel_path for m in selection.picture_changes(records, members)[1]}
    assert toned == {"brighter.jpg"}  # the whole picture moved: a tone change
    assert local_changes(records, [0, 3]) == set()  # two members: no median to go by
    # all taken as equally good: the mark is what keeps the watermarked copy from
    # being kept
    trio = [0, 2, 4]  # original, brighter, watermark
    assert records[choose_best(records, trio, "quality", 100.0)].ref.rel_path == "original.webp"
    monkeypatch.setattr(selection, "picture_changes", lambda records, members: (set(), set()))
    assert records[choose_best(records, trio, "quality", 100.0)].ref.rel_path == "watermark.png"


def _pixels_of(data: bytes) -> Image.Image:
    register_heif()
    return Image.open(io.BytesIO(data)).convert("RGB")


def _marked(data: bytes, xy: tuple[int, int], text: str = "(c) pixdedup",
            fill: tuple[int, int, int] = (240, 240, 240), size: int = 24) -> Image.Image:
    """``data``'s pixels with ``text`` drawn at ``xy`` (a watermark, a caption)."""
    img = _pixels_of(data)
    ImageDraw.Draw(img).text(xy, text, fill=fill, font=ImageFont.load_default(size=size))
    return img


def test_resave_test_tells_which_file_was_saved_from_which():
    src = synthetic_photo(4, (320, 240))
    original = _save(src, "WEBP", quality=80)
    pixels = _pixels_of(original)
    jpeg = _save(pixels, "JPEG", quality=85)
    webp = _save(pixels, "WEBP", quality=85)
    heic = _save(src, "HEIF", quality=80)
    from_heic = _save(_pixels_of(heic), "JPEG", quality=92)
    toned = _save(Image.eval(pixels, lambda v: min(255, int(v * 1.1))), "JPEG", quality=92)
    assert resaved_from(jpeg, original) and not resaved_from(original, jpeg)
    assert resaved_from(webp, original) and not resaved_from(original, webp)
    assert resaved_from(from_heic, heic) and not resaved_from(heic, from_heic)
    assert not resaved_from(toned, original)  # an edit is not a re-save
    # a caption added before the save hides nothing; a lossless copy with a caption does
    # not make the original a re-save of it (JPEG's own tables nearly reproduce a JPEG)
    jpeg_original = _save(src, "JPEG", quality=80)
    captioned = _pixels_of(jpeg_original)
    ImageDraw.Draw(captioned).text((10, 200), "Summer 2024", fill=(255, 255, 255))
    assert resaved_from(_save(captioned, "JPEG", quality=92), jpeg_original)
    assert not resaved_from(jpeg_original, _save(captioned, "PNG"))
    assert not resaved_from(_save(pixels, "PNG"), original)  # lossless: same pixels
    assert not resaved_from(_save(pixels.resize((160, 120)), "JPEG", quality=90), original)
    # a JPEG saved again at a higher quality: the finer save is the copy
    q70 = _save(src, "JPEG", quality=70)
    q95 = _save(_pixels_of(q70), "JPEG", quality=95)
    assert resaved_from(q95, q70) and not resaved_from(q70, q95)


@pytest.mark.parametrize("too_large", [False, True])
def test_a_heic_made_from_a_jpeg_does_not_make_the_jpeg_its_resave(monkeypatch, too_large):
    """A HEIC saved from a JPEG q93 sits on the JPEG's lattice: saving it with the
    JPEG's tables gives the JPEG back, as a true re-save would, so that proves nothing
    (before, a HEIC too large to save again whole was taken as the source).  A JPEG
    saved from a HEIC original is still found, however large."""
    from pixdedup.features import provenance

    if too_large:  # a 12 MP photo is not saved whole: the same as a small one here
        monkeypatch.setattr(provenance, "MAX_WHOLE_PIXELS", 0)
    for seed in (6, 7):
        src = synthetic_photo(seed, (320, 240)).resize((960, 720), Image.Resampling.BICUBIC)
        jpeg = _save(src, "JPEG", quality=93)
        heic = _save(_pixels_of(jpeg), "HEIF", quality=80)
        heic_original = _save(src, "HEIF", quality=80)
        copy = _save(_pixels_of(heic_original), "JPEG", quality=93)
        with Image.open(io.BytesIO(jpeg)) as im, Image.open(io.BytesIO(copy)) as im_copy:
            tables, copy_tables = im.quantization, im_copy.quantization
        assert provenance.on_lattice(np.asarray(_pixels_of(jpeg)), np.asarray(_pixels_of(heic)),
                                     tables)
        assert not provenance.on_lattice(np.asarray(_pixels_of(copy)),
                                         np.asarray(_pixels_of(heic_original)), copy_tables)
        assert not resaved_from(jpeg, heic)
        assert resaved_from(copy, heic_original)


def test_keeper_on_pixels_keeps_the_webp_original_over_its_higher_quality_resaves():
    src = synthetic_photo(5, (320, 240))
    original = _save(src, "WEBP", quality=80)
    pixels = _pixels_of(original)
    files = {"original.webp": original,
             "resave.jpg": _save(pixels, "JPEG", quality=90),
             "resave.webp": _save(pixels, "WEBP", quality=90)}
    records = _records(files)
    members = [0, 1, 2]
    first = choose_best(records, members)
    assert records[first].ref.rel_path != "original.webp"  # the scores alone are fooled
    test = _on_files(resaved_from, records, files)
    best, resaved = refine_keeper(records, members, first, test)
    assert records[best].ref.rel_path == "original.webp"
    assert set(resaved) == {1, 2} and set(resaved.values()) == {0}
    assert refine_keeper(records, members, best, test)[0] == best  # the original stays


def test_edited_copies_that_score_higher_do_not_set_the_bar_for_the_original():
    # a lossy WebP q55 original: its blurred and cropped copies saved losslessly score
    # more than the tolerance above it, and are each marked as made from another
    src = synthetic_photo(6, (640, 480))
    original = _save(src, "WEBP", quality=55)
    pixels = _pixels_of(original)
    files = {"original.webp": original,
             "blur.png": _save(pixels.filter(ImageFilter.GaussianBlur(1.2)), "PNG"),
             "crop.png": _save(pixels.crop((20, 15, 620, 465)), "PNG"),
             "small.jpg": _save(pixels.resize((480, 360)), "JPEG", quality=90)}
    records = _records(files)
    members = list(range(len(records)))
    score = scores(records, members)
    marks, _ = derivation(records, members)
    assert marks == {0: [], 1: ["blurred"], 2: ["smaller"], 3: ["smaller"]}
    assert max(score.values()) > score[0] + selection.DEFAULT_QUALITY_TOLERANCE
    assert records[choose_best(records, members)].ref.rel_path == "original.webp"


def test_a_lossless_copy_of_a_jpeg_is_a_conversion_a_lossless_original_is_not():
    # large enough that the JPEG is decoded at a reduced size: its measures are not
    # the PNG's, the JPEG lattice of the PNG's pixels tells the conversion
    src = synthetic_photo(5, (1600, 1200))
    jpeg = _save(src, "JPEG", quality=50)
    records = _records({"original.jpg": jpeg, "converted.png": _save(_pixels_of(jpeg), "PNG")})
    assert records[1].quality.jpeg_quality == 50 and records[1].quality.lossless_file
    marks, _ = derivation(records, [0, 1])
    assert marks == {0: [], 1: ["converted"]}
    score = scores(records, [0, 1])
    assert score[1] <= score[0]
    assert records[choose_best(records, [0, 1])].ref.rel_path == "original.jpg"
    # a PNG original holding a JPEG q90's pixels, and its copies saved as JPEG q92:
    # the copies are not its source
    png = _save(_pixels_of(_save(src, "JPEG", quality=90)), "PNG")
    records = _records({"original.png": png,
                        "copy.jpg": _save(_pixels_of(png), "JPEG", quality=92),
                        "brighter.jpg": _save(_pixels_of(png).point(lambda v: min(255, v + 6)),
                                              "JPEG", quality=92)})
    assert records[0].quality.jpeg_quality == 90
    marks, _ = derivation(records, [0, 1, 2])
    assert "converted" not in marks[0]


def test_a_small_lossy_webp_keeps_its_saved_quality_even_when_made_from_a_jpeg():
    # the keeper's re-save test covers it (it tells a WebP saved from a JPEG of the
    # group from the WebP original the JPEGs came from); a HEIC does not
    src = synthetic_photo(7, (640, 480))
    blocky = _pixels_of(_save(src, "JPEG", quality=40))
    webp, heic = _records({"a.webp": _save(blocky, "WEBP", quality=90),
                           "a.heic": _save(blocky, "HEIF", quality=90)})
    assert webp.quality.codec_quality == 90
    assert heic.quality.codec_quality is None


def test_mirrored_and_cropped_copies_do_not_make_the_original_look_locally_changed():
    src = synthetic_photo(5, (640, 480))
    original = Image.open(io.BytesIO(_save(src, "JPEG", quality=92))).convert("RGB")
    files = {
        "original.jpg": _save(src, "JPEG", quality=92),
        "q70.jpg": _save(original, "JPEG", quality=70),
        "mirror.webp": _save(ImageOps.mirror(original), "WEBP", quality=90),
        "crop.png": _save(original.crop((32, 24, 608, 456)), "PNG"),  # same 4:3 frame
    }
    records = _records(files)
    members = list(range(len(records)))
    changed = {records[m].ref.rel_path for m in local_changes(records, members)}
    assert "original.jpg" not in changed and "q70.jpg" not in changed
    assert records[choose_best(records, members)].ref.rel_path == "original.jpg"


def _gamma(img: Image.Image, power: float) -> Image.Image:
    return img.point([round(255 * (i / 255) ** power) for i in range(256)] * 3)


def test_pixels_decoded_from_one_jpeg_carry_its_blocks_whatever_they_were_saved_as():
    from pixdedup.features.provenance import carries_blocks

    src = synthetic_photo(8, (640, 480))
    from_jpeg = _pixels_of(_save(src, "JPEG", quality=45))  # a photo decoded from a JPEG
    png = _save(from_jpeg, "PNG")
    assert carries_blocks(_save(_gamma(from_jpeg, 0.8), "JPEG", quality=92), png)
    assert carries_blocks(_save(ImageEnhance.Contrast(from_jpeg).enhance(0.8), "PNG"), png)
    # a blur or a turn takes the blocks away; another size is another grid
    assert not carries_blocks(_save(from_jpeg.filter(ImageFilter.GaussianBlur(2)), "JPEG",
                                    quality=92), png)
    assert not carries_blocks(_save(from_jpeg.rotate(1, resample=Image.Resampling.BICUBIC),
                                    "JPEG", quality=92), png)
    assert not carries_blocks(_save(from_jpeg.resize((480, 360)), "JPEG", quality=92), png)
    # a WebP's blocks are not a JPEG's: the pixels of a WebP q60 saved as a PNG carry
    # none, and a clean JPEG of them carries nothing of theirs
    from_webp = _save(_pixels_of(_save(src, "WEBP", quality=60)), "PNG")
    assert not carries_blocks(_save(_pixels_of(from_webp), "JPEG", quality=92), from_webp)
    assert not carries_blocks(_save(src, "JPEG", quality=92), png)  # clean: no blocks


def test_a_tone_edit_of_a_photo_made_from_a_jpeg_does_not_win_by_its_save(monkeypatch):
    # the original: a PNG of a JPEG q45's pixels (credited as made from a JPEG); its
    # tone edit and a caption copy saved as JPEG q92 claim more than they carry
    src = synthetic_photo(9, (640, 480))
    from_jpeg = _pixels_of(_save(src, "JPEG", quality=45))
    captioned = from_jpeg.copy()
    ImageDraw.Draw(captioned).text((30, 400), "Summer holidays", fill=(255, 255, 255),
                                   font=ImageFont.load_default(size=34), stroke_width=2,
                                   stroke_fill=(0, 0, 0))
    files = {"original.png": _save(from_jpeg, "PNG"),
             "tone.jpg": _save(_gamma(from_jpeg, 0.8), "JPEG", quality=92),
             "caption.jpg": _save(captioned, "JPEG", quality=92),
             "small.jpg": _save(from_jpeg.resize((480, 360)), "JPEG", quality=90)}
    records = _records(files)
    members = list(range(len(records)))
    assert records[0].quality.lossless_file and not records[0].quality.lossless
    # the gamma edit's tone is off the group's: it is marked, and the original kept
    assert "tone" in selection._marks(records, members, None)[1]
    assert records[choose_best(records, members)].ref.rel_path == "original.png"
    # without that mark (a group too small for a typical picture) the scores alone
    # are fooled, and the block test finds the original
    real = selection.picture_changes
    monkeypatch.setattr(selection, "picture_changes", lambda r, m: (real(r, m)[0], set()))
    first = choose_best(records, members)
    assert records[first].ref.rel_path != "original.png"
    from pixdedup.features.provenance import carries_blocks

    asked: list[tuple[str, str]] = []
    blocks = _on_files(carries_blocks, records, files, asked)
    best, _ = refine_keeper(records, members, first, lambda c, s: False, carries_blocks=blocks)
    assert records[best].ref.rel_path == "original.png"
    # only same-size members that are no JPEG were asked about, as sources
    assert asked and {s for _, s in asked} == {"original.png"}


def test_a_contrast_change_is_flatter_and_added_noise_does_not_set_the_size():
    src = np.asarray(synthetic_photo(10, (640, 480))).copy()
    src[:40] = 128  # a uniform band at the top: counted as a border
    img = Image.fromarray(src)
    noisy = np.clip(src + np.random.default_rng(1).normal(0, 9, src.shape), 0, 255)
    files = {"original.png": _save(img, "PNG"),
             "q85.jpg": _save(img, "JPEG", quality=85),
             "webp.webp": _save(img, "WEBP", quality=90),
             "flat.jpg": _save(ImageEnhance.Contrast(img).enhance(0.8), "JPEG", quality=92),
             "noisy.png": _save(Image.fromarray(noisy.astype(np.uint8)), "PNG")}
    records = _records(files)
    members = list(range(len(records)))
    assert records[4].quality.effective_pixels > records[0].quality.effective_pixels * 1.05
    marks, _ = derivation(records, members)
    assert marks[3] == ["flatter"] and marks[4] == ["noisier"]
    assert marks[0] == marks[1] == marks[2] == []  # not 'smaller' than the noisy copy


def test_a_groups_keeper_tests_run_in_one_task_that_decodes_each_file_once(monkeypatch):
    import dataclasses

    from pixdedup import keeper
    from pixdedup.features import provenance

    src = synthetic_photo(5, (320, 240))
    original = _save(src, "WEBP", quality=80)
    pixels = _pixels_of(original)
    files = {"original.webp": original,
             "resave.jpg": _save(pixels, "JPEG", quality=90),
             "resave.webp": _save(pixels, "WEBP", quality=90),
             "other size.jpg": _save(pixels.resize((160, 120)), "JPEG", quality=90)}
    records = dict(enumerate(_records(files)))
    data = list(files.values())
    members = [0, 1, 2, 3]
    first = choose_best(records, members)
    assert first != 0  # the scores alone are fooled
    task = keeper.GroupTask(0, members, first, records, {}, {},
                            selection.DEFAULT_QUALITY_TOLERANCE)
    asking = keeper.run_group(task)
    # no file yet: it asks for the first test's two, then the other member of their size
    assert asking.best is None and sorted(asking.wanted) == [0, 1, 2]
    assert asking.missing == asking.wanted[:2] and first in asking.missing
    decoded: list[bytes] = []
    real = provenance._pixels

    def counted(blob: bytes):  # noqa: ANN202
        if blob not in provenance._recent:
            decoded.append(blob)
        return real(blob)

    monkeypatch.setattr(provenance, "_pixels", counted)
    provenance._recent.clear()
    done = keeper.run_group(dataclasses.replace(
        task, files={m: data[m] for m in asking.wanted}))
    assert records[done.best].ref.rel_path == "original.webp" and not done.wanted
    pixel_tests = [t for t in done.tested if t[0] != selection.TILT]
    assert len(pixel_tests) > 3 and all(error is None for *_, error in done.tested)
    assert sorted(decoded) == sorted(data[:3])  # each file once, however many tests
    # what it found is known: the same task answers without a file or a test
    known = {(t, c, s): a for t, c, s, a, _ in done.tested}
    again = keeper.run_group(dataclasses.replace(task, known=known))
    assert again.best == done.best and again.tested == []
    # the driver settles such a group itself; one with a test to run goes to a worker
    assert keeper.run_group(dataclasses.replace(task, known=known), testing=False).best \
        == done.best
    assert keeper.run_group(task, testing=False).best is None

    # the driver reads what a task wants and drops what it no longer does; a file read
    # ahead that cannot be read is left out, one the next test needs is a problem
    from pixdedup.models import Problems

    def read(ref):  # noqa: ANN001, ANN202
        if ref.rel_path == "resave.webp":
            raise OSError("gone")
        return files[ref.rel_path]

    carrying = dataclasses.replace(task, files=dict(enumerate(data)))
    problems = Problems()
    wants = dataclasses.replace(asking, wanted=[0, 1], missing=[])
    assert set(keeper._with_files(carrying, {}, wants, read, problems).files) == {0, 1}
    ahead = dataclasses.replace(asking, wanted=[0, 1, 2], missing=[0])
    again = keeper._with_files(task, {}, ahead, read, problems)
    assert set(again.files) == {0, 1} and not again.unreadable and problems.total() == 0
    needed = dataclasses.replace(asking, wanted=[2, 0], missing=[2])
    gone = keeper._with_files(task, {}, needed, read, problems)
    assert gone.unreadable == {2} and problems.total("keeper") == 1


def test_the_keepers_quick_decodes_give_pillows_pixels():
    """JPEGs through OpenCV and HEICs from libheif's buffer: the pixels Pillow gives
    (upright), in every mode and orientation the keeper meets."""
    from pixdedup.decode import decode
    from pixdedup.features.provenance import _rgb

    src = synthetic_photo(9, (330, 210))
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
           b'02/22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/"'
           b' tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    files = []
    for mode in ("RGB", "L", "CMYK"):
        for orientation in (1, 3, 6, 8):
            exif = Image.Exif()
            exif[0x0112] = orientation
            files.append(_save(src.convert(mode), "JPEG", quality=90, exif=exif.tobytes()))
    files += [_save(src, "JPEG", quality=85, progressive=True, subsampling=1),
              _save(src, "JPEG", quality=85, xmp=xmp),  # turned by XMP only
              _save(src, "HEIF", quality=80), _save(src, "WEBP", quality=80)]
    for data in files:
        with Image.open(io.BytesIO(data)) as im:
            expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        pixels, _ = _rgb(data)
        assert pixels.shape == expected.shape and np.array_equal(pixels, expected)
    heic = decode(files[-2], working_size=10_000)  # the scan's decode reads it the same way
    with Image.open(io.BytesIO(files[-2])) as im:
        assert np.array_equal(heic.pixels, np.asarray(im.convert("RGB")))


def test_noise_added_in_an_edit_is_seen_at_full_resolution_and_the_keeper_passes_it_over():
    from pixdedup.features.provenance import noise_level, noisier

    src = synthetic_photo(12, (1600, 1200))  # reduced 3.3x for the working image
    original = _save(src, "WEBP", quality=80)
    pixels = np.asarray(_pixels_of(original)).astype(np.float32)
    noisy = np.clip(pixels + np.random.default_rng(1).normal(0, 6, pixels.shape), 0, 255)
    files = {"original.webp": original,
             "noisy.jpg": _save(Image.fromarray(noisy.astype(np.uint8)), "JPEG", quality=92),
             "resave.jpg": _save(_pixels_of(original), "JPEG", quality=85),
             "tone.jpg": _save(_gamma(_pixels_of(original), 0.9), "JPEG", quality=90)}
    assert noisier(files["noisy.jpg"], files["original.webp"])
    assert not noisier(files["original.webp"], files["noisy.jpg"])
    for other in ("resave.jpg", "tone.jpg"):  # a re-save or a tone edit adds no noise
        assert not noisier(files[other], files["original.webp"])
        assert not noisier(files["original.webp"], files[other])
    assert noise_level(np.asarray(_pixels_of(files["noisy.jpg"]))) > \
        2 * noise_level(np.asarray(_pixels_of(original)))
    # grown from the noisy copy, the keeper tests it against the members scored best
    # and chooses again without it; a best that is not noisier stays
    _keeper_passes_over("noisy.jpg", "noisier", noisier, files)


def _keeper_passes_over(name: str, keyword: str, test, files: dict[str, bytes]) -> None:
    """``refine_keeper`` from ``name``, with only the pixel test ``test`` (its keyword
    argument ``keyword``): ``name`` is asked about first and passed over, and the new
    keeper stays when asked again."""
    records = _records(files)
    members = list(range(len(records)))
    start = [r.ref.rel_path for r in records].index(name)
    asked: list[tuple[str, str]] = []
    on_files = {keyword: _on_files(test, records, files, asked)}
    best, _ = refine_keeper(records, members, start, lambda c, s: False, **on_files)
    assert records[best].ref.rel_path != name and asked[0][0] == name
    again, _ = refine_keeper(records, members, best, lambda c, s: False, **on_files)
    assert again == best


def test_a_lossless_copy_of_a_lossy_photo_with_a_watermark_is_a_conversion():
    from pixdedup.features.provenance import converted_from

    src = synthetic_photo(13, (640, 480))
    original = _save(src, "WEBP", quality=80)
    marked = _marked(original, (520, 20))
    files = {"original.webp": original, "marked.png": _save(marked, "PNG"),
             "resave.jpg": _save(_pixels_of(original), "JPEG", quality=85)}
    assert converted_from(files["marked.png"], files["original.webp"])
    # a lossy save differs in every block: no conversion either way
    assert not converted_from(files["resave.jpg"], files["original.webp"])
    assert not converted_from(files["original.webp"], files["resave.jpg"])
    records = _records(files)
    members = list(range(len(records)))

    from pixdedup.features.provenance import resaved_from

    # the watermark is too faint for the thumbnail's cells: without the test on
    # pixels the lossless copy wins
    resaves = _on_files(resaved_from, records, files)
    alone, _ = refine_keeper(records, members, 1, resaves)
    assert records[alone].ref.rel_path == "marked.png"
    best, _ = refine_keeper(records, members, 1, resaves,
                            converted_from=_on_files(converted_from, records, files))
    assert records[best].ref.rel_path == "original.webp"


def test_a_lossless_copy_of_the_bests_own_pixels_is_not_asked_about_its_blocks():
    # the original is a JPEG of about q72 (flat tables another encoder might use: its
    # PNG copy's lattice is not recognised, so it gets less credit); the PNG carries the
    # JPEG's blocks because it holds the JPEG's own pixels: it is no older source
    from pixdedup.features.provenance import carries_blocks

    src = synthetic_photo(14, (640, 480))
    tables = [[18 + k % 3 for k in range(64)], [24 + k % 3 for k in range(64)]]
    original = _save(src, "JPEG", qtables=tables)
    pixels = _pixels_of(original)
    files = {"original.jpg": original, "copy.png": _save(pixels, "PNG"),
             "small.jpg": _save(pixels.resize((480, 360)), "JPEG", quality=90)}
    records = _records(files)
    members = list(range(len(records)))
    asked: list[tuple[str, str]] = []
    blocks = _on_files(carries_blocks, records, files, asked)

    first = choose_best(records, members)
    assert records[first].ref.rel_path == "original.jpg"
    assert blocks(0, 1)  # it does carry the PNG's blocks (they are its own)
    assert compression_credit(records[1].quality) < compression_credit(records[0].quality) - 0.05
    asked.clear()
    best, _ = refine_keeper(records, members, first, lambda c, s: False, carries_blocks=blocks)
    assert records[best].ref.rel_path == "original.jpg"
    assert "copy.png" not in {source for _, source in asked}  # asked before the fix


def test_a_lossless_edit_with_blocks_of_unknown_quality_caps_no_original():
    # the original: a WebP q90 of a photo decoded from a JPEG q45 (the blocks came
    # with it); its tone edit saved as lossless WebP carries the same blocks, and its
    # credit is only a guess from its bytes: it must not cap the original's
    from pixdedup.features.provenance import carries_blocks

    src = synthetic_photo(8, (640, 480))
    from_jpeg = _pixels_of(_save(src, "JPEG", quality=45))
    original = _save(from_jpeg, "WEBP", quality=90)
    files = {"original.webp": original,
             "tone.webp": _save(_gamma(_pixels_of(original), 0.8), "WEBP", lossless=True),
             "small.jpg": _save(_pixels_of(original).resize((480, 360)), "JPEG", quality=85)}
    records = _records(files)
    members = list(range(len(records)))
    tone = records[1].quality
    assert tone.lossless_file and not tone.lossless and tone.jpeg_quality is None
    assert compression_credit(tone) < compression_credit(records[0].quality) - 0.05
    asked: list[tuple[str, str]] = []
    blocks = _on_files(carries_blocks, records, files, asked)
    assert blocks(0, 1)  # both carry the JPEG's blocks: the test cannot tell who is first
    first = choose_best(records, members)
    assert records[first].ref.rel_path == "original.webp"
    asked.clear()
    best, _ = refine_keeper(records, members, first, lambda c, s: False, carries_blocks=blocks)
    assert records[best].ref.rel_path == "original.webp"
    assert ("original.webp", "tone.webp") not in asked


def test_a_pad_around_a_letterboxed_photo_is_a_border_and_the_photo_keeps_its_size():
    # the original has black letterbox bars; a copy adds a white pad around it: the
    # bars inside the pad are border too, so the copy is 'border' and the original
    # is not 'smaller' than the copy's content
    photo = np.asarray(synthetic_photo(16, (640, 480))).copy()
    photo[:48] = 3
    photo[-48:] = 3
    img = Image.fromarray(photo)
    files = {"original.webp": _save(img, "WEBP", quality=85),
             "copy.jpg": _save(img, "JPEG", quality=90),
             "padded.jpg": _save(ImageOps.expand(img, border=16, fill=(255, 255, 255)), "JPEG",
                                 quality=85)}
    records = _records(files)
    sizes = [r.quality.effective_pixels for r in records]
    assert abs(sizes[2] - sizes[0]) < 0.02 * sizes[0], sizes
    marks, _ = derivation(records, [0, 1, 2])
    assert "border" in marks[2] and marks[0] == marks[1] == []


def test_a_light_blur_is_seen_at_full_resolution_and_the_keeper_passes_it_over():
    from pixdedup.features.provenance import blurrier

    src = np.asarray(synthetic_photo(17, (1600, 1200))).astype(np.float32)  # reduced 3.3x
    grain = np.random.default_rng(3).normal(0, 10, (1200, 1600, 1))  # a photo's fine detail
    photo = Image.fromarray(np.clip(src + grain, 0, 255).astype(np.uint8))
    original = _save(photo.filter(ImageFilter.GaussianBlur(0.6)), "JPEG", quality=80)
    pixels = _pixels_of(original)
    files = {"original.jpg": original,
             # a blur of 1.5 px saved losslessly: sharper-looking at the working size
             # than its measure says, and credited as lossless
             "blurred.png": _save(pixels.filter(ImageFilter.GaussianBlur(1.5)), "PNG"),
             "resave.webp": _save(pixels, "WEBP", quality=90),
             "tone.jpg": _save(_gamma(pixels, 0.9), "JPEG", quality=90),
             "noisy.jpg": _save(Image.fromarray(np.clip(np.asarray(pixels) + np.random.default_rng(
                 2).normal(0, 6, np.asarray(pixels).shape), 0, 255).astype(np.uint8)), "JPEG",
                 quality=90)}
    assert blurrier(files["blurred.png"], files["original.jpg"])
    assert not blurrier(files["original.jpg"], files["blurred.png"])
    for other in ("resave.webp", "tone.jpg", "noisy.jpg"):  # none of these blurs
        assert not blurrier(files[other], files["original.jpg"])
        assert not blurrier(files["original.jpg"], files[other])
    records = _records(files)
    assert "blurred" not in derivation(records, list(range(len(records))))[0][1]  # hidden
    _keeper_passes_over("blurred.png", "blurrier", blurrier, files)


def test_a_coarse_jpeg_original_is_no_resave_of_its_watermarked_copy():
    # a JPEG q40 gives its own pixels back from any close copy saved at its tables, and
    # the JPEG test compares a central crop: the corner watermark is what tells the
    # two pictures apart
    src = synthetic_photo(18, (640, 480))
    original = _save(src, "JPEG", quality=40)
    marked = _marked(original, (470, 20), size=26)
    copy = _save(marked, "WEBP", quality=90)
    assert not resaved_from(original, copy)
    from pixdedup.features import provenance

    a, _ = provenance._pixels(original)
    b, _ = provenance._pixels(copy)
    assert provenance._locally_edited(provenance._block_differences(a, b))
    c, _ = provenance._pixels(_save(_pixels_of(original), "WEBP", quality=90))
    # a save alone changes no block that much
    assert not provenance._locally_edited(provenance._block_differences(a, c))


def test_block_differences_are_the_mean_grey_difference_of_each_whole_block() -> None:
    from pixdedup.features import provenance

    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    b = 255 - a  # differences up to 255 in every channel: no sum may saturate
    blocks = provenance._block_differences(a, b)
    d = np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=2)
    expected = d[:48, :64].reshape(3, 16, 4, 16).mean(axis=(1, 3))  # the partial edges left out
    assert blocks.shape == (3, 4) and np.allclose(blocks, expected, rtol=0, atol=1e-9)
    small = provenance._block_differences(a[:10, :7], b[:10, :7])  # under a block: the whole mean
    assert small.shape == (1, 1) and abs(small[0, 0] - d[:10, :7].mean()) < 1e-9


def test_a_png_holding_a_jpegs_pixels_is_the_source_of_its_jpeg_resave_not_a_conversion():
    # a PNG original made from a JPEG q85 (as many published PNGs are) and a JPEG q85
    # of it: the save gives most blocks back exactly and changes others a little, so
    # the JPEG is the re-save; a plain conversion of a JPEG changes no block at all,
    # and a caption stands out where a save's rounding does not
    from pixdedup.features.provenance import converted_from

    src = synthetic_photo(21, (640, 480))
    png = _save(_pixels_of(_save(src, "JPEG", quality=85)), "PNG")
    resave = _save(_pixels_of(png), "JPEG", quality=85)
    assert resaved_from(resave, png) and not resaved_from(png, resave)
    assert not converted_from(png, resave)
    conversion = _save(_pixels_of(resave), "PNG")  # the JPEG's own pixels
    assert not resaved_from(resave, conversion)  # the same pixels: no direction
    captioned = _marked(resave, (20, 20), "Summer 2024", (255, 255, 255), size=28)
    assert converted_from(_save(captioned, "PNG"), resave)
    # the keeper: the re-save is found, and the PNG is not taken for its conversion
    files = {"original.png": png, "resave.jpg": resave,
             "brighter.jpg": _save(_pixels_of(png).point(lambda v: min(255, v + 8)),
                                   "JPEG", quality=92)}
    records = _records(files)
    members = list(range(len(records)))
    best, resaved = refine_keeper(records, members, 1, _on_files(resaved_from, records, files),
                                  converted_from=_on_files(converted_from, records, files))
    assert resaved == {1: 0} and records[best].ref.rel_path == "original.png"
    assert "converted" not in derivation(records, members, resaved={1: 0})[0][0]
    # a PNG made from the re-save itself is still its conversion
    files["of_resave.png"] = _save(_pixels_of(resave), "PNG")
    records = _records(files)
    marks, _ = derivation(records, [0, 1, 2, 3], resaved={1: 0})
    assert "converted" in marks[3] and "converted" not in marks[0]
    # a JPEG original is no re-save of its PNG copy with a faint mark added: the
    # copy's other blocks are the JPEG's exactly, not a save's rounding
    faint = _marked(resave, (400, 420), "(c) 2024", (205, 205, 205), size=20)
    assert not resaved_from(resave, _save(faint, "PNG"))


def test_a_copy_turned_a_little_is_marked_turned_against_most_members():
    src = synthetic_photo(22, (640, 480))
    original = _save(src, "WEBP", quality=70)
    pixels = _pixels_of(original)
    w, h = pixels.size
    import cv2

    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), 3, 1.0)  # the corners filled in
    turned = Image.fromarray(cv2.warpAffine(np.asarray(pixels), matrix, (w, h),
                                            flags=cv2.INTER_CUBIC,
                                            borderMode=cv2.BORDER_REFLECT))
    files = {"original.webp": original,
             "turned.png": _save(turned, "PNG"),
             "resave.jpg": _save(pixels, "JPEG", quality=80),
             "crop.jpg": _save(pixels.crop((30, 20, w - 30, h - 20)), "JPEG", quality=88),
             "small.jpg": _save(pixels.resize((480, 360)), "JPEG", quality=88)}
    records = _records(files)
    others = [1, 2, 3, 4]
    assert all(selection.turned_against(records, 1, m) for m in (0, 2, 3, 4))
    assert not any(selection.turned_against(records, 0, m) for m in (2, 3, 4))
    assert selection.turned_against(records, 0, 1)  # either way round: most members decide
    assert choose_best(records, [0, *others]) == 1  # lossless, full size: it scores best
    resaves = _on_files(resaved_from, records, files)
    best, _ = refine_keeper(records, [0, *others], 1, resaves)
    assert records[best].ref.rel_path == "original.webp"
    # one member is no majority: a turned copy beside its original alone stays
    assert refine_keeper(records, [0, 1], 1, resaves)[0] == 1


def test_a_lossy_resave_of_a_dark_photo_is_still_tested_though_its_clipping_moved():
    # a WebP q86 of a dark PNG moves pixels off black: a share of the clipped pixels
    # that the test's prefilter must allow, or the re-save is never asked about
    src = synthetic_photo(30, (640, 480))
    dark = Image.eval(src, lambda v: max(0, int(v * 0.6) - 40))
    files = {"original.png": _save(dark, "PNG"),
             "resave.webp": _save(dark, "WEBP", quality=86)}
    records = _records(files)
    png, webp = records[0].quality, records[1].quality
    assert png.clipped_fraction - webp.clipped_fraction > 0.02  # more than the fixed slack
    assert selection._could_be_resave(webp, png)
    assert resaved_from(files["resave.webp"], files["original.png"])


def test_a_plain_lossless_conversion_is_a_conversion():
    """A PNG of a JPEG's decoded pixels, every one: its measures match the JPEG's only
    where both were reduced alike (a large JPEG's come from a DCT-scaled decode), so the
    test on pixels says it."""
    from pixdedup.features.provenance import converted_from

    jpeg = _save(synthetic_photo(14, (640, 480)), "JPEG", quality=85)
    png = _save(_pixels_of(jpeg), "PNG")
    assert converted_from(png, jpeg)
    # a lossy save of those pixels differs by its rounding in many blocks: no conversion
    assert not converted_from(png, _save(_pixels_of(jpeg), "JPEG", quality=95))


def test_a_large_group_asks_at_most_test_candidates_members_per_test():
    """In a group of hundreds of copies of one photo the keeper's tests that look for
    one member (a source, a conversion's source, blocks) ask about the best-scored
    ``TEST_CANDIDATES``, not every member: before, a group of 1,500 copies took 500 s."""
    from collections import Counter

    src = synthetic_photo(15, (160, 120))
    files = {"original.png": _save(src, "PNG")}
    for k in range(40):
        files[f"copy{k:02d}.jpg"] = _save(src, "JPEG", quality=50 + k)
    records = _records(files)
    members = list(range(len(records)))
    asked: Counter[tuple[str, int]] = Counter()

    def counting(name: str):
        def test(copy: int, source: int) -> bool:
            asked[(name, copy)] += 1
            return False
        return test

    refine_keeper(records, members, choose_best(records, members), counting("resave"),
                  carries_blocks=counting("blocks"), noisier=counting("noise"),
                  converted_from=counting("conversion"), blurrier=counting("blur"),
                  turned=lambda copy, source: False)
    assert max(asked.values()) == selection.TEST_CANDIDATES
