"""The act stage: lay out the output folder.  Nothing in the input is changed.

    OUT/best/<relative path>        kept image of every group + every unique image
    OUT/duplicates/<relative path>  every other member of a duplicate group

Files are copied (default), hard-linked or symlinked.  An existing output folder that
pixdedup wrote (it holds the marker file) is replaced cleanly; any other non-empty
folder is refused.
"""

from __future__ import annotations

import os
import shutil

from .errors import OutputError

MARKER = ".pixdedup-output"
MANAGED = ("best", "duplicates", "image_report.csv", "report.json", MARKER)


def check_output(out_dir: str, input_dir: str | None) -> None:
    """Refuse an unusable output folder; changes nothing."""
    out = os.path.realpath(out_dir)
    if input_dir is not None:
        inp = os.path.realpath(input_dir)
        if out == inp or out.startswith(inp + os.sep):
            raise OutputError(f"output folder {out_dir} is inside the input folder {input_dir}; "
                              "choose another --out")
        if inp.startswith(out + os.sep):
            raise OutputError(f"the input folder {input_dir} is inside the output folder {out_dir}")
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputError(f"output path exists and is not a folder: {out_dir}")
    if os.path.isdir(out) and os.listdir(out) and not os.path.exists(os.path.join(out, MARKER)):
        raise OutputError(f"output folder {out_dir} exists, is not empty and was not written "
                          "by pixdedup; refusing to touch it (choose another --out)")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {out_dir}: {exc.strerror}") from None


def clear_output(out_dir: str) -> None:
    """Remove what an earlier run wrote (the feature store stays) and mark the folder."""
    out = os.path.realpath(out_dir)
    for name in MANAGED:
        path = os.path.join(out, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
    try:
        with open(os.path.join(out, MARKER), "w", encoding="utf-8") as fh:
            fh.write("This folder was written by pixdedup and is replaced by its next run.\n")
    except OSError as exc:
        raise OutputError(f"cannot create output folder {out_dir}: {exc.strerror}") from None


def safe_join(base: str, rel_path: str) -> str:
    """``base/rel_path``, refusing any path that would leave ``base``."""
    parts = [p for p in rel_path.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts) or not parts:
        raise OutputError(f"unsafe relative path {rel_path!r}")
    dest = os.path.join(base, *parts)
    if not os.path.realpath(dest).startswith(os.path.realpath(base) + os.sep):
        raise OutputError(f"unsafe relative path {rel_path!r}")
    return dest


def place(src: str, dest: str, link: str) -> None:
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if link == "hard":
        try:
            os.link(src, dest)
            return
        except OSError as exc:
            raise OutputError(f"cannot hard-link {src} into the output ({exc.strerror}); "
                              "input and output must be on one file system, or use --link copy"
                              ) from None
    if link == "sym":
        os.symlink(os.path.abspath(src), dest)
        return
    shutil.copy2(src, dest)
