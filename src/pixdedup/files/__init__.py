"""Files: the one mechanism that places, moves, links and removes images, on this
machine's file system (``local.LocalFiles``) or in a bucket (``bucket.BucketFiles``).

The scan's output layout (``actions``: ``best/``, ``duplicates/``) and apply / undo
(``apply``) both go through it.  Its rules: a placement or a move never overwrites;
a move never leaves two copies (a hard link then an unlink; across file systems and
in buckets the bytes wait under ``NAME.pixdedup-part`` while the source goes), so a
killed operation can tell from the files how far it got (``settle_part``); names
from the store never leave their base folder or prefix (``safe_join``, ``safe_key``).
"""

from __future__ import annotations

import os
from typing import Protocol

from ..errors import OutputError

PART = ".pixdedup-part"
PLACE_METHODS = ("copy", "hardlink", "symlink")


class Files(Protocol):
    def exists(self, path: str) -> bool: ...

    def hash(self, path: str) -> str | None:
        """The BLAKE3 content hash, None when it cannot be read."""
        ...

    def move(self, src: str, dst: str) -> None:
        """Move; raises ``FileExistsError`` when ``dst`` is taken."""
        ...

    def place(self, src: str, dst: str, method: str) -> None:
        """Put ``src`` at ``dst`` by ``PLACE_METHODS`` (a bucket copies); never overwrites."""
        ...

    def unlink(self, path: str) -> None: ...

    def same(self, a: str, b: str) -> bool:
        """One file under two names (a link to the kept image)."""
        ...

    def linked(self, a: str, b: str) -> bool:
        """Two names of one inode: a move stopped between its link and its unlink."""
        ...

    def finish_part(self, dst: str) -> None:
        """``dst.pixdedup-part`` -> ``dst``."""
        ...


def settle_part(fs: Files, src: str, dst: str, content: str) -> None:
    """A move (``src`` -> ``dst``) killed while its bytes were only in ``dst.part``:
    finish it when the source is gone and the part is whole, else drop the part."""
    part = dst + PART
    if not fs.exists(part):
        return
    if not fs.exists(src) and not fs.exists(dst) and fs.hash(part) == content:
        fs.finish_part(dst)
    else:
        fs.unlink(part)


def _parts(rel_path: str) -> list[str]:
    parts = [p for p in rel_path.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts) or not parts:
        raise OutputError(f"unsafe relative path {rel_path!r}")
    return parts


def safe_join(base: str, rel_path: str) -> str:
    """``base/rel_path``, refusing any path that would leave ``base``."""
    dest = os.path.join(base, *_parts(rel_path))
    if not os.path.realpath(dest).startswith(os.path.realpath(base) + os.sep):
        raise OutputError(f"unsafe relative path {rel_path!r}")
    return dest


def safe_key(prefix: str, rel_path: str) -> str:
    """``prefix + rel_path`` as an object key, refusing names that would leave the
    prefix ('..', empty parts are dropped: 'a//b' -> 'a/b', leading '/' -> relative)."""
    return prefix + "/".join(_parts(rel_path))
