"""Reports: image_report.csv (the seed's columns plus the evidence) and report.json."""

from .writers import CSV_COLUMNS, ReportWriter, result_row

__all__ = ["CSV_COLUMNS", "ReportWriter", "result_row"]
