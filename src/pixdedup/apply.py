"""``pixdedup apply`` and ``pixdedup undo``: act on the reviewed groups, journalled.

Actions (the groups are the last scan's, with the review decisions laid over them):

    move       every duplicate leaves the collection for DEST/<relative path>
               (default OUT/moved; for a bucket, PREFIX_deduplicated/moved/ in the same
               bucket, by server-side copy + delete)
    delete     every duplicate goes to TRASH/<relative path> (default OUT/trash);
               with ``permanent`` it is unlinked, which no undo can bring back
    copy, hardlink, symlink
               OUT/best/ and OUT/duplicates/ are brought in line with the decisions
               (files whose role changed move between the two; missing ones are placed
               by that method); the collection is not touched

Safety rules, each checked right before the operation it guards:

* a file is moved or deleted only while its content hash (BLAKE3) equals the scan's;
  a file that changed since the scan is left alone and reported;
* never the last copy: a group's duplicates go only while its kept image is in place
  with the scan's content (and is not the same file), and the kept image never goes;
* paths come from the store but must stay inside the collection (the scan's root) and
  the destination folders; anything else is refused and reported.

Write-ahead journal, in OUT/.pixdedup-journal/ (for a bucket output: next to the
store): ``NNNN.plan.json`` holds every operation and is on disk (fsync, atomic
rename) before the first one runs;
``NNNN.log`` gets a line per finished operation.  Every operation can tell from the
file system whether it already ran: a move never overwrites and never leaves two
copies (a hard link then an unlink; across file systems or in a bucket the bytes wait
in ``DEST.pixdedup-part`` while the source goes); a placement goes through the same
part name.  So after a kill at any point ``apply`` again finishes the plan and
``undo`` rolls back exactly what was done, and neither ever deletes a file it did not
move.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .actions import MANAGED, MARKER
from .decisions import GroupState, group_states
from .errors import OutputError, PixdedupError
from .files import PART, Files, safe_join, safe_key, settle_part
from .files.bucket import BucketFiles
from .files.local import LocalFiles, hash_or_none, place
from .journal import JOURNAL_DIR, Journal, LogFile
from .plan import default_output, default_store_dir
from .sources.cloud import (
    Bucket,
    CloudOptions,
    is_remote,
    parse_url,
    require_same_store,
)
from .store import STORE_NAME, FeatureStore, GroupMember, StoreError

ACTIONS = ("copy", "hardlink", "symlink", "move", "delete")


class ApplyError(PixdedupError):
    """apply or undo cannot start (no scan, interrupted run of another kind, ...)."""


@dataclass(frozen=True, slots=True)
class Op:
    kind: str
    """'move' (src -> dst), 'unlink' (src) or 'place' (dst made from src by ``method``)."""
    src: str
    dst: str | None
    hash: str
    size: int
    method: str | None = None
    keeper: str | None = None
    """move/unlink of a duplicate: the group's kept image, which must stay intact."""
    keeper_hash: str | None = None
    layout: bool = False
    """Inside the output folder (copy, hardlink, symlink)."""


@dataclass(slots=True)
class Outcome:
    """What an apply or undo did; ``problems`` lists every file left alone, and why."""

    journal: int
    action: str
    done: int = 0
    bytes: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)
    planned: int = 0
    dry_run: bool = False
    resumed: bool = False
    destination: str | None = None
    gone: int = 0
    """Files of the scan no longer in the collection (an earlier apply took them)."""

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self),
                "problems": [{"path": p, "reason": r} for p, r in self.problems]}


# -- planning --------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Context:
    home: str
    """Local folder of the journal (the output folder, or the store's folder for a bucket)."""
    root: str
    """The collection: a folder, or the az:// / s3:// URL of the scanned prefix."""
    store: FeatureStore
    fs: Files
    problems: list[tuple[str, str]]
    gone: int = 0

    @property
    def remote(self) -> bool:
        return is_remote(self.root)

    def inside(self, m: GroupMember) -> str:
        """The member's file or object, refusing a store path that would leave the collection."""
        path = self.join(self.root, m.rel_path)
        same = m.uri == path if self.remote else os.path.abspath(m.uri) == os.path.abspath(path)
        if not same:
            raise OutputError(f"unsafe path {m.uri!r}: not {m.rel_path!r} inside the collection")
        return path

    def join(self, base: str, rel_path: str) -> str:
        if is_remote(base):
            url = parse_url(base)
            prefix = url.prefix if not url.prefix or url.prefix.endswith("/") else url.prefix + "/"
            return url.key_url(safe_key(prefix, rel_path))
        return safe_join(base, rel_path)

    def free(self, path: str, taken: set[str]) -> str:
        """``path``, or ``name~N.ext`` if something is there already."""
        stem, ext = os.path.splitext(path)
        candidate, n = path, 1
        # case-folded: two names that differ only in case collide on some file systems
        while candidate.casefold() in taken or self.fs.exists(candidate):
            candidate, n = f"{stem}~{n}{ext}", n + 1
        taken.add(candidate.casefold())
        return candidate


