"""The report / act stage: every stored image, in path order, into the reports
(``image_report.csv``, ``report.json``, ``report.html``) and, unless it is a dry
run, into the output layout (``best/``, ``duplicates/``)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .actions import RemoteOutput
from .config import ScanConfig
from .engines import Engine
from .models import Group, ImageResult, ImageStatus, Problems, RecordStatus, ScanSummary
from .modes import Found, mode_of
from .modes.faces import FaceReport
from .plan import Plan
from .reports import ReportWriter, result_row
from .reports.html import MAX_ERRORS_LISTED, write_html
from .store import FeatureStore, ReportRow
from .view import CollectionView


@dataclass(frozen=True, slots=True)
class _Membership:
    group: Group
    best_path: str
    avg_color: float | None


def write_outputs(store: FeatureStore, view: CollectionView, groups: Sequence[Group],
                  plan: Plan, config: ScanConfig, engine: Engine, summary: ScanSummary,
                  timings: dict[str, float], collect: bool, t_start: float,
                  problems: Problems | None = None, found: Found | None = None
                  ) -> tuple[list[ImageResult], dict[str, str]]:
    """Stream every stored image, in path order, into the reports and the output folder.
    ``found``: the mode's candidates (faces mode reads its faces from it)."""
    t_output = time.perf_counter()
    faces: FaceReport | None = None
    face_at: dict[int, int] = {}  # row id -> position, of the images the face model saw
    if mode_of(config).faces:
        faces = FaceReport.of(view, config, groups, found)
        face_at = {int(view.row_ids[p]): p for p in faces.lookup.scanned}
    member_of: dict[int, tuple[_Membership, int]] = {}  # row id -> (group, position)
    group_docs = []
    paths = view.paths([p for g in groups for p in g.members])
    for g in groups:
        ccs = [ev.color_correlation for ev in g.evidence.values() if ev.color_correlation is not None]
        best_path = paths[g.best]
        m = _Membership(g, best_path, sum(ccs) / len(ccs) if ccs else None)
        for p in g.members:
            member_of[int(view.row_ids[p])] = (m, p)
        group_docs.append({"id": g.id, "best": best_path,
                           "members": [paths[p] for p in g.members],
                           "evidence": {paths[p]: dataclasses.asdict(ev)
                                        for p, ev in g.evidence.items()}})
    summary.groups = len(groups)
    store.set_groups((int(view.row_ids[p]), g.id, p == g.best) for g in groups for p in g.members)
    output = plan.output
    writer = ReportWriter(output.report_dir)
    results: list[ImageResult] = []
    errors: list[tuple[str, str]] = []
    for row in store.report_rows():
        res = _result(row, *member_of.get(row.id, (None, None)))
        if faces is not None and row.id in face_at:
            res = _with_faces(res, faces, face_at[row.id])
        if not config.dry_run and res.status in _FOLDER:
            placed = output.place(row.uri, row.size, _FOLDER[res.status], res.path, config.link)
            res = dataclasses.replace(res, output_path=placed)
        _count(summary, res)
        if res.status is ImageStatus.ERROR and len(errors) < MAX_ERRORS_LISTED:
            errors.append((res.path, res.error or "unreadable"))
        writer.add(result_row(res))
        if collect:
            results.append(res)
    timings["output"] = time.perf_counter() - t_output
    extra: dict[str, Any] = {"problems": problems.as_dict() if problems else {}}
    info: dict[str, Any] = {"mode": config.mode, "input": plan.root, "output": plan.out}
    if faces is not None:
        extra["faces"] = faces.summary(config, len(face_at))
        summary.persons = len(set(faces.person.values()))
        summary.possible_same = len(faces.possible)
        info["faces"] = {**extra["faces"], "persons": summary.persons, "no_face": summary.no_face,
                         "possible_same_person": extra["faces"]["possible_same_person"][:50]}
    t_html = time.perf_counter()
    html = write_html(output.report_dir, store, groups, lambda p: int(view.row_ids[p]), summary,
                      info, errors,
                      workers=config.workers, problems=problems, map_io=engine.map_io,
                      face_of=faces.face_of if faces is not None else None)
    timings["html"] = time.perf_counter() - t_html
    timings["total"] = time.perf_counter() - t_start
    if plan.source is not None or isinstance(output, RemoteOutput):
        cloud = (plan.source or output.bucket).pacer.stats  # type: ignore[union-attr]
        extra["requests"] = cloud.as_dict()
        summary.retries = extra["requests"]["retries"]
        summary.bytes_downloaded = extra["requests"]["bytes_downloaded"]
    extra["engine"] = engine.describe()
    report_paths = writer.close(summary, {**dataclasses.asdict(config), "input": plan.root,
                                          "output": plan.out}, timings, group_docs, extra)
    return results, output.finish({**report_paths, **html})


_FOLDER = {ImageStatus.BEST: "best", ImageStatus.UNIQUE: "best", ImageStatus.NO_FACE: "best",
           ImageStatus.DUPLICATE: "duplicates"}


def _with_faces(res: ImageResult, faces: FaceReport, position: int) -> ImageResult:
    cols = faces.columns(position)
    status = ImageStatus.NO_FACE if res.status is ImageStatus.UNIQUE and faces.no_face(position) \
        else res.status
    return dataclasses.replace(res, status=status, face_count=cols.get("Face Count"),
                               face_box=cols.get("Face Box"),
                               face_distance=cols.get("Face Distance"),
                               person_id=cols.get("Person ID"))


def _result(row: ReportRow, member: _Membership | None, position: int | None) -> ImageResult:
    common: dict[str, Any] = dict(
        uri=row.uri, size=row.size, width=row.width, height=row.height, format=row.format,
        content_hash=row.content_hash, dominant_colors=row.dominant_colors, error=row.error,
        note=row.note)
    if row.status is RecordStatus.ERROR:
        return ImageResult(row.rel_path, ImageStatus.ERROR, None, 0, None, None, None, **common)
    if row.status is RecordStatus.SKIPPED:
        return ImageResult(row.rel_path, ImageStatus.SKIPPED, None, 0, None, None, None, **common)
    if member is None or position is None:
        return ImageResult(row.rel_path, ImageStatus.UNIQUE, None, 1, row.quality_score, None, None,
                           **common)
    g = member.group
    if position == g.best:
        return ImageResult(row.rel_path, ImageStatus.BEST, g.id, g.size, row.quality_score,
                           member.best_path, None, avg_color_correlation=member.avg_color, **common)
    ev = g.evidence.get(position)
    return ImageResult(row.rel_path, ImageStatus.DUPLICATE, g.id, g.size, row.quality_score,
                       member.best_path, ev,
                       avg_color_correlation=ev.color_correlation if ev else None, **common)


def _count(s: ScanSummary, r: ImageResult) -> None:
    s.images += 1
    if r.status is ImageStatus.ERROR:
        s.errors += 1
    elif r.status is ImageStatus.SKIPPED:
        s.skipped += 1
    else:
        s.ok += 1
        if r.status is ImageStatus.DUPLICATE:
            s.duplicates += 1
            s.bytes_freeable += r.size
        elif r.status in (ImageStatus.UNIQUE, ImageStatus.NO_FACE):
            s.unique += 1
        if r.status is ImageStatus.NO_FACE:
            s.no_face += 1
        s.faces += r.face_count or 0
