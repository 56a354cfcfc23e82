"""The local engine: a process pool for decode/feature work and a thread pool for
network I/O, both with bounded in-flight work (memory stays flat however many images
are listed)."""

from __future__ import annotations

import functools
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
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


def bounded(pool: Executor, fn: Callable[[T], R], items: Iterable[T], max_in_flight: int
            ) -> Iterator[R]:
    """``fn`` over ``items`` on ``pool``, results as they finish, with at most
    ``max_in_flight`` submitted and unfinished (memory stays flat however long
    ``items`` is)."""
    pending: set[Future[R]] = set()
    for item in items:
        pending.add(pool.submit(fn, item))
        while len(pending) >= max_in_flight:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        for fut in done:
            yield fut.result()


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def map_unordered(fn: Callable[[T], R], items: Iterable[T], workers: int,
                  chunk: int = CHUNK) -> Iterator[R]:
    """Apply ``fn`` (a picklable top-level function) to ``items`` on ``workers``
    processes; results come back as they finish.  ``workers <= 1`` runs in-process."""
    if workers <= 1:
        for item in items:
            yield fn(item)
        return
    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
        for results in bounded(pool, functools.partial(_run_chunk, fn), _chunks(items, chunk),
                               workers * 4):
            yield from results


def map_threads(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """Like ``map_unordered`` on threads: for I/O (downloads), not for CPU work."""
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="io") as pool:
        yield from bounded(pool, fn, items, 2 * max(1, workers))