def _removal_ops(ctx: _Context, states: list[GroupState], dest: str | None) -> list[Op]:
    ops: list[Op] = []
    taken: set[str] = set()
    for st in states:
        try:
            keeper = ctx.inside(st.best)
        except OutputError as exc:
            ctx.problems.extend((m.rel_path, f"group {st.id} left alone: {exc}") for m in st.duplicates)
            continue
        for m in st.duplicates:
            try:
                src = ctx.inside(m)
                if not ctx.fs.exists(src):
                    ctx.gone += 1
                    continue
                dst = None if dest is None else ctx.free(ctx.join(dest, m.rel_path), taken)
            except OutputError as exc:
                ctx.problems.append((m.rel_path, str(exc)))
                continue
            ops.append(Op("unlink" if dst is None else "move", src, dst, m.content_hash, m.size,
                          keeper=keeper, keeper_hash=st.best.content_hash))
    return ops


def _layout_ops(ctx: _Context, states: list[GroupState], method: str) -> list[Op]:
    ops: list[Op] = []
    roles: list[tuple[GroupMember, str]] = []
    for st in states:
        roles.extend((m, "duplicates" if st.status(m) == "duplicate" else "best") for m in st.members)
    roles.extend((m, "best") for m in ctx.store.ungrouped())
    for m, folder in roles:
        other = "best" if folder == "duplicates" else "duplicates"
        try:
            src = ctx.inside(m)
            right = safe_join(os.path.join(ctx.home, folder), m.rel_path)
            wrong = safe_join(os.path.join(ctx.home, other), m.rel_path)
        except OutputError as exc:
            ctx.problems.append((m.rel_path, str(exc)))
            continue
        if os.path.lexists(right):
            continue
        if not os.path.lexists(src):
            ctx.gone += 1
            continue
        if os.path.lexists(wrong):
            ops.append(Op("move", wrong, right, m.content_hash, m.size, layout=True))
        else:
            ops.append(Op("place", src, right, m.content_hash, m.size, method=method, layout=True))
    return ops


# -- running one operation -------------------------------------------------------------------------
def _keeper_problem(fs: Files, op: Op) -> str | None:
    if op.keeper is None:
        return None
    if fs.hash(op.keeper) != op.keeper_hash:
        return f"kept image {op.keeper} is missing or changed since the scan: the last copy stays"
    if fs.same(op.keeper, op.src):
        return "same file as the group's kept image"
    return None


def _forward(op: Op, fs: Files) -> str | None:
    """Run one operation (or finish it after a kill); None if done, else why not."""
    if op.kind == "place":
        assert op.dst is not None and op.method is not None
        if os.path.lexists(op.dst + PART):
            os.unlink(op.dst + PART)
        if os.path.lexists(op.dst):
            target = os.path.join(os.path.dirname(op.dst), os.readlink(op.dst)) \
                if os.path.islink(op.dst) else None
            ours = (target is not None and os.path.abspath(target) == os.path.abspath(op.src)) \
                or (not os.path.islink(op.dst) and hash_or_none(op.dst) == op.hash)
            return None if ours else "something else is already there"
        if hash_or_none(op.src) != op.hash:
            return "changed or missing since the scan"
        try:
            place(op.src, op.dst, op.method)
        except OSError as exc:
            if op.method != "hardlink":
                raise
            return f"cannot hard-link ({exc.strerror}); use --action copy or symlink"
        return None
    if op.dst is not None:
        settle_part(fs, op.src, op.dst, op.hash)
    src_there = fs.exists(op.src)
    if op.kind == "unlink":
        if not src_there:
            return None
        problem = (None if fs.hash(op.src) == op.hash else "changed since the scan") \
            or _keeper_problem(fs, op)
        if problem:
            return problem
        fs.unlink(op.src)
        return None
    assert op.dst is not None
    dst_there = fs.exists(op.dst)
    if src_there and dst_there:
        if fs.linked(op.src, op.dst):  # killed between the link and the unlink
            fs.unlink(op.src)
            return None
        return f"{op.dst} is taken by another file; left alone"
    if dst_there:
        return None
    if not src_there:
        return "missing (moved or deleted since the scan)"
    problem = (None if fs.hash(op.src) == op.hash else "changed since the scan") \
        or _keeper_problem(fs, op)
    if problem:
        return problem
    try:
        fs.move(op.src, op.dst)
    except FileExistsError:
        return f"{op.dst} is taken by another file; left alone"
    return None


