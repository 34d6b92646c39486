"""The launcher: argument binding and checking, typing, grids, specialisation, backend choice.

This module uses `from __future__ import annotations`, so its kernels' `kl.constexpr`
annotations arrive as strings, which the launcher must still recognise.
"""

from __future__ import annotations

import numpy
import pytest
import torch

import kernelforge as kf
import kernelforge.language as kl
from fake_backend import fake  # noqa: F401  (pytest fixture)
from kernelforge import ir


@kf.jit
def copy_kernel(src_ptr, dst_ptr, n, BLOCK: kl.constexpr, SCALE: kl.constexpr = 1):
    offs = kl.program_id(0) * BLOCK + kl.arange(0, BLOCK)
    kl.store(dst_ptr + offs, kl.load(src_ptr + offs, mask=offs < n) * SCALE, mask=offs < n)


@kf.jit
def scalar_kernel(out_ptr, a, b, flag):
    if flag:
        kl.store(out_ptr, a + b)


def test_constexpr_annotations_given_as_strings_are_recognised():
    assert copy_kernel.constexpr_names == {"BLOCK", "SCALE"}
    assert copy_kernel.runtime_names == ("src_ptr", "dst_ptr", "n")


def test_launch_passes_grid_and_runtime_args_in_param_order(fake):
    x, y = torch.zeros(8), torch.zeros(8)
    copy_kernel[(2,)](x, y, 8, BLOCK=4)
    (grid, args), = fake.launches
    assert grid == (2, 1, 1)
    assert args[0] is x and args[1] is y and args[2] == 8
    assert fake.selected == ["cpu"]


def test_grid_callable_sees_constexprs_and_named_args(fake):
    seen = {}

    def grid(meta):
        seen.update(meta)
        return (kf.cdiv(meta["n"], meta["BLOCK"]), 3)

    copy_kernel[grid](torch.zeros(10), torch.zeros(10), 10, BLOCK=4)
    assert seen["BLOCK"] == 4 and seen["SCALE"] == 1 and seen["n"] == 10
    assert fake.launches[0][0] == (3, 3, 1)


def test_empty_grid_launches_nothing(fake):
    copy_kernel[(0,)](torch.zeros(1), torch.zeros(1), 0, BLOCK=4)
    assert fake.launches == []


@pytest.mark.parametrize("grid", [(1, 2, 3, 4), ("a",), (-1,), ()])
def test_bad_grids_are_rejected(fake, grid):
    with pytest.raises(ValueError, match="grid"):
        copy_kernel[grid](torch.zeros(1), torch.zeros(1), 1, BLOCK=4)


def test_run_is_the_explicit_form(fake):
    copy_kernel.run(torch.zeros(4), torch.zeros(4), 4, grid=(1,), BLOCK=4)
    assert len(fake.launches) == 1


def test_wrong_argument_count_names_the_kernel(fake):
    with pytest.raises(TypeError, match="copy_kernel.*takes 5 arguments"):
        copy_kernel[(1,)](torch.zeros(1), torch.zeros(1), 1, 4, 1, 9)


def test_unknown_keyword_is_rejected(fake):
    with pytest.raises(TypeError, match="unexpected keyword argument 'BLOK'"):
        copy_kernel[(1,)](torch.zeros(1), torch.zeros(1), 1, BLOK=4)


def test_missing_constexpr_is_named(fake):
    with pytest.raises(TypeError, match="missing constexpr 'BLOCK'"):
        copy_kernel[(1,)](torch.zeros(1), torch.zeros(1), 1)


def test_missing_argument_is_named(fake):
    with pytest.raises(TypeError, match="missing argument 'n'"):
        copy_kernel[(1,)](torch.zeros(1), torch.zeros(1), BLOCK=4)


def test_duplicate_argument_is_rejected(fake):
    with pytest.raises(TypeError, match="multiple values for argument 'n'"):
        copy_kernel[(1,)](torch.zeros(1), torch.zeros(1), 1, n=2, BLOCK=4)


def test_tensor_on_another_device_is_named(fake):
    with pytest.raises(ValueError, match="'dst_ptr' is on meta but 'src_ptr' is on cpu"):
        copy_kernel[(1,)](torch.zeros(4), torch.zeros(4, device="meta"), 4, BLOCK=4)


def test_non_contiguous_tensor_is_named(fake):
    x = torch.zeros(4, 4).t()
    with pytest.raises(ValueError, match="'src_ptr' is not contiguous"):
        copy_kernel[(1,)](x, torch.zeros(16), 16, BLOCK=4)


def test_unsupported_dtype_is_named(fake):
    with pytest.raises(TypeError, match="'src_ptr' has unsupported dtype"):
        copy_kernel[(1,)](torch.zeros(4, dtype=torch.complex64), torch.zeros(4), 4, BLOCK=4)


def test_unsupported_scalar_is_named(fake):
    with pytest.raises(TypeError, match="argument 'n'"):
        copy_kernel[(1,)](torch.zeros(4), torch.zeros(4), "four", BLOCK=4)


