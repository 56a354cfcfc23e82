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
    "Similarity", "Embedding Similarity", "Transform", "Best Image", "Width", "Height",
    "Bytes", "Format", "Content Hash", "Output Path", "Error", "Note",
    "Face Count", "Face Box", "Face Distance", "Person ID",
)  # fmt: skip


def _fmt(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if value == value else ""
    return value


def result_row(res: ImageResult) -> dict[str, Any]:
    ev = res.evidence
    return {
        "Image Path": res.path,
        "Quality Score": res.quality_score,
        "Group ID": res.group_id,
        "Group Size": res.group_size,
        "Status": res.status.value,
        "Avg Color Correlation": res.avg_color_correlation,
        "Dominant Colors": res.dominant_colors,
        "Match Stage": ev.stage if ev else None,
        "Hash Distance": ev.hash_distance if ev else None,
        "Similarity": ev.similarity if ev else None,
        "Embedding Similarity": ev.embedding_similarity if ev else None,
        "Transform": ev.transform if ev else None,
        "Best Image": res.best_path,
        "Width": res.width,
        "Height": res.height,
        "Bytes": res.size,
        "Format": res.format,
        "Content Hash": res.content_hash,
        "Output Path": res.output_path,
        "Error": res.error,
        "Note": res.note,
        "Face Count": res.face_count,
        "Face Box": res.face_box,
        "Face Distance": res.face_distance,
        "Person ID": res.person_id,
    }


class ReportWriter:
    """Streams rows into ``image_report.csv`` and the ``images`` list of ``report.json``
    (written to temporary files, renamed into place by ``close``), so a report of
    millions of images never sits in memory."""

    def __init__(self, out_dir: str) -> None:
        self.csv_path = os.path.join(out_dir, "image_report.csv")
        self.json_path = os.path.join(out_dir, "report.json")
        self._csv = open(self.csv_path + ".tmp", "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._writer = csv.DictWriter(self._csv, fieldnames=CSV_COLUMNS)
        self._writer.writeheader()
        self._rows = open(self.json_path + ".rows.tmp", "w", encoding="utf-8")  # noqa: SIM115
        self._first = True

    def add(self, row: Mapping[str, Any]) -> None:
        self._writer.writerow({k: _fmt(row.get(k)) for k in CSV_COLUMNS})
        self._rows.write(("" if self._first else ",\n") + json.dumps(dict(row), ensure_ascii=False))
        self._first = False

    def close(self, summary: ScanSummary, config: Mapping[str, Any], timings: Mapping[str, float],
              groups: Sequence[Mapping[str, Any]], extra: Mapping[str, Any] | None = None
              ) -> dict[str, str]:
        self._csv.close()
        os.replace(self.csv_path + ".tmp", self.csv_path)
        self._rows.close()
        head = {
            "tool": "pixdedup",
            "summary": {k: getattr(summary, k) for k in summary.__slots__},
            "config": dict(config),
            "timings_seconds": {k: round(v, 4) for k, v in timings.items()},
            **(extra or {}),
            "groups": list(groups),
        }
        text = json.dumps(head, indent=1, ensure_ascii=False, default=str)
        with open(self.json_path + ".tmp", "w", encoding="utf-8") as fh:
            fh.write(text[:-2] + ',\n "images": [\n')
            with open(self.json_path + ".rows.tmp", encoding="utf-8") as rows:
                while chunk := rows.read(1 << 20):
                    fh.write(chunk)
            fh.write("\n ]\n}\n")
        os.remove(self.json_path + ".rows.tmp")
        os.replace(self.json_path + ".tmp", self.json_path)
        return {"csv": self.csv_path, "json": self.json_path}
