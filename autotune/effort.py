"""Effort presets: how hard the tuner looks, as one knob (after Helion's autotune_effort).

- `none`: no search; only the kernel's default config is timed and recorded.
- `quick`: pattern search from the default, few timed runs, a 60 s budget per key.
- `full`: every candidate, more timed runs, a 30 min budget per key.

`--budget` overrides the wall-time budget of any preset.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Effort:
    name: str
    search: str | None      # None: only the default config
    warmup: int             # untimed runs before timing (the first also compiles)
    reps: int               # timed runs, summarised by the device timer
    per_config_s: float     # stop timing one config after this many seconds of runs
    budget_s: float         # wall-time budget for one key

    def with_budget(self, budget_s: float | None) -> "Effort":
        return self if budget_s is None else replace(self, budget_s=budget_s)


EFFORTS: dict[str, Effort] = {
    "none": Effort("none", search=None, warmup=1, reps=5, per_config_s=1.0, budget_s=60.0),
    "quick": Effort("quick", search="pattern", warmup=2, reps=10, per_config_s=2.0, budget_s=60.0),
    "full": Effort("full", search="exhaustive", warmup=5, reps=50, per_config_s=10.0, budget_s=1800.0),
}


def get_effort(name: str) -> Effort:
    if name not in EFFORTS:
        raise ValueError(f"unknown effort {name!r}; choose one of {sorted(EFFORTS)}")
    return EFFORTS[name]
