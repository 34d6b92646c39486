"""Every kernel of the project compiled for an NVIDIA GPU (to a cubin), without one.

    .venv/bin/python -m kernelforge.backends.triton.cuda_check [--arch 90] [-k SUBSTRING ...] [-v]

The CUDA counterpart of `ascend_check`: the same kernels (`examples`), compiled by
upstream Triton (`cuda_lowering`). One row per kernel; non-zero exit on any failure.
"""

from __future__ import annotations

import argparse
import functools
import sys

from kernelforge.backends.triton import examples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability, e.g. 80 or 90")
    parser.add_argument("-k", dest="patterns", action="append", default=[],
                        help="only kernels whose name contains this (repeatable)")
    parser.add_argument("-v", dest="verbose", action="store_true", help="print the full error of failures")
    opts = parser.parse_args(argv)

    from kernelforge.backends.triton import cuda_lowering, flavor

    if flavor() != "cuda":
        print("cuda_check needs upstream triton (run it with .venv/bin/python)", file=sys.stderr)
        return 2
    selected = examples.all_examples(opts.patterns)
    if not selected:
        print(f"no kernels match {opts.patterns!r}", file=sys.stderr)
        return 2
    print(f"Compiling {len(selected)} kernels for GPUTarget('cuda', {opts.arch}, 32)")
    lower = functools.partial(cuda_lowering.lower, arch=opts.arch)
    failures, _ = examples.report(selected, lower, opts.verbose)
    print(f"{len(selected) - failures}/{len(selected)} kernels compiled to cubin; {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
