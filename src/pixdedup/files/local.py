"""Files on this machine's file system."""

from __future__ import annotations

import errno
import os
import shutil

import blake3

from . import PART


def file_hash(path: str) -> str:
    h = blake3.blake3()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def hash_or_none(path: str) -> str | None:
    try:
        return file_hash(path)
    except OSError:
        return None


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move(src: str, dst: str) -> None:
    """Move without ever overwriting ``dst`` and without a moment in which both names
    hold the file as two copies: a hard link then the unlink of ``src`` (the two names
    share one inode meanwhile); across file systems, copy to ``dst.part``, verify,
    fsync, unlink ``src``, rename the part into place (meanwhile only the part exists)."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise
        if exc.errno != errno.EXDEV:  # no hard links here: rename, after a last check
            if os.path.lexists(dst):
                raise FileExistsError(errno.EEXIST, "destination exists", dst) from None
            os.rename(src, dst)
            fsync_dir(os.path.dirname(dst))
            return
        part = dst + PART
        if os.path.lexists(part):
            os.unlink(part)
        shutil.copy2(src, part, follow_symlinks=False)
        if not os.path.islink(part):
            if file_hash(part) != file_hash(src):
                os.unlink(part)
                raise OSError(errno.EIO, "copy does not match the original") from None
            with open(part, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(os.path.dirname(dst))
        os.unlink(src)
        fsync_dir(os.path.dirname(src))
        finish_part(dst)
        return
    fsync_dir(os.path.dirname(dst))
    os.unlink(src)
    fsync_dir(os.path.dirname(src))


def finish_part(dst: str) -> None:
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "destination exists", dst)
    os.rename(dst + PART, dst)
    fsync_dir(os.path.dirname(dst))


def place(src: str, dst: str, method: str) -> None:
    """``src`` at ``dst`` by copy, hard link or symlink (to ``src``'s absolute path),
    made under the part name and renamed into place: never overwrites, and a killed
    placement leaves only a part, never a half-written ``dst``.  A hard link across
    file systems raises ``OSError`` (EXDEV)."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    part = dst + PART
    if os.path.lexists(part):
        os.unlink(part)
    if method == "hardlink":
        os.link(src, part)
    elif method == "symlink":
        os.symlink(os.path.abspath(src), part)
    elif method == "copy":
        shutil.copy2(src, part)
    else:
        raise ValueError(f"unknown placement {method!r}")
    finish_part(dst)


class LocalFiles:
    """The ``Files`` operations on this machine's file system."""

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def hash(self, path: str) -> str | None:
        return hash_or_none(path)

    def move(self, src: str, dst: str) -> None:
        move(src, dst)

    def place(self, src: str, dst: str, method: str) -> None:
        place(src, dst, method)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def same(self, a: str, b: str) -> bool:
        return os.path.realpath(a) == os.path.realpath(b)

    def linked(self, a: str, b: str) -> bool:
        try:
            sa, sb = os.lstat(a), os.lstat(b)
        except OSError:
            return False
        return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)

    def finish_part(self, dst: str) -> None:
        finish_part(dst)
