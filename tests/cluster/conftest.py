"""A real two-node Ray cluster on loopback, started here and stopped at the end: a head
(1 CPU, dashboard on 127.0.0.1) and a second node (1 CPU) on this machine, with
token authentication, each a
``ray start --block`` in a process group of its own, so that stopping it stops
exactly its processes and nothing else on the machine."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from ..cloud.conftest import moto_s3  # noqa: F401 - the S3 server fixture, for these tests too
from ..cloud.servers import free_port, wait_port
from ..faces.conftest import portraits  # noqa: F401 - the test portraits fixture

RAY = str(Path(sys.executable).with_name("ray"))
FAST_FAILURE = {  # a dead node is noticed in about 2 s, not 30
    "RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3", "RAY_health_check_initial_delay_ms": "500"}
COMMON = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--object-store-memory",
          str(150 * 2**20), "--disable-usage-stats", "--block"]


@dataclass
class Cluster:
    address: str
    dashboard: str
    head: subprocess.Popen[bytes]
    second: subprocess.Popen[bytes] | None
    second_port: int
    env: dict[str, str]

    def start_second(self) -> None:
        """The second node (again, after a test killed it); waits until it is alive."""
        self.second_port = free_port()
        self.second = _start([*COMMON, "--address", self.address, "--node-manager-port",
                              str(self.second_port)], self.env)
        wait_port(self.second_port, 60)
        wait_nodes(self.address, 2)

    def raylet_of_second(self) -> psutil.Process:
        for proc in psutil.process_iter(["cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if "raylet" in cmd and f"--node_manager_port={self.second_port}" in cmd:
                return proc
        raise AssertionError("the second node's raylet is not running")


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([RAY, "start", *args], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(15)
            if sig == signal.SIGTERM:
                time.sleep(1)  # the group's other processes
        except subprocess.TimeoutExpired:
            continue


def alive_nodes(address: str) -> int:
    code = (f"import ray; ray.init(address={address!r}, logging_level='ERROR', "
            "log_to_driver=False); print('alive', sum(1 for n in ray.nodes() if n['Alive']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    # Ray may print its own warnings (a lagging heartbeat) around the answer
    counts = [line.split()[1] for line in out.stdout.splitlines()
              if line.startswith("alive ") and len(line.split()) == 2]
    return int(counts[-1]) if out.returncode == 0 and counts else 0


def wait_nodes(address: str, n: int, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if alive_nodes(address) == n:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the Ray cluster at {address} has not {n} live nodes after {timeout} s")


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The cluster runs with Ray's token authentication (a fresh token, in this
    process's environment while the module's tests run: their drivers need it)."""
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    saved = {k: os.environ.get(k) for k in (*auth, "RAY_ADDRESS")}
    os.environ.update(auth)
    os.environ.pop("RAY_ADDRESS", None)
    env = {**os.environ, **FAST_FAILURE}
    port, dash, client = free_port(), free_port(), free_port()
    head = _start([*COMMON, "--head", "--port", str(port), "--dashboard-host", "127.0.0.1",
                   "--dashboard-port", str(dash), "--include-dashboard", "true",
                   "--ray-client-server-port", str(client)], env)
    cluster = Cluster(f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}", head, None, 0, env)
    try:
        wait_port(port, 60)
        cluster.start_second()
        yield cluster
    finally:
        _stop(cluster.second)
        _stop(head)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
