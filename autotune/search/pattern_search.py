"""Pattern search (coordinate descent) over the lattice of config parameter values.

Each parameter's distinct values are sorted into an axis; a config is a point on the
lattice. From the current best, try the nearest candidate one step up and one step
down each axis (only candidates that exist: generated spaces are often sparse), move
to the best improvement, repeat until no neighbour improves. Block-size costs are
usually unimodal along each axis, so this finds the optimum of a typical kernel
space in a fraction of the evaluations of exhaustive search.
"""

from __future__ import annotations

import math
from typing import Callable

from kernelforge.autotuning import Config

from autotune.search.base import Evaluate, SearchAlgorithm


def _order(value: object) -> tuple[str, object]:
    """Sort key that tolerates mixed types on one axis (e.g. None and ints)."""
    return (type(value).__name__, value)


class PatternSearch(SearchAlgorithm):
    name = "pattern"

    def run(self, evaluate: Evaluate, exhausted: Callable[[], bool]) -> None:
        names = sorted({n for c in self.configs for n in c})
        axes = {n: sorted({c.get(n) for c in self.configs}, key=_order) for n in names}
        point = {c: tuple(axes[n].index(c.get(n)) for n in names) for c in self.configs}
        budget = len(self.configs) if self.max_configs is None else self.max_configs
        seen: dict[Config, float] = {}

        def visit(config: Config) -> float:
            if config not in seen:
                seen[config] = evaluate(config)
            return seen[config]

        current, current_time = self.start, visit(self.start)
        while not exhausted() and len(seen) < budget:
            best, best_time = current, current_time
            for neighbour in self._neighbours(current, point, len(names)):
                if len(seen) >= budget or exhausted():
                    break
                t = visit(neighbour)
                if t < best_time:
                    best, best_time = neighbour, t
            if best is current:
                return
            current, current_time = best, best_time

    def _neighbours(self, config: Config, point: dict[Config, tuple[int, ...]], dims: int) -> list[Config]:
        """Per axis and direction, the nearest candidate that differs from `config` only there."""
        here = point[config]
        found: list[Config] = []
        for axis in range(dims):
            for direction in (1, -1):
                nearest, distance = None, math.inf
                for other, there in point.items():
                    step = (there[axis] - here[axis]) * direction
                    same_elsewhere = all(there[i] == here[i] for i in range(dims) if i != axis)
                    if step > 0 and same_elsewhere and step < distance:
                        nearest, distance = other, step
                if nearest is not None:
                    found.append(nearest)
        return found
