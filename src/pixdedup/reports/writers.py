"""CSV and JSON report writers: one row per input file, errors and skips included."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..models import ImageResult, ScanSummary

CSV_COLUMNS = (
    "Image Path", "Quality Score", "Group ID", "Group Size", "Status",
    "Avg Color Correlation", "Dominant Colors", "Match Stage", "Hash Distance",
    "Similarity", "Best Image", "Width", "Height", "Bytes", "Format", "Content Hash",
    "Output Path", "Error",
)  # fmt: skip


def _fmt(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if value == value else ""
    return value


def result_row(res: ImageResult, avg_color: float | None) -> dict[str, Any]:
    rec = res.record
    ev = res.evidence
    return {
        "Image Path": res.path,
        "Quality Score": rec.quality_score,
        "Group ID": res.group_id,
        "Group Size": res.group_size,
        "Status": res.status.value,
        "Avg Color Correlation": avg_color,
        "Dominant Colors": " ".join(rec.color.dominant_colors) if rec.color else None,
        "Match Stage": ev.stage if ev else None,
        "Hash Distance": ev.hash_distance if ev else None,
        "Similarity": ev.similarity if ev else None,
        "Best Image": res.best_path,
        "Width": rec.width or None,
        "Height": rec.height or None,
        "Bytes": rec.ref.size,
        "Format": rec.format,
        "Content Hash": rec.content_hash,
        "Output Path": res.output_path,
        "Error": rec.error,
    }


def write_csv(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row.get(k)) for k in CSV_COLUMNS})
    os.replace(tmp, path)


def write_json(path: str, rows: Sequence[Mapping[str, Any]], summary: ScanSummary,
               config: Mapping[str, Any], timings: Mapping[str, float],
               groups: Sequence[Mapping[str, Any]]) -> None:
    doc = {
        "tool": "pixdedup",
        "summary": {k: getattr(summary, k) for k in summary.__slots__},
        "config": dict(config),
        "timings_seconds": {k: round(v, 4) for k, v in timings.items()},
        "groups": list(groups),
        "images": [dict(r) for r in rows],
    }
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, ensure_ascii=False, default=str)
    os.replace(tmp, path)
