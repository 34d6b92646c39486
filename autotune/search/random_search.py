"""Random search: the default, then a seeded random sample of the other candidates.

A baseline for large generated spaces: with `max_configs=n` it costs n evaluations
whatever the space's size, and the fixed seed keeps runs reproducible.
"""

from __future__ import annotations

import random
from typing import Callable

from autotune.search.base import Evaluate, SearchAlgorithm


class RandomSearch(SearchAlgorithm):
    name = "random"

    def run(self, evaluate: Evaluate, exhausted: Callable[[], bool]) -> None:
        rest = self.configs[1:]
        random.Random(self.seed).shuffle(rest)
        self._evaluate_in_order([self.start, *rest], evaluate, exhausted)
