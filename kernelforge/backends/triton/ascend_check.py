"""`make check-ascend`: every kernel of the project lowered for an Ascend 910B, without one.

    .venv-ascend/bin/python -m kernelforge.backends.triton.ascend_check [-k SUBSTRING ...] [-v]

Every semantics case and LLM kernel launch (`examples`) goes through the NPU rules and
triton-ascend's TTIR and linalg/HIVM stages (`ascend_lowering`). One row per kernel;
the exit status is non-zero when any kernel fails before the final `bishengir-compile`
step, which needs CANN and is reported as skipped where CANN is absent.
"""

from __future__ import annotations

import argparse
import sys

from kernelforge.backends.triton import examples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", dest="patterns", action="append", default=[],
                        help="only kernels whose name contains this (repeatable)")
    parser.add_argument("-v", dest="verbose", action="store_true", help="print the full error of failures")
    opts = parser.parse_args(argv)

    from kernelforge.backends.triton import ascend_lowering, flavor

    if flavor() != "ascend":
        print("check-ascend needs triton-ascend (run it with .venv-ascend/bin/python)", file=sys.stderr)
        return 2
    selected = examples.all_examples(opts.patterns)
    if not selected:
        print(f"no kernels match {opts.patterns!r}", file=sys.stderr)
        return 2
    print(f"Lowering {len(selected)} kernels for GPUTarget('npu', '{ascend_lowering.TARGET_ARCH}', 0)")
    failures, skipped = examples.report(selected, ascend_lowering.lower, opts.verbose)
    print(f"{len(selected) - failures}/{len(selected)} kernels lowered to linalg/HIVM; {failures} failed")
    if skipped:
        print(f"final stage (npubin) skipped for {skipped}: bishengir-compile not found (CANN is not installed)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
