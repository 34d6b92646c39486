"""The program set of a divergent loop's ragged tail, narrowed as programs finish.

The generated code of a divergent `for` (predication.py) compacts its ragged tail to the
programs that still iterate, and narrows that set again as they finish, so the tail
costs about the work those programs need rather than the longest program times the
grid. Narrowing copies every carried and read value of the programs it keeps, and
undoing it copies them back, so in general it waits until enough programs are done.

When the programs kept are the first n of the set (a launch that orders its programs by
trip count, longest first, as paged attention's prefill does on this backend), the kept
values are the slices `x[:n]`: views, no copy. Such a set narrows whenever any program
finishes, so every tail step runs exactly the programs that iterate (no `where` merges),
and undoing it writes each finished program's values once.
"""

from __future__ import annotations

import torch

from kernelforge.backends.cpu.runtime import Programs

# The first n programs of the set (an int), or the indices of the kept programs.
Rows = int | torch.Tensor


class Tail:
    """A divergent loop tail's program set: `take` narrows a per-program value to it, `put`
    writes a narrowed result back into the full value; `narrow` drops programs that
    finished and `restore` undoes every `narrow`.

    Indexed (not prefix) sets compact when at least an eighth of the programs, and at
    least MIN_IDLE, are done, and narrow when a quarter (and MIN_IDLE) are: below that the
    indexing costs more than the masked work it saves (a paged-attention decode tile is
    ~100x its carried state).
    """

    MIN_IDLE = 16

    def __init__(self, P: Programs, keep: torch.Tensor) -> None:
        rows = kept_rows(keep)
        idle = P.G - _count(rows)
        worth = idle > 0 if isinstance(rows, int) else idle * 8 >= P.G and idle >= self.MIN_IDLE
        self.rows = rows if worth else None
        self.programs = P if self.rows is None else _subset(P, rows)
        self._levels: list[tuple[Rows, tuple[torch.Tensor, ...]]] = []

    def take(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.rows is None else _select(x, self.rows)

    def put(self, full: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x if self.rows is None else _merge(full, self.rows, x)

    def narrow(self, keep: torch.Tensor, carried: tuple[torch.Tensor, ...], reads: tuple[torch.Tensor, ...]
               ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]] | None:
        """The `carried` and `reads` values of the programs in `keep` (over the current set),
        or None when none finished, or too few to be worth indexing. `carried` are
        remembered for `restore`; `reads` (values the loop only reads) are not."""
        G = self.programs.G
        rows = kept_rows(keep)
        done = G - _count(rows)
        if done == 0 or not isinstance(rows, int) and (done * 4 < G or done < self.MIN_IDLE):
            return None
        self._levels.append((rows, carried))
        self.programs = _subset(self.programs, rows)
        return tuple(_select(x, rows) for x in carried), tuple(_select(x, rows) for x in reads)

    def restore(self, carried: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """`carried` over the programs the tail started with, undoing every `narrow`."""
        for rows, before in reversed(self._levels):
            carried = tuple(_merge(full, rows, x) for full, x in zip(before, carried))
        self._levels.clear()
        return carried


def kept_rows(keep: torch.Tensor) -> Rows:
    """The programs `keep` selects: their count when they are the first ones, else their indices."""
    rows = keep.nonzero().squeeze(1)
    n = rows.numel()
    return n if n == 0 or int(rows[-1]) == n - 1 else rows


def _count(rows: Rows) -> int:
    return rows if isinstance(rows, int) else rows.numel()


def _subset(P: Programs, rows: Rows) -> Programs:
    if not isinstance(rows, int):
        return P.subset(rows)
    return Programs(P.grid, torch.arange(rows) if P.idx is None else P.idx[:rows])


def _select(x: torch.Tensor, rows: Rows) -> torch.Tensor:
    return x[:rows] if isinstance(rows, int) else x.index_select(0, rows)


def _merge(full: torch.Tensor, rows: Rows, x: torch.Tensor) -> torch.Tensor:
    """A new tensor (in `x`'s dtype) holding `x` at `rows` and `full` elsewhere."""
    if not isinstance(rows, int):
        out = full.clone() if full.dtype == x.dtype else full.to(x.dtype)
        out[rows] = x
        return out
    out = torch.empty(full.shape, dtype=x.dtype)
    out[:rows].copy_(x)
    out[rows:].copy_(full[rows:])
    return out
