"""The interface every search algorithm implements.

A search proposes configs from a finite candidate list and learns their cost only
through `evaluate(config) -> seconds` (inf for a config that failed). The tuner owns
timing, caching and the budget: `evaluate` answers from the cache when it can, and the
search must stop proposing once `exhausted()` is true. The best config is whatever the
tuner saw fastest, so a search only decides the order and how many to try.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, ClassVar, Sequence

from kernelforge.autotuning import Config

Evaluate = Callable[[Config], float]


class SearchAlgorithm(ABC):
    """Explores `configs` starting from `start` (the kernel's default, always evaluated first)."""

    name: ClassVar[str]

    def __init__(self, configs: Sequence[Config], start: Config, *, seed: int = 0,
                 max_configs: int | None = None) -> None:
        self.configs = list(dict.fromkeys([start, *configs]))
        self.start = start
        self.seed = seed
        self.max_configs = max_configs

    @abstractmethod
    def run(self, evaluate: Evaluate, exhausted: Callable[[], bool]) -> None:
        """Call `evaluate` on the configs worth trying, until done or `exhausted()`."""

    def _evaluate_in_order(self, order: Sequence[Config], evaluate: Evaluate,
                           exhausted: Callable[[], bool]) -> dict[Config, float]:
        """Evaluate `order` (capped at `max_configs`), stopping early when the budget is spent."""
        limit = len(order) if self.max_configs is None else self.max_configs
        seen: dict[Config, float] = {}
        for config in order[:limit]:
            if seen and exhausted():
                break
            seen[config] = evaluate(config)
        return seen

