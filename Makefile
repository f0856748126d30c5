# Two entry points for a new machine: `make demo` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build by default; on a GPU machine: make TORCH_SPEC="torch" demo
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test test-fast test-cpu install dev clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/survey demo

# Tests run on every core (pytest-xdist, one torch thread per worker: tests/conftest.py); each test module
# stays on one worker (its module fixtures are built once) and the demo starts first. JOBS=0 runs them in
# one process. Measured on 2 cores, 2026-12-07: test-fast 84-94 s, the whole suite 813-860 s in three fresh-clone
# runs, quiet (962-1080 s in seven runs before the reference's wavelet products; 3 workers took 1147 s). pytest stays below 9: see pyproject.
JOBS ?= auto
XDIST := -n $(JOBS) --dist loadgroup --no-loadscope-reorder

# Everything (what CI runs); test-fast: unit and property tests only (-m "not slow").
test: $(VENV)/.installed
	$(PY) -m pytest -q $(XDIST) --durations=30

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow" $(XDIST)

# The whole suite as `make test` runs it, with the CPU seconds of every test (its process and its children, Ray's
# included: tests/cpu_clock.py) in test-cpu.jsonl; prints the costliest modules and tests.
test-cpu: $(VENV)/.installed
	rm -f test-cpu.jsonl
	-$(PY) -m pytest -q $(XDIST) --cpu-clock test-cpu.jsonl
	$(PY) -m tests.cpu_clock test-cpu.jsonl

clean:
	rm -rf $(VENV) results reports/quick