RESTORED = ""
"""_backward: the operation was rolled back (any other text: why it could not be)."""


def _backward(op: Op, fs: Files) -> str | None:
    """Undo one operation, whatever point it reached: RESTORED, None (it never ran, or
    was rolled back already) or why it cannot be."""
    if op.kind == "unlink":
        return None if fs.exists(op.src) else "deleted permanently; it cannot be restored"
    assert op.dst is not None
    if op.kind == "place":
        if os.path.lexists(op.dst + PART):
            os.unlink(op.dst + PART)
        if not os.path.lexists(op.dst):
            return None
        if os.path.islink(op.dst) or hash_or_none(op.dst) == op.hash:
            os.unlink(op.dst)
            return RESTORED
        return f"{op.dst} changed since apply; left in place"
    settle_part(fs, op.src, op.dst, op.hash)  # the apply's own move, killed midway
    settle_part(fs, op.dst, op.src, op.hash)  # an earlier undo's move, killed midway
    src_there, dst_there = fs.exists(op.src), fs.exists(op.dst)
    if src_there and dst_there:
        if fs.linked(op.src, op.dst):  # a move stopped between its link and its unlink
            fs.unlink(op.dst)
            return RESTORED
        return None  # the original is in place; what is at the destination is not ours
    if dst_there:
        try:
            fs.move(op.dst, op.src)
        except FileExistsError:
            return f"{op.src} is taken by another file; {op.dst} left where it is"
        return RESTORED
    return None if src_there else "missing from both places"


# -- apply and undo --------------------------------------------------------------------------------
def _open(out_dir: str, db: str | None) -> tuple[str, FeatureStore]:
    """(the journal's folder, the store, locked) of the scan that wrote ``out_dir``."""
    if is_remote(out_dir):  # a bucket output: store and journal in the local cache folder
        path = os.path.abspath(db) if db else os.path.join(default_store_dir(out_dir), STORE_NAME)
        home = os.path.dirname(path)
    else:
        home = os.path.abspath(out_dir)
        if not os.path.isdir(home) or not os.path.exists(os.path.join(home, MARKER)):
            raise ApplyError(f"{out_dir} is not a pixdedup output folder; run 'pixdedup scan' first")
        path = os.path.abspath(db) if db else os.path.join(home, STORE_NAME)
    if not os.path.isfile(path):
        raise ApplyError(f"no feature store at {path}; run 'pixdedup scan' first")
    try:
        return home, FeatureStore(path)
    except StoreError as exc:
        raise ApplyError(str(exc)) from None


def _cloud_options(store: FeatureStore) -> CloudOptions:
    """The scan's endpoint, pacing and retries (credentials come from the environment)."""
    saved = json.loads(store.get_meta("config") or "{}")
    names = {f.name for f in dataclasses.fields(CloudOptions)}
    return CloudOptions(**{k: v for k, v in saved.items() if k in names})


def _files(root: str, cloud: dict[str, Any] | None) -> Files:
    if not is_remote(root):
        return LocalFiles()
    return BucketFiles(Bucket(parse_url(root), CloudOptions(**(cloud or {}))))


