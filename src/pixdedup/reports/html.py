"""report.html: every duplicate group as a row of thumbnails, one self-contained page.

    OUT/report.html                     the page: styles, script and the summary inline
    OUT/report_files/page-00001.js      50 groups each, thumbnails inline (data URIs)

The page opens from the file system with no server and no network: it loads only the
page file it shows (a classic ``<script>``, which browsers allow from ``file://``), so a
report of 100,000 groups opens as fast as one of ten.  Thumbnails are made from the
thumbnail the scan stored from its single decode (a 1/2 DCT-scaled re-encode, about
5 KB each); only group members get one, and each is made once: the feature store
keeps them, by content, for the next run.  Every name reaches the page as JSON and is
put in the document with ``textContent``, so a file called ``<script>`` is just text.

``pixdedup review`` serves the same files with controls switched on (see review.py).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from importlib import resources
from typing import Any

from PIL import Image

from ..models import Evidence, Group, Problems, ScanSummary
from ..store import FeatureStore, ReportRow, content_key

MapIO = Callable[[Callable[[Any], Any], Iterable[Any], int], Iterable[Any]]
"""``Engine.map_io``: fn over items, that many at a time, results in any order."""

PAGE_SIZE = 50
"""Groups per page file."""
THUMB_SIZE = 160
THUMB_QUALITY = 70
THUMB_KIND = f"{THUMB_SIZE}px q{THUMB_QUALITY}"
"""The settings the stored page thumbnails were made with (``FeatureStore.page_thumbs``)."""
MAX_ERRORS_LISTED = 1000
HTML_NAME = "report.html"
FILES_DIR = "report_files"


def page_file(n: int) -> str:
    return f"page-{n:05d}.js"


def to_json(value: Any) -> str:
    """JSON that is safe inside ``<script>`` (no ``</script>``, no HTML comment)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def small_thumbnail(jpeg: bytes | None) -> str | None:
    """A data URI of a THUMB_SIZE JPEG made from the stored scan thumbnail."""
    if not jpeg:
        return None
    try:
        with Image.open(io.BytesIO(jpeg)) as src:
            src.draft("RGB", (THUMB_SIZE, THUMB_SIZE))
            im = src.convert("RGB")
        im.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=THUMB_QUALITY, optimize=True)
    except Exception:  # noqa: BLE001 - a member without a picture, counted by write_html
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _evidence(ev: Evidence | None) -> dict[str, Any] | None:
    if ev is None:
        return None
    return {k: v for k, v in asdict(ev).items() if v is not None}


def template() -> str:
    return resources.files(__package__).joinpath("report.html").read_text(encoding="utf-8")


def write_html(report_dir: str, store: FeatureStore, groups: Sequence[Group],
               row_id_of: Callable[[int], int], summary: ScanSummary,
               info: Mapping[str, Any], errors: Sequence[tuple[str, str]],
               workers: int = 1, problems: Problems | None = None,
               map_io: MapIO | None = None,
               face_of: Callable[[Group, int], dict[str, Any] | None] | None = None
               ) -> dict[str, str]:
    """Write report.html and its page files; ``row_id_of`` maps a group member (a view
    position) to its store row id.  Thumbnails are re-encoded ``workers`` at a time on
    ``map_io`` (the engine's I/O workers: Pillow releases the GIL while it decodes and
    encodes; None: in this thread); a stored thumbnail that cannot be re-encoded leaves
    its member without a picture (counted in ``problems``).  ``face_of(group, member)``
    (faces mode): the member's face, ``{"box": [x0, y0, x1, y1] as fractions of the
    frame, "distance": to the best's face}``, shown as a crop beside the thumbnail."""
    files = os.path.join(report_dir, FILES_DIR)
    shutil.rmtree(files, ignore_errors=True)
    os.makedirs(files)
    pages = max(1, -(-len(groups) // PAGE_SIZE))
    for n in range(pages):
        chunk = groups[n * PAGE_SIZE:(n + 1) * PAGE_SIZE]
        ids = [row_id_of(p) for g in chunk for p in g.members]
        rows = store.report_rows_for(ids)
        keys = {i: content_key(rows[i][0].content_hash or "") for i in ids
                if rows[i][0].content_hash}
        known = store.page_thumbs(THUMB_KIND, keys.values())
        todo = [i for i in ids if keys.get(i) not in known]
        items = [(i, rows[i][1]) for i in todo]
        made = dict(map_io(_keyed_thumbnail, items, workers) if map_io and workers > 1
                    else map(_keyed_thumbnail, items))
        store.put_page_thumbs(THUMB_KIND, {(keys[i], t) for i, t in made.items()
                                           if t is not None and i in keys})
        thumbs = {i: made[i] if i in made else known[keys[i]] for i in ids}
        failed = sum(1 for i in ids if rows[i][1] and thumbs[i] is None)
        if failed and problems is not None:
            problems.add("thumbnail", "stored thumbnail could not be re-encoded", failed)
        doc = [_group_doc(g, rows, thumbs, row_id_of, face_of) for g in chunk]
        with open(os.path.join(files, page_file(n + 1)), "w", encoding="utf-8") as fh:
            fh.write(f"window.PIXDEDUP_PAGE({n + 1},{to_json(doc)});\n")
    index = {
        "tool": "pixdedup", "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        **info,
        "summary": {k: getattr(summary, k) for k in (
            "images", "ok", "groups", "duplicates", "unique", "errors", "skipped",
            "bytes_freeable")},
        "pages": pages, "page_size": PAGE_SIZE, "files": FILES_DIR,
        "errors": [{"path": p, "error": e} for p, e in errors[:MAX_ERRORS_LISTED]],
        "errors_more": max(0, summary.errors - min(len(errors), MAX_ERRORS_LISTED)),
    }
    html = template().replace("/*PIXDEDUP_INDEX*/{}", to_json(index))
    path = os.path.join(report_dir, HTML_NAME)
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        fh.write(html)
    os.replace(path + ".tmp", path)
    return {"html": path}


def _keyed_thumbnail(item: tuple[int, bytes | None]) -> tuple[int, str | None]:
    return item[0], small_thumbnail(item[1])


def _group_doc(g: Group, rows: Mapping[int, tuple[ReportRow, bytes | None]],
               thumbs: Mapping[int, str | None], row_id_of: Callable[[int], int],
               face_of: Callable[[Group, int], dict[str, Any] | None] | None = None
               ) -> dict[str, Any]:
    members: list[dict[str, Any]] = []
    for p in g.members:
        row = rows[row_id_of(p)][0]
        members.append({
            "path": row.rel_path, "uri": row.uri, "hash": row.content_hash,
            "status": "best" if p == g.best else "duplicate",
            "quality": None if row.quality_score is None else round(row.quality_score, 1),
            "bytes": row.size, "width": row.width, "height": row.height, "format": row.format,
            "evidence": _evidence(g.evidence.get(p)), "thumb": thumbs[row_id_of(p)],
            "face": face_of(g, p) if face_of else None})
    freeable = sum(m["bytes"] for m in members if m["status"] == "duplicate")
    return {"id": g.id, "size": g.size, "freeable": freeable, "members": members}
