"""Local folders: a streaming recursive walk.

Symlinks to files are read as files; symlinked directories are followed once (a
loop is reported, not followed); broken links, unreadable folders and files with
non-image extensions become listing problems that the report shows.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass

from ..decode import IMAGE_EXTENSIONS
from ..errors import InputError
from ..models import ImageRef


@dataclass(frozen=True, slots=True)
class ListingProblem:
    uri: str
    rel_path: str
    reason: str
    skipped: bool
    """True: not an image (Status Skipped); False: an error (Status Error)."""
    size: int = 0


def check_root(root: str) -> str:
    if not os.path.exists(root):
        raise InputError(f"input folder not found: {root}")
    if not os.path.isdir(root):
        raise InputError(f"input is not a folder: {root}")
    if not os.access(root, os.R_OK | os.X_OK):
        raise InputError(f"input folder cannot be read (permission denied): {root}")
    return os.path.abspath(root)


def list_local(root: str, exclude: tuple[str, ...] = ()) -> Iterator[ImageRef | ListingProblem]:
    """Walk ``root`` depth-first in sorted order, yielding refs and problems."""
    root = check_root(root)
    excluded = {os.path.realpath(p) for p in exclude}
    visited: set[tuple[int, int]] = set()
    st = os.stat(root)
    visited.add((st.st_dev, st.st_ino))
    yield from _walk(root, "", visited, excluded)


def _rel(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _walk(path: str, prefix: str, visited: set[tuple[int, int]], excluded: set[str]
          ) -> Iterator[ImageRef | ListingProblem]:
    try:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
    except PermissionError:
        yield ListingProblem(path, prefix or ".", "permission denied: folder cannot be listed", False)
        return
    except OSError as exc:
        yield ListingProblem(path, prefix or ".", f"folder cannot be listed: {exc.strerror}", False)
        return
    for entry in entries:
        rel = _rel(prefix, entry.name)
        full = entry.path
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
            is_file = entry.is_file(follow_symlinks=True)
        except OSError as exc:
            yield ListingProblem(full, rel, _link_reason(exc), False)
            continue
        if is_dir:
            if os.path.realpath(full) in excluded:
                continue
            try:
                st = os.stat(full)
            except OSError as exc:
                yield ListingProblem(full, rel, _link_reason(exc), False)
                continue
            key = (st.st_dev, st.st_ino)
            if key in visited:
                reason = "symlink loop: folder already visited, not followed"
                yield ListingProblem(full, rel, reason, False)
                continue
            visited.add(key)
            yield from _walk(full, rel, visited, excluded)
        elif is_file:
            ext = os.path.splitext(entry.name)[1].lower()
            try:
                st = entry.stat(follow_symlinks=True)
            except OSError as exc:
                yield ListingProblem(full, rel, _link_reason(exc), False)
                continue
            if ext not in IMAGE_EXTENSIONS:
                reason = f"not an image extension ({ext or 'no extension'})"
                yield ListingProblem(full, rel, reason, True, st.st_size)
                continue
            yield ImageRef(uri=full, rel_path=rel, size=st.st_size, mtime=st.st_mtime)
        else:
            if entry.is_symlink():
                reason = _broken_link_reason(full)
            else:
                reason = "not a regular file"
            yield ListingProblem(full, rel, reason, False)


def _broken_link_reason(path: str) -> str:
    try:
        os.stat(path)
    except OSError as exc:
        return _link_reason(exc)
    return "not a regular file"


def _link_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop: the link cannot be resolved"
    if exc.errno == errno.ENOENT:
        return "broken symlink: target does not exist"
    if exc.errno == errno.EACCES:
        return "permission denied"
    return f"cannot access: {exc.strerror or exc}"
