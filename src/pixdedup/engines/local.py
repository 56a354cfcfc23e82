"""The local engine: a process pool for decode/feature work and a thread pool for
network I/O, both with bounded in-flight work (memory stays flat however many images
are listed).

A worker process that dies (a decoder's segmentation fault on one odd file, the
kernel's out-of-memory killer) breaks the whole pool.  ``map_unordered`` with
``on_crash`` recovers: the items that were in flight run again one at a time in a
pool of one worker, an item that kills that worker too gets ``on_crash(item,
reason)`` as its result, and the rest of the items go on in a new pool."""

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
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ConfigError
from . import ENGINES

if TYPE_CHECKING:
    from ..features.embeddings import Embedder, EmbeddingRunner

T = TypeVar("T")
R = TypeVar("R")

CHUNK = 4


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def init_worker() -> None:
    """Each CPU worker: one OpenCV thread and one OpenMP thread (the engine's processes
    are the parallelism; libfacedetection's OpenMP threads in two workers on two cores
    made its detection 5x slower)."""
    import cv2

    cv2.setNumThreads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # read by an OpenMP library when it loads


def _run_chunk(fn: Callable[[T], R], items: list[T]) -> list[R]:
    return [fn(item) for item in items]


def bounded(pool: Executor, fn: Callable[[T], R], items: Iterable[T], max_in_flight: int,
            lost: list[T] | None = None) -> Iterator[R]:
    """``fn`` over ``items`` on ``pool``, results as they finish, with at most
    ``max_in_flight`` submitted and unfinished (memory stays flat however long
    ``items`` is).  With ``lost``: when the pool breaks (``BrokenProcessPool``), the
    results that did finish are still yielded, the items without one are put in
    ``lost``, and the error is raised."""
    pending: dict[Future[R], T] = {}

    def drain(done: set[Future[R]]) -> Iterator[R]:
        for fut in done:
            item = pending.pop(fut)
            try:
                yield fut.result()
            except BrokenProcessPool:
                if lost is None:
                    raise
                lost.append(item)
                for f, other in list(pending.items()):
                    if f.done() and not f.cancelled() and f.exception() is None:
                        yield f.result()
                    else:
                        lost.append(other)
                pending.clear()
                raise

    for item in items:
        pending[pool.submit(fn, item)] = item
        while len(pending) >= max_in_flight:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            yield from drain(done)
    while pending:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        yield from drain(done)


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


WORKER_PRELOAD = ["__main__", "pixdedup.engines.preload"]
"""What the forkserver imports before it forks workers: ``__main__`` (the default: the
``pixdedup`` command, so pixdedup itself) and ``engines.preload`` (what a worker would
load on its first image).  It applies where this process starts the forkserver."""


def _process_pool(workers: int) -> ProcessPoolExecutor:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(WORKER_PRELOAD)
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=init_worker)