def test_calling_a_kernel_directly_explains_how_to_launch():
    with pytest.raises(RuntimeError, match=r"copy_kernel\[grid\]"):
        copy_kernel(torch.zeros(1), torch.zeros(1), 1, BLOCK=4)


@pytest.mark.parametrize("value, expected", [
    (3, ir.DType.int32), (2**31 - 1, ir.DType.int32), (-2**31, ir.DType.int32), (2**31, ir.DType.int64),
    (-2**40, ir.DType.int64), (1.5, ir.DType.float32), (True, ir.DType.int1),
    (numpy.int64(7), ir.DType.int32), (numpy.float64(0.5), ir.DType.float32), (numpy.bool_(True), ir.DType.int1),
])
def test_scalar_arguments_are_typed_like_triton(fake, value, expected):
    scalar_kernel[(1,)](torch.zeros(1), value, 1, True)
    kernel = fake.generated[-1]
    assert kernel.params[1].var.type == ir.BlockType(expected)
    assert kernel.params[3].var.type == ir.BlockType(ir.DType.int1)


def test_tensors_become_pointers_to_their_dtype(fake):
    copy_kernel[(1,)](torch.zeros(4, dtype=torch.bfloat16), torch.zeros(4, dtype=torch.int8), 4, BLOCK=4)
    params = fake.generated[-1].params
    assert params[0].var.type == ir.BlockType(ir.DType.bfloat16, (), True)
    assert params[1].var.type == ir.BlockType(ir.DType.int8, (), True)
    assert params[0].var.root == "src_ptr"


def test_specialisation_key_is_types_and_constexprs_not_scalar_values(fake):
    x, y = torch.zeros(64), torch.zeros(64)
    copy_kernel[(1,)](x, y, 1, BLOCK=4)
    copy_kernel[(1,)](x, y, 64, BLOCK=4)       # n == 1 is not specialised (unlike Triton)
    assert len(fake.generated) == 1
    copy_kernel[(1,)](x, y, 64, BLOCK=8)       # new constexpr
    copy_kernel[(1,)](x.half(), y, 64, BLOCK=8)  # new dtype
    copy_kernel[(1,)](x, y, 2**40, BLOCK=8)    # int64 scalar
    assert len(fake.generated) == 4
    assert len(fake.launches) == 5


def test_repeated_launch_skips_binding_and_typing(fake, monkeypatch):
    x, y = torch.zeros(64), torch.zeros(64)
    copy_kernel[(1,)](x, y, 64, BLOCK=4)
    typed = []
    real = kf.JITFunction._param_types
    monkeypatch.setattr(kf.JITFunction, "_param_types", lambda self, *a, **k: typed.append(1) or real(self, *a, **k))
    copy_kernel[(2,)](y, x, 32, BLOCK=4)
    assert typed == [] and fake.launches[-1][0] == (2, 1, 1) and fake.launches[-1][1][0] is y
    copy_kernel[(1,)](x, y, 2**40, BLOCK=4)   # int64 scalar: the checked path, a new specialisation
    assert typed == [1] and len(fake.generated) == 2


def test_checks_still_run_after_a_good_launch(fake):
    x, y = torch.zeros(16), torch.zeros(16)
    copy_kernel[(1,)](x, y, 16, BLOCK=4)
    with pytest.raises(ValueError, match="'src_ptr' is not contiguous"):
        copy_kernel[(1,)](torch.zeros(4, 4).t(), y, 16, BLOCK=4)
    with pytest.raises(ValueError, match="'dst_ptr' is on meta"):
        copy_kernel[(1,)](x, torch.zeros(16, device="meta"), 16, BLOCK=4)
    with pytest.raises(TypeError, match="unexpected keyword argument 'BLOK'"):
        copy_kernel[(1,)](x, y, 16, BLOK=4)
    with pytest.raises(ValueError, match="grid must be"):
        copy_kernel[(1, 1, 1, 1)](x, y, 16, BLOCK=4)
    with kf.backend("interpret"):
        copy_kernel[(1,)](x, y, 16, BLOCK=4)
    assert fake.selected[-1] == "interpret" and len(fake.generated) == 2


