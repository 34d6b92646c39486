"""Benchmarks: each module prints a Markdown table, writes JSON, and never asserts speed.

    python -m benchmarks.dsl         # DSL kernels on the CPU backend vs hand-written torch
    python -m benchmarks.autotune    # default vs tuned kernel configs
    python -m benchmarks.serve       # the serving runtime under load
"""
