"""Object stores: Azure Blob Storage (``az://container/prefix``, adlfs) and S3
(``s3://bucket/prefix``, s3fs), both through fsspec.

``Bucket`` is everything the pipeline does with a bucket: a streaming listing
(one page of at most a few thousand names in memory, never the whole listing), reading
an object's bytes, a server-side copy, uploads and a marker check.  Every request goes
through one ``Pacer`` (token bucket + retries with backoff and jitter), so the client
libraries' own retries are switched off: what is retried, and why, is counted and
reported.  Error messages never carry credentials (``redact``).

Credentials come from the standard places: for Azure ``AZURE_STORAGE_CONNECTION_STRING``,
or ``AZURE_STORAGE_ACCOUNT_NAME`` with ``AZURE_STORAGE_ACCOUNT_KEY`` or
``AZURE_STORAGE_SAS_TOKEN``, or the account name alone with ``DefaultAzureCredential``;
for S3 the AWS variables, profiles and instance roles that botocore knows, with
``--endpoint-url`` (or ``AWS_ENDPOINT_URL``) for S3-compatible stores.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from ..decode import IMAGE_EXTENSIONS
from ..errors import InputError, OutputError, PixdedupError
from ..models import ImageRef
from .local import ListingProblem
from .ratelimit import Limiter, Pacer, RetryPolicy, TransientError

T = TypeVar("T")

PROTOCOLS = {"az": "az", "abfs": "az", "azure": "az", "s3": "s3", "s3a": "s3"}
PAGE_SIZE = 1000


class CloudError(PixdedupError):
    """A whole-run problem with an object store (missing bucket, denied, unreachable)."""


@dataclass(frozen=True, slots=True)
class CloudOptions:
    endpoint_url: str | None = None
    max_connections: int = 64
    request_timeout: float = 60.0
    max_requests_per_second: float = 0.0
    """0: unlimited."""
    retries: int = 5
    """Retries per request after the first try."""


@dataclass(frozen=True, slots=True)
class RemoteURL:
    protocol: str
    """'az' or 's3'."""
    bucket: str
    prefix: str
    """'' (the whole bucket) or a key prefix ending in '/'."""

    def key_url(self, key: str) -> str:
        return f"{self.protocol}://{self.bucket}/{key}"

    def __str__(self) -> str:
        return f"{self.protocol}://{self.bucket}/{self.prefix}"


def is_remote(uri: str | None) -> bool:
    return bool(uri) and re.match(r"^[a-z0-9]+://", str(uri)) is not None


def parse_url(url: str) -> RemoteURL:
    m = re.match(r"^([a-z0-9]+)://([^/]*)/?(.*)$", url)
    if not m or m.group(1) not in PROTOCOLS:
        raise InputError(f"unsupported location {url}: use a local folder, az://container/prefix "
                         "or s3://bucket/prefix")
    bucket, prefix = m.group(2), m.group(3)
    if not bucket:
        raise InputError(f"{url}: the container or bucket name is missing")
    prefix = "/".join(p for p in prefix.split("/") if p)
    return RemoteURL(PROTOCOLS[m.group(1)], bucket, prefix + "/" if prefix else "")


_SECRET_PATTERNS = [
    re.compile(r"(AccountKey=)[^;\s'\"]+", re.I),
    re.compile(r"(SharedAccessSignature=)[^;\s'\"]+", re.I),
    re.compile(r"([?&](?:sig|se|sp|sv|st|spr|srt|ss|sr|skoid|sktid|skt|ske|sks|skv)=)[^&\s'\"]+", re.I),
    re.compile(r"(X-Amz-(?:Signature|Credential|Security-Token)=)[^&\s'\"]+", re.I),
    re.compile(r"(Signature=)[^,\s'\"]+"),
]


def redact(text: str) -> str:
    """``text`` without credentials: keys, SAS and presigned parameters and any secret
    taken from the environment."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(r"\1***", text)
    for var in ("AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CLIENT_SECRET",
                "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_CONNECTION_STRING"):
        secret = os.environ.get(var)
        if secret and len(secret) >= 8:
            text = text.replace(secret, "***")
    return text


def describe(exc: BaseException) -> str:
    """One line for a failed request, without credentials or stack noise."""
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "error_code", None)
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):
        code = resp.get("Error", {}).get("Code") or code
        status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode") or status
    head = " ".join(str(x) for x in (status, code) if x)
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    msg = re.sub(r"\s*RequestId:\S+|\s*Time:\S+", "", msg)
    text = f"{head}: {msg}" if head and str(status) not in msg else msg
    return redact(text)[:300]


