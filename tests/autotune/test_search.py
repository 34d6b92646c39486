"""autotune.search: every algorithm starts at the default, respects budgets, finds the optimum."""

from __future__ import annotations

import math

import pytest

from autotune.search import SEARCHES, get_search
from kernelforge.autotuning import Config, product

SPACE = product(BLOCK=[16, 32, 64, 128, 256], WARPS=[1, 2, 4, 8])


def cost(c: Config) -> float:
    """Unimodal along each axis with its minimum at BLOCK=64, WARPS=4."""
    return abs(math.log2(c["BLOCK"]) - 6) + abs(math.log2(c.get("WARPS", 4)) - 2) + 1.0


def run(name, start, configs=SPACE, exhausted=lambda: False, **kw):
    calls = []

    def evaluate(c):
        calls.append(c)
        return cost(c)

    get_search(name)(configs, start, **kw).run(evaluate, exhausted)
    return calls


@pytest.mark.parametrize("name", sorted(SEARCHES))
def test_search_starts_at_the_default_and_never_repeats(name):
    calls = run(name, Config(BLOCK=256, WARPS=1))
    assert calls[0] == Config(BLOCK=256, WARPS=1)
    assert len(calls) == len(set(calls))


@pytest.mark.parametrize("name", sorted(SEARCHES))
def test_search_stops_when_the_budget_is_spent(name):
    calls = run(name, SPACE[0], exhausted=lambda: True)
    assert calls == [SPACE[0]]


def test_exhaustive_visits_everything():
    assert set(run("exhaustive", SPACE[5])) == set(SPACE)


def test_random_is_seeded_and_capped():
    a = run("random", SPACE[0], seed=1, max_configs=6)
    assert len(a) == 6 and a == run("random", SPACE[0], seed=1, max_configs=6)
    assert a != run("random", SPACE[0], seed=2, max_configs=6)


def test_pattern_search_finds_the_optimum_with_fewer_evaluations():
    calls = run("pattern", Config(BLOCK=256, WARPS=1))
    assert min(calls, key=cost) == Config(BLOCK=64, WARPS=4)
    assert len(calls) < len(SPACE)


def test_pattern_search_steps_over_holes_in_a_sparse_space():
    sparse = [Config(BLOCK=b) for b in (16, 64, 1024)]
    calls = run("pattern", Config(BLOCK=1024), configs=sparse)
    assert Config(BLOCK=64) in calls


def test_unknown_search_is_rejected():
    with pytest.raises(ValueError, match="unknown search"):
        get_search("annealing")
