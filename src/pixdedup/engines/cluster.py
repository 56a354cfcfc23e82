"""The Ray engine: the same scan on the nodes of a Ray cluster.

* CPU work (read + decode + features, verification rounds) runs as Ray tasks on the
  cluster's CPUs, a bounded number in flight (``IN_FLIGHT_PER_CPU`` per CPU): the driver
  holds neither a list of all tasks nor all results, whatever the collection's size.
* A task whose worker process or node dies is run again elsewhere by Ray
  (``max_retries``); a chunk that still fails is split and its items run one per task,
  and an item that kills its worker every time gets ``on_crash(item, reason)`` (the
  odd file that crashes a decoder), as on the local engine.
* With a bucket as input the workers read their own bytes (``remote_reads``): the
  driver sends names and gets records back.  ``shared_limiter`` is one token bucket for
  the whole cluster, held by an actor, so ``--max-requests-per-second`` is the
  cluster's rate, not each worker's.
* Model batches run on an actor that holds the model (a GPU of the cluster where it
  has one); the model inputs go from the worker's object store to that actor without
  passing through the driver.
* ``describe()``: the nodes and workers that took part and how many items each node
  processed, for the report.

The feature store stays on the driver: records come back and are committed there as
on the local engine, so a driver killed at any point resumes with ``scan`` again.

Without an address a local Ray is started for this scan, bound to 127.0.0.1 (the
dashboard too) and stopped at the end.  A Ray cluster runs the code any client that
reaches it sends: it belongs on a private network, with Ray's token authentication
(``RAY_AUTH_MODE=token``) on.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ..errors import ConfigError
from ..features.embeddings import EmbeddingRunner
from . import ENGINES
from .local import CRASHED, StagePool, chunks, init_worker, map_threads

if TYPE_CHECKING:
    from ..features.embeddings import Embedder

T = TypeVar("T")
R = TypeVar("R")

CHUNK = 4
"""Items per task: a task costs about a millisecond of scheduling, an image 10-100 ms
(and a small collection still spreads over the nodes)."""
IN_FLIGHT_PER_CPU = 2
"""Tasks submitted and unfinished per CPU of the cluster: every CPU has its next task
queued (no idle gap between tasks), and the driver's memory stays flat."""
TASK_RETRIES = 3
"""Ray runs a task again after its worker process or node died, this many times."""
ENV_PREFIXES = ("AZURE_", "AWS_", "PIXDEDUP_")
"""The driver's variables that the workers get (credentials and endpoints of the
object stores); the workers' own environment (managed identities, instance roles)
works too."""
log = logging.getLogger(__name__)


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray: pip install 'pixdedup[ray]'") from None
    return ray


def _warm() -> None:
    """A worker's start: the imports of the extraction and verification stages."""
    from .. import extract, verify  # noqa: F401

    init_worker()


def _offload(ray: Any, result: Any) -> Any:
    """A record's model input goes into this node's object store (the embedding actor
    reads it from there), not back to the driver."""
    pixels = getattr(result, "model_input", None)
    if isinstance(pixels, np.ndarray):
        return dataclasses.replace(result, model_input=ray.put(pixels))
    return result


def _run_chunk(fn: Callable[[T], R], items: list[T]) -> tuple[str, int, list[R]]:
    """On a worker: ``fn`` over the chunk; with the node's id and the worker's pid (the
    report counts work per node)."""
    import ray

    init_worker()
    results = [_offload(ray, fn(item)) for item in items]
    return ray.get_runtime_context().get_node_id(), os.getpid(), results


class RateLimiter:
    """The cluster's one token bucket (an actor): ``reserve()`` books the next request
    and answers how long to wait for it (the generic cell rate algorithm).  A tenth of a
    second of requests may go at once, as in ``sources.ratelimit.TokenBucket``."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.tolerance = (max(1.0, rate / 10) - 1) * self.interval
        self.due = time.monotonic()
        """When the next request would be due at the exact rate."""
        self.served = 0

    def count(self) -> int:
        """Requests booked so far, by every process of the cluster."""
        return self.served

    def reserve(self) -> float:
        self.served += 1
        now = time.monotonic()
        due = max(self.due, now)
        self.due = due + self.interval
        return max(0.0, due - now - self.tolerance)


class SharedTokenBucket:
    """A worker's side of ``RateLimiter``: the ``take()`` of ``TokenBucket``."""

    def __init__(self, actor: Any, rate: float, key: str | None = None) -> None:
        self.actor = actor
        self.rate = rate
        self.key = key or f"ray-limiter-{os.getpid()}-{id(actor)}-{rate}"
        """The same in every process that gets this limiter (a worker opens its bucket
        once per limiter: ``sources.cloud.BucketAddress.open``)."""

    def take(self) -> None:
        import ray

        wait = ray.get(self.actor.reserve.remote())
        if wait > 0:
            time.sleep(wait)

    def __reduce__(self) -> tuple[Any, ...]:
        return (SharedTokenBucket, (self.actor, self.rate, self.key))