def _azure_fs(options: CloudOptions) -> Any:
    try:
        from adlfs import AzureBlobFileSystem
    except ImportError:
        raise CloudError("az:// needs the Azure support: pip install 'pixdedup[azure]'") from None

    env = os.environ
    kwargs: dict[str, Any] = {"skip_instance_cache": True, "timeout": int(options.request_timeout),
                              "connection_timeout": int(options.request_timeout),
                              "read_timeout": int(options.request_timeout)}
    if env.get("AZURE_STORAGE_CONNECTION_STRING"):
        kwargs["connection_string"] = env["AZURE_STORAGE_CONNECTION_STRING"]
    elif env.get("AZURE_STORAGE_ACCOUNT_NAME"):
        kwargs["account_name"] = env["AZURE_STORAGE_ACCOUNT_NAME"]
        if options.endpoint_url:
            kwargs["account_host"] = re.sub(r"^https?://", "", options.endpoint_url).rstrip("/")
        if not (env.get("AZURE_STORAGE_ACCOUNT_KEY") or env.get("AZURE_STORAGE_SAS_TOKEN")):
            kwargs["anon"] = False  # DefaultAzureCredential
    else:
        raise CloudError("no Azure credentials: set AZURE_STORAGE_CONNECTION_STRING, or "
                         "AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY, "
                         "AZURE_STORAGE_SAS_TOKEN or a DefaultAzureCredential login")
    try:
        fs = AzureBlobFileSystem(**kwargs)
    except ValueError as exc:
        raise CloudError(f"cannot connect to Azure Blob Storage: {redact(str(exc))[:200]}") from None
    # our Pacer retries (counted, paced); the SDK's own retries would hide them
    policy = getattr(getattr(fs.service_client, "_config", None), "retry_policy", None)
    if policy is not None and hasattr(policy, "total_retries"):
        policy.total_retries = 0
    return fs


def _s3_fs(options: CloudOptions) -> Any:
    try:
        from s3fs import S3FileSystem
    except ImportError:
        raise CloudError("s3:// needs the S3 support: pip install 'pixdedup[s3]'") from None

    endpoint = options.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") \
        or os.environ.get("AWS_ENDPOINT_URL")
    fs = S3FileSystem(
        skip_instance_cache=True, endpoint_url=endpoint, max_concurrency=1,
        config_kwargs={"retries": {"total_max_attempts": 1, "mode": "standard"},
                       "connect_timeout": options.request_timeout,
                       "read_timeout": options.request_timeout,
                       "max_pool_connections": options.max_connections})
    fs.retries = 1  # s3fs's own retry loop: one try; the Pacer retries
    return fs


