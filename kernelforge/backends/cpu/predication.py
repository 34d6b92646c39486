"""Divergent control flow: `for` and `if` whose bounds or condition differ per program.

All programs run in lock step, so divergence becomes predication:

- `if c` runs both arms, each under its share of the running-programs mask (an arm
  nobody takes is skipped); variables the arms assign that live on afterwards are
  merged with `torch.where(c, then_value, else_value)`. A lone `then` arm with no
  merges runs unmasked when every program takes it (one test instead of one per access).
- `for i in range(a, b, s)` first runs the iterations *every* running program has
  (no masking at all, so fast paths stay fast), then the ragged tail under a
  per-iteration mask `t < trips`, merging loop-carried variables after each step.
  Before the tail the live set is compacted to the programs that still iterate
  (`tails.Tail`), and narrowed again during it as programs finish, so the tail
  costs about what those programs need, not the longest program times the whole
  grid (a launch ordered longest first narrows by slicing). Merges are skipped in
  steps where every program of the set iterates.
- `return` clears the program's bit in `alive`, which every later mask includes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kernelforge import ir
from kernelforge.backends.cpu.analysis import assigned, contains_return, operand_names

if TYPE_CHECKING:
    from kernelforge.backends.cpu.codegen import CodeGen


def _merge_where(gen: "CodeGen", cond: str, var: str, rank: int, a: str, b: str) -> None:
    c = f"{cond}[:{', None' * rank}]" if rank else cond
    gen.emit(f"{var} = torch.where({c}, {a}, {b})")


def divergent_if(gen: "CodeGen", s: ir.If) -> None:
    if _one_armed(gen, s):
        _one_armed_if(gen, s)
        return
    merges = gen.facts.merges[id(s)]
    then_set, else_set = assigned(s.then_body), assigned(s.else_body)
    types = _types(s)
    cond = gen.val(s.cond)
    outer = gen.mask
    m_then, m_else = gen.fresh("take_then"), gen.fresh("take_else")
    gen.emit(f"# if {cond} (differs between programs): both arms run, masked")
    gen.emit(f"{m_then} = {cond}" if outer is None else f"{m_then} = {outer} & {cond}")
    gen.emit(f"{m_else} = ~{cond}" if outer is None else f"{m_else} = {outer} & ~{cond}")
    before = set(gen.defined)
    saved: dict[str, str] = {}
    for v in merges:
        if v in then_set and v in before:
            saved[v] = gen.fresh(f"{v}_before")
            gen.emit(f"{saved[v]} = {gen.name(v)}")
    then_vals = {v: gen.fresh(f"{v}_then") for v in merges if v in then_set or v in else_set}

    _arm(gen, s.then_body, m_then, guard=all(v in before for v in merges if v in then_set))
    for v in merges:
        if v in then_set:
            gen.emit(f"{then_vals[v]} = {gen.name(v)}")
            if v in saved:
                gen.emit(f"{gen.name(v)} = {saved[v]}")
        elif v in else_set:
            gen.emit(f"{then_vals[v]} = {gen.name(v)}")
    exists = before | then_set
    _arm(gen, s.else_body, m_else, guard=all(v in exists for v in merges if v in else_set))
    for v, tv in then_vals.items():
        _merge_where(gen, cond, gen.name(v), len(types[v].shape), tv, gen.name(v))


def _one_armed(gen: "CodeGen", s: ir.If) -> bool:
    """An `if` without `else`, merges or `return`, under no other mask (the `if slot >= 0`
    of a cache write): see `_one_armed_if`."""
    return (gen.mask is None and not s.else_body.stmts and not gen.facts.merges[id(s)]
            and not contains_return(s.then_body))


def _one_armed_if(gen: "CodeGen", s: ir.If) -> None:
    """The arm unmasked when every program takes it (the usual case: every token has a
    slot), else under its mask: one test of the condition instead of one per access."""
    cond = gen.val(s.cond)
    m_then = gen.fresh("take_then")
    gen.emit(f"# if {cond} (differs between programs): masked unless every program takes it")
    gen.emit(f"{m_then} = {cond}")
    before = set(gen.defined)
    gen.emit(f"if rt.all_true({m_then}):")
    gen.body_block(s.then_body, None)
    unmasked = gen.defined
    gen.defined = before  # the masked copy runs instead of the unmasked one, not after it
    gen.emit(f"elif {m_then}.any():")
    gen.body_block(s.then_body, m_then)
    gen.defined |= unmasked


def _arm(gen: "CodeGen", block: ir.Block, mask: str, guard: bool) -> None:
    if not block.stmts:
        return
    if guard:
        gen.emit(f"if {mask}.any():")
        gen.body_block(block, mask)
    else:
        gen.depth -= 1
        gen.body_block(block, mask)
        gen.depth += 1


def _types(stmt: ir.For | ir.If) -> dict[str, ir.BlockType]:
    bodies = [stmt.body] if isinstance(stmt, ir.For) else [stmt.then_body, stmt.else_body]
    out: dict[str, ir.BlockType] = {}
    for b in bodies:
        for st in ir.walk(b):
            if isinstance(st, ir.Assign):
                out[st.dst.name] = st.dst.type
    return out


def _loop_var(gen: "CodeGen", s: ir.For, t: str) -> None:
    i = gen.name(s.var)
    start, step = gen.val(s.start), gen.val(s.step)
    if s.var.name in gen.facts.varying:
        gen.emit(f"{i} = {start} + {t} * {step}")
        return
    start = start if gen.py(s.start) else f"int({start})"
    step = step if gen.py(s.step) else f"int({step})"
    gen.emit(f"{i} = {start} + {t} * {step}")


def divergent_for(gen: "CodeGen", s: ir.For) -> None:
    merges = gen.facts.merges[id(s)]
    types = _types(s)
    outer = gen.mask
    trips, t = gen.fresh("trips"), gen.fresh("step")
    lo, hi = gen.fresh("all_run"), gen.fresh("longest")
    returns = contains_return(s.body)
    defined_before = set(gen.defined)
    gen.emit(f"# for {gen.name(s.var)} in range({gen.val(s.start)}, {gen.val(s.stop)}, {gen.val(s.step)}): "
             "trip counts differ between programs")
    gen.emit(f"{trips} = {_trip_counts(gen, s)}.expand(P.G)")
    if outer is None:
        gen.emit(f"{lo}, {hi} = map(int, torch.aminmax({trips}))  # one reduction for both")
    else:
        gen.emit(f"{trips} = torch.where({outer}, {trips}, 0)")
        gen.emit(f"{hi} = int({trips}.max())")
        gen.emit(f"{lo} = int(torch.where({outer}, {trips}, {hi}).min())")
    gen.defined.add(s.var.name)

    gen.emit(f"for {t} in range({lo}):  # every running program iterates")
    gen.depth += 1
    _loop_var(gen, s, t)
    mask = outer
    if returns and outer is not None and outer != "alive":
        mask = gen.fresh("running")
        gen.emit(f"{mask} = {outer} & alive")
    gen.depth -= 1
    gen.body_block(s.body, mask)

    carried = list(merges)
    reads = _varying_reads(gen, s, defined_before) - set(carried)
    if gen.facts.divergent_return:
        carried = carried + ["alive"]
        reads.discard("alive")
    cp = gen.fresh("tail")
    gen.emit(f"if {hi} > {lo}:  # ragged tail: only programs with {t} < {trips} iterate")
    gen.depth += 1
    outer_P = gen.fresh("P_all")
    gen.emit(f"{outer_P} = P")
    gen.emit(f"{cp} = tails.Tail(P, {trips} > {lo})")
    gen.emit(f"P = {cp}.programs")
    full: dict[str, str] = {}
    for v in sorted(reads) + carried + [trips]:
        pv = v if v in (trips, "alive") else gen.name(v)
        full[v] = gen.fresh(f"{pv}_all")
        gen.emit(f"{full[v]} = {pv}")
        gen.emit(f"{pv} = {cp}.take({pv})")
    kept_run = _kept_programs_steps(gen, s, t, trips, lo)
    gen.emit(f"for {t} in range({kept_run}, {hi}):")
    gen.depth += 1
    act = gen.fresh("running")
    running = f"({t} < {trips})" + (" & alive" if gen.facts.divergent_return else "")
    gen.emit(f"{act} = {running}")
    _narrow(gen, cp, act, running, [v if v == "alive" else gen.name(v) for v in carried],
            [v if v == trips else gen.name(v) for v in sorted(reads) + [trips]])
    _loop_var(gen, s, t)
    prev = {v: gen.fresh(f"{v}_prev") for v in merges}
    for v in merges:
        gen.emit(f"{prev[v]} = {gen.name(v)}")
    gen.depth -= 1
    gen.body_block(s.body, act)
    gen.depth += 1
    if merges:
        gen.emit(f"if not rt.all_true({act}):  # programs that are done keep their values")
        gen.depth += 1
        for v in merges:
            _merge_where(gen, act, gen.name(v), len(types[v].shape), gen.name(v), prev[v])
        gen.depth -= 1
    gen.depth -= 1
    gen.emit(f"P = {outer_P}")
    names = [v if v == "alive" else gen.name(v) for v in carried]
    if names:
        fulls = "".join(full[v] + ", " for v in carried)
        gen.emit(f"{', '.join(names)}, = {cp}.finish(({fulls}), ({', '.join(names)},))")
    for v in sorted(reads) + [trips]:
        pv = v if v == trips else gen.name(v)
        gen.emit(f"{pv} = {full[v]}")
    gen.depth -= 1


def _trip_counts(gen: "CodeGen", s: ir.For) -> str:
    """The expression of the loop's per-program trip counts (int64, >= 0). A constant
    power-of-two step up to a per-program stop (a tile loop to each program's length) is a
    shift of the span: half the ops of rt.trip_counts' general floor division (~8 instead of
    ~15 us for a few programs)."""
    step = s.step.value if isinstance(s.step, ir.Const) else 0
    if not (isinstance(step, int) and step > 0 and step & (step - 1) == 0 and gen.varying(s.stop)):
        return f"rt.trip_counts({gen.val(s.start)}, {gen.val(s.stop)}, {gen.val(s.step)})"
    if isinstance(s.start, ir.Const):
        span = f"{gen.val(s.stop)}.to(torch.int64) + {step - 1 - int(s.start.value)}"
    else:
        span = f"{gen.val(s.stop)}.to(torch.int64) - {gen.val(s.start)} + {step - 1}"
    return f"(({span}) >> {step.bit_length() - 1}).clamp_(min=0)"


def _kept_programs_steps(gen: "CodeGen", s: ir.For, t: str, trips: str, lo: str) -> str:
    """Emits the tail's steps that every program the compaction kept runs, unmasked, and
    returns the name of the step the masked tail starts at.

    A compacted tail holds just the programs with more than `lo` trips, so each of them runs
    at least step `lo`; a batch whose programs run one tile or none (split-KV decode) then
    needs no masked step at all. Uncompacted, the tail still holds programs that are done
    and this part is empty. Inside it every program is on (the enclosing mask included: its
    programs' trips were zeroed), except for programs that return, which `alive` keeps.
    """
    kept_run = gen.fresh("kept_run")
    gen.emit(f"{kept_run} = max({lo}, int({trips}.min()))")
    gen.emit(f"for {t} in range({lo}, {kept_run}):  # every program the tail kept iterates")
    gen.depth += 1
    _loop_var(gen, s, t)
    gen.depth -= 1
    gen.body_block(s.body, "alive" if gen.facts.divergent_return else None)
    return kept_run


def _narrow(gen: "CodeGen", cp: str, act: str, running: str, carried: list[str], reads: list[str]) -> None:
    """Drops the programs that finished since the last narrowing from the tail's set (when
    enough did): the carried and read values shrink with it, and so does the mask. The
    tail stops when no program is left: the longest one may have returned early, and a
    nested divergent loop cannot bound its trips over no programs."""
    narrowed = gen.fresh("narrowed")
    gen.emit(f"{narrowed} = {cp}.narrow({act}, ({''.join(v + ', ' for v in carried)}), "
             f"({''.join(v + ', ' for v in reads)}))")
    gen.emit(f"if {narrowed} is not None:")
    gen.depth += 1
    targets = [f"({''.join(v + ', ' for v in group)})" for group in (carried, reads)]
    gen.emit(f"{', '.join(targets)} = {narrowed}")
    gen.emit(f"P = {cp}.programs")
    gen.emit("if P.G == 0:")
    gen.emit("    break")
    gen.emit(f"{act} = {running}")
    gen.depth -= 1


def _varying_reads(gen: "CodeGen", s: ir.For, defined: set[str]) -> set[str]:
    """Per-program values defined outside the loop that its body (or bounds) read."""
    names: set[str] = set()
    for st in ir.walk(s.body):
        names.update(operand_names(st))
    names.update(operand_names(s))
    inner = assigned(s.body)
    return {n for n in names if n in gen.facts.varying and (n not in inner or n in gen.facts.merges[id(s)])
            and n in defined}
