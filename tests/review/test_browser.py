"""report.html and the review page in a real browser: headless Debian Chromium driven by
Playwright (no browser download).  Screenshots go to test-artifacts/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pixdedup.models import ImageStatus
from pixdedup.reports import html
from pixdedup.review import ReviewServer

from .conftest import SCRIPT_NAME, Collection, make_collection, scan

CHROMIUM = os.environ.get("PIXDEDUP_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("PIXDEDUP_TEST_ARTIFACTS",
                                Path(__file__).resolve().parents[2] / "test-artifacts"))
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make test does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.problems = []  # page errors, dialogs (a script in a file name would open one), network
    pg.on("pageerror", lambda e: pg.problems.append(f"error: {e}"))
    pg.on("dialog", lambda d: (pg.problems.append(f"dialog: {d.message}"), d.dismiss()))

    def outside(route: Any) -> None:
        url = route.request.url
        if url.startswith(("file://", "data:", "http://127.0.0.1:")):
            route.continue_()
        else:
            pg.problems.append(f"network: {url}")
            route.abort()

    pg.route("**/*", outside)
    yield pg
    ctx.close()


def cards(pg: Any) -> list[dict[str, str]]:
    return pg.eval_on_selector_all(".card", """els => els.map(e => ({
        group: e.closest('.group').dataset.id, cls: e.className,
        path: e.querySelector('.path').textContent, badge: e.querySelector('.badge').textContent}))""")


def test_report_opens_offline_with_groups_and_best_marks(page: Any, collection: Collection) -> None:
    page.goto((collection.out / "report.html").as_uri())
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator(".group").count() == 3
    shown = cards(page)
    assert len(shown) == 10
    best = {c["path"] for c in shown if "best" in c["cls"].split()}
    assert best == {"photo0.jpg", "photo1.jpg", "photo3.jpg"}
    assert {c["path"] for c in shown if c["badge"] == "Duplicate"} == {
        "photo0_q60.jpg", "photo0_small.jpg", "sub/photo0 copy.jpg", "photo1_q70.jpg",
        "sub/photo1.jpg", "photo3_q70.jpg", SCRIPT_NAME}
    for gid in {c["group"] for c in shown}:  # exactly one best per group
        assert sum("best" in c["cls"].split() for c in shown if c["group"] == gid) == 1
    # the HTML file name is text: no element made of it, no script run
    assert page.locator('img[src="x"]').count() == 0
    assert page.locator(".path", has_text=SCRIPT_NAME).count() == 1
    summary = page.locator("#summary").inner_text()
    for fact in ("11 images", "3 groups", "7 duplicates", "1 unique"):
        assert fact.replace(" ", "\n") in summary or fact in summary
    assert page.locator(".thumb img").count() == 10  # every member has its thumbnail
    assert page.locator(".card .actions").count() == 0  # no controls without the review server
    assert not page.problems
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)


def test_pages_load_one_file_at_a_time(page: Any, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(html, "PAGE_SIZE", 1)
    root, out = tmp_path / "photos", tmp_path / "out"
    make_collection(root)
    scan(root, out, dry_run=True)
    assert len(list((out / "report_files").iterdir())) == 3
    page.goto((out / "report.html").as_uri())
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#pages").inner_text() == "3"
    assert page.locator(".group").count() == 1
    assert page.locator("script[src]").count() == 1  # only the page shown was loaded
    first = page.locator(".group h2").inner_text()
    page.click("#next")
    page.wait_for_function("t => document.querySelector('.group h2').textContent !== t", arg=first)
    assert page.locator(".group h2").inner_text() == "Group 2"
    assert page.locator("script[src]").count() == 2
    page.fill("#page", "3")
    page.dispatch_event("#page", "change")
    page.wait_for_function("document.querySelector('.group h2').textContent === 'Group 3'")
    assert page.locator("#next").is_disabled()
    assert not page.problems


def _card(page: Any, path: str) -> Any:
    return page.locator(".card").filter(has=page.get_by_text(path, exact=True))


def test_review_changes_are_saved_and_honoured(page: Any, collection: Collection) -> None:
    server = ReviewServer(str(collection.out))
    server.start()
    try:
        page.goto(server.url)
        page.wait_for_selector("body[data-ready='1']")
        assert page.locator(".card .actions").count() == 10
        # choose the re-encode as the one to keep in photo1's group
        q70 = _card(page, "photo1_q70.jpg")
        q70.locator("button.keep").click()
        page.wait_for_function("""() => [...document.querySelectorAll('.card.best .path')]
            .some(e => e.textContent === 'photo1_q70.jpg')""")
        assert _card(page, "photo1.jpg").get_attribute("class") == "card duplicate"
        # the half-size copy of photo0 is not a duplicate
        _card(page, "photo0_small.jpg").locator("button.distinct").click()
        page.wait_for_function("""() => [...document.querySelectorAll('.card.released .path')]
            .some(e => e.textContent === 'photo0_small.jpg')""")
        assert _card(page, "photo0_small.jpg").locator(".badge").inner_text().lower() == "not a duplicate"
        # accept photo3's group
        group3 = page.locator(".group", has=page.get_by_text("photo3_q70.jpg", exact=True))
        group3.locator("button.accept").click()
        page.wait_for_function("""() => [...document.querySelectorAll('.accepted-badge')]
            .some(e => e.textContent.includes('accepted'))""")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "review.png"), full_page=True)
        # saved at once: the store has them, and a reload shows them
        decisions = collection.decisions()
        assert decisions.keep == {str(collection.root / "photo1_q70.jpg")}
        assert len(decisions.distinct) == 2  # photo0_small vs photo0 (= its byte copy) and q60
        assert len(decisions.accepted) == 1  # photo3 ~ photo3_q70 (the HTML-named copy is byte-identical)
        page.reload()
        page.wait_for_selector("body[data-ready='1']")
        page.wait_for_function("""() => [...document.querySelectorAll('.card.best .path')]
            .some(e => e.textContent === 'photo1_q70.jpg')""")
        assert not page.problems
    finally:
        server.shutdown()
    # a new scan honours the review: photo1_q70 is the best, photo0_small is on its own
    result = {r.path: r for r in scan(collection.root, collection.out, dry_run=True).results}
    assert result["photo1_q70.jpg"].status is ImageStatus.BEST
    assert result["photo1.jpg"].best_path == "photo1_q70.jpg"
    assert result["photo0_small.jpg"].status is ImageStatus.UNIQUE
    assert result["photo0_q60.jpg"].best_path == "photo0.jpg"
    page.goto((collection.out / "report.html").as_uri())
    page.wait_for_selector("body[data-ready='1']")
    assert "best" in _card(page, "photo1_q70.jpg").get_attribute("class").split()
    assert _card(page, "photo0_small.jpg").count() == 0