class Bucket:
    """One bucket (S3) or container (Azure): listing, reads, copies and deletes, each
    request paced and retried.  (The feature store is ``store.FeatureStore``.)"""

    def __init__(self, url: RemoteURL, options: CloudOptions, pacer: Pacer | None = None) -> None:
        self.url = url
        self.options = options
        self.pacer = pacer or Pacer(options.max_requests_per_second or None,
                                    RetryPolicy(attempts=options.retries + 1))
        self.fs = _azure_fs(options) if url.protocol == "az" else _s3_fs(options)

    def __reduce__(self) -> tuple[Any, ...]:
        """Sent to a worker as its address and options: the worker opens a client of its
        own (clients hold sockets and an event loop) with a pacer of its own."""
        return (Bucket, (self.url, self.options))

    def address(self, limiter: Limiter | None = None) -> BucketAddress:
        """What a worker needs to read this bucket itself; ``limiter``: the engine's
        rate limit shared by all workers (else each worker paces on its own)."""
        return BucketAddress(self.url, self.options, limiter)

    @property
    def stats(self) -> dict[str, Any]:
        return self.pacer.stats.as_dict()

    def _path(self, key: str) -> str:
        return f"{self.url.bucket}/{key}"

    def _sync(self, coro_fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from fsspec.asyn import sync

        return sync(self.fs.loop, coro_fn, *args, **kwargs)

    def _call(self, what: str, fn: Callable[[], T], missing: str | None = None) -> T:
        """A paced, retried request; a permanent failure becomes a ``CloudError``."""
        try:
            return self.pacer.call(fn)
        except FileNotFoundError:
            raise CloudError(missing or f"{what}: not found") from None
        except PixdedupError:
            raise
        except Exception as exc:  # the client libraries' many error types
            raise CloudError(f"{what}: {self._explain(exc)}") from None

    def _explain(self, exc: BaseException) -> str:
        name = type(exc).__name__
        text = describe(exc)
        if name in ("ClientAuthenticationError", "PermissionError") or "AuthenticationFailed" in text \
                or "AccessDenied" in text or "InvalidAccessKeyId" in text \
                or "SignatureDoesNotMatch" in text or " 403" in f" {text}":
            return f"access denied, check the credentials ({text})"
        if "ContainerNotFound" in text or "NoSuchBucket" in text:
            kind = "container" if self.url.protocol == "az" else "bucket"
            return f"{kind} '{self.url.bucket}' does not exist"
        return text

    # -- listing -------------------------------------------------------------------------------
    def check(self) -> None:
        """The container/bucket exists and the credentials can list it (one request)."""
        self._page(self.url.prefix, None, 1)

    def _page(self, prefix: str, token: str | None, size: int = PAGE_SIZE
              ) -> tuple[list[tuple[str, int, float, str | None, str | None]], str | None]:
        """One listing page: (key, size, mtime, etag, md5 hex) and the next token."""
        kind = "container" if self.url.protocol == "az" else "bucket"
        what = f"listing {self.url}"
        missing = f"{kind} '{self.url.bucket}' does not exist"
        if self.url.protocol == "az":
            return self._call(what, lambda: self._sync(self._az_page, prefix, token, size), missing)
        return self._call(what, lambda: self._sync(self._s3_page, prefix, token, size), missing)

    async def _az_page(self, prefix: str, token: str | None, size: int) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        cc = self.fs.service_client.get_container_client(self.url.bucket)
        pages = cc.list_blobs(name_starts_with=prefix or None, results_per_page=size).by_page(
            continuation_token=token)
        items = []
        try:
            async for page in pages:
                async for b in page:
                    md5 = getattr(b.content_settings, "content_md5", None)
                    items.append((b.name, int(b.size), _stamp(b.last_modified),
                                  (b.etag or "").strip('"') or None,
                                  bytes(md5).hex() if md5 else None))
                break
        except ResourceNotFoundError as exc:
            if "ContainerNotFound" in str(exc) or getattr(exc, "error_code", "") == "ContainerNotFound":
                raise FileNotFoundError(self.url.bucket) from None
            raise
        return items, pages.continuation_token

    async def _s3_page(self, prefix: str, token: str | None, size: int) -> Any:
        kwargs: dict[str, Any] = {"Bucket": self.url.bucket, "Prefix": prefix, "MaxKeys": size}
        if token:
            kwargs["ContinuationToken"] = token
        resp = await self.fs._call_s3("list_objects_v2", **kwargs)
        items = []
        for o in resp.get("Contents", []):
            etag = str(o.get("ETag", "")).strip('"') or None
            md5 = etag if etag and re.fullmatch(r"[0-9a-f]{32}", etag) else None  # not multipart
            items.append((o["Key"], int(o["Size"]), _stamp(o.get("LastModified")), etag, md5))
        return items, resp.get("NextContinuationToken") if resp.get("IsTruncated") else None

    def keys(self, prefix: str) -> Iterator[tuple[str, int, float, str | None, str | None]]:
        token: str | None = None
        while True:
            items, token = self._page(prefix, token)
            yield from items
            if not token:
                return

    def list_images(self, exclude_prefix: str | None = None) -> Iterator[ImageRef | ListingProblem]:
        """Every object under the prefix, streamed page by page, in key order."""
        self.check()
        root = self.url.prefix
        seen = 0
        for key, size, mtime, etag, md5 in self.keys(root):
            seen += 1
            if exclude_prefix and key.startswith(exclude_prefix):
                continue
            rel = key[len(root):]
            uri = self.url.key_url(key)
            if not rel or key.endswith("/"):
                continue  # a folder marker
            parts = rel.split("/")
            if any(p in ("..", ".") for p in parts):
                yield ListingProblem(uri, rel, "unsafe object name ('.' or '..' segment): left "
                                     "out of the output", False, size)
                continue
            ext = os.path.splitext(rel)[1].lower()
            if ext not in IMAGE_EXTENSIONS:
                yield ListingProblem(uri, rel, f"not an image extension ({ext or 'no extension'})",
                                     True, size)
                continue
            yield ImageRef(uri=uri, rel_path=rel, size=size, mtime=mtime, etag=etag, md5=md5)
        if not seen:
            raise CloudError(f"nothing to scan: no objects under {self.url}")

    # -- objects -------------------------------------------------------------------------------
    def key_of(self, uri: str) -> str:
        head = f"{self.url.protocol}://{self.url.bucket}/"
        if not uri.startswith(head):
            raise CloudError(f"{uri} is not in {self.url.protocol}://{self.url.bucket}")
        return uri[len(head):]

    def read(self, ref: ImageRef) -> bytes:
        """The object's bytes; a body shorter or longer than the listed size is retried
        (a dropped connection)."""
        path = self._path(self.key_of(ref.uri))

        def get() -> bytes:
            data: bytes = self.fs.cat_file(path)
            with self.pacer.stats.lock:
                self.pacer.stats.bytes_downloaded += len(data)
            if len(data) != ref.size:
                raise TransientError("short read")
            return data

        return self.pacer.call(get)

    def read_key(self, key: str) -> bytes | None:
        """An object's bytes, or None if there is no such object (paced, retried)."""
        path = self._path(key)

        def get() -> bytes | None:
            try:
                data: bytes = self.fs.cat_file(path)
            except FileNotFoundError:
                return None
            with self.pacer.stats.lock:
                self.pacer.stats.bytes_downloaded += len(data)
            return data

        return self.pacer.call(get)

    def copy(self, src_key: str, dest_key: str) -> None:
        """Server-side copy (the bytes never leave the store), one request."""
        if self.url.protocol == "s3":
            def fn() -> Any:
                return self._sync(self.fs._call_s3, "copy_object", Bucket=self.url.bucket,
                                  Key=dest_key, CopySource={"Bucket": self.url.bucket, "Key": src_key})
        else:
            def fn() -> Any:
                return self.fs.cp_file(self._path(src_key), self._path(dest_key))
        self._call(f"copying {src_key}", fn)

    def put_file(self, local: str, key: str) -> None:
        with open(local, "rb") as fh:
            self.put_bytes(key, fh.read())

    def put_bytes(self, key: str, data: bytes) -> None:
        """One PUT request."""
        if self.url.protocol == "s3":
            def fn() -> Any:
                return self._sync(self.fs._call_s3, "put_object", Bucket=self.url.bucket, Key=key,
                                  Body=data)
        else:
            def fn() -> Any:
                return self.fs.pipe_file(self._path(key), data)
        self._call(f"writing {key}", fn)

    def exists(self, key: str) -> bool:
        items, _ = self._page(key, None, 1)
        return bool(items) and items[0][0] == key

    def any_under(self, prefix: str) -> bool:
        items, _ = self._page(prefix, None, 1)
        return bool(items)

    def delete(self, keys: list[str]) -> None:
        for k in range(0, len(keys), 256):
            part = [self._path(key) for key in keys[k:k + 256]]
            self._call("deleting the previous output", functools.partial(self.fs.rm, part))


@dataclass(frozen=True)
class BucketAddress:
    """A bucket as a worker gets it (``Bucket.address``): opened once per worker process
    (``open``), with the shared limiter where there is one."""

    url: RemoteURL
    options: CloudOptions
    limiter: Limiter | None = None

    def open(self) -> Bucket:
        key = (self.url, self.options, getattr(self.limiter, "key", None))
        bucket = _OPENED.get(key)
        if bucket is None:
            pacer = Pacer(self.options.max_requests_per_second or None,
                          RetryPolicy(attempts=self.options.retries + 1), self.limiter)
            bucket = _OPENED[key] = Bucket(self.url, self.options, pacer)
        return bucket


_OPENED: dict[tuple[Any, ...], Bucket] = {}
"""This process's buckets, by address."""


def _stamp(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return 0.0


def require_same_store(a: RemoteURL, b: RemoteURL) -> None:
    if (a.protocol, a.bucket) != (b.protocol, b.bucket):
        raise OutputError(f"--out {b} is in another container or bucket than the input {a}; "
                          "write to the input's own container or bucket (server-side copies) "
                          "or to a local folder")
