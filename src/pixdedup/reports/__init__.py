"""Reports: image_report.csv (the seed's columns plus the evidence) and report.json."""

from .writers import CSV_COLUMNS, result_row, write_csv, write_json

__all__ = ["CSV_COLUMNS", "result_row", "write_csv", "write_json"]
