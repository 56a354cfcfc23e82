"""Real servers on loopback for the cloud tests: Azurite (npm package, installed by
``make test`` under .tools/), a moto S3 server, and a fault-injecting HTTP proxy."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AZURITE = ROOT / ".tools" / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
# Azurite's published development key (not a secret)
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def connection_string(port: int, key: str = KEY) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={key};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};")


def start_azurite(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    if not AZURITE.exists():
        raise RuntimeError(f"Azurite is not installed at {AZURITE}; run 'make test', which "
                           "installs it from npm")
    port = free_port()
    proc = subprocess.Popen(
        [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
         str(workdir), "--silent", "--skipApiVersionCheck", "--loose"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, port


class FaultProxy:
    """Forwards HTTP to ``upstream`` and breaks object downloads on purpose: the n-th
    object seen fails its first ``n % every`` GETs, in turn with a 503, a 429 and a body
    cut off half-way (headers promise the whole length, then the connection drops).
    Records the time of every request it forwards or refuses."""

    def __init__(self, upstream: int, every: int = 4) -> None:
        self.upstream = upstream
        self.every = every
        self.stamps: list[float] = []
        self.faults: dict[str, int] = {"503": 0, "429": 0, "drop": 0}
        self.tries: dict[str, int] = {}
        self.requests: list[tuple[str, str]] = []
        self.numbers: dict[str, int] = {}
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _handle(self) -> None:
                body = self._body()
                fault = proxy._fault(self.command, self.path)
                if fault in ("503", "429"):
                    msg = b"injected fault"
                    self.send_response(int(fault))
                    self.send_header("Content-Length", str(len(msg)))
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("transfer-encoding", "content-length", "connection")}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream, timeout=60)
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection", "date",
                                         "server"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                if fault == "drop" and len(data) > 1:
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _fault(self, method: str, path: str) -> str | None:
        with self.lock:
            self.stamps.append(time.monotonic())
            self.requests.append((method, path))
            is_object_get = method == "GET" and "comp=" not in path and "list-type" not in path \
                and "restype" not in path and os.path.splitext(path.split("?")[0])[1] != ""
            if not is_object_get or not self.every:
                return None
            key = path.split("?")[0]
            tries = self.tries.get(key, 0)
            self.tries[key] = tries + 1
            # the object numbered n fails its first n % every tries: 503, then 429, then a drop
            n = self.numbers.setdefault(key, len(self.numbers))
            if tries >= n % self.every:
                return None
            fault = ("503", "429", "drop")[tries % 3]
            self.faults[fault] += 1
            return fault

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def max_rate(self, window: float = 1.0) -> float:
        """The most requests seen in any ``window`` seconds."""
        s = sorted(self.stamps)
        best, j = 0, 0
        for i in range(len(s)):
            while s[i] - s[j] > window:
                j += 1
            best = max(best, i - j + 1)
        return best / window
