"""Search algorithms by name; all implement `autotune.search.base.SearchAlgorithm`."""

from __future__ import annotations

from autotune.search.base import SearchAlgorithm
from autotune.search.exhaustive import ExhaustiveSearch
from autotune.search.pattern_search import PatternSearch
from autotune.search.random_search import RandomSearch

SEARCHES: dict[str, type[SearchAlgorithm]] = {
    cls.name: cls for cls in (ExhaustiveSearch, RandomSearch, PatternSearch)
}


def get_search(name: str) -> type[SearchAlgorithm]:
    if name not in SEARCHES:
        raise ValueError(f"unknown search {name!r}; choose one of {sorted(SEARCHES)}")
    return SEARCHES[name]


__all__ = ["SEARCHES", "SearchAlgorithm", "get_search"]