def test_fast_path_binds_a_grid_function_without_the_launch_options(fake):
    x, y = torch.zeros(16), torch.zeros(16)
    for _ in range(2):
        copy_kernel[lambda meta: (meta["n"] // meta["BLOCK"],)](x, y, 16, BLOCK=4, num_warps=4)
    assert [launch[0] for launch in fake.launches] == [(4, 1, 1), (4, 1, 1)]


def test_fast_path_keeps_one_plan_per_signature_and_backend(fake, monkeypatch):
    x, y = torch.zeros(16), torch.zeros(16)
    checked = []
    real = kf.JITFunction._run_checked
    monkeypatch.setattr(kf.JITFunction, "_run_checked",
                        lambda self, *a, **k: checked.append(1) or real(self, *a, **k))
    for _ in range(3):
        copy_kernel[(1,)](x, y, 16, BLOCK=kl.constexpr(4))
        with kf.backend("interpret"):
            copy_kernel[(1,)](x, y, 16, BLOCK=kl.constexpr(4))
    assert len(checked) == 2, "a wrapped constexpr and a switched backend each plan once"
    assert len(fake.launches) == 6


def test_launch_options_are_accepted_and_checked(fake):
    copy_kernel[(1,)](torch.zeros(4), torch.zeros(4), 4, BLOCK=4, num_warps=4, num_stages=2)
    with pytest.raises(ValueError, match="num_warps"):
        copy_kernel[(1,)](torch.zeros(4), torch.zeros(4), 4, BLOCK=4, num_warps=0)


def test_forced_backend_is_used(fake):
    with kf.backend("interpret"):
        copy_kernel[(1,)](torch.zeros(4), torch.zeros(4), 4, BLOCK=4)
    assert fake.selected[-1] == "interpret"


def test_constexpr_wrapped_values_are_unwrapped(fake):
    copy_kernel[(1,)](torch.zeros(4), torch.zeros(4), 4, BLOCK=kl.constexpr(4))
    assert fake.generated[-1].constexprs["BLOCK"] == 4


def test_torch_dtype_constexprs_become_kl_dtypes(fake):
    @kf.jit
    def fill(out_ptr, DT: kl.constexpr):
        kl.store(out_ptr + kl.arange(0, 4), kl.full((4,), 1.5, DT))

    fill[(1,)](torch.zeros(4), DT=torch.float16)
    assert fake.generated[-1].constexprs["DT"] is kl.float16


def test_specialize_accepts_tensors_scalars_and_type_strings():
    kernel = copy_kernel.specialize(("*fp16", torch.zeros(1, dtype=torch.int32), 5), {"BLOCK": 16})
    assert [str(p.var.type) for p in kernel.params] == ["*float16", "*int32", "int32"]
    assert kernel.constexprs == {"BLOCK": 16, "SCALE": 1}
    by_name = copy_kernel.specialize({"src_ptr": "*bf16", "dst_ptr": "*bf16", "n": "i64"}, {"BLOCK": 16})
    assert str(by_name.params[2].var.type) == "int64"
    with pytest.raises(TypeError, match="3 runtime arguments"):
        copy_kernel.specialize(("*fp16",), {"BLOCK": 16})


def test_source_types_unlisted_params_by_name():
    text = copy_kernel.source("ir", BLOCK=16)
    assert "src_ptr: *float32" in text and "n: int32" in text
    text = copy_kernel.source("ir", BLOCK=16, signature={"src_ptr": "*fp16", "n": "i64"})
    assert "src_ptr: *float16" in text and "n: int64" in text
    with pytest.raises(TypeError, match="unknown runtime parameters"):
        copy_kernel.source("ir", BLOCK=16, signature={"BLOCK": "i32"})
    with pytest.raises(ValueError, match="unknown type"):
        copy_kernel.source("ir", BLOCK=16, signature={"n": "int33"})


def test_source_for_a_real_backend_is_python():
    text = copy_kernel.source("cpu", BLOCK=16)
    compile(text, "<cpu source>", "exec")
    assert "def launch" in text


def test_language_builtins_fail_outside_kernels():
    with pytest.raises(RuntimeError, match="only be used inside a @kf.jit"):
        kl.program_id(0)
    assert kl.cdiv(10, 4) == 3 and kf.cdiv(8, 4) == 2


def test_autotune_and_config_are_exported():
    assert kf.Config(BLOCK=4)["BLOCK"] == 4
    tuned = kf.autotune(configs=[kf.Config(BLOCK=4)], key=["n"])(copy_kernel)
    assert tuned.source_hash == copy_kernel.source_hash


def test_cli_show_prints_generated_source(capsys):
    from kernelforge.__main__ import main

    assert main(["show", f"{__name__}:copy_kernel", "--backend", "ir", "--const", "BLOCK=16",
                 "--sig", "src_ptr=*fp16"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("kernel copy_kernel(src_ptr: *float16") and "BLOCK=16" in out
    assert main(["show", f"{__name__}:copy_kernel", "--backend", "ir"]) == 1
    assert "missing constexpr 'BLOCK'" in capsys.readouterr().err


def test_sanitize_mode_is_part_of_the_specialisation(fake, monkeypatch):
    x, y = torch.zeros(4), torch.zeros(4)
    copy_kernel[(1,)](x, y, 4, BLOCK=4)
    monkeypatch.setenv("KF_SANITIZE", "1")
    copy_kernel[(1,)](x, y, 4, BLOCK=4)
    assert len(fake.generated) == 2


@pytest.mark.parametrize("target, message", [
    ("no_such_module:add", "cannot find kernel no_such_module:add: No module named"),
    ("kernelforge.kernels.rms_norm:no_such_kernel", "has no attribute 'no_such_kernel'"),
    ("kernelforge.kernels.rms_norm", "expected MODULE:KERNEL"),
])
def test_cli_show_names_a_target_it_cannot_find(target, message):
    from kernelforge.__main__ import main

    with pytest.raises(SystemExit, match=message):
        main(["show", target])
