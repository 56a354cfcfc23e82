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

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .store import FeatureStore, GroupMember

KEEP, DISTINCT, ACCEPTED = "keep", "distinct", "accepted"
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
