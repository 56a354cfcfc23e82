"""Execution engines: how the stages' work is run.

An engine maps CPU work (decode, features, verification) over processes, maps I/O
work (downloads, copies) over threads, and runs model batches beside them.  The
stages and modes never import an engine: the scan asks ``engine_for(config)`` once
and hands the engine down.  Everything an engine sends to a worker is a picklable
top-level function and picklable items (``functools.partial`` of such a function
with picklable arguments).  A new engine is one module here, registered in
``ENGINES`` by name (``ScanConfig.engine``): ``local`` (this machine) and ``ray`` (a
Ray cluster, ``engines.cluster``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..registry import Registry

if TYPE_CHECKING:
    from ..features.embeddings import Embedder, EmbeddingRunner
    from ..sources.ratelimit import Limiter

T = TypeVar("T")
R = TypeVar("R")


class CpuPool(Protocol):
    """Workers kept across many ``map`` calls (rounds of verification)."""

    workers: int

    def map(self, fn: Callable[[T], R], items: Iterable[T], chunk: int = ...,
            on_crash: Callable[[T, str], R] | None = None) -> Iterator[R]: ...


class Engine(Protocol):
    workers: int
    remote_reads: bool
    """True: the CPU workers read a bucket's objects themselves (the driver sends
    names); False: the driver downloads on ``map_io`` and sends the bytes."""

    def map_cpu(self, fn: Callable[[T], R], items: Iterable[T], *, chunk: int = ...,
                on_crash: Callable[[T, str], R] | None = None, stage: str = ...
                ) -> Iterator[R]:
        """``fn`` over ``items`` on the CPU workers, results as they finish (in any
        order).  ``on_crash(item, reason)``: the result of an item whose worker died.
        ``stage``: what the work is, for the engine's report ('extract')."""
        ...

    def cpu_pool(self, stage: str = ...) -> AbstractContextManager[CpuPool]:
        """A pool of CPU workers for many ``map`` calls, closed on exit (``stage``:
        'verify')."""
        ...

    def map_io(self, fn: Callable[[T], R], items: Iterable[T], concurrency: int) -> Iterator[R]:
        """``fn`` over ``items`` with at most ``concurrency`` at once (network, disk),
        results as they finish."""
        ...

    def model_runner(self, embedder: Embedder, batch_size: int,
                     load: Callable[[], Embedder] | None = None) -> EmbeddingRunner:
        """Runs an embedder's batches beside the CPU work; ``load`` (picklable) makes the
        same embedder again where the engine runs models elsewhere."""
        ...

    def shared_limiter(self, rate: float) -> Limiter | None:
        """One request rate limit for all the workers that read a bucket (None: each
        process paces itself, or no limit)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Where the work ran, for the report (nodes, workers, items per node)."""
        ...

    def close(self) -> None:
        """Release what the engine started."""
        ...


ENGINES: Registry[Callable[[int, str | None], Engine]] = Registry("engine")
"""Engine name -> factory taking the number of CPU workers and a cluster address."""


def engine_for(name: str, workers: int, address: str | None = None) -> Engine:
    """The one place an engine is chosen (``ScanConfig.engine``, ``workers``,
    ``address``)."""
    return ENGINES.get(name)(workers, address)


from . import cluster, local  # noqa: E402,F401 - register "local" and "ray" (they need ENGINES)
