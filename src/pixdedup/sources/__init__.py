"""Sources: a location -> a stream of ImageRef (and listing problems)."""

from .local import ListingProblem, list_local

__all__ = ["ListingProblem", "list_local"]
