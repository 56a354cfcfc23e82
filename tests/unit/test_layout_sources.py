"""The scan's output layout (``actions``) and the local source's listing on their own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pixdedup.actions import LocalOutput, safe_join, safe_key
from pixdedup.errors import InputError, OutputError
from pixdedup.models import ImageRef
from pixdedup.sources.local import ListingProblem, list_local


def test_local_output_places_by_copy_hard_link_or_symlink(tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "a").mkdir(parents=True)
    photo = src / "a" / "p.jpg"
    photo.write_bytes(b"jpeg bytes")
    out = LocalOutput(str(tmp_path / "out"), str(src))
    out.check()
    out.clear()
    assert out.place(str(photo), 10, "best", "a/p.jpg", "copy") == "best/a/p.jpg"
    copied = tmp_path / "out" / "best" / "a" / "p.jpg"
    assert copied.read_bytes() == b"jpeg bytes" and copied.stat().st_ino != photo.stat().st_ino
    out.place(str(photo), 10, "duplicates", "a/p.jpg", "hard")
    assert (tmp_path / "out" / "duplicates" / "a" / "p.jpg").stat().st_ino == photo.stat().st_ino
    out.place(str(photo), 10, "sym", "p.jpg", "sym")
    assert os.readlink(tmp_path / "out" / "sym" / "p.jpg") == str(photo)


def test_output_refuses_to_leave_its_folder(tmp_path: Path) -> None:
    for bad in ("../x.jpg", "a/../../x.jpg", "", "."):
        with pytest.raises(OutputError, match="unsafe relative path"):
            safe_join(str(tmp_path), bad)
        with pytest.raises(OutputError, match="unsafe relative path"):
            safe_key("prefix/", bad)
    assert safe_key("p/", "a//b/./c.jpg") == "p/a/b/c.jpg"
    with pytest.raises(OutputError, match="inside|input"):
        LocalOutput(str(tmp_path / "in" / "out"), str(tmp_path / "in")).check()


def test_local_listing_is_sorted_and_says_why_a_file_is_left_out(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.png").write_bytes(b"x")
    (tmp_path / "a.JPG").write_bytes(b"y")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "broken.jpg").symlink_to(tmp_path / "missing.jpg")
    (tmp_path / "b" / "loop").symlink_to(tmp_path / "b")
    items = list(list_local(str(tmp_path)))
    refs = [i.rel_path for i in items if isinstance(i, ImageRef)]
    problems = {i.rel_path: (i.reason, i.skipped) for i in items if isinstance(i, ListingProblem)}
    assert refs == ["a.JPG", "b/z.png"]
    assert problems == {
        "broken.jpg": ("broken symlink: target does not exist", False),
        "b/loop": ("symlink loop: folder already visited, not followed", False),
        "notes.txt": ("not an image extension (.txt)", True),
    }
    with pytest.raises(InputError, match="input folder not found"):
        list(list_local(str(tmp_path / "nope")))
