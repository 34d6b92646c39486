"""Exhaustive search: every candidate, in declaration order (the default first).

The right choice for the small explicit config lists kernels usually declare, and what
`--effort full` uses; the wall-time budget still cuts it short.
"""

from __future__ import annotations

from typing import Callable

from autotune.search.base import Evaluate, SearchAlgorithm


class ExhaustiveSearch(SearchAlgorithm):
    name = "exhaustive"

    def run(self, evaluate: Evaluate, exhausted: Callable[[], bool]) -> None:
        self._evaluate_in_order(self.configs, evaluate, exhausted)
