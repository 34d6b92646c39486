"""Compute regions: straight-line tensor math pulled out into module-level functions.

Between two memory operations a kernel is usually a run of pure elementwise and
reduction ops (a norm: square, mean, rsqrt, multiply). The code generator emits
each such run of two or more statements as a function `_compute_N(inputs) ->
outputs` and calls it from `launch`. Eagerly that costs one Python call; its point is
`KF_CPU_COMPILE=1`, under which `CPUBackend.load` hands every region to
`torch.compile`: Inductor fuses the run into one C++ loop nest, so a row makes one or
two passes over memory instead of one per op. The regions hold no loads, stores,
program ids, masks or Python control flow, so they trace as single graphs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from kernelforge import ir
from kernelforge.backends.cpu.analysis import operand_names

# Ops that touch memory, the grid or run-time Python state stay in `launch`.
_EXCLUDED = {"load", "atomic_add", "program_id", "num_programs"}


def eligible(s: ir.Stmt, is_py: bool, text: list[str]) -> bool:
    """Tensor math whose generated line uses nothing but its operands and globals."""
    return (isinstance(s, ir.Assign) and s.op not in _EXCLUDED and not is_py and len(text) == 1
            and "P." not in text[0] and "alive" not in text[0])


@dataclass
class Region:
    """A pending run of eligible statements and their generated lines."""

    stmts: list[ir.Assign] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def signature(self, total_refs: Counter) -> tuple[list[str], list[str]]:
        """IR names the run reads before writing them, and names it writes that live on."""
        written: set[str] = set()
        inputs: list[str] = []
        local: Counter = Counter()
        for s in self.stmts:
            for n in operand_names(s):
                local[n] += 1
                if n not in written and n not in inputs:
                    inputs.append(n)
            written.add(s.dst.name)
            local[s.dst.name] += 1
        outputs = [n for n in dict.fromkeys(s.dst.name for s in self.stmts) if total_refs[n] > local[n]]
        return inputs, outputs


def function(name: str, params: list[str], results: list[str], body: list[str]) -> list[str]:
    lines = [f"def {name}({', '.join(params)}):"]
    lines += [f"    {line}" for line in body]
    if results:
        lines.append(f"    return {', '.join(results)}")
    return lines + ["", ""]
