"""Review decisions: what the user said about a group, honoured by every later scan and
by ``apply``.

Kept in the feature store (table ``decisions``), three kinds:

    keep      a = URI                  this file is the best of its group
    distinct  a < b content hashes     these two images are not duplicates: never grouped again
    accepted  a < b content hashes     the user accepted the pair: grouped even if verification
                                       (or a changed threshold) would not (the review's "accept",
                                       Match Stage "accepted")

Pairs are keyed by content (BLAKE3), not by path, so a decision survives a rename or a
move; ``keep`` names one file, because byte-identical copies differ only by their path.

A group as the user now sees it (:class:`GroupState`) is the last scan's group with the
decisions laid over it: the kept file is the best, a member marked "not a duplicate" of
that best is released (it stays where it is, like a unique image).  ``apply`` acts on
exactly these states, and the review page shows them.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import PixdedupError
from .store import STORE_NAME, FeatureStore, GroupMember, open_existing

KEEP, DISTINCT, ACCEPTED = "keep", "distinct", "accepted"
ACTIONS = ("keep", "distinct", "accept", "reset")
"""What a reviewer can say about a group (the review page's buttons, ``decide``)."""
Change = tuple[str, str, str]


def pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


@dataclass(frozen=True, slots=True)
class Decisions:
    keep: frozenset[str]
    distinct: frozenset[tuple[str, str]]
    accepted: frozenset[tuple[str, str]]

    @classmethod
    def load(cls, store: FeatureStore) -> Decisions:
        keep: set[str] = set()
        distinct: set[tuple[str, str]] = set()
        accepted: set[tuple[str, str]] = set()
        for kind, a, b in store.decisions():
            if kind == KEEP:
                keep.add(a)
            elif kind == DISTINCT:
                distinct.add(pair(a, b))
            elif kind == ACCEPTED:
                accepted.add(pair(a, b))
        return cls(frozenset(keep), frozenset(distinct), frozenset(accepted))

    def __bool__(self) -> bool:
        return bool(self.keep or self.distinct or self.accepted)

    def is_distinct(self, a: str, b: str) -> bool:
        return pair(a, b) in self.distinct

    def is_accepted(self, a: str, b: str) -> bool:
        return a == b or pair(a, b) in self.accepted


@dataclass(frozen=True, slots=True)
class GroupState:
    """A group of the last scan with the user's decisions applied."""

    id: int
    members: tuple[GroupMember, ...]
    best: GroupMember
    duplicates: tuple[GroupMember, ...]
    released: tuple[GroupMember, ...]
    """Marked "not a duplicate" of the best: kept, like a unique image."""
    accepted: bool
    """Every duplicate confirmed by the user."""

    def status(self, m: GroupMember) -> str:
        if m.id == self.best.id:
            return "best"
        return "released" if m in self.released else "duplicate"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "best": self.best.uri, "accepted": self.accepted,
                "status": {m.uri: self.status(m) for m in self.members}}


def resolve(members: Sequence[GroupMember], decisions: Decisions) -> GroupState:
    """One group's state; ``members`` as the store lists them (scan's best first).  A
    group whose best is no longer in the store (the file vanished) keeps everything."""
    scan_best = next((m for m in members if m.best), None)
    keeps = [m for m in members if m.uri in decisions.keep]
    best = keeps[0] if keeps else scan_best or members[0]
    duplicates: list[GroupMember] = []
    released: list[GroupMember] = []
    for m in members:
        if m.id == best.id:
            continue
        if scan_best is None and not keeps or decisions.is_distinct(m.content_hash, best.content_hash):
            released.append(m)
        else:
            duplicates.append(m)
    accepted = bool(duplicates) and all(decisions.is_accepted(best.content_hash, m.content_hash)
                                        for m in duplicates)
    return GroupState(members[0].group, tuple(members), best, tuple(duplicates), tuple(released),
                      accepted)


def group_states(store: FeatureStore, group_ids: Iterable[int] | None = None) -> list[GroupState]:
    """The last scan's groups (all, or ``group_ids``) with the decisions applied."""
    decisions = Decisions.load(store)
    by_group: dict[int, list[GroupMember]] = defaultdict(list)
    for m in store.group_members(group_ids):
        by_group[m.group].append(m)
    return [resolve(ms, decisions) for _, ms in sorted(by_group.items())]


# -- the review page's actions, as changes to the stored decisions -----------------------------
def _among(state: GroupState, kinds: Iterable[str]) -> list[Change]:
    """Every stored-form decision of ``kinds`` among the group's members (pairs of two
    different contents: byte-identical files are always duplicates)."""
    hashes = sorted({m.content_hash for m in state.members})
    out: list[Change] = []
    for kind in kinds:
        if kind == KEEP:
            out.extend((KEEP, m.uri, "") for m in state.members)
        else:
            out.extend((kind, a, b) for k, a in enumerate(hashes) for b in hashes[k + 1:])
    return out