class WorkerPool:
    """A process pool kept across many ``map`` calls (the group stage verifies in
    rounds; starting workers for each round would cost more than small rounds do).
    The processes start on the first ``map`` and again after a crash."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def map(self, fn: Callable[[T], R], items: Iterable[T], chunk: int = CHUNK,
            on_crash: Callable[[T, str], R] | None = None) -> Iterator[R]:
        """Apply ``fn`` (a picklable top-level function) to ``items``; results come
        back as they finish.  ``workers <= 1`` runs in-process.  ``on_crash(item,
        reason)``: the result of an item whose worker process dies (see the module
        docstring); without it a dead worker raises ``BrokenProcessPool``."""
        if self.workers <= 1:
            for item in items:
                yield fn(item)
            return
        parts = chunks(items, chunk)  # one iterator: after a recovery, the rest goes on
        finished = [0]  # results so far: a pool that never gave one is broken, not one item
        while True:
            lost: list[list[T]] = []
            if self._pool is None:
                self._pool = _process_pool(self.workers)
            try:
                for results in bounded(self._pool, functools.partial(_run_chunk, fn), parts,
                                       self.workers * 4, lost if on_crash else None):
                    finished[0] += 1
                    yield from results
                return
            except BrokenProcessPool:
                self.close()
                if on_crash is None:
                    raise
            yield from _isolated(fn, [x for c in lost for x in c], on_crash, finished)


def map_unordered(fn: Callable[[T], R], items: Iterable[T], workers: int,
                  chunk: int = CHUNK, on_crash: Callable[[T, str], R] | None = None
                  ) -> Iterator[R]:
    """``WorkerPool.map`` on a pool of its own, closed when the results are done."""
    with WorkerPool(workers) as pool:
        yield from pool.map(fn, items, chunk, on_crash)


def _isolated(fn: Callable[[T], R], items: list[T], on_crash: Callable[[T, str], R],
              finished: list[int]) -> Iterator[R]:
    """Each item alone in a one-worker pool (a new one after each crash).  Where no
    worker has ever finished an item, the workers cannot run at all: that is raised."""
    pool = _process_pool(1)
    try:
        for item in items:
            try:
                result = pool.submit(fn, item).result()
            except BrokenProcessPool:
                if not finished[0]:
                    raise
                pool.shutdown(wait=True)
                pool = _process_pool(1)
                yield on_crash(item, CRASHED)
                continue
            finished[0] += 1
            yield result
    finally:
        pool.shutdown(wait=True)


CRASHED = "the worker process died while processing it (a crash in a decoder or out of memory)"


def map_threads(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """Like ``map_unordered`` on threads: for I/O (downloads), not for CPU work."""
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="io") as pool:
        yield from bounded(pool, fn, items, 2 * max(1, workers))


class StagePool:
    """``cpu_pool()`` of an engine whose workers are already there (the local engine's
    one pool, a cluster's workers): ``map`` is the engine's ``map_cpu`` for ``stage``;
    leaving it starts and stops nothing (the engine closes its workers)."""

    def __init__(self, engine: Any, stage: str) -> None:
        self.engine = engine
        self.stage = stage
        self.workers = engine.workers

    def __enter__(self) -> StagePool:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn: Callable[[T], R], items: Iterable[T], chunk: int = CHUNK,
            on_crash: Callable[[T, str], R] | None = None) -> Iterator[R]:
        return self.engine.map_cpu(fn, items, chunk=chunk, on_crash=on_crash, stage=self.stage)


class LocalEngine:
    """This machine: a forkserver process pool for CPU work, threads for I/O, the
    embedder on a background thread.  One pool serves every stage of a scan: its workers
    start once, on the first CPU work, and stop at ``close``."""

    remote_reads = False

    def __init__(self, workers: int, address: str | None = None) -> None:
        if address:
            raise ConfigError("--address is for a cluster engine (--engine ray)")
        self.workers = max(1, workers)
        self._pool = WorkerPool(self.workers)

    def map_cpu(self, fn: Callable[[T], R], items: Iterable[T], *, chunk: int = CHUNK,
                on_crash: Callable[[T, str], R] | None = None, stage: str = "extract"
                ) -> Iterator[R]:
        return self._pool.map(fn, items, chunk, on_crash)

    def cpu_pool(self, stage: str = "verify") -> StagePool:
        return StagePool(self, stage)

    def map_io(self, fn: Callable[[T], R], items: Iterable[T], concurrency: int) -> Iterator[R]:
        return map_threads(fn, items, concurrency)

    def model_runner(self, embedder: Embedder, batch_size: int,
                     load: Callable[[], Embedder] | None = None) -> EmbeddingRunner:
        from ..features.embeddings import EmbeddingRunner

        return EmbeddingRunner(embedder, batch_size)

    def shared_limiter(self, rate: float) -> None:
        return None  # the driver downloads: its one pacer is the limit

    def describe(self) -> dict[str, Any]:
        return {"engine": "local", "workers": self.workers}

    def close(self) -> None:
        self._pool.close()


ENGINES.add("local", LocalEngine)
