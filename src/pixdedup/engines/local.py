"""The local engine: a process pool for decode/feature work with bounded in-flight
work (memory stays flat however many images are listed)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

CHUNK = 4


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


def _run_chunk(fn: Callable[[T], R], items: list[T]) -> list[R]:
    return [fn(item) for item in items]


def map_unordered(fn: Callable[[T], R], items: Iterable[T], workers: int,
                  chunk: int = CHUNK) -> Iterator[R]:
    """Apply ``fn`` (a picklable top-level function) to ``items`` on ``workers``
    processes; results come back as they finish.  ``workers <= 1`` runs in-process."""
    if workers <= 1:
        for item in items:
            yield fn(item)
        return
    ctx = multiprocessing.get_context("forkserver")
    max_in_flight = workers * 4
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
        pending: set[Future[list[R]]] = set()
        batch: list[T] = []
        for item in items:
            batch.append(item)
            if len(batch) >= chunk:
                pending.add(pool.submit(_run_chunk, fn, batch))
                batch = []
            while len(pending) >= max_in_flight:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield from fut.result()
        if batch:
            pending.add(pool.submit(_run_chunk, fn, batch))
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield from fut.result()
