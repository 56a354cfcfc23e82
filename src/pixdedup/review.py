"""``pixdedup review OUT_DIR``: the scan's report page, served on loopback with controls.

The server binds to 127.0.0.1 only, on a random free port, and answers only requests
that carry its token (``?token=`` in the printed URL, or the ``X-Pixdedup-Token``
header; decisions need the header, which a form on another site cannot send) and name
it by a loopback host (no DNS rebinding).  It serves two kinds of files, by fixed
names, never by a path taken from the request: ``report.html`` and the page files in
``report_files/``.

Decisions are written to the feature store the moment they are made (``POST
/api/decide``); ``GET /api/state`` gives the groups of a page with the decisions laid
over the scan's verdict.  The store is opened per request without the run lock, so a
scan may run meanwhile (SQLite serialises the writes).
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .decisions import ACTIONS, DecisionError, decide, group_states
from .errors import PixdedupError
from .reports.html import FILES_DIR, HTML_NAME
from .store import STORE_NAME, FeatureStore, open_existing

PAGE_FILE = re.compile(r"page-\d{5}\.js")
MAX_BODY = 64 * 1024
MAX_GROUPS_PER_STATE = 500
LOOPBACK = "127.0.0.1"
class ReviewError(PixdedupError):
    """The output folder cannot be reviewed."""


class _HTTPError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class ReviewServer:
    """Serves OUT_DIR's report for review until ``shutdown``."""

    def __init__(self, out_dir: str, db: str | None = None, port: int = 0,
                 token: str | None = None) -> None:
        self.out_dir = os.path.abspath(out_dir)
        if not os.path.isfile(os.path.join(self.out_dir, HTML_NAME)):
            raise ReviewError(f"no {HTML_NAME} in {out_dir}; run 'pixdedup scan' first")
        self.db = os.path.abspath(db) if db else os.path.join(self.out_dir, STORE_NAME)
        open_existing(self.db).close()  # exists and is a readable store
        self.token = token or secrets.token_urlsafe(24)
        handler = type("Handler", (_Handler,), {"review": self})
        try:
            self.httpd = ThreadingHTTPServer((LOOPBACK, port), handler)
        except OSError as exc:
            raise ReviewError(f"cannot listen on {LOOPBACK}:{port}: {exc.strerror}") from None
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/?token={self.token}"

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def start(self) -> threading.Thread:
        """Serve on a background thread (tests, embedding)."""
        thread = threading.Thread(target=self.serve_forever, name="pixdedup-review", daemon=True)
        thread.start()
        return thread

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- the API ---------------------------------------------------------------------------------
    def state(self, groups: list[int]) -> dict[str, Any]:
        with FeatureStore(self.db, lock=False) as store:
            return {"groups": [s.to_dict() for s in group_states(store, groups)]}

    def decide(self, doc: Any) -> dict[str, Any]:
        if not isinstance(doc, dict):
            raise _HTTPError(HTTPStatus.BAD_REQUEST, "expected a JSON object")
        action, group, uri = doc.get("action"), doc.get("group"), doc.get("uri")
        if action not in ACTIONS:
            raise _HTTPError(HTTPStatus.BAD_REQUEST, f"action must be one of {', '.join(ACTIONS)}")
        if not isinstance(group, int) or isinstance(group, bool):
            raise _HTTPError(HTTPStatus.BAD_REQUEST, "group must be a group id")
        if uri is not None and not isinstance(uri, str):
            raise _HTTPError(HTTPStatus.BAD_REQUEST, "uri must be a string")
        with FeatureStore(self.db, lock=False) as store:
            try:
                return {"group": decide(store, group, action, uri).to_dict()}
            except DecisionError as exc:
                status = HTTPStatus.NOT_FOUND if exc.missing else HTTPStatus.BAD_REQUEST
                raise _HTTPError(status, str(exc)) from None


class _Handler(BaseHTTPRequestHandler):
    review: ReviewServer
    server_version = "pixdedup-review"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
        pass

    # -- checks ------------------------------------------------------------------------------------
    def _check(self, header_only: bool = False) -> None:
        host = (self.headers.get("Host") or "").lower()
        allowed = {f"{name}:{self.review.port}" for name in (LOOPBACK, "localhost", "[::1]")}
        if host not in allowed:
            raise _HTTPError(HTTPStatus.FORBIDDEN, "wrong host")
        given = self.headers.get("X-Pixdedup-Token")
        if given is None and not header_only:
            given = parse_qs(urlsplit(self.path).query).get("token", [""])[0] or None
        if given is None or not hmac.compare_digest(given.encode(), self.review.token.encode()):
            raise _HTTPError(HTTPStatus.FORBIDDEN, "missing or wrong token")

    # -- responses ---------------------------------------------------------------------------------
    def _send(self, status: HTTPStatus, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy",
                         "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src "
                         "'unsafe-inline'; img-src data:; connect-src 'self'; frame-ancestors 'none'")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: HTTPStatus, doc: Any) -> None:
        self._send(status, json.dumps(doc).encode(), "application/json")

    def _file(self, path: str, ctype: str) -> None:
        try:
            with open(path, "rb") as fh:
                body = fh.read()
        except OSError:
            raise _HTTPError(HTTPStatus.NOT_FOUND, "not found") from None
        self._send(HTTPStatus.OK, body, ctype)

    def _guard(self, handle: Any) -> None:
        try:
            handle()
        except _HTTPError as exc:
            self._json(exc.status, {"error": str(exc)})
        except PixdedupError as exc:
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)})

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._guard(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._guard(self._post)

    def _get(self) -> None:
        self._check()
        parts = urlsplit(self.path)
        route = parts.path
        if route in ("/", "/" + HTML_NAME):
            self._file(os.path.join(self.review.out_dir, HTML_NAME), "text/html; charset=utf-8")
        elif route.startswith(f"/{FILES_DIR}/") and PAGE_FILE.fullmatch(route[len(FILES_DIR) + 2:]):
            self._file(os.path.join(self.review.out_dir, FILES_DIR, route[len(FILES_DIR) + 2:]),
                       "text/javascript; charset=utf-8")
        elif route == "/api/state":
            raw = (parse_qs(parts.query).get("groups") or [""])[0]
            try:
                ids = [int(x) for x in raw.split(",") if x]
            except ValueError:
                raise _HTTPError(HTTPStatus.BAD_REQUEST, "groups must be group ids") from None
            if len(ids) > MAX_GROUPS_PER_STATE:
                raise _HTTPError(HTTPStatus.BAD_REQUEST, "too many groups in one request")
            self._json(HTTPStatus.OK, self.review.state(ids))
        else:
            raise _HTTPError(HTTPStatus.NOT_FOUND, "not found")

    def _post(self) -> None:
        self._check(header_only=True)
        if urlsplit(self.path).path != "/api/decide":
            raise _HTTPError(HTTPStatus.NOT_FOUND, "not found")
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            raise _HTTPError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "expected application/json")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            raise _HTTPError(HTTPStatus.BAD_REQUEST, "bad request body length")
        try:
            doc = json.loads(self.rfile.read(length))
        except ValueError:
            raise _HTTPError(HTTPStatus.BAD_REQUEST, "invalid JSON") from None
        self._json(HTTPStatus.OK, self.review.decide(doc))
