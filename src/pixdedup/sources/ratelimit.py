"""Request pacing and retries for object stores.

* ``TokenBucket``: at most ``rate`` requests per second, shared by every thread of the
  process that talks to the store (downloads, listing pages, copies, uploads).  The
  bucket holds a tenth of a second of tokens, so bursts stay small.
* ``call``: one request with retries on throttling and transient failures (HTTP 429,
  500, 502, 503, 504, timeouts, dropped connections, a truncated body), exponential
  backoff with full jitter, a token taken before every attempt.  Permanent failures
  (not found, denied) are raised at once.
* ``RequestStats``: what happened, for the report: requests, retries by reason,
  bytes downloaded.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
THROTTLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                  "TooManyRequests", "RequestTimeout", "ServiceUnavailable", "InternalError",
                  "ServerBusy", "OperationTimedOut"}


class TokenBucket:
    def __init__(self, rate: float | None) -> None:
        self.rate = rate if rate and rate > 0 else None
        self.capacity = max(1.0, (self.rate or 0) / 10)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> None:
        if self.rate is None:
            return
        while True:
            with self.lock:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                wait = (1 - self.tokens) / self.rate
            time.sleep(wait)


@dataclass(slots=True)
class RequestStats:
    requests: int = 0
    retries: Counter[str] = field(default_factory=Counter)
    bytes_downloaded: int = 0
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict[str, Any]:
        with self.lock:
            return {"requests": self.requests, "retries": sum(self.retries.values()),
                    "retries_by_reason": dict(self.retries), "bytes_downloaded": self.bytes_downloaded,
                    "failed_requests": self.failures}

    def drain(self) -> dict[str, Any]:
        """What happened since the last drain (a worker's counts, sent with its results)."""
        with self.lock:
            out = {"requests": self.requests, "retries_by_reason": dict(self.retries),
                   "bytes_downloaded": self.bytes_downloaded, "failed_requests": self.failures}
            self.requests = self.bytes_downloaded = self.failures = 0
            self.retries.clear()
        return out

    def merge(self, counts: dict[str, Any]) -> None:
        """Add a worker's ``drain()``."""
        with self.lock:
            self.requests += counts.get("requests", 0)
            self.retries.update(counts.get("retries_by_reason", {}))
            self.bytes_downloaded += counts.get("bytes_downloaded", 0)
            self.failures += counts.get("failed_requests", 0)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 6
    """Tries per request, the first included."""
    base_delay: float = 0.2
    max_delay: float = 20.0

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2^attempt)]."""
        return random.uniform(0, min(self.max_delay, self.base_delay * (2 ** attempt)))


class TransientError(Exception):
    """A failure worth retrying that the client library did not classify (a short body)."""


def transient_reason(exc: BaseException) -> str | None:
    """Why ``exc`` is worth a retry ('429', '503', 'timeout', 'connection', ...), or None."""
    if isinstance(exc, TransientError):
        return str(exc) or "transient"
    status = _status(exc)
    if status in TRANSIENT_STATUS:
        return str(status)
    code = _code(exc)
    if code in THROTTLE_CODES:
        return code
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timeout"
    if isinstance(exc, (ConnectionError, EOFError)):
        return "connection"
    names = {c.__name__ for c in type(exc).__mro__}
    if names & {"ServiceRequestError", "ServiceResponseError", "IncompleteReadError",
                "ClientPayloadError", "ClientConnectionError", "ServerDisconnectedError",
                "ClientOSError", "EndpointConnectionError", "ConnectionClosedError",
                "ReadTimeoutError", "ConnectTimeoutError", "ResponseStreamingError",
                "IncompleteRead", "ProtocolError"}:
        return "timeout" if "Timeout" in " ".join(names) else "connection"
    if exc.__cause__ is not None and exc.__cause__ is not exc:
        return transient_reason(exc.__cause__)
    return None


def _status(exc: BaseException) -> int | None:
    for attr in ("status_code", "status"):
        v = getattr(exc, attr, None)
        if isinstance(v, int):
            return v
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):
        v = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return v if isinstance(v, int) else None
    return None


def _code(exc: BaseException) -> str | None:
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):
        code = resp.get("Error", {}).get("Code")
        return str(code) if code else None
    code = getattr(exc, "error_code", None)
    return str(code) if code else None


class Limiter(Protocol):
    def take(self) -> None:
        """Returns when the next request may go."""
        ...


class Pacer:
    """A bucket, a policy and the stats, used together for every request to one store.
    ``bucket``: a limiter shared with other processes (an engine's) instead of this
    process's own ``TokenBucket(rate)``."""

    def __init__(self, rate: float | None = None, policy: RetryPolicy | None = None,
                 bucket: Limiter | None = None) -> None:
        self.bucket: Limiter = bucket or TokenBucket(rate)
        self.policy = policy or RetryPolicy()
        self.stats = RequestStats()

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` with pacing and retries (counted in ``stats``)."""
        attempt = 0
        while True:
            self.bucket.take()
            with self.stats.lock:
                self.stats.requests += 1
            try:
                return fn()
            except BaseException as exc:
                reason = transient_reason(exc)
                if reason is None or attempt + 1 >= self.policy.attempts:
                    with self.stats.lock:
                        self.stats.failures += 1
                    raise
                with self.stats.lock:
                    self.stats.retries[reason] += 1
                time.sleep(self.policy.delay(attempt))
                attempt += 1
