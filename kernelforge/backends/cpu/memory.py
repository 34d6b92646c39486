"""Code generation for loads, stores and atomics.

Pointers are element offsets from the root parameter's first element, so memory
accesses index `<param>_flat` (a 1-D view of the argument's memory). An access
whose offsets have an affine form (`affine.py`) calls `views.load` /
`views.store`, which use strided views when run-time checks allow, or
`rows.load_rows` / `rows.store_rows` for data-dependent row starts; any other
access gathers or scatters. Programs that are not running (predication) are masked
off every access that could fault or write. Under `KF_SANITIZE=1` every access
instead materialises its offsets and checks them (`sanitizer.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kernelforge import ir
from kernelforge.backends.cpu import fusion
from kernelforge.backends.cpu.affine import Access, Form, MaskForm, Poly

if TYPE_CHECKING:
    from kernelforge.backends.cpu.codegen import CodeGen


def poly_expr(gen: "CodeGen", p: Poly) -> str:
    """`3*n + stride*BLOCK - 1`-style text of a coefficient polynomial (atoms are Python ints)."""
    terms = []
    for mono, c in sorted(p.items(), key=lambda mc: (len(mc[0]) == 0, mc[0])):
        factors = "*".join(gen.name(a) for a in mono)
        if not factors:
            terms.append(str(c))
        else:
            terms.append(factors if c == 1 else (f"-{factors}" if c == -1 else f"{c}*{factors}"))
    if not terms:
        return "0"
    return " + ".join(terms).replace("+ -", "- ")


def aff_expr(gen: "CodeGen", f: Form) -> str:
    polys = f.polys()
    base = poly_expr(gen, polys.get(None, {}))
    pid = ", ".join(poly_expr(gen, polys.get(("pid", a), {})) for a in range(3))
    blk = "".join(poly_expr(gen, polys.get(("blk", d), {})) + ", " for d in range(len(f.shape)))
    return f"({base}, ({pid}), ({blk.rstrip(', ') + (',' if len(f.shape) == 1 else '')}))"


def dyn_expr(gen: "CodeGen", f: Form) -> str:
    polys = f.polys()
    parts = [f"({gen.name(name)}, {poly_expr(gen, polys[('dyn', name, dims)])}, {dims!r}, "
             f"{name in gen.facts.varying})" for name, dims in f.dyn]
    return "(" + "".join(p + ", " for p in parts).rstrip(" ") + ")"


def _rows_args(gen: "CodeGen", ptr: ir.Operand, acc: Access, value: ir.Operand | None) -> tuple[list[str], str | None]:
    """Arguments shared by `rows.load_rows` and `rows.store_rows`, and the active mask passed."""
    mask = acc.mask
    conds = mask.conds if mask is not None else ()
    dyn_names = {n for n, _ in acc.ptr.dyn} | {n for c in conds for n, _ in c.dyn} | {
        n for n, _ in (mask.tensors if mask is not None else ())}
    per_program = acc.ptr.gridded or any(c.gridded for c in conds) or any(
        n in gen.facts.varying for n in dyn_names) or (value is not None and gen.varying(value))
    active = gen.grid_mask(len(ptr.type.shape)) if value is not None else (gen.mask if per_program else None)
    args = [gen.name(ptr.root), "P", aff_expr(gen, acc.ptr), repr(tuple(ptr.type.shape)), str(acc.rows),
            str(per_program or active is not None)]
    if value is not None:
        args.append(gen.val(value, len(ptr.type.shape)))
    if acc.ptr.dyn:
        args.append(f"dyn={dyn_expr(gen, acc.ptr)}")
    if conds:
        rendered = [f"({aff_expr(gen, c)[1:-1]}, {dyn_expr(gen, c)})" for c in conds]
        args.append("conds=(" + "".join(r + ", " for r in rendered).rstrip(" ") + ")")
    if mask is not None and mask.tensors:
        ms = [f"({gen.name(n)}, 1, {dims!r}, {n in gen.facts.varying})" for n, dims in mask.tensors]
        args.append("masks=(" + "".join(m + ", " for m in ms).rstrip(" ") + ")")
    return args, active


def _rows_load(gen: "CodeGen", s: ir.Assign, acc: Access, other: ir.Operand | None) -> tuple[str, bool]:
    """A row gather (`rows.load_rows`): per-row data-dependent starts, affine inner run."""
    args, active = _rows_args(gen, s.args[0], acc, None)
    if other is not None:
        args.append(f"other={gen.val(other)}")
    if active is not None:
        args.append(f"active={active}")
    return f"rows.load_rows({', '.join(args)})", args[5] == "True"


def _rows_store(gen: "CodeGen", s: ir.Store, acc: Access) -> None:
    """A row scatter (`rows.store_rows`): whole rows of the programs and rows that are on."""
    args, active = _rows_args(gen, s.ptr, acc, s.value)
    if active is not None:
        args.append(f"active={active}")
    gen.emit(f"rows.store_rows({', '.join(args)}{_trim_arg(gen, s)})")


def _mask_args(gen: "CodeGen", mask: ir.Operand | None, form: MaskForm | None) -> str:
    if mask is None:
        return ""
    if form is not None:
        if not form.conds:
            return ""
        return ", conds=(" + "".join(aff_expr(gen, c) + ", " for c in form.conds).rstrip(" ") + ")"
    return f", mask={gen.tensor_val(mask)}"


def _offsets(gen: "CodeGen", ptr: ir.Operand) -> str:
    """A pointer's element offsets from its root argument: a pointer value is its offsets,
    except the argument itself (offset 0)."""
    return "0" if isinstance(ptr, ir.Var) and ptr.name == ptr.root else gen.val(ptr)


def _source(stmt: ir.Stmt) -> str:
    return repr(str(stmt.loc)) if stmt.loc is not None else "''"


def _sanitize(gen: "CodeGen", stmt: ir.Stmt, flat: str, ptr: ir.Operand, mask: ir.Operand | None,
              active: str | None) -> None:
    m = gen.val(mask) if mask is not None else "None"
    gen.emit(f"sanitizer.check({flat}, {_offsets(gen, ptr)}, {m}, {active}, "
             f"{gen.kernel.name!r}, {_source(stmt)})")


def load(gen: "CodeGen", s: ir.Assign) -> tuple[str, bool]:
    """The expression for `dst = load(ptr, mask, other)` and whether it is per-program."""
    ptr = s.args[0]
    mask = s.args[1] if len(s.args) > 1 else None
    other = s.args[2] if len(s.args) > 2 else None
    rank = len(ptr.type.shape)
    acc = gen.accesses.get(id(s))
    flat = gen.flat(ptr.root) if acc is None else gen.name(ptr.root)
    varying = any(gen.varying(a) for a in s.args) if acc is None else (
        acc.ptr.gridded or any(gen.varying(a) for a in s.args[1:]
                               if not (a is mask and acc.mask is not None)))
    active = gen.grid_mask(rank) if varying else None
    other_v = gen.val(other) if other is not None else "0"
    if gen.sanitize:
        _sanitize(gen, s, flat, ptr, mask, active)
    if acc is None:
        if mask is None and active is None:
            copy = _copy_arg(gen, s, ptr.root in gen.written_roots) if gen.py(ptr) else ""
            return f"rt.take({flat}, {_offsets(gen, ptr)}{copy})", varying
        extra = f", active={active}" if active else ""
        return f"rt.gather({flat}, {_offsets(gen, ptr)}, {gen.val(mask) if mask is not None else 'None'}, " \
               f"{other_v}{extra})", varying
    if acc.rows is not None:
        return _rows_load(gen, s, acc, other)
    copy = _copy_arg(gen, s, ptr.root in gen.written_roots and id(s) not in gen.trimmed.uncopied)
    extra = f", active={active}" if active else ""
    other_arg = f", other={other_v}" if other is not None else ""
    gridded = ", gridded=True" if acc.ptr.gridded else ""
    return (f"views.load({flat}, P, {aff_expr(gen, acc.ptr)}, {tuple(ptr.type.shape)!r}"
            f"{_mask_args(gen, mask, acc.mask)}{other_arg}{extra}{copy}{_trim_arg(gen, s)}{gridded})"), varying


def _copy_arg(gen: "CodeGen", s: ir.Assign, written: bool) -> str:
    """`copy=True` for a view a write through its own argument could change, else
    `copy=<flag>` when a write through another argument could, should the two share memory
    (see `aliasing.py`)."""
    if written:
        return ", copy=True"
    exposed = gen.exposed.get(id(s))
    return f", copy={gen.shared_flag(s.args[0].root, exposed)}" if exposed else ""


def _trim_arg(gen: "CodeGen", s: ir.Stmt) -> str:
    """`trim=True` for an access on valid lanes only (see `trim.py`)."""
    return ", trim=True" if id(s) in gen.trimmed.accesses else ""


def store(gen: "CodeGen", s: ir.Store) -> None:
    ptr, value, mask = s.ptr, s.value, s.mask
    acc = gen.accesses.get(id(s))
    flat = gen.flat(ptr.root) if acc is None else gen.name(ptr.root)
    rank = len(ptr.type.shape)
    active = gen.grid_mask(rank)
    if gen.sanitize:
        _sanitize(gen, s, flat, ptr, mask, active)
    extra = f", active={active}" if active else ""
    if acc is not None and acc.rows is not None:
        definition = gen.fused.get(id(s))
        if definition is not None:
            gen.emit_assign(definition, now=True)
        _rows_store(gen, s, acc)
        return
    if acc is None:
        m = gen.val(mask) if mask is not None else "None"
        gen.emit(f"rt.scatter({flat}, {_offsets(gen, ptr)}, {gen.val(value, rank)}, {m}{extra})")
        return
    call = (f"views.store({flat}, P, {aff_expr(gen, acc.ptr)}, {tuple(ptr.type.shape)!r}, "
            f"{gen.val(value, rank)}{_mask_args(gen, mask, acc.mask)}{extra}{_trim_arg(gen, s)})")
    definition = gen.fused.get(id(s))
    # a mask without an affine form (data-dependent) is no box a target view could be
    if definition is None or active is not None or (mask is not None and acc.mask is None):
        if definition is not None:
            gen.emit_assign(definition, now=True)
        gen.emit(call)
        return
    target = gen.fresh("target")
    gen.emit(f"{target} = views.store_target({flat}, P, {aff_expr(gen, acc.ptr)}, {tuple(ptr.type.shape)!r}"
             f"{_mask_args(gen, mask, acc.mask)}{_trim_arg(gen, s)})")
    gen.emit(f"if {target} is not None:  # every lane is written: compute in place")
    compute = fusion.out_call(gen, definition, target, shared=True)
    if gen.total_refs[definition.dst.name] > 2:  # read after the store: the view holds it
        compute = f"{gen.name(definition.dst)} = {compute}"
    gen.emit(f"    {compute}")
    gen.emit("else:")
    gen.depth += 1
    gen.emit_assign(definition, now=True)
    gen.emit(call)
    gen.depth -= 1


def atomic_add(gen: "CodeGen", s: ir.Assign) -> tuple[str, bool]:
    ptr, value = s.args[0], s.args[1]
    mask = s.args[2] if len(s.args) > 2 else None
    flat = gen.flat(ptr.root)
    rank = len(ptr.type.shape)
    active = gen.grid_mask(rank)
    if gen.sanitize:
        _sanitize(gen, s, flat, ptr, mask, active)
    m = gen.val(mask) if mask is not None else "None"
    extra = f", active={active}" if active else ""
    offs = _offsets(gen, ptr)
    if not any(gen.varying(a) for a in s.args):
        # every program performs the atomic, even at one shared address
        offs = f"rt.expand_grid({offs}, P.G, {tuple(ptr.type.shape)!r}, torch.int64)"
    return f"rt.atomic_add({flat}, {offs}, {gen.val(value, rank)}, {m}{extra})", True
