"""Modes: what makes two images "the same", one module each, registered by name.

A mode says what it adds to extraction (window and oriented hashes, the model's
input), how it finds candidate pairs in a scanned collection and for query images
against one (``pixdedup query`` uses the same search, so the two cannot drift),
and which pairs it settles without pixels (its membership rule).  The pixel
verification itself (``verify.py``) is shared: a mode hands it the pairs, and in
similar mode each pair's embedding similarity.

A new mode is one module here plus its feature extractor: a class with the
``Mode`` attributes and methods (``CopiesMode`` has the defaults of the copy modes),
``MODES.add(name, instance)`` at the bottom, and its module name in ``BUILT_IN`` below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..registry import Registry

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from ..config import ScanConfig
    from ..models import Evidence, Group, Signatures
    from ..view import CollectionView, EmbeddingLookup

Pair = tuple[int, int]


class ReachCheck(Protocol):
    """``Found.within_reach``: a check of one pair, which ``prepare`` may answer for a
    batch of pairs at once beforehand."""

    def __call__(self, a: int, b: int, /) -> bool: ...

    def prepare(self, pairs: Iterable[tuple[int, int]], /) -> None: ...


@dataclass(slots=True)
class Found:
    """A mode's candidate pairs in a collection (view positions, first < second)."""

    pairs: list[Pair] = field(default_factory=list)
    extend_only: dict[Pair, int] = field(default_factory=dict)
    """The pairs among ``pairs`` that may not start a group, each with the images it may
    lead a group into (``candidates.pair_roles``: ``LEADS_INTO_FIRST``, ``..._SECOND``):
    verified only where the other image is already in a group."""
    distance: dict[Pair, int] = field(default_factory=dict)
    """The hash pairs' distance (``candidates.pair_distance``): an image left out of
    every group is tried against the nearest groups first."""
    cosines: dict[Pair, float] = field(default_factory=dict)
    """Similar mode: the embedding similarity of the pairs the embeddings found."""
    vectors: EmbeddingLookup | None = None
    """Similar mode: the vectors, for the embedding check of any pair."""
    within_reach: ReachCheck | None = None
    """Near mode: whether two images that no candidate pair joins (one reaches a group's
    best through another member) are near enough on their stored signatures to be
    verified at all (``modes.near.Reach``); None: always verified."""


class Mode(Protocol):
    name: str
    window_hashes: bool
    """Extraction adds the window and oriented hashes (crop and orientation search)."""
    embeds: bool
    """Extraction feeds each image's model input to the embedder."""
    faces: bool
    """Extraction detects and embeds the faces (``features.faces``)."""

    def candidates(self, view: CollectionView, config: ScanConfig, model: str | None) -> Found:
        """Candidate pairs beyond the byte copies (those are every mode's)."""
        ...

    def query_pairs(self, collection: Signatures, queries: Signatures, config: ScanConfig
                    ) -> np.ndarray:
        """Candidates for query images: (M, 2) int64 of (row in ``queries``, the
        collection's id) beyond the byte copies."""
        ...

    def settled(self, pair: Pair, found: Found, config: ScanConfig
                ) -> tuple[bool, Evidence] | None:
        """The verdict on a pair that needs no pixels (None: verify it)."""
        ...

    def copy_pairs(self, pairs: list[Pair], found: Found) -> list[Pair]:
        """The candidate pairs verified as copies of one photo (faces mode: all but the
        pairs only the face search found; the others: all)."""
        ...

    def regroup(self, groups: list[Group], pairs: Sequence[Pair], found: Found,
                config: ScanConfig, rank: Callable[[int], tuple[object, ...]],
                best_of: Callable[[list[int]], int], distinct: Callable[[int, int], bool]
                ) -> list[Group]:
        """Groups of a higher level made of the groups of copies (faces mode: people,
        from all the candidate ``pairs``); the others return ``groups``."""
        ...

    def prefer(self, members: list[int], found: Found) -> list[int]:
        """The members the keeper rule chooses the best among (faces mode: the best
        faces; the others: all)."""
        ...

    def best_pairs(self, view: CollectionView, bests: Sequence[int],
                   config: ScanConfig) -> list[Pair]:
        """Pairs of groups' ``bests`` (view positions) that the mode's search joins
        when only the bests are searched (near mode), for ``grouping.merge_groups``:
        in a crowd of near-identical copies each image keeps only its nearest few
        pairs, so the crowd can fall apart in groups that no candidate pair joins.
        The others: none."""
        ...


class CopiesMode:
    """The defaults of a mode whose groups are copies of one photo (near, exact,
    similar): every candidate pair is a copy pair, no second level, every member may
    be the best.  A mode subclasses it and overrides what it does differently."""

    faces = False

    def copy_pairs(self, pairs: list[Pair], found: Found) -> list[Pair]:
        return pairs

    def regroup(self, groups: list[Group], pairs: Sequence[Pair], found: Found,
                config: ScanConfig, rank: Callable[[int], tuple[object, ...]],
                best_of: Callable[[list[int]], int], distinct: Callable[[int, int], bool]
                ) -> list[Group]:
        return groups

    def prefer(self, members: list[int], found: Found) -> list[int]:
        return members

    def best_pairs(self, view: CollectionView, bests: Sequence[int],
                   config: ScanConfig) -> list[Pair]:
        return []


MODES: Registry[Mode] = Registry("mode")


BUILT_IN = ("near", "exact", "similar", "faces")
"""The modules of the built-in modes, in the order ``--help`` lists them."""


def _load() -> None:
    for name in BUILT_IN:  # each registers itself on import (once)
        importlib.import_module(f"{__name__}.{name}")


def get_mode(name: str) -> Mode:
    _load()
    return MODES.get(name)


def mode_names() -> list[str]:
    """The built-in modes in ``BUILT_IN`` order, then any other registered one."""
    _load()
    return [*BUILT_IN, *(n for n in MODES.names() if n not in BUILT_IN)]


def mode_of(config: ScanConfig) -> Mode:
    return get_mode(config.mode)
