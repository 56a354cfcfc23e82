"""The review server: loopback only, the token on every request, fixed file names,
decisions validated against the store."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pixdedup.review import ReviewError, ReviewServer

from .conftest import Collection, run_cli


@pytest.fixture
def server(collection: Collection) -> Iterator[ReviewServer]:
    srv = ReviewServer(str(collection.out))
    srv.start()
    yield srv
    srv.shutdown()


def request(srv: ReviewServer, method: str, path: str, body: object = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    data = None if body is None else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json"} if body is not None else {}
    hdrs.update(headers or {})
    conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    out = resp.status, resp.read()
    conn.close()
    return out


def _outward_address() -> str | None:
    """This machine's address on its default route (no packet is sent)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))
        address: str = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


def test_bound_to_loopback_only(server: ReviewServer) -> None:
    assert server.httpd.server_address[0] == "127.0.0.1"
    assert request(server, "GET", f"/?token={server.token}")[0] == 200
    address = _outward_address()
    if address is not None:  # the machine's other interface does not answer
        with pytest.raises(OSError):
            socket.create_connection((address, server.port), timeout=2).close()


@pytest.mark.parametrize("path", ["/", "/report.html", "/report_files/page-00001.js",
                                  "/api/state?groups=1"])
def test_every_request_needs_the_token(server: ReviewServer, path: str) -> None:
    status, body = request(server, "GET", path)
    assert status == 403 and b"missing or wrong token" in body
    sep = "&" if "?" in path else "?"
    assert request(server, "GET", f"{path}{sep}token=wrong")[0] == 403
    assert request(server, "GET", f"{path}{sep}token={server.token}")[0] == 200
    assert request(server, "GET", path, headers={"X-Pixdedup-Token": server.token})[0] == 200


def test_wrong_host_is_refused(server: ReviewServer) -> None:
    """A page on another site that resolves its name to 127.0.0.1 (DNS rebinding)."""
    status, _ = request(server, "GET", f"/?token={server.token}", headers={"Host": "evil.example:80"})
    assert status == 403


def test_decisions_need_the_token_in_a_header(server: ReviewServer, collection: Collection) -> None:
    body = {"action": "accept", "group": 1}
    assert request(server, "POST", f"/api/decide?token={server.token}", body)[0] == 403
    status, _ = request(server, "POST", "/api/decide", body, {"X-Pixdedup-Token": server.token,
                                                              "Content-Type": "text/plain"})
    assert status == 415
    status, out = request(server, "POST", "/api/decide", body, {"X-Pixdedup-Token": server.token})
    assert status == 200 and json.loads(out)["group"]["accepted"] is True


@pytest.mark.parametrize("path", [
    "/report_files/../pixdedup.db", "/report_files/page-00001.js/../../pixdedup.db",
    "/pixdedup.db", "/report_files/%2e%2e/pixdedup.db", "/report.json", "/../photos/photo0.jpg",
    "/report_files/page-1.js"])
def test_only_the_report_files_are_served(server: ReviewServer, path: str) -> None:
    status, body = request(server, "GET", path, headers={"X-Pixdedup-Token": server.token})
    assert status == 404, body


def test_decisions_are_checked_against_the_store(server: ReviewServer, collection: Collection) -> None:
    h = {"X-Pixdedup-Token": server.token}
    outside = str(collection.root.parent / "elsewhere.jpg")
    for body, status, message in [
        ({"action": "keep", "group": 1, "uri": outside}, 400, "not a member of group 1"),
        ({"action": "keep", "group": 1}, 400, "keep needs the member's uri"),
        ({"action": "delete", "group": 1}, 400, "action must be one of"),
        ({"action": "accept", "group": 999}, 404, "no group 999"),
        ({"action": "accept", "group": "1"}, 400, "group must be a group id"),
        ([1, 2], 400, "expected a JSON object"),
    ]:
        got, out = request(server, "POST", "/api/decide", body, h)
        assert (got, message in json.loads(out)["error"]) == (status, True), out
    assert not collection.decisions()
    got, _ = request(server, "POST", "/api/decide", None, {**h, "Content-Type": "application/json"})
    assert got == 400


def test_keep_and_not_duplicate_are_saved_at_once(server: ReviewServer, collection: Collection) -> None:
    h = {"X-Pixdedup-Token": server.token}
    gid = collection.group_of("photo1.jpg")
    q70 = str(collection.root / "photo1_q70.jpg")
    copy = str(collection.root / "sub" / "photo1.jpg")
    status, out = request(server, "POST", "/api/decide", {"action": "keep", "group": gid, "uri": q70}, h)
    assert status == 200
    state = json.loads(out)["group"]
    assert state["best"] == q70 and state["status"][str(collection.root / "photo1.jpg")] == "duplicate"
    status, out = request(server, "POST", "/api/decide",
                          {"action": "distinct", "group": gid, "uri": copy}, h)
    assert json.loads(out)["group"]["status"][copy] == "released"
    decisions = collection.decisions()
    assert decisions.keep == {q70}
    # sub/photo1.jpg vs photo1_q70 (photo1.jpg is its byte twin: no pair with itself)
    assert len(decisions.distinct) == 1
    status, out = request(server, "GET", f"/api/state?groups={gid}", headers=h)
    assert json.loads(out)["groups"][0]["best"] == q70
    status, out = request(server, "POST", "/api/decide", {"action": "reset", "group": gid}, h)
    assert status == 200 and not collection.decisions()


def test_review_cli_errors(tmp_path: Path) -> None:
    proc = run_cli("review", str(tmp_path))
    assert proc.returncode == 2 and "no report.html" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(ReviewError):
        ReviewServer(str(tmp_path / "missing"))


def test_decision_rules(collection: Collection) -> None:
    """Keeping a member does not undo another member's "not a duplicate"; marking a
    member releases its byte copies with it, and they stay duplicates of each other."""
    from pixdedup.decisions import distinct_changes, keep_changes

    collection.decide(distinct_changes, "photo0.jpg", "photo0_small.jpg")
    g0 = collection.decide(keep_changes, "photo0.jpg", "photo0_q60.jpg")
    status = {m.rel_path: g0.status(m) for m in g0.members}
    assert status == {"photo0_q60.jpg": "best", "photo0_small.jpg": "released",
                      "photo0.jpg": "duplicate", "sub/photo0 copy.jpg": "duplicate"}
    g0 = collection.decide(distinct_changes, "photo0.jpg", "photo0.jpg")
    status = {m.rel_path: g0.status(m) for m in g0.members}
    assert status["photo0.jpg"] == status["sub/photo0 copy.jpg"] == "released"
    assert all(a != b for a, b in collection.decisions().distinct)  # no pair with itself


def test_a_byte_copy_of_the_kept_image_cannot_be_marked(server: ReviewServer,
                                                        collection: Collection) -> None:
    copy = str(collection.root / "sub" / "photo1.jpg")
    status, out = request(server, "POST", "/api/decide", {"action": "distinct", "group":
                          collection.group_of("photo1.jpg"), "uri": copy},
                          {"X-Pixdedup-Token": server.token})
    assert status == 400 and "byte-identical to the kept image" in json.loads(out)["error"]
    assert not collection.decisions()
