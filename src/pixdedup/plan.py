"""Where a scan's images come from and where its results go: the default output
folder or prefix, the feature store's place, and the listing / output pair for each
of the four cases (local or cloud input, local or cloud output)."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .actions import STAGING, LocalOutput, RemoteOutput
from .config import ScanConfig
from .errors import ConfigError, OutputError
from .models import ImageRef
from .sources.cloud import Bucket, CloudOptions, is_remote, parse_url, require_same_store
from .sources.local import ListingProblem, check_root, list_local
from .store import STORE_NAME


def default_output(input_dir: str) -> str:
    if is_remote(input_dir):
        url = parse_url(input_dir)
        base = url.prefix.rstrip("/") or "pixdedup"
        return f"{url.protocol}://{url.bucket}/{base}_deduplicated/"
    root = os.path.abspath(input_dir).rstrip(os.sep)
    return root + "_deduplicated"


def default_store_dir(out: str) -> str:
    """Where the feature store of a cloud output lives: a local cache folder."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    url = parse_url(out)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{url.protocol}-{url.bucket}-{url.prefix}").strip("-")
    return os.path.join(cache, "pixdedup", name)


def store_path(config: ScanConfig, out: str) -> str:
    if config.db:
        return os.path.abspath(config.db)
    if is_remote(out):
        folder = default_store_dir(out)
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, STORE_NAME)
    return os.path.join(out, STORE_NAME)


@dataclass
class Plan:
    """Where the images come from and where the results go."""

    listing: Iterable[ImageRef | ListingProblem]
    root: str
    output: LocalOutput | RemoteOutput
    source: Bucket | None
    out: str
    staging: str | None = None
    """Local output of a cloud input: downloaded bytes wait here for their folder."""


def make_plan(input_dir: str, config: ScanConfig, tmp: str) -> Plan:
    out = config.out or default_output(input_dir)
    remote_in, remote_out = is_remote(input_dir), is_remote(out)
    if config.link != "copy" and (remote_in or remote_out):
        raise ConfigError("--link hard|sym needs a local input and a local output")
    if not remote_in:
        root = check_root(input_dir)
        if remote_out:
            url = parse_url(out)
            bucket = Bucket(dataclasses.replace(url, prefix=""), cloud_options(config))
            return Plan(list_local(root), root, RemoteOutput(bucket, url.prefix, tmp), None, str(url))
        out = os.path.abspath(out)
        return Plan(list_local(root, exclude=(out,)), root, LocalOutput(out, root), None, out)
    source = Bucket(parse_url(input_dir), cloud_options(config))
    if remote_out:
        url = parse_url(out)
        require_same_store(source.url, url)
        if source.url.prefix.startswith(url.prefix):
            raise OutputError(f"the input {source.url} is inside the output {url}")
        return Plan(source.list_images(exclude_prefix=url.prefix), str(source.url),
                     RemoteOutput(source, url.prefix, tmp), source, str(url))
    out = os.path.abspath(out)
    staging = None if config.dry_run else os.path.join(out, STAGING)
    output = LocalOutput(out, None, functools.partial(_fetch, source, staging))
    return Plan(source.list_images(), str(source.url), output, source, out, staging)


def cloud_options(config: ScanConfig) -> CloudOptions:
    return CloudOptions(endpoint_url=config.endpoint_url, max_connections=config.max_connections,
                        request_timeout=config.request_timeout,
                        max_requests_per_second=config.max_requests_per_second,
                        retries=config.retries)


def _fetch(source: Bucket, staging: str | None, uri: str, size: int, dest: str) -> None:
    """Put a cloud image at ``dest``: the bytes staged by this run's extraction if there
    are any (a rename), else one download (an image an earlier run extracted)."""
    key = source.key_of(uri)
    staged = os.path.join(staging, *key.split("/")) if staging else None
    if staged and os.path.exists(staged):
        os.replace(staged, dest)
        return
    data = source.read(ImageRef(uri=uri, rel_path=key, size=size, mtime=0.0))
    with open(dest, "wb") as fh:
        fh.write(data)
