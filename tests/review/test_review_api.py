"""Review decisions from Python (``pixdedup.Review``), then apply and undo through the
API: the same decisions the review page takes, honoured by the next scan and by apply."""

from __future__ import annotations

from pathlib import Path

import pytest

import pixdedup
from pixdedup.apply import apply, undo
from pixdedup.decisions import DecisionError
from pixdedup.models import ImageStatus

from .conftest import Collection, scan, tree_hashes


def test_keep_and_not_duplicate_through_the_api_are_honoured_by_the_next_scan(
        collection: Collection) -> None:
    review = pixdedup.Review(str(collection.out))
    group = collection.group_of("photo0.jpg")
    assert group is not None
    state = review.keep(group, "photo0_q60.jpg")  # by relative path
    assert state.best.rel_path == "photo0_q60.jpg"
    state = review.not_duplicate(group, "photo0_small.jpg")
    assert [m.rel_path for m in state.released] == ["photo0_small.jpg"]
    assert {g.id for g in review.groups()} >= {group}
    again = scan(collection.root, collection.out, dry_run=True)
    status = {r.path: r for r in again.results}
    assert status["photo0_q60.jpg"].status is ImageStatus.BEST
    assert status["photo0.jpg"].status is ImageStatus.DUPLICATE
    assert status["photo0_small.jpg"].status is ImageStatus.UNIQUE
    regrouped = status["photo0.jpg"].group_id  # the new scan's numbering
    assert regrouped is not None
    review.reset(regrouped)  # its members' decisions forgotten, from the next scan on
    status = {r.path: r.status for r in scan(collection.root, collection.out, dry_run=True).results}
    assert status["photo0.jpg"] is ImageStatus.BEST
    assert status["photo0_q60.jpg"] is ImageStatus.DUPLICATE
    assert status["photo0_small.jpg"] is ImageStatus.UNIQUE  # released: not in that group any more


def test_wrong_decisions_are_one_line_errors(collection: Collection) -> None:
    review = pixdedup.Review(str(collection.out))
    with pytest.raises(DecisionError, match="no group 999"):
        review.accept(999)
    group = collection.group_of("photo0.jpg")
    assert group is not None
    with pytest.raises(DecisionError, match="not a member"):
        review.keep(group, "photo2.jpg")
    with pytest.raises(DecisionError, match="byte-identical"):
        review.not_duplicate(group, "sub/photo0 copy.jpg")
    with pytest.raises(pixdedup.PixdedupError, match="no feature store"):
        pixdedup.Review(str(collection.root / "nowhere"))


def test_apply_dry_run_apply_and_undo_through_the_api(tmp_path: Path, collection: Collection) -> None:
    before = tree_hashes(collection.root)
    out = tmp_path / "applied"
    scan(collection.root, out, dry_run=True)
    planned = apply(str(out), "move", dry_run=True)
    assert planned.dry_run and planned.planned == len(collection.duplicate_paths())
    assert tree_hashes(collection.root) == before  # a dry run moves nothing
    done = apply(str(out), "move")
    assert done.done == planned.planned
    left = tree_hashes(collection.root)
    assert not any(p in left for p in collection.duplicate_paths())
    undo(str(out))
    assert tree_hashes(collection.root) == before
