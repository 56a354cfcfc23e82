"""pixdedup apply / undo on a real folder: every action, byte-identical undo, the safety
rules (changed files, the last copy, paths from the store), and review decisions."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from pixdedup.decisions import accept_changes, distinct_changes, keep_changes

from .conftest import SCRIPT_NAME, Collection, run_cli, tree_hashes

DUPLICATES = {"photo0_q60.jpg", "photo0_small.jpg", "sub/photo0 copy.jpg", "photo1_q70.jpg",
              "sub/photo1.jpg", "photo3_q70.jpg", SCRIPT_NAME}
KEPT = {"photo0.jpg", "photo1.jpg", "photo2.jpg", "photo3.jpg"}


def test_scan_found_the_expected_groups(collection: Collection) -> None:
    assert collection.duplicate_paths() == DUPLICATES
    assert collection.best_paths() == KEPT - {"photo2.jpg"}


@pytest.mark.parametrize("action", ["move", "delete"])
def test_move_and_delete_then_undo_restores_every_byte(collection: Collection, action: str) -> None:
    before = tree_hashes(collection.root)
    proc = run_cli("apply", str(collection.out), "--action", action)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    folder = collection.out / ("moved" if action == "move" else "trash")
    assert "7 files" in proc.stdout and str(folder) in proc.stdout
    after = tree_hashes(collection.root)
    assert set(after) == KEPT  # every duplicate left the collection, every kept image stayed
    assert all(after[p] == before[p] for p in KEPT)
    assert tree_hashes(folder) == {p: before[p] for p in DUPLICATES}  # same relative paths, same bytes
    proc = run_cli("undo", str(collection.out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "7 files restored" in proc.stdout
    assert tree_hashes(collection.root) == before
    assert not folder.exists()  # emptied folders are removed
    proc = run_cli("undo", str(collection.out))
    assert proc.returncode == 2 and "nothing to undo" in proc.stderr


def test_dry_run_changes_nothing(collection: Collection) -> None:
    before = tree_hashes(collection.root)
    proc = run_cli("apply", str(collection.out), "--action", "delete", "--dry-run")
    assert proc.returncode == 0
    assert "7 files" in proc.stdout and "would be moved to the trash" in proc.stdout
    assert tree_hashes(collection.root) == before
    assert not (collection.out / ".pixdedup-journal").exists()


def test_permanent_delete_needs_the_flag_and_cannot_be_undone(collection: Collection) -> None:
    before = tree_hashes(collection.root)
    proc = run_cli("apply", str(collection.out), "--action", "move", "--permanent")
    assert proc.returncode == 2 and "--permanent goes with --action delete" in proc.stderr
    proc = run_cli("apply", str(collection.out), "--action", "delete", "--permanent", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["done"] == 7
    assert set(tree_hashes(collection.root)) == KEPT
    assert not (collection.out / "trash").exists()
    proc = run_cli("undo", str(collection.out))
    assert proc.returncode == 1
    assert proc.stdout.count("deleted permanently; it cannot be restored") == 7
    assert {p: before[p] for p in KEPT} == tree_hashes(collection.root)


@pytest.mark.parametrize("action", ["copy", "hardlink", "symlink"])
def test_layout_actions_build_best_and_duplicates(collection: Collection, action: str) -> None:
    before = tree_hashes(collection.root)
    proc = run_cli("apply", str(collection.out), "--action", action)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    best, dups = collection.out / "best", collection.out / "duplicates"
    assert tree_hashes(best) == {p: before[p] for p in KEPT}
    assert tree_hashes(dups) == {p: before[p] for p in DUPLICATES}
    placed = best / "photo0.jpg"
    if action == "hardlink":
        assert placed.stat().st_ino == (collection.root / "photo0.jpg").stat().st_ino
    elif action == "symlink":
        assert placed.is_symlink() and os.readlink(placed) == str(collection.root / "photo0.jpg")
    else:
        assert not placed.is_symlink() and placed.stat().st_nlink == 1
    assert tree_hashes(collection.root) == before  # the collection is not touched
    assert run_cli("undo", str(collection.out)).returncode == 0
    assert tree_hashes(best) == {} and tree_hashes(dups) == {}
    assert tree_hashes(collection.root) == before


def test_layout_follows_changed_decisions(collection: Collection) -> None:
    """A scan wrote best/ and duplicates/; after the user keeps another copy, apply
    --action copy moves the two files between the folders, and undo moves them back."""
    from .conftest import scan

    scan(collection.root, collection.out)  # with the output layout this time
    out = collection.out
    collection.decide(keep_changes, "photo1.jpg", "photo1_q70.jpg")
    proc = run_cli("apply", str(out), "--action", "copy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 files" in proc.stdout
    assert (out / "best" / "photo1_q70.jpg").exists() and (out / "duplicates" / "photo1.jpg").exists()
    assert not (out / "duplicates" / "photo1_q70.jpg").exists()
    assert run_cli("undo", str(out)).returncode == 0
    assert (out / "duplicates" / "photo1_q70.jpg").exists() and (out / "best" / "photo1.jpg").exists()


def test_review_decisions_decide_what_moves(collection: Collection) -> None:
    """Keep a re-encode instead of the original; say one member is not a duplicate."""
    g0 = collection.decide(keep_changes, "photo0.jpg", "photo0_small.jpg")
    assert g0.best.rel_path == "photo0_small.jpg"
    assert collection.decisions().keep == {g0.best.uri}
    collection.decide(distinct_changes, "photo3.jpg", "photo3_q70.jpg")
    proc = run_cli("apply", str(collection.out), "--action", "move")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    left = set(tree_hashes(collection.root))
    assert left == {"photo0_small.jpg", "photo1.jpg", "photo2.jpg", "photo3.jpg", "photo3_q70.jpg"}
    moved = set(tree_hashes(collection.out / "moved"))
    assert moved == {"photo0.jpg", "photo0_q60.jpg", "sub/photo0 copy.jpg", "photo1_q70.jpg",
                     "sub/photo1.jpg", SCRIPT_NAME}


def test_only_accepted_groups(collection: Collection) -> None:
    assert collection.decide(accept_changes, "photo1.jpg").accepted
    proc = run_cli("apply", str(collection.out), "--action", "move", "--only-accepted")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(tree_hashes(collection.out / "moved")) == {"photo1_q70.jpg", "sub/photo1.jpg"}


def test_changed_file_is_left_alone(collection: Collection) -> None:
    changed = collection.root / "photo0_q60.jpg"
    changed.write_bytes(changed.read_bytes() + b"edited after the scan")
    proc = run_cli("apply", str(collection.out), "--action", "delete")
    assert proc.returncode == 1
    assert "photo0_q60.jpg: changed since the scan" in proc.stdout
    assert "6 files" in proc.stdout
    assert changed.exists()


def test_the_last_copy_is_never_removed(collection: Collection) -> None:
    """The kept image vanished (or changed) after the scan: its duplicates stay."""
    (collection.root / "photo1.jpg").unlink()
    proc = run_cli("apply", str(collection.out), "--action", "delete", "--permanent")
    assert proc.returncode == 1
    assert proc.stdout.count("is missing or changed since the scan: the last copy stays") == 2
    assert (collection.root / "photo1_q70.jpg").exists() and (collection.root / "sub/photo1.jpg").exists()
    assert not (collection.root / "photo0_q60.jpg").exists()  # other groups went ahead


def test_paths_from_the_store_cannot_escape(collection: Collection, tmp_path: Path) -> None:
    """A tampered store points a duplicate outside the collection: refused, untouched."""
    outside, other = tmp_path / "precious.jpg", tmp_path / "other.jpg"
    outside.write_bytes((collection.root / "photo0_q60.jpg").read_bytes())
    other.write_bytes((collection.root / "photo1_q70.jpg").read_bytes())
    db = sqlite3.connect(collection.out / "pixdedup.db")
    with db:
        db.execute("UPDATE images SET uri=?, rel_path=? WHERE rel_path='photo0_q60.jpg'",
                   (str(outside), "../precious.jpg"))
        db.execute("UPDATE images SET uri=?, rel_path=? WHERE rel_path='photo1_q70.jpg'",
                   (str(other), "photo1_q70.jpg"))
    db.close()
    proc = run_cli("apply", str(collection.out), "--action", "delete", "--permanent")
    assert proc.returncode == 1
    assert "unsafe relative path '../precious.jpg'" in proc.stdout
    assert "not 'photo1_q70.jpg' inside the collection" in proc.stdout
    assert outside.exists() and other.exists()
    assert (collection.root / "photo1_q70.jpg").exists()


@pytest.mark.parametrize("where,message", [
    ("photos/dups", "overlaps the collection"),  # inside it
    (".", "overlaps the collection"),  # holding it
    ("out/duplicates", "what the next scan replaces"),  # a scan would delete it
    ("out/best/x", "what the next scan replaces"),
    ("out", "what the next scan replaces"),
])
def test_unsafe_destinations_are_refused(collection: Collection, where: str, message: str) -> None:
    dest = collection.root.parent / where
    for flag, action in (("--to", "move"), ("--trash", "delete")):
        proc = run_cli("apply", str(collection.out), "--action", action, flag, str(dest))
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_a_destination_taken_by_another_file_is_never_overwritten(
        collection: Collection, monkeypatch: pytest.MonkeyPatch) -> None:
    """Planned, then killed; meanwhile another file with the same bytes lands at one
    destination path: the resumed apply leaves that source alone, and undo restores all."""
    from pixdedup import apply as apply_mod

    before = tree_hashes(collection.root)

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(apply_mod, "_run", killed)
    with pytest.raises(KeyboardInterrupt):
        apply_mod.apply(str(collection.out), "move", dest=str(collection.root.parent / "archive"))
    monkeypatch.undo()
    foreign = collection.root.parent / "archive" / "photo0_q60.jpg"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes((collection.root / "photo0_q60.jpg").read_bytes())
    done = apply_mod.apply(str(collection.out), "move", dest=str(collection.root.parent / "archive"))
    assert done.resumed and done.done == 6
    assert any("is taken by another file" in r for _, r in done.problems)
    assert (collection.root / "photo0_q60.jpg").exists() and foreign.exists()
    assert apply_mod.undo(str(collection.out)).done == 6
    assert tree_hashes(collection.root) == before
    assert foreign.exists()  # not ours: undo leaves it


def test_a_resumed_apply_follows_the_current_review(
        collection: Collection, monkeypatch: pytest.MonkeyPatch) -> None:
    from pixdedup import apply as apply_mod

    monkeypatch.setattr(apply_mod, "_run", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        apply_mod.apply(str(collection.out), "delete")
    monkeypatch.undo()
    collection.decide(keep_changes, "photo1.jpg", "photo1_q70.jpg")
    with pytest.raises(apply_mod.ApplyError, match="run the same command again"):
        apply_mod.apply(str(collection.out), "delete", only_accepted=True)
    done = apply_mod.apply(str(collection.out), "delete")
    assert done.resumed
    kept = {p for p, r in done.problems if "the review changed" in r}
    assert kept == {str(collection.root / "photo1_q70.jpg"), str(collection.root / "sub/photo1.jpg")}
    assert (collection.root / "photo1_q70.jpg").exists() and (collection.root / "photo1.jpg").exists()


def test_apply_needs_a_finished_scan(collection: Collection) -> None:
    db = sqlite3.connect(collection.out / "pixdedup.db")
    with db:
        db.execute("INSERT INTO runs(started, root, mode) VALUES (?, ?, 'near')",
                   (9e9, str(collection.root)))
    db.close()
    proc = run_cli("apply", str(collection.out), "--action", "delete", "--permanent")
    assert proc.returncode == 2 and "the last scan did not finish" in proc.stderr
    assert set(tree_hashes(collection.root)) == KEPT | DUPLICATES


def test_undo_removes_only_the_folders_apply_made(collection: Collection) -> None:
    archive = collection.root.parent / "archive"
    (archive / "2019" / "empty-album").mkdir(parents=True)
    assert run_cli("apply", str(collection.out), "--action", "move", "--to", str(archive)).returncode == 0
    assert (archive / "sub" / "photo0 copy.jpg").exists()
    assert run_cli("undo", str(collection.out)).returncode == 0
    assert (archive / "2019" / "empty-album").is_dir() and not (archive / "sub").exists()


def test_undo_keeps_a_file_at_the_destination_that_is_not_the_moved_one(collection: Collection) -> None:
    """After the move the user restored the original from a backup and edited the moved
    copy: undo keeps both."""
    original = (collection.root / "photo0_q60.jpg").read_bytes()
    assert run_cli("apply", str(collection.out), "--action", "move").returncode == 0
    moved = collection.out / "moved" / "photo0_q60.jpg"
    (collection.root / "photo0_q60.jpg").write_bytes(original)
    moved.write_bytes(original + b"edited")
    assert run_cli("undo", str(collection.out)).returncode == 0
    assert moved.read_bytes() == original + b"edited"
    assert (collection.root / "photo0_q60.jpg").read_bytes() == original


def test_a_rescan_honours_the_decisions(collection: Collection) -> None:
    from .conftest import scan

    collection.decide(distinct_changes, "photo1.jpg", "photo1_q70.jpg")
    collection.decide(keep_changes, "photo0.jpg", "sub/photo0 copy.jpg")
    collection.decide(distinct_changes, "photo3.jpg", None)  # the whole group
    result = scan(collection.root, collection.out, dry_run=True).results
    status = {r.path: (r.status.value, r.best_path) for r in result}
    assert status["photo1_q70.jpg"] == ("Unique", None)
    assert status["sub/photo1.jpg"] == ("Duplicate", "photo1.jpg")
    assert status["sub/photo0 copy.jpg"] == ("Best", "sub/photo0 copy.jpg")
    assert status["photo0.jpg"] == ("Duplicate", "sub/photo0 copy.jpg")
    # "not duplicates" for the whole group: the re-encode is on its own; byte-identical
    # files stay duplicates of each other
    assert status["photo3_q70.jpg"] == ("Unique", None)
    assert status[SCRIPT_NAME] == ("Duplicate", "photo3.jpg")


def test_apply_again_after_it_finished_has_nothing_to_do(collection: Collection) -> None:
    assert run_cli("apply", str(collection.out), "--action", "move").returncode == 0
    proc = run_cli("apply", str(collection.out), "--action", "move")
    assert proc.returncode == 0, proc.stdout
    assert "0 files" in proc.stdout and "already gone 7 files" in proc.stdout
    proc = run_cli("undo", str(collection.out))  # still undoes the apply that moved them
    assert "7 files restored" in proc.stdout


def test_move_across_file_systems(collection: Collection, monkeypatch: pytest.MonkeyPatch) -> None:
    """rename() fails with EXDEV: the move copies, verifies, renames, then unlinks."""
    import errno

    from pixdedup import apply as apply_mod

    real_rename = os.rename

    def rename(src: str, dst: str) -> None:
        if src.endswith(".jpg"):  # image files: as if on another device
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_rename(src, dst)

    before = tree_hashes(collection.root)
    monkeypatch.setattr(apply_mod.os, "rename", rename)
    moved = apply_mod.apply(str(collection.out), "move")
    assert moved.done == 7 and not moved.problems
    assert set(tree_hashes(collection.root)) == KEPT
    assert tree_hashes(collection.out / "moved") == {p: before[p] for p in DUPLICATES}
    assert apply_mod.undo(str(collection.out)).done == 7
    assert tree_hashes(collection.root) == before
