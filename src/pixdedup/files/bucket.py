"""Files as objects (``az://`` / ``s3://`` URIs) of one container or bucket."""

from __future__ import annotations

import errno
from typing import Any

import blake3

from . import PART


class BucketFiles:
    """The ``Files`` operations on objects.  A move goes through ``dst.pixdedup-part``:
    copy there, delete the source, copy the part to ``dst``, delete the part, so the
    source and the destination never exist together (a kill leaves the part, which
    apply or undo finishes).  A placement is one server-side copy (an object appears
    whole or not at all), or an upload when the source is a local file."""

    def __init__(self, bucket: Any) -> None:
        self.bucket = bucket
        """A ``sources.cloud.Bucket`` (any object with its methods)."""

    def _key(self, uri: str) -> str:
        return str(self.bucket.key_of(uri))

    def exists(self, uri: str) -> bool:
        return bool(self.bucket.exists(self._key(uri)))

    def hash(self, uri: str) -> str | None:
        data = self.bucket.read_key(self._key(uri))
        return None if data is None else blake3.blake3(data).hexdigest()

    def move(self, src: str, dst: str) -> None:
        if self.exists(dst):
            raise FileExistsError(errno.EEXIST, "destination exists", dst)
        self.bucket.copy(self._key(src), self._key(dst + PART))
        self.bucket.delete([self._key(src)])
        self.finish_part(dst)

    def place(self, src: str, dst: str, method: str = "copy") -> None:
        if method != "copy":
            raise ValueError(f"a bucket has no {method}s: objects are copied")
        if "://" in src:
            self.bucket.copy(self._key(src), self._key(dst))
        else:
            self.bucket.put_file(src, self._key(dst))

    def unlink(self, uri: str) -> None:
        self.bucket.delete([self._key(uri)])

    def same(self, a: str, b: str) -> bool:
        return a == b

    def linked(self, a: str, b: str) -> bool:
        return False

    def finish_part(self, dst: str) -> None:
        if self.exists(dst):
            raise FileExistsError(errno.EEXIST, "destination exists", dst)
        self.bucket.copy(self._key(dst + PART), self._key(dst))
        self.bucket.delete([self._key(dst + PART)])
