"""Verified pairs remembered across scans (the store's ``verdicts`` table)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence

from .config import ScanConfig
from .ingest import extract_options, extractor_key
from .models import Evidence
from .store import content_key
from .verify import VERIFY_VERSION, VerifyOptions
from .view import CollectionView


def verifier_key(config: ScanConfig, options: VerifyOptions) -> str:
    """Everything a pair's verdict depends on: the verifier's version and settings and
    the extractor (the thumbnails and hashes it compares)."""
    return f"verify/{VERIFY_VERSION} {_settings(options)} {extractor_key(extract_options(config))}"


_KEY_NAMES = {"min_pixel_similarity": "min_similarity",
              "similar_min_pixel_similarity": "similar_min_similarity"}
"""Fields renamed since verdicts were first remembered: the key keeps their old names,
so the verdicts of a store from before the rename stay valid (same settings, same key)."""


def _settings(options: VerifyOptions) -> str:
    fields = ", ".join(f"{_KEY_NAMES.get(f.name, f.name)}={getattr(options, f.name)!r}"
                       for f in dataclasses.fields(options))
    return f"VerifyOptions({fields})"


class VerdictMemory:
    """Near-mode verdicts of earlier scans, by content (``FeatureStore.verdicts``): a
    pair whose two images are unchanged is not verified again.  (Similar mode's
    embedding check, which depends on the model, runs again on a remembered
    rejection: ``verify.decide``.)"""

    FLUSH = 2000

    def __init__(self, view: CollectionView, key: str) -> None:
        self.view = view
        self.store = view.store
        self.key = key
        self._verifier: int | None = None
        self._keys: dict[int, int] = {}
        self._pending: dict[tuple[int, int], tuple[bool, str | None]] = {}
        """The verdicts not yet flushed, by content keys: a pair asked again in one scan
        (a left-out image against a best that refused it, a lead asked twice) is not
        verified twice (the store answers the flushed ones)."""

    @property
    def verifier(self) -> int:
        """Resolved on first use: a scan with no pair to verify (exact mode) leaves
        the stored verdicts of other settings alone."""
        if self._verifier is None:
            self._verifier = self.store.verifier_id(self.key)
        return self._verifier

    def _content(self, positions: Iterable[int]) -> None:
        missing = sorted({p for p in positions if p not in self._keys})
        if missing:
            by_row = self.store.content_hashes(int(self.view.row_ids[p]) for p in missing)
            for p in missing:
                h = by_row.get(int(self.view.row_ids[p]))
                if h:
                    self._keys[p] = content_key(h)

    def split(self, pairs: Sequence[tuple[int, int]]
              ) -> tuple[list[tuple[int, int, bool, Evidence]], list[tuple[int, int]]]:
        """(pairs with a remembered verdict, an earlier scan's or this one's, and that
        verdict; pairs still to verify)."""
        if not pairs:
            return [], []
        self._content(x for p in pairs for x in p)
        keyed = [(p, (self._keys[p[0]], self._keys[p[1]])) for p in pairs
                 if p[0] in self._keys and p[1] in self._keys]
        stored = self.store.verdicts(self.verifier,
                                     [k for _, k in keyed if k not in self._pending])
        known = []
        for p, k in keyed:
            verdict = self._pending.get(k) or stored.get(k)
            if verdict is not None:
                ok, ev = verdict
                known.append((p[0], p[1], ok, _evidence(ev)))
        done = {(i, j) for i, j, _, _ in known}
        return known, [p for p in pairs if p not in done]

    def remember(self, verdicts: Iterable[tuple[int, int, bool, Evidence]]) -> None:
        rows = [(i, j, ok, ev) for i, j, ok, ev in verdicts if ev.error is None]
        self._content(x for i, j, _, _ in rows for x in (i, j))
        for i, j, ok, ev in rows:
            if i in self._keys and j in self._keys:
                self._pending[(self._keys[i], self._keys[j])] = \
                    (ok, json.dumps(dataclasses.asdict(ev)))
        if len(self._pending) >= self.FLUSH:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self.store.put_verdicts(self.verifier, [(a, b, ok, ev) for (a, b), (ok, ev)
                                                    in self._pending.items()])
            self._pending = {}


def _evidence(text: str | None) -> Evidence:
    return Evidence(**json.loads(text)) if text else Evidence(stage="rejected")
