"""The act stage: lay out the output folder.  Nothing in the input is changed.

    OUT/best/<relative path>        kept image of every group + every unique image
    OUT/duplicates/<relative path>  every other member of a duplicate group

Files are copied (default), hard-linked or symlinked (``files``: the same mechanism
as apply's).  An existing output folder that
pixdedup wrote (it holds the marker file) is replaced cleanly; any other non-empty
folder is refused.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

from .errors import OutputError
from .files import safe_join, safe_key
from .files.bucket import BucketFiles
from .files.local import LocalFiles

MARKER = ".pixdedup-output"
STAGING = ".pixdedup-staging"
"""A cloud input's downloaded bytes wait here (local output) until they are placed."""
MANAGED = ("best", "duplicates", "image_report.csv", "report.json", "report.html", "report_files",
           STAGING, MARKER)
"""What a scan writes in OUT and replaces on the next run.  The feature store, the apply
journal and the folders apply moves files into (moved/, trash/) are never touched."""


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


LINKS = {"copy": "copy", "hard": "hardlink", "sym": "symlink"}
"""--link values -> ``files.PLACE_METHODS``."""


class LocalOutput:
    """OUT/ on this machine.  A cloud input's images are fetched through ``fetch``
    (which serves the bytes staged during extraction, so nothing is downloaded twice)."""

    def __init__(self, out_dir: str, input_root: str | None,
                 fetch: Callable[[str, int, str], None] | None = None) -> None:
        self.out_dir = out_dir
        self.input_root = input_root
        self.report_dir = out_dir
        self.fetch = fetch
        self.files = LocalFiles()

    def __str__(self) -> str:
        return self.out_dir

    def check(self) -> None:
        check_output(self.out_dir, self.input_root)

    def clear(self) -> None:
        clear_output(self.out_dir)

    def place(self, src_uri: str, size: int, folder: str, rel_path: str, link: str) -> str:
        dest = safe_join(os.path.join(self.out_dir, folder), rel_path)
        if self.fetch is not None:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            self.fetch(src_uri, size, dest)
        else:
            try:
                self.files.place(src_uri, dest, LINKS[link])
            except OSError as exc:
                if link != "hard":
                    raise
                raise OutputError(f"cannot hard-link {src_uri} into the output ({exc.strerror}); "
                                  "input and output must be on one file system, or use --link copy"
                                  ) from None
        return os.path.relpath(dest, self.out_dir).replace(os.sep, "/")

    def finish(self, report_paths: dict[str, str]) -> dict[str, str]:
        return report_paths


class RemoteOutput:
    """``{prefix}best/...``, ``duplicates/...`` and the reports in a bucket: images by
    server-side copy from a cloud input (upload from a local one); the reports are
    written locally in ``report_dir`` and uploaded at the end."""

    def __init__(self, bucket: Any, prefix: str, report_dir: str) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.report_dir = report_dir
        self.files = BucketFiles(bucket)

    def __str__(self) -> str:
        return self.bucket.url.key_url(self.prefix)

    def check(self) -> None:
        if self.bucket.any_under(self.prefix) and not self.bucket.exists(self.prefix + MARKER):
            raise OutputError(f"output {self} is not empty and was not written by pixdedup; "
                              "refusing to touch it (choose another --out)")
        os.makedirs(self.report_dir, exist_ok=True)

    def clear(self) -> None:
        old = [k for k, *_ in self.bucket.keys(self.prefix)
               if k[len(self.prefix):].split("/")[0] in MANAGED and not k.endswith(MARKER)]
        self.bucket.delete(old)
        self.bucket.put_bytes(self.prefix + MARKER, b"written by pixdedup; replaced by its next run\n")

    def place(self, src_uri: str, size: int, folder: str, rel_path: str, link: str) -> str:
        key = safe_key(f"{self.prefix}{folder}/", rel_path)
        self.files.place(src_uri, self.bucket.url.key_url(key), "copy")
        return key[len(self.prefix):]

    def finish(self, report_paths: dict[str, str]) -> dict[str, str]:
        out = {}
        for kind, path in report_paths.items():
            key = self.prefix + os.path.basename(path)
            self.bucket.put_file(path, key)
            out[kind] = self.bucket.url.key_url(key)
        files = os.path.join(self.report_dir, "report_files")  # the HTML report's page files
        if os.path.isdir(files):
            for name in sorted(os.listdir(files)):
                self.bucket.put_file(os.path.join(files, name), f"{self.prefix}report_files/{name}")
        return out
