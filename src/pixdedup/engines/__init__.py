"""Execution engines: how the stages' work is run.

An engine maps CPU work (decode, features, verification) over processes, maps I/O
work (downloads, copies) over threads, and runs model batches beside them.  The
stages and modes never import an engine: the scan asks ``engine_for(config)`` once
and hands the engine down.  Everything an engine sends to a worker is a picklable
top-level function and picklable items (``functools.partial`` of such a function
with picklable arguments).  A new engine is one module here, registered in
``ENGINES`` by name (``ScanConfig.engine``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol, TypeVar

from ..registry import Registry

if TYPE_CHECKING:
    from ..features.embeddings import Embedder, EmbeddingRunner

T = TypeVar("T")
R = TypeVar("R")


class CpuPool(Protocol):
    """Workers kept across many ``map`` calls (rounds of verification)."""

    workers: int

    def map(self, fn: Callable[[T], R], items: Iterable[T], chunk: int = ...,
            on_crash: Callable[[T, str], R] | None = None) -> Iterator[R]: ...


class Engine(Protocol):
    workers: int

    def map_cpu(self, fn: Callable[[T], R], items: Iterable[T], *, chunk: int = ...,
                on_crash: Callable[[T, str], R] | None = None) -> Iterator[R]:
        """``fn`` over ``items`` on the CPU workers, results as they finish (in any
        order).  ``on_crash(item, reason)``: the result of an item whose worker died."""
        ...

    def cpu_pool(self) -> AbstractContextManager[CpuPool]:
        """A pool of CPU workers for many ``map`` calls, closed on exit."""
        ...

    def map_io(self, fn: Callable[[T], R], items: Iterable[T], concurrency: int) -> Iterator[R]:
        """``fn`` over ``items`` with at most ``concurrency`` at once (network, disk),
        results as they finish."""
        ...

    def model_runner(self, embedder: Embedder, batch_size: int) -> EmbeddingRunner:
        """Runs an embedder's batches beside the CPU work."""
        ...


ENGINES: Registry[Callable[[int], Engine]] = Registry("engine")
"""Engine name -> factory taking the number of CPU workers."""


def engine_for(name: str, workers: int) -> Engine:
    """The one place an engine is chosen (``ScanConfig.engine``, ``workers``)."""
    return ENGINES.get(name)(workers)


from . import local  # noqa: E402,F401 - registers "local" (it needs ENGINES above)