def keep_changes(state: GroupState, member: GroupMember) -> tuple[list[Change], list[Change]]:
    """Make ``member`` the group's best: (add, remove).  "Not a duplicate" answers stay
    as they are (a member released from the group stays released)."""
    return [(KEEP, member.uri, "")], [(KEEP, m.uri, "") for m in state.members if m.id != member.id]


def distinct_changes(state: GroupState, member: GroupMember | None
                     ) -> tuple[list[Change], list[Change]]:
    """``member`` is not a duplicate of any other member (None: no two members are).
    Decisions are about content: a byte-identical copy of ``member`` is released with
    it, and the two stay duplicates of each other."""
    if member is None:
        return _among(state, [DISTINCT]), _among(state, [KEEP, ACCEPTED])
    others = {m.content_hash for m in state.members} - {member.content_hash}
    add = [(DISTINCT, *pair(member.content_hash, h)) for h in sorted(others)]
    remove = [(KEEP, member.uri, "")] + [(ACCEPTED, *pair(member.content_hash, h)) for h in sorted(others)]
    return add, remove


def accept_changes(state: GroupState) -> tuple[list[Change], list[Change]]:
    """The user confirms the group as shown: every duplicate is one of the best."""
    return [(ACCEPTED, *pair(state.best.content_hash, m.content_hash)) for m in state.duplicates
            if m.content_hash != state.best.content_hash], []


def reset_changes(state: GroupState) -> tuple[list[Change], list[Change]]:
    """Forget every decision among the group's members (back to the scan's verdict)."""
    return [], _among(state, [KEEP, DISTINCT, ACCEPTED])


class DecisionError(PixdedupError):
    """A decision that cannot be taken; ``missing``: the group is not in the last scan."""

    def __init__(self, message: str, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


def decide(store: FeatureStore, group: int, action: str, uri: str | None = None) -> GroupState:
    """One review decision about group ``group`` of the last scan, stored: ``keep``
    (``uri`` becomes the best), ``distinct`` (``uri`` is not a duplicate of the others;
    without ``uri``: no two members are), ``accept`` (the group as shown), ``reset``
    (back to the scan's verdict).  Returns the group as it now is."""
    if action not in ACTIONS:
        raise DecisionError(f"action must be one of {', '.join(ACTIONS)}")
    found = group_states(store, [group])
    if not found:
        raise DecisionError(f"no group {group} in the last scan", missing=True)
    state = found[0]
    member = next((m for m in state.members if m.uri == uri), None)
    if uri is not None and member is None:
        raise DecisionError(f"not a member of group {group}")
    changes: tuple[list[Change], list[Change]]
    if action == "keep":
        if member is None:
            raise DecisionError("keep needs the member's uri")
        changes = keep_changes(state, member)
    elif action == "distinct":
        if member is not None and member.content_hash == state.best.content_hash:
            raise DecisionError("byte-identical to the kept image: always a duplicate (choose "
                                "it with Keep this instead)")
        changes = distinct_changes(state, member)
    elif action == "accept":
        changes = accept_changes(state)
    else:
        changes = reset_changes(state)
    store.change_decisions(add=changes[0], remove=changes[1])
    return group_states(store, [group])[0]


class Review:
    """A scan's groups and the review decisions about them, from Python: what the review
    page does (``pixdedup review``), honoured by every later scan and by ``apply``.
    Members are named by their URI or their path relative to the scanned folder.

        review = Review("Photos_deduplicated")
        for group in review.groups():
            ...
        review.keep(3, "2024/IMG_0042.jpg")     # this one is the best of group 3
        review.not_duplicate(5, "scan.png")     # not a duplicate of the others
        review.accept(7)                        # the group is right as shown
    """

    def __init__(self, out_dir: str, db: str | None = None) -> None:
        self.db = os.path.abspath(db) if db else os.path.join(os.path.abspath(out_dir), STORE_NAME)
        open_existing(self.db).close()

    def groups(self) -> list[GroupState]:
        """Every group of the last scan, decisions applied."""
        with FeatureStore(self.db, lock=False) as store:
            return group_states(store)

    def group(self, group: int) -> GroupState:
        with FeatureStore(self.db, lock=False) as store:
            found = group_states(store, [group])
        if not found:
            raise DecisionError(f"no group {group} in the last scan", missing=True)
        return found[0]

    def _decide(self, group: int, action: str, member: str | None = None) -> GroupState:
        with FeatureStore(self.db, lock=False) as store:
            uri = member
            if member is not None:
                state = group_states(store, [group])
                named = [m.uri for s in state for m in s.members if member in (m.uri, m.rel_path)]
                uri = named[0] if named else member
            return decide(store, group, action, uri)

    def keep(self, group: int, member: str) -> GroupState:
        """``member`` is the best of its group."""
        return self._decide(group, "keep", member)

    def not_duplicate(self, group: int, member: str | None = None) -> GroupState:
        """``member`` is not a duplicate of the others (None: no two members are)."""
        return self._decide(group, "distinct", member)

    def accept(self, group: int) -> GroupState:
        """The group is right as it is shown."""
        return self._decide(group, "accept")

    def reset(self, group: int) -> GroupState:
        """Forget the decisions about the group."""
        return self._decide(group, "reset")
