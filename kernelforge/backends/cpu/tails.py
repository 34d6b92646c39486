"""The program set of a divergent loop's ragged tail, narrowed as programs finish.

The generated code of a divergent `for` (predication.py) compacts its ragged tail to the
programs that still iterate, and narrows that set again as they finish, so the tail
costs about the work those programs need rather than the longest program times the
grid. Narrowing copies every carried and read value of the programs it keeps, and
undoing it copies them back, so in general it waits until enough programs are done.

Values broadcast over the grid (the loop's initial accumulators) are the same for every
program, so taking them narrows the broadcast instead of copying.

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
    """A divergent loop tail's program set: `take` narrows a per-program value to it;
    `narrow` drops programs that finished; `finish` writes the carried results back into
    the full values, undoing every narrowing.

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

    def narrow(self, keep: torch.Tensor, carried: tuple[torch.Tensor, ...], reads: tuple[torch.Tensor, ...]
               ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]] | None:
        """The `carried` and `reads` values of the programs in `keep` (over the current set),
        or None when none finished, or too few to be worth indexing. `carried` are
        remembered for `finish`; `reads` (values the loop only reads) are not."""
        G = self.programs.G
        rows = kept_rows(keep)
        done = G - _count(rows)
        if done == 0 or not isinstance(rows, int) and (done * 4 < G or done < self.MIN_IDLE):
            return None
        self._levels.append((rows, carried))
        self.programs = _subset(self.programs, rows)
        return tuple(_select(x, rows) for x in carried), tuple(_select(x, rows) for x in reads)

    def finish(self, full: tuple[torch.Tensor, ...], carried: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """New values over the whole set before the tail: `carried` for the programs still in
        it, each dropped program's values from when it was dropped, and `full` for the
        programs the tail never took. A run of prefix narrowings is undone in one pass."""
        levels = ([] if self.rows is None else [(self.rows, full)]) + self._levels
        self._levels = []
        while levels:
            prefixes = len(levels)
            while prefixes and isinstance(levels[prefixes - 1][0], int):
                prefixes -= 1
            if prefixes == len(levels):
                rows, before = levels.pop()
                carried = tuple(_merge(b, rows, x) for b, x in zip(before, carried))
            else:
                run = levels[prefixes:]
                del levels[prefixes:]
                carried = tuple(_assemble([before[i] for _, before in run], x) for i, x in enumerate(carried))
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
    """The values of the kept programs. A value broadcast over the grid (stride 0, such as a
    loop's initial accumulator) is the same for every program: its selection is a view."""
    if isinstance(rows, int):
        return x[:rows]
    if x.dim() and x.stride(0) == 0:
        return x[:1].expand(rows.numel(), *x.shape[1:])
    return x.index_select(0, rows)


def _merge(full: torch.Tensor, rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A new tensor (in `x`'s dtype) holding `x` at `rows` and `full` elsewhere (one
    out-of-place index_copy: cheaper than a clone and an indexed assignment)."""
    return (full if full.dtype == x.dtype else full.to(x.dtype)).index_copy(0, rows, x)


def _assemble(befores: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Undoes nested prefix narrowings at once: befores[k] is the value over the set that
    the k-th narrowing kept the first ones of, x over the last set; each row comes from
    the innermost of them that holds it."""
    out = torch.empty(befores[0].shape, dtype=x.dtype)
    out[:x.shape[0]].copy_(x)
    for outer, inner in zip(befores, befores[1:] + [x]):
        out[inner.shape[0]:outer.shape[0]].copy_(outer[inner.shape[0]:])
    return out