def apply(out_dir: str, action: str, *, dest: str | None = None, trash: str | None = None,
          permanent: bool = False, dry_run: bool = False, only_accepted: bool = False,
          db: str | None = None) -> Outcome:
    """Apply the reviewed groups of the scan in ``out_dir`` (see the module text)."""
    if action not in ACTIONS:
        raise ApplyError(f"unknown action {action!r}; choose one of {', '.join(ACTIONS)}")
    if permanent and action != "delete":
        raise ApplyError("--permanent goes with --action delete")
    home, store = _open(out_dir, db)
    with store:
        numbers = Journal.numbers(home)
        if numbers:
            last = Journal(home, numbers[-1])
            if last.undo_started() and not last.undone():
                raise ApplyError(f"the undo of apply #{last.number} was interrupted; run "
                                 f"'pixdedup undo {out_dir}' to finish it first")
            if not last.complete() and not last.undone():
                plan = last.plan()
                given = dest if action == "move" else trash
                if plan["action"] != action or plan["permanent"] != permanent \
                        or plan.get("only_accepted", False) != only_accepted \
                        or (given is not None and plan.get("given") != given):
                    raise ApplyError(
                        f"apply #{last.number} ({plan['action']}) was interrupted; run the "
                        f"same command again to finish it, or 'pixdedup undo {out_dir}' to "
                        "roll it back")
                if dry_run:
                    return Outcome(last.number, action, planned=len(plan["ops"]), dry_run=True,
                                   resumed=True, destination=plan.get("destination"))
                return _run(last, plan, store, resumed=True)
        run = store.last_run()
        if run is None:
            raise ApplyError("the feature store has no scan; run 'pixdedup scan' first")
        if not run["finished"]:
            raise ApplyError("the last scan did not finish; run 'pixdedup scan' again first")
        root = str(run["root"])
        cloud = dataclasses.asdict(_cloud_options(store)) if is_remote(root) else None
        if (is_remote(root) or is_remote(out_dir)) and action not in ("move", "delete"):
            raise ApplyError("for a bucket, apply moves or deletes (--action move|delete); "
                             "copy, hardlink and symlink rebuild a local output folder")
        if not is_remote(root):
            if not os.path.isdir(root):
                raise ApplyError(f"the scanned collection {root} is not there any more")
            root = os.path.abspath(root)
        ctx = _Context(home, root, store, _files(root, cloud), [])
        states = group_states(store)
        if only_accepted:
            states = [s for s in states if s.accepted]
        destination: str | None
        if action in ("move", "delete"):
            destination = None if permanent else _destination(
                dest if action == "move" else trash, "moved" if action == "move" else "trash",
                home, root)
            ops = _removal_ops(ctx, states, destination)
        else:
            destination = home
            ops = _layout_ops(ctx, states, action)
        number = (numbers[-1] + 1) if numbers else 1
        outcome = Outcome(number, action, planned=len(ops), dry_run=dry_run,
                          destination=destination, problems=ctx.problems, gone=ctx.gone)
        if dry_run or not ops:  # nothing to do: no journal, so undo still means the last real apply
            outcome.bytes = sum(op.size for op in ops)
            return outcome
        journal = Journal(home, number)
        plan = {"version": 1, "action": action, "permanent": permanent, "created": time.time(),
                "root": root, "cloud": cloud, "destination": destination,
                "given": dest if action == "move" else trash, "only_accepted": only_accepted,
                "new_dirs": _new_dirs(ops),
                "problems": ctx.problems, "ops": [dataclasses.asdict(op) for op in ops]}
        journal.write_plan(plan)
        return _run(journal, plan, store, resumed=False)


def _destination(given: str | None, name: str, home: str, root: str) -> str:
    """Where moved or trashed files go: ``given``, else ``name/`` in the output folder
    (for a bucket: in the scan's default output prefix, same bucket); never inside the
    collection, and in the collection's own bucket."""
    if is_remote(root):
        url = parse_url(given or default_output(root) + name + "/")
        src = parse_url(root)
        try:
            require_same_store(src, url)
        except OutputError as exc:
            raise ApplyError(str(exc).replace("--out", "the destination")) from None
        prefix = url.prefix if url.prefix.endswith("/") else url.prefix + "/"
        if prefix.startswith(src.prefix) or src.prefix.startswith(prefix):
            raise ApplyError(f"destination {url} overlaps the collection {root}; choose another")
        out = parse_url(default_output(root)).prefix
        if any(prefix.startswith(out + m + "/") for m in MANAGED):
            raise ApplyError(f"destination {url} is inside what the next scan replaces; choose another")
        return url.key_url(prefix)
    if given is not None and is_remote(given):
        raise ApplyError("a local collection moves into a local folder")
    dest = os.path.abspath(given or os.path.join(home, name))
    real, rroot, rhome = os.path.realpath(dest), os.path.realpath(root), os.path.realpath(home)

    def within(path: str, folder: str) -> bool:
        return path == folder or path.startswith(folder + os.sep)

    if within(real, rroot) or within(rroot, real):
        raise ApplyError(f"destination {dest} overlaps the collection {root}; choose another")
    if within(rhome, real) or any(within(real, os.path.join(rhome, m)) for m in MANAGED) \
            or within(real, os.path.join(rhome, JOURNAL_DIR)):
        raise ApplyError(f"destination {dest} is (or holds) what the next scan replaces in "
                         f"{home}; choose another")
    return dest


