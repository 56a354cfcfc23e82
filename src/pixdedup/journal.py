"""The write-ahead journal of apply / undo: ``OUT/.pixdedup-journal/NNNN.plan.json``
(every operation, on disk before the first one runs: fsync + atomic rename),
``NNNN.log`` (a line per finished operation) and ``NNNN.undo.log``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from .files.local import fsync_dir

JOURNAL_DIR = ".pixdedup-journal"
FSYNC_EVERY = 64
"""Log lines between fsyncs (a kill loses at most these; each operation can tell from
the files whether it ran, so a lost line only means it is checked again)."""


class Journal:
    """OUT/.pixdedup-journal/NNNN.{plan.json,log,undo.log}."""

    def __init__(self, out_dir: str, number: int) -> None:
        self.folder = os.path.join(out_dir, JOURNAL_DIR)
        self.number = number
        base = os.path.join(self.folder, f"{number:04d}")
        self.plan_path, self.log_path, self.undo_path = base + ".plan.json", base + ".log", base + ".undo.log"

    @staticmethod
    def numbers(out_dir: str) -> list[int]:
        folder = os.path.join(out_dir, JOURNAL_DIR)
        if not os.path.isdir(folder):
            return []
        return sorted(int(n[:4]) for n in os.listdir(folder)
                      if n.endswith(".plan.json") and n[:4].isdigit())

    def write_plan(self, plan: dict[str, Any]) -> None:
        os.makedirs(self.folder, exist_ok=True)
        tmp = self.plan_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(plan, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, self.plan_path)
        fsync_dir(self.folder)

    def plan(self) -> dict[str, Any]:
        with open(self.plan_path, encoding="utf-8") as fh:
            doc: dict[str, Any] = json.load(fh)
        return doc

    @staticmethod
    def _lines(path: str) -> Iterator[dict[str, Any]]:
        try:
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        yield json.loads(line)
                    except ValueError:  # the torn last line of a killed run
                        continue
        except FileNotFoundError:
            return

    def finished(self) -> set[int]:
        return {d["k"] for d in self._lines(self.log_path) if "k" in d}

    def complete(self) -> bool:
        return any(d.get("complete") for d in self._lines(self.log_path))

    def undone(self) -> bool:
        return any(d.get("undone") for d in self._lines(self.undo_path))

    def undo_started(self) -> bool:
        return os.path.exists(self.undo_path)


class LogFile:
    """Append-only JSON lines, flushed each line and fsynced every ``FSYNC_EVERY``."""

    def __init__(self, path: str) -> None:
        self.fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self.count = 0

    def write(self, doc: dict[str, Any]) -> None:
        self.fh.write(json.dumps(doc) + "\n")
        self.fh.flush()
        self.count += 1
        if self.count % FSYNC_EVERY == 0:
            os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
