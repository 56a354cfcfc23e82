"""pixdedup: exact and near-duplicate image finder that keeps the best image of each group.

    >>> import pixdedup
    >>> result = pixdedup.scan("Photos", dry_run=True)      # doctest: +SKIP
    >>> result.summary.groups                                # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from .config import ScanConfig, load_config  # noqa: E402
from .decisions import GroupState, Review  # noqa: E402
from .errors import PixdedupError  # noqa: E402
from .models import (  # noqa: E402
    Evidence,
    Group,
    ImageRecord,
    ImageRef,
    ImageResult,
    ImageStatus,
    ScanResult,
    ScanSummary,
)
from .pipeline import Progress  # noqa: E402
from .pipeline import scan as _scan  # noqa: E402


def scan(input_dir: str, progress: Progress | None = None, **settings: Any) -> ScanResult:
    """Scan ``input_dir`` with ``settings`` (any :class:`ScanConfig` field, e.g.
    ``mode="exact"``, ``out=...``, ``dry_run=True``); returns a :class:`ScanResult`."""
    return _scan(input_dir, load_config(settings, env={}), progress)


class Deduplicator:
    """Reusable configuration: ``Deduplicator(mode="near").scan(path)``."""

    def __init__(self, **settings: Any) -> None:
        self.config = load_config(settings, env={})

    def scan(self, input_dir: str, out: str | None = None,
             progress: Progress | None = None) -> ScanResult:
        import dataclasses

        config = dataclasses.replace(self.config, out=out) if out else self.config
        return _scan(input_dir, config, progress)


__all__ = [
    "Deduplicator", "Evidence", "Group", "GroupState", "ImageRecord", "ImageRef", "ImageResult",
    "ImageStatus", "PixdedupError", "Review", "ScanConfig", "ScanResult",
    "ScanSummary", "__version__", "load_config", "scan",
]