def _still_wanted(store: FeatureStore, root: str) -> Callable[[Op], str | None]:
    """For a resumed plan: a removal that the review has withdrawn since the plan was
    made (the file is kept now, or its group keeps another image) is skipped."""
    states = group_states(store)
    norm = (lambda u: u) if is_remote(root) else os.path.abspath
    role: dict[str, tuple[str, str]] = {}
    for st in states:
        for m in st.members:
            role[norm(m.uri)] = (st.status(m), norm(st.best.uri))

    def check(op: Op) -> str | None:
        if op.layout or op.keeper is None:
            return None
        status, best = role.get(op.src, ("gone", ""))
        if status != "duplicate" or best != op.keeper:
            return "the review changed since this apply was planned; left alone"
        return None

    return check


def _run(journal: Journal, plan: dict[str, Any], store: FeatureStore, resumed: bool) -> Outcome:
    """Run (or, ``resumed``, finish) a written plan; a fresh plan was made from the
    review as it is now, a resumed one is checked against it op by op."""
    ops = [Op(**d) for d in plan["ops"]]
    done = journal.finished()
    wanted = _still_wanted(store, plan["root"]) if resumed else (lambda op: None)
    outcome = Outcome(journal.number, plan["action"], planned=len(ops), resumed=resumed,
                      destination=plan.get("destination"),
                      problems=[(str(p), str(r)) for p, r in plan.get("problems", [])])
    fs = _files(plan["root"], plan.get("cloud"))
    log = LogFile(journal.log_path)
    try:
        for k, op in enumerate(ops):
            if k in done:
                continue
            try:
                problem = wanted(op) or _forward(op, fs)
            except OSError as exc:
                problem = f"{exc.strerror or exc}"
            if problem:
                outcome.problems.append((op.src, problem))
                log.write({"k": k, "skipped": problem})
            else:
                outcome.done += 1
                outcome.bytes += op.size
                log.write({"k": k, "done": True})
        log.write({"complete": True})
    finally:
        log.close()
    return outcome


def undo(out_dir: str, db: str | None = None) -> Outcome:
    """Roll back the last apply that is not undone yet, completed or interrupted."""
    home, store = _open(out_dir, db)
    with store:
        journal = next((Journal(home, n) for n in reversed(Journal.numbers(home))
                        if not Journal(home, n).undone()), None)
        if journal is None:
            raise ApplyError(f"nothing to undo in {out_dir}")
        plan = journal.plan()
        ops = [Op(**d) for d in plan["ops"]]
        last = store.last_run()
        rescanned = last is not None and float(last["started"]) > float(plan["created"])
        outcome = Outcome(journal.number, plan["action"], planned=len(ops),
                          destination=plan.get("destination"))
        fs = _files(plan["root"], plan.get("cloud"))
        log = LogFile(journal.undo_path)
        try:
            for k in range(len(ops) - 1, -1, -1):
                op = ops[k]
                if op.layout and rescanned:  # a later scan rebuilt best/ and duplicates/
                    continue
                try:
                    problem = _backward(op, fs)
                except OSError as exc:
                    problem = f"{exc.strerror or exc}"
                if problem == RESTORED:
                    outcome.done += 1
                    outcome.bytes += op.size
                elif problem:
                    outcome.problems.append((op.src, problem))
                log.write({"k": k, "problem": problem})
            _prune_empty(plan.get("new_dirs", []))
            log.write({"undone": True})
        finally:
            log.close()
        if rescanned and any(op.layout for op in ops):
            outcome.problems.append((home, "a scan ran after this apply and rebuilt best/ and "
                                          "duplicates/; those were left as the scan wrote them"))
        return outcome


def _new_dirs(ops: list[Op]) -> list[str]:
    """The local folders apply will create (not there when planned), deepest first."""
    new: set[str] = set()
    for op in ops:
        if op.dst is None or is_remote(op.dst):
            continue
        folder = os.path.dirname(op.dst)
        while folder and not os.path.isdir(folder) and folder not in new:
            new.add(folder)
            folder = os.path.dirname(folder)
    return sorted(new, key=lambda f: (-f.count(os.sep), f))


def _prune_empty(folders: list[str]) -> None:
    """Remove the folders apply created, once undo has emptied them (deepest first)."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:
            pass