class EmbedActor:
    """Holds the model on one node (a GPU where the cluster has one) and embeds the
    batches the driver names; the pixels come from the object stores of the nodes that
    decoded them."""

    def __init__(self, load: Callable[[], Embedder]) -> None:
        self.embedder = load()

    def embed(self, pixels: list[Any]) -> np.ndarray:
        import ray

        refs = [p for p in pixels if not isinstance(p, np.ndarray)]
        fetched = iter(ray.get(refs))  # one request for the whole batch
        arrays = [p if isinstance(p, np.ndarray) else next(fetched) for p in pixels]
        return np.asarray(self.embedder.embed(np.stack(arrays)))


class RayEngine:
    """A Ray cluster (``address``: ``auto``, ``HOST:PORT`` or ``ray://HOST:10001``), or
    a local one started for this scan when ``address`` is None."""

    remote_reads = True

    def __init__(self, workers: int, address: str | None = None) -> None:
        ray = _ray()
        self._ray = ray
        self.address = address = address or os.environ.get("RAY_ADDRESS") or None
        env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
        kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False,
                                  "runtime_env": {"env_vars": env} if env else None,
                                  "ignore_reinit_error": True}
        if ray.is_initialized():  # the caller's connection: used, and left open
            self.context = None
        elif address:
            _reachable(address)
            try:
                self.context = ray.init(address=address, **kwargs)
            except ConnectionError as exc:
                raise ConfigError(f"cannot reach the Ray cluster at {address}: {exc}") from None
        else:  # a Ray of our own on this machine, bound to loopback
            self.context = ray.init(address="local", num_cpus=max(1, workers),
                                    _node_ip_address="127.0.0.1", dashboard_host="127.0.0.1",
                                    include_dashboard=_has_dashboard(), **kwargs)
        self.dashboard = getattr(self.context, "dashboard_url", None) or None
        cpus = int(ray.cluster_resources().get("CPU", 0))
        self.workers = max(1, cpus)
        self.gpus = int(ray.cluster_resources().get("GPU", 0))
        self.by_node: defaultdict[str, Counter[str]] = defaultdict(Counter)
        """node id -> stage -> items run there."""
        self.pids: set[tuple[str, int]] = set()
        self.retried = 0
        self.crashed = 0
        self._lock = threading.Lock()
        self._limiters: dict[float, SharedTokenBucket] = {}
        # spread over the nodes: the default policy fills the driver's node first, and a
        # short scan would end before the other nodes' workers had started
        self._task = ray.remote(max_retries=TASK_RETRIES, scheduling_strategy="SPREAD")(_run_chunk)
        warm = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(_warm)
        self._warming = [warm.remote() for _ in range(self.workers)]
        """Every CPU's worker started and the stages imported while the driver lists."""

    # -- CPU work ------------------------------------------------------------------------------
    def map_cpu(self, fn: Callable[[T], R], items: Iterable[T], *, chunk: int = CHUNK,
                on_crash: Callable[[T, str], R] | None = None, stage: str = "extract"
                ) -> Iterator[R]:
        """``fn`` over ``items`` as Ray tasks of ``chunk`` items, results as they come;
        ``stage`` names the work in the per-node counts."""
        ray = self._ray
        pending: dict[Any, list[T]] = {}
        limit = self.workers * IN_FLIGHT_PER_CPU

        def finish(ref: Any) -> Iterator[R]:
            part = pending.pop(ref)
            try:
                node, pid, results = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:  # fn raised: a bug, not a crash
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                raise cause from None
            except ray.exceptions.RayError as exc:  # the worker or node died, retries spent
                if on_crash is None:
                    raise
                yield from self._isolated(fn, part, on_crash, exc, stage)
                return
            self._count(node, pid, stage, len(results))
            yield from results

        def finished() -> list[Any]:
            """The tasks done now (all of them: one wait per batch, not per task, on a
            cluster with thousands in flight), or the next one to finish."""
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
            return ready or ray.wait(list(pending), num_returns=1)[0]

        self._check_workers()
        for part in chunks(items, chunk):
            pending[self._task.remote(fn, part)] = part
            while len(pending) >= limit:
                for ref in finished():
                    yield from finish(ref)
        while pending:
            for ref in finished():
                yield from finish(ref)

    def _check_workers(self) -> None:
        """Once: the workers started and could import pixdedup's stages (else every task
        would fail the same way)."""
        warming, self._warming = self._warming, []
        try:
            self._ray.get(warming)
        except self._ray.exceptions.RayTaskError as exc:  # the import failed
            cause = getattr(exc, "cause", None) or exc
            raise ConfigError(
                "the Ray workers cannot run pixdedup's stages "
                f"({type(cause).__name__}: {str(cause).strip().splitlines()[-1][:200]}); "
                f"install pixdedup {_version()} with the extras this scan needs on every "
                "node") from None
        except self._ray.exceptions.RayError:  # a node lost while warming: its tasks rerun
            log.warning("a worker was lost while starting; the scan goes on")

    def _isolated(self, fn: Callable[[T], R], items: list[T], on_crash: Callable[[T, str], R],
                  first: BaseException, stage: str) -> Iterator[R]:
        """Each item of a chunk that kept failing in a task of its own; an item whose
        task fails too gets ``on_crash``."""
        ray = self._ray
        log.warning("a task failed after %d retries (%s); its %d items run one by one",
                    TASK_RETRIES, type(first).__name__, len(items))
        with self._lock:
            self.retried += len(items)
        refs = {self._task.remote(fn, [item]): item for item in items}
        for ref, item in refs.items():
            try:
                node, pid, results = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                raise cause from None
            except ray.exceptions.RayError:
                with self._lock:
                    self.crashed += 1
                yield on_crash(item, CRASHED)
                continue
            self._count(node, pid, stage, len(results))
            yield from results

    def _count(self, node: str, pid: int, stage: str, n: int) -> None:
        with self._lock:
            self.by_node[node][stage] += n
            self.pids.add((node, pid))

    def cpu_pool(self, stage: str = "verify") -> StagePool:
        return StagePool(self, stage)

    # -- I/O, models, limits ---------------------------------------------------------------
    def map_io(self, fn: Callable[[T], R], items: Iterable[T], concurrency: int) -> Iterator[R]:
        """The driver's own I/O (the report's thumbnails, output copies): its threads."""
        return map_threads(fn, items, concurrency)

    def shared_limiter(self, rate: float) -> SharedTokenBucket | None:
        """One token bucket of ``rate`` requests per second for every worker."""
        if not rate or rate <= 0:
            return None
        if rate not in self._limiters:
            actor = self._ray.remote(num_cpus=0)(RateLimiter).remote(rate)
            self._limiters[rate] = SharedTokenBucket(actor, rate)
        return self._limiters[rate]

    def model_runner(self, embedder: Embedder, batch_size: int,
                     load: Callable[[], Embedder] | None = None) -> EmbeddingRunner:
        """Batches to an actor that loads the model itself (``load``), on a GPU where
        the cluster has one; without ``load`` the driver's embedder runs the batches."""
        if load is None:
            return EmbeddingRunner(embedder, batch_size)
        options: dict[str, Any] = {"num_gpus": 1} if self.gpus else {"num_cpus": 1}
        actor = self._ray.remote(**options)(EmbedActor).remote(load)
        return ActorEmbeddingRunner(embedder, batch_size, actor)

    # -- the report ---------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The cluster and, per node that took part: its address, its workers and the
        items of each stage it ran ('extract': images, 'verify': verification tasks)."""
        try:
            where = {n["NodeID"]: n["NodeManagerAddress"] for n in self._ray.nodes()}
        except Exception:  # noqa: BLE001 - a report detail; the cluster may be gone
            where = {}
        limits = []
        for rate, limiter in self._limiters.items():
            try:
                limits.append({"rate": rate,
                               "requests": self._ray.get(limiter.actor.count.remote(), timeout=10)})
            except Exception:  # noqa: BLE001 - a report detail
                limits.append({"rate": rate, "requests": None})
        with self._lock:
            nodes = [{"node": node, "address": where.get(node, ""), **dict(counts),
                      "workers": sum(1 for nd, _ in self.pids if nd == node)}
                     for node, counts in sorted(self.by_node.items(),
                                                key=lambda kv: -sum(kv[1].values()))]
            return {"engine": "ray", "address": self.address or "local",
                    "dashboard": _dashboard_url(self.dashboard), "cpus": self.workers,
                    "gpus": self.gpus, "nodes": len(nodes), "workers": len(self.pids),
                    "per_node": nodes, "items_run_again_alone": self.retried,
                    "items_crashed": self.crashed, "shared_rate_limits": limits}

    def close(self) -> None:
        """Disconnect (a cluster given by address goes on running); a local Ray started
        for this scan stops."""
        if self.context is not None and self._ray.is_initialized():
            self._ray.shutdown()
        self.context = None


class ActorEmbeddingRunner(EmbeddingRunner):
    """``EmbeddingRunner`` whose batches run on ``EmbedActor`` (same batching, the same
    one-at-a-time retry of a failing batch)."""

    def __init__(self, embedder: Embedder, batch_size: int, actor: Any) -> None:
        self._actor = actor
        super().__init__(embedder, batch_size)

    def _infer(self, pixels: list[Any]) -> np.ndarray:
        import ray

        return np.asarray(ray.get(self._actor.embed.remote(pixels)))


def _reachable(address: str, timeout: float = 5.0) -> None:
    """A ``HOST:PORT`` or ``ray://HOST:PORT`` address answers a TCP connection (Ray's own
    connect retries for minutes on a wrong address)."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # 'auto', or Ray's own address forms: Ray checks them
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address}: "
                          f"{exc.strerror or exc} (is the head running, is the port open?)") from None


def _version() -> str:
    from .. import __version__

    return __version__


def _has_dashboard() -> bool:
    try:
        import aiohttp  # noqa: F401 - ray[default]'s dashboard needs it
    except ImportError:
        return False
    return True


def _dashboard_url(url: str | None) -> str | None:
    if not url:
        return None
    return url if url.startswith("http") else f"http://{url}"


ENGINES.add("ray", RayEngine)
