"""The faces-mode report and review page in headless Chromium: face crops side by side
with their distance, and "Not the same person" saved and honoured by the next scan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pixdedup
from pixdedup.decisions import Decisions
from pixdedup.review import ReviewServer
from pixdedup.store import FeatureStore

from ..review.test_browser import ARTIFACTS, browser, page  # noqa: F401 - the fixtures
from .conftest import People


def scan(people: People, out: Path) -> pixdedup.ScanResult:
    return pixdedup.scan(str(people.root), out=str(out), mode="faces", workers=2)


def test_report_shows_face_crops_with_distances(page: Any, people: People, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "out"
    scan(people, out)
    page.goto((out / "report.html").as_uri())
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator(".group").count() == 3
    faces = page.eval_on_selector_all(".card", """els => els.map(e => {
        const crop = e.querySelector('.face .crop');
        return {path: e.querySelector('.path').textContent, crop: !!crop,
                text: (e.querySelector('.face .distance') || {}).textContent || '',
                size: crop ? crop.style.backgroundSize : '',
                loaded: !!crop && getComputedStyle(crop).backgroundImage
                                      .startsWith('url("data:image/jpeg')};})""")
    assert len(faces) == 12 and all(f["crop"] and f["loaded"] for f in faces)
    for f in faces:
        person = f["path"].split("_")[0].split(".")[0]
        if f["path"] == f"{person}.jpg":
            assert f["text"] == "best face"
        else:
            distance = float(f["text"].removeprefix("face distance "))
            assert 0 <= distance < 0.5
        # the crop scales the thumbnail so that the face (a part of the frame) fills 64 px
        width = float(f["size"].split("px")[0])
        assert width > 64
    # the evidence names the stage: copies by their pixels, the others by the face
    evidence = page.locator(".card.duplicate .evidence").all_inner_texts()
    assert any(t.startswith("hash") for t in evidence)
    assert all(t.startswith(("hash", "local", "face")) for t in evidence)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "faces-report.png"), full_page=True)
    assert not page.problems


def test_not_the_same_person_is_saved_and_honoured(page: Any, people: People, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "out"
    scan(people, out)
    person = people.registrants[2]
    mirror = f"{person}_mirror.jpg"
    server = ReviewServer(str(out))
    server.start()
    try:
        page.goto(server.url)
        page.wait_for_selector("body[data-ready='1']")
        card = page.locator(".card").filter(has=page.get_by_text(mirror, exact=True))
        button = card.locator("button.distinct")
        assert button.inner_text() == "Not the same person"
        button.click()
        page.wait_for_function("""name => [...document.querySelectorAll('.card.released .path')]
            .some(e => e.textContent === name)""", arg=mirror)
        assert card.locator(".badge").inner_text().lower() == "not the same person"
    finally:
        server.shutdown()
    with FeatureStore(str(out / "pixdedup.db"), lock=False) as store:
        assert len(Decisions.load(store).distinct) >= 1
    again = scan(people, out)
    status = {r.path: r for r in again.results}
    assert status[mirror].group_id != status[f"{person}.jpg"].group_id
    assert status[f"{person}_q60.jpg"].group_id == status[f"{person}.jpg"].group_id
